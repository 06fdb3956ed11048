"""Official top-down Gaussian heatmap targets (``TopDownGenerateTarget`` in mmpose 0.x
``mmpose/datasets/pipelines/top_down_transform.py``), vectorised over keypoints in numpy for DataLoader workers.

Both encodings paste an unnormalised Gaussian (peak 1 at its centre) of std ``sigma`` heatmap pixels into a
window of half-size ``tmp = 3 * sigma`` around an integer centre ``mu = int(joint / feat_stride + 0.5)`` (Python
``int``: truncation toward zero, kept for parity near the top/left border). A keypoint whose window
[mu - tmp, mu + tmp + 1) lies entirely outside the heatmap gets weight 0 and an all-zero map; otherwise the
weight is its visibility and the map is filled only when visibility > 0.5.

- UDP (``encoding='UDP'``, ViTPose's COCO/MPII configs): feat_stride = (image_size - 1) / (heatmap_size - 1) and
  the Gaussian is centred at the SUB-PIXEL point joint / feat_stride (window still around the integer ``mu``).
- MSRA (``encoding='MSRA'``, ``unbiased_encoding=False``; ViTPose+ AIC/AP-10K/APT-36K/WholeBody):
  feat_stride = image_size / heatmap_size and the Gaussian is centred at the integer ``mu``.

Sizes are (W, H). Joints are in input-image pixels ([K, 2] or [K, 3]; only x, y are read); visibility is [K],
[K, 1] or [K, 3] (only the first column is read, as officially). Targets are float32 [K, h, w], weights
float32 [K, 1]. ``use_different_joint_weights`` is off in every ViTPose config, so joint weights are not applied.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ["udp_gaussian_target", "msra_gaussian_target"]


def _prepare(joints: np.ndarray, joints_vis: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    joints = np.asarray(joints, dtype=np.float64)
    vis = np.asarray(joints_vis, dtype=np.float32)
    if joints.ndim != 2 or joints.shape[1] < 2:
        raise ValueError(f"joints must be [K, 2] or [K, 3], got shape {joints.shape}")
    vis = vis.reshape(len(vis), -1)[:, 0] if vis.ndim > 0 else vis
    if vis.shape != (joints.shape[0],):
        raise ValueError(f"joints_vis must have K={joints.shape[0]} rows, got shape {np.shape(joints_vis)}")
    return joints[:, :2], vis


def _paste(
    mu_int: np.ndarray, centre: np.ndarray, vis: np.ndarray, heatmap_size: Sequence[int], sigma: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Fill the windowed Gaussians. ``mu_int`` [K, 2] int window centres, ``centre`` [K, 2] Gaussian centres."""
    W, H = int(heatmap_size[0]), int(heatmap_size[1])
    tmp = sigma * 3
    size = 2 * tmp + 1
    glen = int(np.ceil(size))  # len(np.arange(0, size)) of the official Gaussian patch
    ul = np.trunc(mu_int - tmp).astype(np.int64)  # [K, 2]
    br = np.trunc(mu_int + tmp + 1).astype(np.int64)
    outside = (ul[:, 0] >= W) | (ul[:, 1] >= H) | (br[:, 0] < 0) | (br[:, 1] < 0)
    weight = np.where(outside, 0.0, vis).astype(np.float32)[:, None]

    # Patch coordinate i = pixel - ul and patch centre size // 2 + (centre - mu_int), as the official code.
    x0 = size // 2 + (centre - mu_int)  # [K, 2]
    px = np.arange(W)[None, :] - ul[:, :1]  # [K, W]
    py = np.arange(H)[None, :] - ul[:, 1:]  # [K, H]
    in_x = (px >= 0) & (px < glen) & (np.arange(W)[None, :] < br[:, :1])
    in_y = (py >= 0) & (py < glen) & (np.arange(H)[None, :] < br[:, 1:])
    gx = np.where(in_x, np.exp(-((px - x0[:, :1]) ** 2) / (2 * sigma**2)), 0.0)
    gy = np.where(in_y, np.exp(-((py - x0[:, 1:]) ** 2) / (2 * sigma**2)), 0.0)
    target = gy[:, :, None] * gx[:, None, :]  # the 2-D Gaussian is separable: exp(a + b) = exp(a) exp(b)
    target *= (weight[:, 0] > 0.5)[:, None, None]
    return target.astype(np.float32), weight


def udp_gaussian_target(
    joints: np.ndarray,
    joints_vis: np.ndarray,
    image_size: Sequence[int],
    heatmap_size: Sequence[int],
    sigma: float = 2,
) -> Tuple[np.ndarray, np.ndarray]:
    """Official UDP GaussianHeatmap target: (target [K, h, w] float32, target_weight [K, 1] float32)."""
    joints, vis = _prepare(joints, joints_vis)
    if min(heatmap_size) < 2:
        raise ValueError(f"UDP targets need heatmap_size >= 2 in both axes (W, H), got {tuple(heatmap_size)}")
    stride = (np.asarray(image_size, np.float64) - 1.0) / (np.asarray(heatmap_size, np.float64) - 1.0)
    centre = joints / stride
    mu_int = np.trunc(centre + 0.5)
    return _paste(mu_int, centre, vis, heatmap_size, sigma)


def msra_gaussian_target(
    joints: np.ndarray,
    joints_vis: np.ndarray,
    image_size: Sequence[int],
    heatmap_size: Sequence[int],
    sigma: float = 2,
) -> Tuple[np.ndarray, np.ndarray]:
    """Official MSRA GaussianHeatmap target (integer centre): (target [K, h, w], target_weight [K, 1])."""
    joints, vis = _prepare(joints, joints_vis)
    stride = np.asarray(image_size, np.float64) / np.asarray(heatmap_size, np.float64)
    mu_int = np.trunc(joints / stride + 0.5)
    return _paste(mu_int, mu_int, vis, heatmap_size, sigma)
