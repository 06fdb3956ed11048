"""Bias + exact (erf) GELU on the fc1 output: ``gelu(a + bias)``. ``a`` [..., H] is the fc1 GEMM without its
bias, ``bias`` [H]; the result is in a's dtype. The oracle of :mod:`vitpose_fast.kernels.bias_gelu` and the
``torch`` backend."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bias_gelu_ref(a: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(a + bias.to(a.dtype))
