"""Top-down person crops: boxes -> (center, scale) -> affine matrices -> normalised network inputs.

Everything is batched torch and runs on the device the inputs live on. The matrices follow the official
mmpose 0.x code exactly (``mmpose/apis/inference.py::_box2cs``, ``mmpose/core/post_processing/
post_transforms.py::get_affine_transform`` and ``get_warp_matrix``) and are built in float64.

:func:`crop_and_normalize` reproduces ``cv2.warpAffine(img, M, (W, H), flags=INTER_LINEAR,
borderMode=BORDER_CONSTANT, borderValue=0)`` followed by ``(x / 255 - mean) / std`` with one
``F.grid_sample`` per source image. OpenCV samples output pixel (j, i) at source point ``M^-1 @ (j, i, 1)``
with pixel centres on integer coordinates, and blends missing neighbours outside the image with 0, which is
``grid_sample(mode="bilinear", padding_mode="zeros")``. The only differences are OpenCV's fixed-point
arithmetic (1/32-pixel coordinates, 15-bit weights) and its uint8 rounding: a fraction of a grey level on
smooth images.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from vitpose_fast.reference.heatmap_decode import PIXEL_STD  # mmpose's scale unit: box px / 200

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

TensorLike = Union[torch.Tensor, Sequence[float], float]


def _f64(x: TensorLike, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64, device=device)


def box_xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4+] (x1, y1, x2, y2, ...) -> (x, y, w, h, ...) with the official inclusive ``w = x2 - x1 + 1``."""
    out = boxes.clone()
    out[..., 2:4] = boxes[..., 2:4] - boxes[..., 0:2] + 1
    return out


def box_xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`box_xyxy_to_xywh`: ``x2 = x + w - 1`` (official ``_xywh2xyxy``)."""
    out = boxes.clone()
    out[..., 2:4] = boxes[..., 0:2] + boxes[..., 2:4] - 1
    return out


def box_to_center_scale(
    boxes_xywh: torch.Tensor, aspect_ratio: float, padding: float = 1.25, pixel_std: float = PIXEL_STD
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Official test-time ``_box2cs`` (no jitter), batched.

    boxes_xywh: [N, 4+] (x, y, w, h); aspect_ratio: w / h of the network input (0.75 for 192x256).
    The box is grown to the aspect ratio around its centre, then padded. Returns centers [N, 2] and
    scales [N, 2] (in units of ``pixel_std`` pixels), in the dtype of ``boxes_xywh``.
    """
    x, y, w, h = boxes_xywh[..., 0], boxes_xywh[..., 1], boxes_xywh[..., 2], boxes_xywh[..., 3]
    centers = torch.stack([x + w * 0.5, y + h * 0.5], dim=-1)
    wider = w > aspect_ratio * h
    new_w = torch.where(wider, w, h * aspect_ratio)
    new_h = torch.where(wider, w / aspect_ratio, h)
    scales = torch.stack([new_w, new_h], dim=-1) / pixel_std * padding
    return centers, scales


def get_warp_matrix(
    theta: TensorLike, size_input: TensorLike, size_dst: TensorLike, size_target: TensorLike
) -> torch.Tensor:
    """UDP warp matrix (official ``get_warp_matrix``), batched: source image -> network input.

    theta: rotation in degrees, scalar or [N]; size_input: [N, 2] (the official caller passes ``center * 2``);
    size_dst: [2] or [N, 2] (``image_size - 1``); size_target: [N, 2] (ROI size, ``scale * 200``).
    Returns [N, 2, 3] float64 (forward matrix, as passed to ``cv2.warpAffine``).
    """
    device = size_target.device if isinstance(size_target, torch.Tensor) else torch.device("cpu")
    size_input, size_dst, size_target = (_f64(s, device) for s in (size_input, size_dst, size_target))
    t = torch.deg2rad(_f64(theta, device))
    n = torch.broadcast_shapes(size_input.shape[:-1], size_dst.shape[:-1], size_target.shape[:-1], t.shape)
    t = t.expand(n)
    cos, sin = torch.cos(t), torch.sin(t)
    sx = size_dst[..., 0] / size_target[..., 0]
    sy = size_dst[..., 1] / size_target[..., 1]
    ix, iy = size_input[..., 0], size_input[..., 1]
    tx, ty = size_target[..., 0], size_target[..., 1]
    row0 = torch.stack(
        torch.broadcast_tensors(cos * sx, -sin * sx, sx * (-0.5 * ix * cos + 0.5 * iy * sin + 0.5 * tx)), dim=-1
    )
    row1 = torch.stack(
        torch.broadcast_tensors(sin * sy, cos * sy, sy * (-0.5 * ix * sin - 0.5 * iy * cos + 0.5 * ty)), dim=-1
    )
    return torch.stack([row0, row1], dim=-2)


