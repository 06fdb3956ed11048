"""Micro-benchmark of the fused residual add + LayerNorm ``s = x + branch + bias; h = layer_norm(s)``, forward and
forward+backward.

    python benchmarks/bench_residual_layer_norm.py                    # GPU: bf16, ViTPose-B 256x192 and -H 576x432
    python benchmarks/bench_residual_layer_norm.py --batches 32 --out # + JSON under benchmarks/results/

Implementations (same inputs: x, branch [B * N, C], the branch's Linear bias and the LayerNorm's parameters):

- ``unfused``: the plain model's ops (bias add, residual add, F.layer_norm), the reference;
- ``compile``: ``torch.compile`` of the same function (CUDA only; Inductor fuses it into one or two kernels);
- ``triton``: our kernel (one pass forward; backward with deterministic per-program partial sums).

Reported per row: median / p20 / p80 milliseconds (``triton.testing.do_bench`` on CUDA), the speedup over
``unfused`` and the effective bandwidth of the minimum traffic (forward: read x and branch, write s and h;
forward+backward adds: read s, dh, ds, write dx = dbranch). On CPU the shapes shrink to a tiny case and the
kernel runs in the interpreter: that only shows the script runs; the figures need a GPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, device_slug, do_bench, environment, interpreter_on_cpu, text_table, write_json  # noqa: E402

# name -> (tokens per image, C)
CASES: Dict[str, Tuple[int, int]] = {"vitpose_b_256x192": (192, 768), "vitpose_h_576x432": (972, 1280)}
CPU_CASE = ("tiny_cpu", (37, 96))
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COLUMNS = ["case", "batch", "mode", "impl", "ms", "p20", "p80", "speedup", "gb_s"]


def _impls(device: torch.device) -> Dict[str, Callable]:
    from vitpose_fast.reference.residual_layer_norm import residual_layer_norm_ref

    impls: Dict[str, Callable] = {"unfused": residual_layer_norm_ref}
    if device.type == "cuda":
        impls["compile"] = torch.compile(residual_layer_norm_ref, dynamic=False)
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        from vitpose_fast.kernels import residual_layer_norm as kernel

        impls["triton"] = kernel.residual_layer_norm
    return impls


def bench_case(name: str, shape: Tuple[int, int], batch: int, dtype: torch.dtype, device: torch.device,
               modes: List[str], rep_ms: float) -> List[Dict[str, object]]:
    n, c = shape
    rows_n = batch * n
    x = torch.randn(batch, n, c, device=device, dtype=dtype, requires_grad=True)
    branch = torch.randn(batch, n, c, device=device, dtype=dtype, requires_grad=True)
    params = [torch.randn(c, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
    ds, dh = torch.randn_like(x), torch.randn_like(x)
    elem = x.element_size()
    rows: List[Dict[str, object]] = []
    for mode in modes:
        base: Optional[float] = None
        for impl, fn in _impls(device).items():
            if mode == "fwd":
                def run() -> None:
                    with torch.no_grad():
                        fn(x, branch, params[0], params[1], params[2], 1e-6)
            else:
                def run() -> None:
                    s, h = fn(x, branch, params[0], params[1], params[2], 1e-6)
                    torch.autograd.backward([s, h], [ds, dh])
            ms, p20, p80 = do_bench(run, device, rep_ms=rep_ms)
            base = ms if impl == "unfused" else base
            traffic = rows_n * c * elem * (4 if mode == "fwd" else 8)
            rows.append({"case": name, "batch": batch, "mode": mode, "impl": impl, "ms": ms, "p20": p20,
                         "p80": p80, "speedup": base / ms if base else None, "gb_s": traffic / (ms * 1e-3) / 1e9})
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 32 (CUDA), 1 (CPU)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--modes", nargs="+", choices=["fwd", "fwd+bwd"], default=["fwd", "fwd+bwd"])
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
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    rows: List[Dict[str, object]] = []
    for name, shape in cases:
        for batch in batches:
            rows += bench_case(name, shape, batch, dtype, device, args.modes, rep_ms)
    print(text_table(rows, COLUMNS))
    if args.out is not None:
        stem = f"{device_slug(device)}_residual_layer_norm_{str(dtype).split('.')[-1]}_{_dt.date.today().isoformat()}"
        path = RESULTS_DIR / f"{stem}.json" if args.out == "auto" else Path(args.out)
        write_json(path, {"benchmark": "residual_layer_norm", "dtype": str(dtype), "env": environment(device),
                          "rows": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
