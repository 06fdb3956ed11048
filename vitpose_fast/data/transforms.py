"""The official top-down training transforms (mmpose 0.x ``mmpose/datasets/pipelines/top_down_transform.py``),
one function per pipeline step, in numpy/OpenCV for DataLoader workers.

Every random draw comes from an explicit ``np.random.Generator`` (the official code draws from the global
``np.random``), so a sample's augmentation is a pure function of (seed, epoch, index): identical for any number
of workers or ranks and across a resumed run. The draws and their order are the official ones:

1. :func:`random_flip`: ``rand() <= 0.5``: mirror the image, ``x -> W - 1 - x``, swap the flip pairs, zero the
   joints that are not labelled, ``center_x -> W - center_x - 1``.
2. :func:`half_body`: if more than 8 joints are labelled and ``rand() < 0.3``: the box of the upper-body joints
   when ``randn() < 0.5`` (a normal draw, so ~69%) and more than 2 are labelled, else of the lower body (if more
   than 2), else upper; fixed to the input aspect ratio and scaled x1.5.
3. :func:`random_scale_rotation`: ``s *= clip(randn * 0.5 + 1, 0.5, 1.5)``; then ``r = clip(randn * 40, -80,
   80)`` if ``rand() <= 0.6`` else 0 (the ``rand`` is drawn before the rotation's ``randn``).
4. :func:`affine_matrix` + :func:`warp`: UDP ``get_warp_matrix(r, 2c, image_size - 1, 200 s)`` (float32, as
   official) and ``cv2.warpAffine(INTER_LINEAR, constant 0 border)``; all joints are mapped (UDP) or only the
   labelled ones (non-UDP ``get_affine_transform``).
5. :func:`to_normalized_tensor`: HWC uint8 RGB -> CHW float32 ``(x / 255 - mean) / std``.

Shapes: images HxWx3 uint8 RGB; joints [K, 3] float32 (x, y, 0); visibility [K, 3] float32 (v, v, 0) with
v in {0, 1} (official ``joints_3d_visible``); center, scale [2] float32 (scale in units of 200 pixels);
``image_size`` is (W, H) of the network input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from vitpose_fast.data.crop import IMAGENET_MEAN, IMAGENET_STD, PIXEL_STD, box_to_center_scale, get_affine_transform

__all__ = [
    "AugmentConfig",
    "xywh_to_center_scale",
    "clean_bbox",
    "fliplr_joints",
    "random_flip",
    "half_body",
    "random_scale_rotation",
    "udp_warp_matrix",
    "affine_matrix",
    "flip_matrix",
    "warp",
    "transform_joints",
    "to_normalized_tensor",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Official ViTPose COCO train augmentation (``train_pipeline`` of ``ViTPose_*_coco_256x192.py``)."""

    flip_prob: float = 0.5
    num_joints_half_body: int = 8
    prob_half_body: float = 0.3
    half_body_scale: float = 1.5
    scale_factor: float = 0.5
    rot_factor: float = 40.0
    rot_prob: float = 0.6


def clean_bbox(bbox: Sequence[float], width: int, height: int) -> Optional[Tuple[float, float, float, float]]:
    """Official GT-box sanitising: x2 = min(W - 1, x1 + max(0, w - 1)); None when the box is empty.

    Returns (x1, y1, x2 - x1, y2 - y1), the box the dataset turns into (center, scale)."""
    x, y, w, h = bbox[:4]
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 > x1 and y2 > y1:
        return x1, y1, x2 - x1, y2 - y1
    return None


def xywh_to_center_scale(
    x: float, y: float, w: float, h: float, aspect_ratio: float, padding: float = 1.25,
    rng: Optional[np.random.Generator] = None, jitter_prob: float = 0.3,
) -> Tuple[np.ndarray, np.ndarray]:
    """Official ``_xywh2cs``: center [2] and scale [2] float32. With ``rng`` (training db), the center is jittered
    by ``0.4 * (rand(2) - 0.5) * [w, h]`` with probability ``jitter_prob``, before the aspect fix."""
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if rng is not None and rng.random() < jitter_prob:
        center += (0.4 * (rng.random(2) - 0.5) * [w, h]).astype(np.float32)
    _, scale = box_to_center_scale(torch.tensor([[x, y, w, h]], dtype=torch.float64), aspect_ratio, padding)
    return center, scale[0].numpy().astype(np.float32)


def fliplr_joints(
    joints: np.ndarray, visible: np.ndarray, img_width: int, flip_pairs: Sequence[Tuple[int, int]]
) -> Tuple[np.ndarray, np.ndarray]:
    """Official ``fliplr_joints``: swap pairs, x -> W - 1 - x, then zero the unlabelled joints."""
    joints_f, visible_f = joints.copy(), visible.copy()
    for left, right in flip_pairs:
        joints_f[left], joints_f[right] = joints[right], joints[left]
        visible_f[left], visible_f[right] = visible[right], visible[left]
    joints_f[:, 0] = img_width - 1 - joints_f[:, 0]
    return joints_f * visible_f, visible_f


