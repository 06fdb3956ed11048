"""Micro-benchmark of the simple decoder ``conv3x3(bilinear_x4(relu(x)))``, forward and forward+backward.

    python benchmarks/bench_simple_decoder.py                       # GPU: bf16, ViTPose-B 256x192 and -H 576x432
    python benchmarks/bench_simple_decoder.py --batches 32 --out    # + JSON under benchmarks/results/

Implementations (same inputs, K = 17 keypoints):

- ``conv``: the official order, F.interpolate + relu + F.conv2d (cuDNN); builds the C-channel 4x map;
- ``reorder``: the exact reorder in pure PyTorch (low-res cuBLAS GEMM to 9K channels + two small contractions);
- ``triton``: the same GEMM + the fused upsample / 9-tap / bias Triton kernel (and its gather backward).

Reported per row: median / p20 / p80 milliseconds (``triton.testing.do_bench`` on CUDA), the speedup over
``conv``, the conv-equivalent rate (2 * 9 * C * K * 16hw * B FLOPs per forward, x3 for fwd+bwd), the bytes each
call must move at least (input read, heatmaps written, weights; x2 for fwd+bwd) as GB/s, the larger of the two
rates over its ceiling (``roofline``, :data:`common.PEAK_FLOPS` / :data:`common.PEAK_BYTES_S`), and the peak
memory of one call above what its inputs already hold. With ``--out`` the JSON file is rewritten after every row.
On CPU (or with ``--tiny``) the shapes shrink to a tiny case and, on CPU, the Triton kernel runs in the
interpreter: that only shows the script runs; the figures need a GPU.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch

from vitpose_fast.benchmarking.common import (
    PeakMemory, ResultFile, do_bench, environment, micro_parser, micro_settings, result_path, roofline, text_table,
)

# name -> (C, h, w): the backbone feature map of the model at that input resolution (patch 16)
CASES: Dict[str, Tuple[int, int, int]] = {
    "vitpose_b_256x192": (768, 16, 12),
    "vitpose_h_576x432": (1280, 36, 27),
}
CPU_CASE = ("tiny_cpu", (32, 4, 3))
NUM_KEYPOINTS = 17
BATCHES = (1, 32, 64)  # on CUDA
COLUMNS = ["case", "batch", "mode", "impl", "ms", "p20", "p80", "speedup", "tflops", "gbs", "roofline", "extra_mib"]


IMPLS = ("conv", "reorder", "triton")


def _impls(device: torch.device) -> Dict[str, Callable]:
    from vitpose_fast.reference.simple_decoder import simple_decoder_ref, simple_decoder_torch

    impls = {"conv": simple_decoder_ref, "reorder": simple_decoder_torch}
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        from vitpose_fast.kernels import simple_decoder as kernel

        impls["triton"] = kernel.simple_decoder
    return impls


def _step(fn: Callable, x, weight, bias, grad_out, mode: str) -> Callable[[], None]:
    if mode == "fwd":
        def run() -> None:
            with torch.no_grad():
                fn(x, weight, bias)
    else:
        def run() -> None:
            x.grad = weight.grad = bias.grad = None
            fn(x, weight, bias).backward(grad_out)
    return run


def bench_case(name: str, shape: Tuple[int, int, int], batch: int, dtype: torch.dtype, device: torch.device,
               modes: List[str], rep_ms: float, result: ResultFile, impls=IMPLS) -> List[Dict[str, object]]:
    c, h, w = shape
    k = NUM_KEYPOINTS
    # The backbone hands over [B, N, C] tokens: benchmark on their NCHW view, as the model does.
    tokens = torch.randn(batch, h * w, c, device=device, dtype=dtype)
    x = tokens.transpose(1, 2).reshape(batch, c, h, w).requires_grad_()
    weight = (torch.randn(k, c, 3, 3, device=device) * 1e-3).to(dtype).requires_grad_()
    bias = torch.zeros(k, device=device, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(batch, k, 4 * h, 4 * w, device=device, dtype=dtype)
    flops = 2 * 9 * c * k * 16 * h * w * batch
    nbytes = (batch * c * h * w + batch * k * 16 * h * w + k * c * 9) * x.element_size()
    rows: List[Dict[str, object]] = []
    for mode in modes:
        base_ms: Optional[float] = None
        for impl, fn in ((k, v) for k, v in _impls(device).items() if k in impls):
            run = _step(fn, x, weight, bias, grad_out, mode)
            ms, p20, p80 = do_bench(run, device, rep_ms=rep_ms)
            before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            with PeakMemory(device) as peak:
                run()
            extra = None if peak.mib is None else peak.mib - (before / 2**20 if device.type == "cuda" else 0)
            base_ms = ms if impl == "conv" else base_ms
            row = {
                "case": name, "batch": batch, "mode": mode, "impl": impl, "ms": ms, "p20": p20, "p80": p80,
                "speedup": base_ms / ms if base_ms else None,
                **roofline(ms, flops=flops * (1 if mode == "fwd" else 3), nbytes=nbytes * (1 if mode == "fwd" else 2),
                           dtype=dtype),
                "extra_mib": extra,
            }
            rows.append(row)
            result.add(row)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = micro_parser(__doc__.split("\n\n")[0], CASES, BATCHES)
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="implementations to time")
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU case on any device (smoke runs)")
    args = parser.parse_args(argv)

    device, cases, batches, rep_ms, dtype = micro_settings(args, CASES, CPU_CASE, BATCHES, tiny=args.tiny)
    path = result_path(args.out, device, "simple_decoder", dtype)
    result = ResultFile(path, {"benchmark": "simple_decoder", "dtype": str(dtype), "num_keypoints": NUM_KEYPOINTS,
                               "cases": {name: list(shape) for name, shape in cases}, "env": environment(device),
                               "columns": COLUMNS})
    for name, shape in cases:
        for batch in batches:
            bench_case(name, shape, batch, dtype, device, args.modes, rep_ms, result, args.impls)
    print(text_table(result.rows, COLUMNS))
    result.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