def get_affine_transform(
    center: torch.Tensor,
    scale: torch.Tensor,
    rot: TensorLike,
    output_size: TensorLike,
    shift: TensorLike = (0.0, 0.0),
    inv: bool = False,
) -> torch.Tensor:
    """Standard (non-UDP) crop matrix (official ``get_affine_transform``), batched.

    center, scale: [N, 2]; rot: degrees, scalar or [N]; output_size: (W, H); shift: fraction of the scale.
    The official code solves ``cv2.getAffineTransform`` on three points that differ by a rotation and the
    isotropic factor ``k = W / (scale_x * 200)`` (only the width sets it), so the matrix is the similarity
    ``[k R(-rot) | dst0 - k R(-rot) src0]`` with ``src0 = center + scale * 200 * shift`` and
    ``dst0 = (W / 2, H / 2)``. Returns [N, 2, 3] float64; ``inv=True`` gives the network-input -> image map.
    """
    center = _f64(center, center.device)
    scale = _f64(scale, center.device)
    out = _f64(output_size, center.device)
    scale_px = scale * PIXEL_STD
    src0 = center + scale_px * _f64(shift, center.device)
    dst0 = (out * 0.5).expand_as(src0)
    a = torch.deg2rad(_f64(rot, center.device)).expand(src0.shape[:-1])
    k = out[0] / scale_px[..., 0]
    if inv:  # image = (1/k) R(rot) dst + (src0 - (1/k) R(rot) dst0)
        k, a, src0, dst0 = 1.0 / k, -a, dst0, src0
    cos, sin = torch.cos(a) * k, torch.sin(a) * k
    # R(-a) = [[cos, sin], [-sin, cos]]
    lin = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    trans = dst0 - (lin @ src0.unsqueeze(-1)).squeeze(-1)
    return torch.cat([lin, trans.unsqueeze(-1)], dim=-1)


def crop_matrices(
    centers: torch.Tensor, scales: torch.Tensor, out_size: Tuple[int, int], udp: bool = True
) -> torch.Tensor:
    """Image -> network-input matrices [N, 2, 3] float64 for ``out_size = (W, H)``, as the official
    ``TopDownAffine`` builds them (rotation 0): UDP ``get_warp_matrix(0, c*2, size-1, s*200)`` or
    ``get_affine_transform(c, s, 0, size)``."""
    size = _f64(out_size, centers.device)
    if udp:
        c, s = _f64(centers, centers.device), _f64(scales, centers.device)
        return get_warp_matrix(0.0, c * 2.0, size - 1.0, s * PIXEL_STD)
    return get_affine_transform(centers, scales, 0.0, size)


def _invert_affine(m: torch.Tensor) -> torch.Tensor:
    """[N, 2, 3] -> [N, 2, 3] inverse affine map."""
    lin_inv = torch.linalg.inv(m[..., :2])
    return torch.cat([lin_inv, -(lin_inv @ m[..., 2:])], dim=-1)


def _grid_thetas(matrices: torch.Tensor, src_hw: torch.Tensor, out_size: Tuple[int, int]) -> torch.Tensor:
    """affine_grid thetas [N, 2, 3] (align_corners=False on both sides) equivalent to warping with ``matrices``.

    theta = to_norm(src) @ M^-1 @ from_norm(out), where from_norm(out) maps normalised output coordinates to
    output pixel indices (pixel j spans x_n = (2j + 1) / W - 1) and to_norm(src) maps source pixels back.
    src_hw: [N, 2] float64 source (H, W) of each person's image.
    """
    w_out, h_out = out_size
    inv = _invert_affine(matrices)  # output pixel -> source pixel
    # pixel = (x_n + 1) * size / 2 - 0.5 on the output side; x_n' = (2 * pixel + 1) / size - 1 on the source side.
    src_w, src_h = src_hw[:, 1:2], src_hw[:, 0:1]
    half_out = torch.tensor([w_out / 2.0, h_out / 2.0], dtype=torch.float64, device=matrices.device)
    lin = inv[..., :2] * half_out  # scale columns by the output half size
    trans = inv[..., 2] + (inv[..., :2] @ (half_out - 0.5).unsqueeze(-1)).squeeze(-1)
    norm = torch.cat([2.0 / src_w, 2.0 / src_h], dim=-1)  # [N, 2]
    lin = lin * norm.unsqueeze(-1)
    trans = (2.0 * trans + 1.0) / torch.cat([src_w, src_h], dim=-1) - 1.0
    return torch.cat([lin, trans.unsqueeze(-1)], dim=-1)


