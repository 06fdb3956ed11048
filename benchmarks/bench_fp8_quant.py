"""Micro-benchmark of the FP8 inference pieces: per-token quantization (standalone and fused into the block
epilogues) and the FP8 GEMM against bf16.

    python benchmarks/bench_fp8_quant.py                     # GPU: bf16 in, ViTPose-H 576x432 widths
    python benchmarks/bench_fp8_quant.py --batches 32 --out  # + JSON under benchmarks/results/

Rows (same inputs per case; x [B * N, C], the fc1 output [B * N, 4C]):

- ``quantize`` (x -> codes + row scales): ``torch`` (amax, divide, clamp, cast) vs ``triton`` (one pass);
- ``ln+quant`` (residual add + LayerNorm whose output feeds an FP8 GEMM): ``unfused`` (torch LayerNorm then torch
  quantization), ``two-kernels`` (our residual+LayerNorm kernel, then our quantization), ``fused`` (the FP8-output
  variant: one pass);
- ``gelu+quant`` (bias + GELU feeding fc2) likewise;
- ``gemm`` (fc1: [B * N, C] x [C, 4C]): bf16 ``F.linear`` (fp32 on CPU) vs ``torch._scaled_mm`` with row-wise
  scales, in TFLOP/s.

Reported: median / p20 / p80 ms, speedup over the row's first implementation, GB/s of the minimum traffic (TFLOP/s
for gemm). On CPU a tiny case runs the kernels in the interpreter: that only shows the script runs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from vitpose_fast.benchmarking.common import RESULTS_DIR, device_slug, do_bench, environment, interpreter_on_cpu, text_table, write_json

# name -> (tokens per image, C)
CASES: Dict[str, Tuple[int, int]] = {"vitpose_h_576x432": (1296, 1280), "vitpose_b_256x192": (192, 768)}
CPU_CASE = ("tiny_cpu", (37, 128))
COLUMNS = ["case", "batch", "op", "impl", "ms", "p20", "p80", "speedup", "gb_s", "tflops"]


def _impls(device: torch.device, x, branch, bias, w, lb, a, bias4) -> Dict[str, Dict[str, Callable[[], object]]]:
    from vitpose_fast.reference.bias_gelu import bias_gelu_ref
    from vitpose_fast.reference.fp8 import quantize_rows_ref
    from vitpose_fast.reference.residual_layer_norm import residual_layer_norm_ref

    ops: Dict[str, Dict[str, Callable[[], object]]] = {
        "quantize": {"torch": lambda: quantize_rows_ref(x)},
        "ln+quant": {"unfused": lambda: quantize_rows_ref(residual_layer_norm_ref(x, branch, bias, w, lb, 1e-6)[1])},
        "gelu+quant": {"unfused": lambda: quantize_rows_ref(bias_gelu_ref(a, bias4))},
    }
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        from vitpose_fast.kernels import bias_gelu, fp8_quant, residual_layer_norm

        ops["quantize"]["triton"] = lambda: fp8_quant.quantize_rows(x)
        ops["ln+quant"]["two-kernels"] = lambda: fp8_quant.quantize_rows(
            residual_layer_norm.residual_layer_norm(x, branch, bias, w, lb, 1e-6)[1])
        ops["ln+quant"]["fused"] = lambda: residual_layer_norm.residual_layer_norm_fp8(x, branch, bias, w, lb, 1e-6)
        ops["gelu+quant"]["two-kernels"] = lambda: fp8_quant.quantize_rows(bias_gelu.bias_gelu(a, bias4))
        ops["gelu+quant"]["fused"] = lambda: bias_gelu.bias_gelu_fp8(a, bias4)
    return ops


def bench_case(name: str, shape: Tuple[int, int], batch: int, device: torch.device, rep_ms: float):
    from vitpose_fast.reference.fp8 import fp8_linear_torch, quantize_rows_ref, quantize_weight

    n, c = shape
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the interpreter has no bf16 maths
    m = batch * n
    x = torch.randn(m, c, device=device, dtype=dtype)
    branch = torch.randn_like(x)
    bias, w, lb = (torch.randn(c, device=device, dtype=dtype) for _ in range(3))
    a = torch.randn(m, 4 * c, device=device, dtype=dtype)
    bias4 = torch.randn(4 * c, device=device, dtype=dtype)
    size = x.element_size()
    # Minimum traffic: read the inputs once, write s (ln) and the codes (1 byte) + scales.
    traffic = {"quantize": m * c * (size + 1), "ln+quant": m * c * (3 * size + 1), "gelu+quant": m * 4 * c * (size + 1)}
    rows: List[Dict[str, object]] = []
    for op, impls in _impls(device, x, branch, bias, w, lb, a, bias4).items():
        base: Optional[float] = None
        for impl, fn in impls.items():
            with torch.no_grad():
                ms, p20, p80 = do_bench(fn, device, rep_ms=rep_ms)
            base = base or ms
            rows.append({"case": name, "batch": batch, "op": op, "impl": impl, "ms": ms, "p20": p20, "p80": p80,
                         "speedup": base / ms, "gb_s": traffic[op] / (ms * 1e-3) / 1e9})
    weight = torch.randn(4 * c, c, device=device, dtype=dtype) * 0.02
    qw, sw = quantize_weight(weight)
    qx, sx = quantize_rows_ref(x)
    flops = 2.0 * m * c * 4 * c
    base = None
    for impl, fn in ((str(dtype).split(".")[-1], lambda: F.linear(x, weight, bias4)),
                     ("fp8", lambda: fp8_linear_torch(qx, sx, qw, sw, bias4))):
        with torch.no_grad():
            ms, p20, p80 = do_bench(fn, device, rep_ms=rep_ms)
        base = base or ms
        rows.append({"case": name, "batch": batch, "op": "gemm", "impl": impl, "ms": ms, "p20": p20, "p80": p80,
                     "speedup": base / ms, "tflops": flops / (ms * 1e-3) / 1e12})
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 32 (CUDA), 1 (CPU)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--rep-ms", type=float, default=200.0)
    parser.add_argument("--out", nargs="?", const="auto", default=None,
                        help="write JSON (to this path, or with no value under benchmarks/results/)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if interpreter_on_cpu(device):
        cases, batches, rep_ms = [CPU_CASE], args.batches or [1], min(args.rep_ms, 50.0)
    else:
        cases = [(name, CASES[name]) for name in args.cases]
        batches, rep_ms = args.batches or [1, 32], args.rep_ms
    rows: List[Dict[str, object]] = []
    for name, shape in cases:
        for batch in batches:
            rows += bench_case(name, shape, batch, device, rep_ms)
    print(text_table(rows, COLUMNS))
    if args.out is not None:
        stem = f"{device_slug(device)}_fp8_quant_{_dt.date.today().isoformat()}"
        path = RESULTS_DIR / f"{stem}.json" if args.out == "auto" else Path(args.out)
        write_json(path, {"benchmark": "fp8_quant", "env": environment(device), "rows": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