def random_flip(
    rng: np.random.Generator, joints: np.ndarray, visible: np.ndarray, center: np.ndarray, img_width: int,
    flip_pairs: Sequence[Tuple[int, int]], prob: float = 0.5,
) -> Tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """``TopDownRandomFlip`` on the annotations: (flipped, joints, visible, center). The caller mirrors the
    image (or composes :func:`flip_matrix` into the crop)."""
    if rng.random() <= prob:
        joints, visible = fliplr_joints(joints, visible, img_width, flip_pairs)
        center = center.copy()
        center[0] = img_width - center[0] - 1
        return True, joints, visible, center
    return False, joints, visible, center


def half_body(
    rng: np.random.Generator, joints: np.ndarray, visible: np.ndarray, upper_body_ids: Sequence[int],
    aspect_ratio: float, cfg: AugmentConfig = AugmentConfig(),
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``TopDownHalfBodyTransform``: a new (center, scale) or None (transform not applied)."""
    if not (np.sum(visible[:, 0]) > cfg.num_joints_half_body and rng.random() < cfg.prob_half_body):
        return None
    upper_set = set(upper_body_ids)
    labelled = [j for j in range(len(joints)) if visible[j, 0] > 0]
    upper = [joints[j] for j in labelled if j in upper_set]
    lower = [joints[j] for j in labelled if j not in upper_set]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        selected = upper
    elif len(lower) > 2:
        selected = lower
    else:
        selected = upper
    if len(selected) < 2:
        return None
    sel = np.array(selected, dtype=np.float32)
    center = sel.mean(axis=0)[:2]
    w, h = sel.max(axis=0)[:2] - sel.min(axis=0)[:2]
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * cfg.half_body_scale
    return center, scale


def random_scale_rotation(
    rng: np.random.Generator, scale: np.ndarray, cfg: AugmentConfig = AugmentConfig()
) -> Tuple[np.ndarray, float]:
    """``TopDownGetRandomScaleRotation``: (scale * clip(randn * sf + 1, 1 - sf, 1 + sf), rotation degrees)."""
    sf, rf = cfg.scale_factor, cfg.rot_factor
    scale = scale * np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf)
    rot = float(np.clip(rng.standard_normal() * rf, -rf * 2, rf * 2)) if rng.random() <= cfg.rot_prob else 0.0
    return scale.astype(np.float32), rot


def udp_warp_matrix(theta: float, size_input: np.ndarray, size_dst: np.ndarray, size_target: np.ndarray) -> np.ndarray:
    """Official UDP ``get_warp_matrix`` (float32 [2, 3], image -> crop); the caller passes (r, 2c, size - 1, 200 s)."""
    theta = np.deg2rad(theta)
    m = np.zeros((2, 3), dtype=np.float32)
    sx = size_dst[0] / size_target[0]
    sy = size_dst[1] / size_target[1]
    m[0, 0] = np.cos(theta) * sx
    m[0, 1] = -np.sin(theta) * sx
    m[0, 2] = sx * (-0.5 * size_input[0] * np.cos(theta) + 0.5 * size_input[1] * np.sin(theta)
                    + 0.5 * size_target[0])
    m[1, 0] = np.sin(theta) * sy
    m[1, 1] = np.cos(theta) * sy
    m[1, 2] = sy * (-0.5 * size_input[0] * np.sin(theta) - 0.5 * size_input[1] * np.cos(theta)
                    + 0.5 * size_target[1])
    return m


def affine_matrix(center: np.ndarray, scale: np.ndarray, rot: float, image_size: Sequence[int], udp: bool) -> np.ndarray:
    """The ``TopDownAffine`` matrix [2, 3] (image -> network input of ``image_size`` = (W, H))."""
    size = np.asarray(image_size, dtype=np.float32)
    if udp:
        return udp_warp_matrix(rot, center * 2.0, size - 1.0, scale * PIXEL_STD)
    m = get_affine_transform(torch.as_tensor(center)[None], torch.as_tensor(scale)[None], rot, tuple(image_size))
    return m[0].numpy().astype(np.float32)


def flip_matrix(img_width: int) -> np.ndarray:
    """[3, 3] mirror x -> W - 1 - x: ``M @ flip_matrix(W)`` samples the unflipped image as ``M`` the flipped one."""
    return np.array([[-1.0, 0.0, img_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def warp(img: np.ndarray, matrix: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
    """``cv2.warpAffine(img, matrix, (W, H), flags=INTER_LINEAR)`` (constant-0 border), HxWx3 uint8."""
    return cv2.warpAffine(img, matrix, (int(image_size[0]), int(image_size[1])), flags=cv2.INTER_LINEAR)


def transform_joints(joints: np.ndarray, visible: np.ndarray, matrix: np.ndarray, udp: bool) -> np.ndarray:
    """Map joints [K, 3] through ``matrix``: all of them under UDP (``warp_affine_joints``), only labelled ones
    otherwise (official ``affine_transform`` loop)."""
    out = joints.copy()
    xy1 = np.concatenate([joints[:, :2], np.ones((len(joints), 1), joints.dtype)], axis=1)
    mapped = xy1 @ matrix.T
    if udp:
        out[:, :2] = mapped
    else:
        keep = visible[:, 0] > 0.0
        out[keep, :2] = mapped[keep]
    return out


def to_normalized_tensor(
    img: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """``ToTensor`` + ``NormalizeTensor``: HxWx3 uint8 -> [3, H, W] float32."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(m).div_(s)
