"""What every kernel module shares at run time: whether kernels run in the Triton interpreter, the autotune
switch and its one approach, and the launch settings of the row-wise kernels.

Autotuning (``VITPOSE_FAST_AUTOTUNE=1``, never in the interpreter): a launcher hands :func:`tuned` its default
config, its candidate configs and a function that runs one; on the first call per key each candidate is timed
with ``triton.testing.do_bench`` and the fastest is kept for the process. Candidates that do not fit the device
(``OutOfResources``) are skipped. Without the switch the default runs: every default is the config the kernel
report (``python -m vitpose_fast.kernels.report``) checks for spills and the tensor-core path.

Both switches are read at call time, so setting them in a running process takes effect. This module imports
triton only where it needs it, so :mod:`vitpose_fast.ops` asks it where kernels can run on any install.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Dict, Hashable, Optional, Sequence, Tuple, TypeVar

import torch

AUTOTUNE_ENV = "VITPOSE_FAST_AUTOTUNE"
C = TypeVar("C")
_TUNED: Dict[Hashable, object] = {}


def interpreting() -> bool:
    """Kernels run in the Triton interpreter (``TRITON_INTERPRET=1``: on CPU tensors, as numpy)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def on_device(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can run on these tensors: CUDA tensors, or any under the interpreter."""
    return interpreting() or all(t.is_cuda for t in tensors)


def autotune_enabled() -> bool:
    return os.environ.get(AUTOTUNE_ENV) == "1" and not interpreting()


def tuned(key: Hashable, default: C, candidates: Sequence[C], run: Callable[[C], object]) -> C:
    """The config to launch: ``default``, or with autotuning on, the fastest of ``candidates`` for ``key``
    (timed once per process by running ``run(config)``)."""
    if not autotune_enabled():
        return default
    if key not in _TUNED:
        import triton
        from triton.testing import do_bench

        def ms(config) -> float:
            try:
                return do_bench(lambda: run(config))
            except triton.runtime.errors.OutOfResources:
                return float("inf")

        _TUNED[key] = min(candidates, key=ms)
    return _TUNED[key]  # type: ignore[return-value]


def row_tile(n_cols: int, elements: int, max_block_n: Optional[int] = None) -> Tuple[int, int]:
    """(BLOCK_M, BLOCK_N) for a kernel that keeps whole rows of ``n_cols`` in a tile of about ``elements``
    values (rows past ``max_block_n`` columns loop over column blocks)."""
    import triton

    block_n = triton.next_power_of_2(n_cols)
    if max_block_n is not None:
        block_n = min(block_n, max_block_n)
    return max(1, elements // block_n), block_n


def row_elements(gpu: int) -> int:
    """Values per program of the row-wise kernels: ``gpu`` on the GPU, 16K under the interpreter (fewer, larger
    numpy steps)."""
    return 16384 if interpreting() else gpu


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def persistent_programs(device_index: int, per_multiprocessor: int = 1) -> int:
    """Programs of a persistent (grid-stride) launch: ``per_multiprocessor`` per SM on the GPU, 4 in the
    interpreter."""
    if interpreting() or not torch.cuda.is_available():
        return 4
    return per_multiprocessor * _multiprocessors(device_index)
