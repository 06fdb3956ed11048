"""Residual add + LayerNorm (pre-norm ViT): ``s = x + (branch + bias); h = layer_norm(s)``, returning (s, h).

``x`` [B, ..., C] is the residual stream, ``branch`` the attention / MLP output before its Linear bias, of x's
shape or [1, ..., C] (broadcast over the batch, as the position embedding is), ``bias`` [C] that bias (or None). s comes back in torch's promoted dtype of x and branch; h in the
same dtype. This is the oracle of :mod:`vitpose_fast.kernels.residual_layer_norm` and the ``torch`` backend.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def residual_layer_norm_ref(
    x: torch.Tensor,
    branch: torch.Tensor,
    bias: Optional[torch.Tensor],
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    if bias is not None:
        branch = branch + bias.to(branch.dtype)
    s = x + branch
    h = F.layer_norm(s, (s.shape[-1],), weight, ln_bias, eps)
    return s, h.to(s.dtype)
