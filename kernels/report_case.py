"""What a kernel module's ``report_cases()`` returns to the kernel report (:mod:`vitpose_fast.kernels.report`):
kept apart from the report so that the kernel modules and the report do not import each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence

import torch


@dataclass
class Case:
    """One report row before compiling: ``launch()`` runs the module's launcher on meta tensors; each jit kernel
    it launches (``kernels``: attribute name in ``module`` -> row label) is recorded and compiled.

    ``default``: the config the code picks without autotuning; ``tensor_core``: the kernel is expected to use the
    tensor cores (checked by the CI test: it must then emit wgmma)."""

    module: str
    kernels: Dict[str, object]  # attribute -> label, or a callable(launch kwargs) -> label
    launch: Callable[[], object]
    spec: str
    head_dim: int = 0
    config: str = "default"
    default: bool = True
    rel_pos: bool = False
    tensor_core: bool = False
    tags: Sequence[str] = ()


def meta_tensor(*shape: int, dtype=torch.bfloat16) -> torch.Tensor:
    """A data-free tensor for a case's launcher call (real shapes and strides)."""
    return torch.empty(*shape, dtype=dtype, device="meta")
