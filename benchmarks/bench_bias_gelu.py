"""Micro-benchmark of the fused bias + exact GELU on the fc1 output ``y = gelu(a + bias)``, forward and
forward+backward.

    python benchmarks/bench_bias_gelu.py                    # GPU: bf16, ViTPose-B 256x192 and -H 576x432
    python benchmarks/bench_bias_gelu.py --batches 32 --out # + JSON under benchmarks/results/

Implementations (same inputs: a [B * N, 4C] = the fc1 GEMM output without bias, bias [4C]):

- ``unfused``: bias add then F.gelu (what the plain model's Linear + GELU cost after the GEMM), the reference;
- ``compile``: ``torch.compile`` of the same function (CUDA only);
- ``triton``: our kernel (backward with deterministic per-program bias-gradient partial sums).

Reported per row: median / p20 / p80 milliseconds, the speedup over ``unfused`` and the effective bandwidth of the
minimum traffic (forward: read a, write y; forward+backward adds: read a and dy, write da). On CPU the shape
shrinks to a tiny case and the kernel runs in the interpreter: that only shows the script runs.
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

# name -> (tokens per image, 4C)
CASES: Dict[str, Tuple[int, int]] = {"vitpose_b_256x192": (192, 3072), "vitpose_h_576x432": (972, 5120)}
CPU_CASE = ("tiny_cpu", (37, 384))
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COLUMNS = ["case", "batch", "mode", "impl", "ms", "p20", "p80", "speedup", "gb_s"]


def _impls(device: torch.device) -> Dict[str, Callable]:
    from vitpose_fast.reference.bias_gelu import bias_gelu_ref

    impls: Dict[str, Callable] = {"unfused": bias_gelu_ref}
    if device.type == "cuda":
        impls["compile"] = torch.compile(bias_gelu_ref, dynamic=False)
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        from vitpose_fast.kernels import bias_gelu as kernel

        impls["triton"] = kernel.bias_gelu
    return impls


def bench_case(name: str, shape: Tuple[int, int], batch: int, dtype: torch.dtype, device: torch.device,
               modes: List[str], rep_ms: float) -> List[Dict[str, object]]:
    n, hidden = shape
    a = torch.randn(batch, n, hidden, device=device, dtype=dtype, requires_grad=True)
    bias = torch.randn(hidden, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn_like(a)
    elems = a.numel() * a.element_size()
    rows: List[Dict[str, object]] = []
    for mode in modes:
        base: Optional[float] = None
        for impl, fn in _impls(device).items():
            if mode == "fwd":
                def run() -> None:
                    with torch.no_grad():
                        fn(a, bias)
            else:
                def run() -> None:
                    fn(a, bias).backward(dy)
            ms, p20, p80 = do_bench(run, device, rep_ms=rep_ms)
            base = ms if impl == "unfused" else base
            traffic = elems * (2 if mode == "fwd" else 5)
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
        stem = f"{device_slug(device)}_bias_gelu_{str(dtype).split('.')[-1]}_{_dt.date.today().isoformat()}"
        path = RESULTS_DIR / f"{stem}.json" if args.out == "auto" else Path(args.out)
        write_json(path, {"benchmark": "bias_gelu", "dtype": str(dtype), "env": environment(device), "rows": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
