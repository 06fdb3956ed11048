"""Heatmap decoding: the batched PyTorch oracle with the kernel's signature.

heatmaps [N, K, H, W] (any float dtype), centers/scales [N, 2] (official convention: scale in units of 200 px)
-> [N, K, 3] float32 (x, y, score) in image coordinates. The formulas (official mmpose 0.x ``argmax``,
``default``, ``dark`` and ``udp``) live in :mod:`vitpose_fast.inference.decode`; this module only gives them the op's name.
"""

from __future__ import annotations

import torch

from vitpose_fast.inference.decode import ArrayLike, decode_heatmaps


def decode_heatmaps_ref(
    heatmaps: torch.Tensor, centers: ArrayLike, scales: ArrayLike, method: str = "udp", kernel: int = 11
) -> torch.Tensor:
    """The official decoding, batched in torch (:func:`vitpose_fast.inference.decode.decode_heatmaps`)."""
    return decode_heatmaps(heatmaps, centers, scales, method=method, kernel=kernel)


# The batched torch decoding is already the fast composition: one argmax, one separable blur of whole maps and
# a handful of gathers, so the ``torch`` backend runs the oracle itself.
decode_heatmaps_torch = decode_heatmaps_ref
