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

import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch

from vitpose_fast.benchmarking.common import fused_op_impls, run_micro, time_impls

from vitpose_fast.reference.bias_gelu import bias_gelu_ref

# name -> (tokens per image, 4C)
CASES: Dict[str, Tuple[int, int]] = {"vitpose_b_256x192": (192, 3072), "vitpose_h_576x432": (972, 5120)}
CPU_CASE = ("tiny_cpu", (37, 384))


def bench_case(name: str, shape: Tuple[int, int], batch: int, dtype: torch.dtype, device: torch.device,
               modes: List[str], rep_ms: float) -> List[Dict[str, object]]:
    n, hidden = shape
    a = torch.randn(batch, n, hidden, device=device, dtype=dtype, requires_grad=True)
    bias = torch.randn(hidden, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn_like(a)
    elems = a.numel() * a.element_size()

    def step(fn: Callable, mode: str) -> Callable[[], None]:
        if mode == "fwd":
            def run() -> None:
                with torch.no_grad():
                    fn(a, bias)
        else:
            def run() -> None:
                fn(a, bias).backward(dy)
        return run

    impls = fused_op_impls(device, bias_gelu_ref, "bias_gelu")
    return time_impls(name, batch, modes, impls, step, lambda mode: elems * (2 if mode == "fwd" else 5),
                      device, rep_ms)


def main(argv: Optional[List[str]] = None) -> int:
    return run_micro(argv, __doc__.split("\n\n")[0], "bias_gelu", CASES, CPU_CASE, bench_case)


if __name__ == "__main__":
    sys.exit(main())
