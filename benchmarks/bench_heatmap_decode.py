"""Micro-benchmark of heatmap decoding: the fused Triton kernel against the batched torch decoding.

    python benchmarks/bench_heatmap_decode.py                     # GPU: 64 x 17 maps of 144x108 and 64x48
    python benchmarks/bench_heatmap_decode.py --methods udp --out # + JSON under benchmarks/results/

Implementations (same heatmaps, centers and scales):

- ``torch``: :func:`vitpose_fast.inference.decode.decode_heatmaps`, batched over persons and keypoints (argmax, whole-map
  separable blur, gathers, transform);
- ``triton``: :func:`vitpose_fast.kernels.heatmap_decode.decode_heatmaps_triton`, one launch that blurs only the
  patch around each peak.

Reported per row: median / p20 / p80 milliseconds (``triton.testing.do_bench`` on CUDA), the speedup over
``torch``, the heatmap read rate (N*K*H*W*itemsize bytes / median time: decoding is memory-bound) and that rate
over the bandwidth (``roofline``, :data:`common.PEAK_BYTES_S`), the peak memory of one call above its inputs,
and the largest position difference to ``torch`` in heatmap pixels. With ``--out`` the JSON file is rewritten
after every row.
Target: ``triton`` >= 10x ``torch`` for ``udp`` at 64 x 17 x 144 x 108. On CPU (or with ``--tiny``) the shapes
shrink to a tiny case and, on CPU, the kernel runs in the Triton interpreter: that only shows the script runs; the figures need a GPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from vitpose_fast.benchmarking.common import (
    RESULTS_DIR, PeakMemory, ResultFile, device_slug, do_bench, environment, interpreter_on_cpu, roofline,
    text_table,
)

# name -> (N persons, K keypoints, H, W) heatmaps
CASES: Dict[str, Tuple[int, int, int, int]] = {
    "vitpose_576x432_b64": (64, 17, 144, 108),
    "vitpose_256x192_b64": (64, 17, 64, 48),
}
CPU_CASE = ("tiny_cpu", (1, 5, 16, 12))
TARGET_CASE, TARGET_METHOD, TARGET_SPEEDUP = "vitpose_576x432_b64", "udp", 10.0
METHODS = ("argmax", "default", "dark", "udp")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COLUMNS = ["case", "method", "impl", "ms", "p20", "p80", "speedup", "target", "gbs", "roofline", "extra_mib", "err_px"]


IMPLS = ("torch", "triton")


def _impls(device: torch.device) -> Dict[str, Callable]:
    from vitpose_fast.reference.heatmap_decode import decode_heatmaps_torch

    impls = {"torch": decode_heatmaps_torch}
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        from vitpose_fast.kernels.heatmap_decode import decode_heatmaps_triton

        impls["triton"] = decode_heatmaps_triton
    return impls


def _heatmaps(n: int, k: int, h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Model-like maps: a sigma-2 Gaussian at a random sub-pixel point per map, random amplitude, mild noise."""
    kp = torch.rand(n, k, 2, device=device) * torch.tensor([w - 1.0, h - 1.0], device=device)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    ys = torch.arange(h, device=device, dtype=torch.float32)
    gx = torch.exp(-((xs - kp[..., :1]) ** 2) / 8.0)
    gy = torch.exp(-((ys - kp[..., 1:]) ** 2) / 8.0)
    amp = 0.3 + 0.7 * torch.rand(n, k, 1, 1, device=device)
    maps = amp * gy[..., :, None] * gx[..., None, :] + 0.02 * torch.randn(n, k, h, w, device=device)
    return maps.to(dtype)


def bench_case(name: str, shape: Tuple[int, int, int, int], methods: List[str], dtype: torch.dtype,
               device: torch.device, rep_ms: float, result: ResultFile, impls=IMPLS) -> List[Dict[str, object]]:
    n, k, h, w = shape
    hm = _heatmaps(n, k, h, w, dtype, device)
    centers = torch.rand(n, 2, dtype=torch.float64, device=device) * 500
    scales = 0.5 + torch.rand(n, 2, dtype=torch.float64, device=device)
    read_bytes = hm.numel() * hm.element_size()
    rows: List[Dict[str, object]] = []
    for method in methods:
        base: Optional[Tuple[float, torch.Tensor]] = None
        for impl, fn in ((k, v) for k, v in _impls(device).items() if k in impls):
            def run(fn=fn, method=method) -> torch.Tensor:
                return fn(hm, centers, scales, method)

            out = run()
            ms, p20, p80 = do_bench(run, device, rep_ms=rep_ms)
            before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            with PeakMemory(device) as peak:
                run()
            extra = None if peak.mib is None else peak.mib - (before / 2**20 if device.type == "cuda" else 0)
            if base is None:
                base = (ms, out)
            size = torch.tensor([w, h], dtype=torch.float64, device=device) - (1.0 if method == "udp" else 0.0)
            err = ((out[..., :2] - base[1][..., :2]).double().abs() / (scales * 200.0 / size)[:, None]).max()
            speedup = base[0] / ms
            target = None
            if (name, method, impl) == (TARGET_CASE, TARGET_METHOD, "triton"):
                target = f">={TARGET_SPEEDUP:g}x " + ("ok" if speedup >= TARGET_SPEEDUP else "MISS")
            row = {
                "case": name, "method": method, "impl": impl, "ms": ms, "p20": p20, "p80": p80,
                "speedup": speedup, "target": target, **roofline(ms, nbytes=read_bytes),
                "extra_mib": extra, "err_px": float(err),
            }
            rows.append(row)
            result.add(row)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="heatmap dtype (model output)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="implementations to time")
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU case on any device (smoke runs)")
    parser.add_argument("--rep-ms", type=float, default=200.0)
    parser.add_argument("--out", nargs="?", const="auto", default=None,
                        help="write JSON (to this path, or with no value under benchmarks/results/)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if interpreter_on_cpu(device) or args.tiny:
        cases = [CPU_CASE]
        rep_ms = min(args.rep_ms, 50.0)
    else:
        cases = [(name, CASES[name]) for name in args.cases]
        rep_ms = args.rep_ms
    dtype = DTYPES[args.dtype]

    path = None
    if args.out is not None:
        stem = f"{device_slug(device)}_heatmap_decode_{args.dtype}_{_dt.date.today().isoformat()}"
        path = RESULTS_DIR / f"{stem}.json" if args.out == "auto" else Path(args.out)
    result = ResultFile(path, {"benchmark": "heatmap_decode", "dtype": args.dtype,
                               "cases": {name: list(shape) for name, shape in cases}, "env": environment(device),
                               "columns": COLUMNS})
    for name, shape in cases:
        bench_case(name, shape, args.methods, dtype, device, rep_ms, result, args.impls)
    print(text_table(result.rows, COLUMNS))
    result.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
