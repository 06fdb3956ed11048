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

import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch

from vitpose_fast.benchmarking.common import fused_op_impls, run_micro, time_impls

from vitpose_fast.reference.residual_layer_norm import residual_layer_norm_ref

# name -> (tokens per image, C)
CASES: Dict[str, Tuple[int, int]] = {"vitpose_b_256x192": (192, 768), "vitpose_h_576x432": (972, 1280)}
CPU_CASE = ("tiny_cpu", (37, 96))


def bench_case(name: str, shape: Tuple[int, int], batch: int, dtype: torch.dtype, device: torch.device,
               modes: List[str], rep_ms: float) -> List[Dict[str, object]]:
    n, c = shape
    x = torch.randn(batch, n, c, device=device, dtype=dtype, requires_grad=True)
    branch = torch.randn(batch, n, c, device=device, dtype=dtype, requires_grad=True)
    params = [torch.randn(c, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
    ds, dh = torch.randn_like(x), torch.randn_like(x)
    row_bytes = c * x.element_size()

    def step(fn: Callable, mode: str) -> Callable[[], None]:
        if mode == "fwd":
            def run() -> None:
                with torch.no_grad():
                    fn(x, branch, params[0], params[1], params[2], 1e-6)
        else:
            def run() -> None:
                s, h = fn(x, branch, params[0], params[1], params[2], 1e-6)
                torch.autograd.backward([s, h], [ds, dh])
        return run

    impls = fused_op_impls(device, residual_layer_norm_ref, "residual_layer_norm")
    return time_impls(name, batch, modes, impls, step,
                      lambda mode: batch * n * row_bytes * (4 if mode == "fwd" else 8), device, rep_ms)


def main(argv: Optional[List[str]] = None) -> int:
    return run_micro(argv, __doc__.split("\n\n")[0], "residual_layer_norm", CASES, CPU_CASE, bench_case)


if __name__ == "__main__":
    sys.exit(main())
