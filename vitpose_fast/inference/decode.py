"""Keypoint decoding for inference: :func:`decode_heatmaps` (heatmaps + crop centers/scales -> keypoints in
image coordinates, through :func:`vitpose_fast.ops.decode_heatmaps`: the fused Triton kernel on CUDA with the
``triton`` backend, the batched torch oracle otherwise) and :func:`flip_back` (the flip test's channel swap).

The formulas (official mmpose 0.x ``argmax``, ``default``, ``dark`` and ``udp``) and their helpers live in
:mod:`vitpose_fast.reference.heatmap_decode`, below the kernels that are checked against them; their public
names are importable from here too.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from vitpose_fast import ops
from vitpose_fast.reference.heatmap_decode import (  # noqa: F401  (the users' names for the decoding maths)
    DECODE_METHODS,
    PIXEL_STD,
    ArrayLike,
    gaussian_blur,
    gaussian_kernel1d,
    get_max_preds,
    heatmap_keypoints,
    transform_preds,
)

__all__ = [
    "DECODE_METHODS",
    "decode_heatmaps",
    "heatmap_keypoints",
    "get_max_preds",
    "transform_preds",
    "flip_back",
    "gaussian_kernel1d",
    "gaussian_blur",
]


def decode_heatmaps(heatmaps: torch.Tensor, centers: ArrayLike, scales: ArrayLike, method: str = "udp",
                    kernel: int = 11, backend: str = "torch") -> torch.Tensor:
    """Decode [N, K, h, w] heatmaps to [N, K, 3] float32 (x, y, score) in IMAGE coordinates.

    ``centers``/``scales`` are [N, 2] in the official convention (scale in units of pixel_std = 200). ``udp``
    maps back with (heatmap_size - 1), every other method with heatmap_size. ``backend``: a resolved backend
    (:func:`vitpose_fast.ops.resolve`). Formulas: :mod:`vitpose_fast.reference.heatmap_decode`.
    """
    return ops.decode_heatmaps(heatmaps, centers, scales, method=method, kernel=kernel, backend=backend)


def flip_back(heatmaps: torch.Tensor, flip_pairs: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """Official ``flip_back`` for Gaussian heatmaps: swap each (left, right) channel pair of [N, K, H, W] maps
    predicted on a horizontally flipped input and mirror the width. No shift (ViTPose/UDP: shift_heatmap=False)."""
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    K = heatmaps.shape[1]
    perm = list(range(K))
    for left, right in flip_pairs:
        if not (0 <= left < K and 0 <= right < K):
            raise ValueError(f"flip pair ({left}, {right}) is out of range for {K} keypoints")
        perm[left], perm[right] = right, left
    index = torch.tensor(perm, dtype=torch.int64, device=heatmaps.device)
    return heatmaps.index_select(1, index).flip(3)