def crop_and_normalize(
    images: Union[torch.Tensor, Sequence[torch.Tensor]],
    image_index: Union[torch.Tensor, Sequence[int]],
    centers: torch.Tensor,
    scales: torch.Tensor,
    out_size: Tuple[int, int],
    udp: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    matrices: Union[torch.Tensor, None] = None,
) -> torch.Tensor:
    """Warp and normalise one crop per person: [N, 3, H, W] float32 on the images' device.

    images: a list of HxWx3 uint8 (or float 0..255) tensors, sizes may differ, or a [B, H, W, 3] tensor;
    image_index: [N] source image of each person; centers, scales: [N, 2]; out_size: (W, H).
    ``matrices`` ([N, 2, 3], image -> crop) overrides the ones derived from centers/scales (e.g. rotations).
    Each image is converted to float once and sampled by one ``grid_sample`` call for all its persons
    (the persons are stacked along the grid's height, so the image is never copied per person).
    """
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images tensor must be [B, H, W, 3], got shape {tuple(images.shape)}")
        images = list(images.unbind(0))
    if len(images) == 0:
        raise ValueError("crop_and_normalize needs at least one image")
    device = images[0].device
    w_out, h_out = int(out_size[0]), int(out_size[1])
    index = torch.as_tensor(image_index, dtype=torch.long).cpu()  # grouping is host-side bookkeeping
    n = index.numel()
    if centers.shape[0] != n or scales.shape[0] != n:
        raise ValueError(f"got {n} image indices but {centers.shape[0]} centers and {scales.shape[0]} scales")
    if n and (index.min() < 0 or index.max() >= len(images)):
        raise ValueError(f"image_index values must lie in [0, {len(images)}), got {index.min()}..{index.max()}")
    out = torch.empty(n, 3, h_out, w_out, dtype=torch.float32, device=device)
    if n == 0:
        return out
    if matrices is None:
        matrices = crop_matrices(centers.to(device), scales.to(device), (w_out, h_out), udp=udp)
    matrices = matrices.to(device=device, dtype=torch.float64)
    src_hw = torch.tensor([tuple(im.shape[:2]) for im in images], dtype=torch.float64)[index].to(device)
    thetas = _grid_thetas(matrices, src_hw, (w_out, h_out)).to(torch.float32)

    order = torch.argsort(index, stable=True)
    counts = torch.bincount(index, minlength=len(images)).tolist()
    contiguous = bool((order == torch.arange(n)).all())
    order_dev = order.to(device)
    start = 0
    for b, count in enumerate(counts):
        if count == 0:
            continue
        image = images[b]
        if image.dim() != 3 or image.shape[-1] != 3:
            raise ValueError(f"image {b} must be HxWx3, got shape {tuple(image.shape)}")
        sel = slice(start, start + count) if contiguous else order_dev[start : start + count]
        src = image.to(device=device, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)
        grid = F.affine_grid(thetas[sel], [count, 3, h_out, w_out], align_corners=False)
        crops = F.grid_sample(
            src, grid.reshape(1, count * h_out, w_out, 2), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out[sel] = crops.view(3, count, h_out, w_out).transpose(0, 1)
        start += count
    # (x / 255 - mean) / std as one multiply-add over the (small) crops.
    mul = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, 3, 1, 1)
    add = torch.tensor([-m / s for m, s in zip(mean, std)], device=device).view(1, 3, 1, 1)
    return torch.addcmul(add, out, mul)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIXEL_STD",
    "box_xyxy_to_xywh",
    "box_xywh_to_xyxy",
    "box_to_center_scale",
    "get_warp_matrix",
    "get_affine_transform",
    "crop_matrices",
    "crop_and_normalize",
]
