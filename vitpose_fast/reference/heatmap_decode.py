"""Heatmap decoding, the oracle: batched torch decoding of top-down keypoint heatmaps, exactly as official
ViTPose (mmpose 0.x). The op :func:`vitpose_fast.ops.decode_heatmaps` runs it on the ``reference`` and ``torch``
backends (``decode_heatmaps_ref`` / ``decode_heatmaps_torch``: the batched torch decoding is already the fast
composition, one argmax, one separable blur of whole maps and a handful of gathers) and checks the Triton
kernel against it; :mod:`vitpose_fast.inference.decode` is the users' entry point.

Official sources: ``mmpose/core/evaluation/top_down_eval.py`` (``_get_max_preds``, ``keypoints_from_heatmaps``,
``post_dark_udp``, ``_taylor``, ``_gaussian_blur``) and ``mmpose/core/post_processing/post_transforms.py``
(``transform_preds``; ``flip_back`` is in :mod:`vitpose_fast.inference.decode`). Everything here is batched
over persons and keypoints (no Python loops), runs on the heatmaps' device, and does all index arithmetic in
int64 (a float32 flat index is wrong past 2**24).

Methods (``DECODE_METHODS``); the score is always the raw heatmap maximum, and every method starts from the
integer argmax (x = idx % W, y = idx // W, first maximum on ties), which is set to (-1, -1) where the maximum is
<= 0 (the official ``_get_max_preds`` rule):

- ``"argmax"``: the integer argmax only (``post_process=None``), non-UDP transform back.
- ``"default"``: official ``post_process='default'``: x += 0.25 * sign(H[y, x+1] - H[y, x-1]) and
  y += 0.25 * sign(H[y+1, x] - H[y-1, x]) on the raw map, only where 1 < x < W-1 and 1 < y < H-1 (strict, so
  row/column 1 are never shifted), non-UDP transform back.
- ``"dark"``: official ``post_process='unbiased'`` (DARK): blur each map with a ``kernel`` x ``kernel`` Gaussian
  over a ZERO border (``_gaussian_blur`` pads ``(kernel-1)//2`` zeros before ``cv2.GaussianBlur``, so cv2's own
  border never matters), rescale the blurred map to the original map's maximum, L = log(max(map, 1e-10)), then
  one Newton step (``_taylor``) where 1 < x < W-2 and 1 < y < H-2::

      dx  = (L[y, x+1] - L[y, x-1]) / 2          dy  = (L[y+1, x] - L[y-1, x]) / 2
      dxx = (L[y, x+2] - 2 L[y, x] + L[y, x-2]) / 4
      dyy = (L[y+2, x] - 2 L[y, x] + L[y-2, x]) / 4
      dxy = (L[y+1, x+1] - L[y-1, x+1] - L[y+1, x-1] + L[y-1, x-1]) / 4
      (x, y) -= [[dxx, dxy], [dxy, dyy]]^-1 (dx, dy)      only if dxx*dyy - dxy**2 != 0 (float32)

  then the non-UDP transform back.
- ``"udp"`` (ViTPose's test config: ``use_udp=True``; ``post_process`` is ignored there): ``post_dark_udp``:
  ``cv2.GaussianBlur`` of each whole map (``kernel`` x ``kernel``, sigma from OpenCV's rule, BORDER_REFLECT_101),
  clip to [0.001, 50], L = log(map), then with L edge-padded by one pixel (read here as clamped indices)::

      dx  = (L[y, x+1] - L[y, x-1]) / 2          dy  = (L[y+1, x] - L[y-1, x]) / 2
      dxx = L[y, x+1] - 2 L[y, x] + L[y, x-1]    dyy = L[y+1, x] - 2 L[y, x] + L[y-1, x]
      dxy = (L[y+1, x+1] - L[y, x+1] - L[y+1, x] + 2 L[y, x] - L[y, x-1] - L[y-1, x] + L[y-1, x-1]) / 2
      (x, y) -= ([[dxx, dxy], [dxy, dyy]] + eps_f32 * I)^-1 (dx, dy)       (eps_f32 = 2**-23)

  The stencil values are float32 (as official); the 2x2 solve is float64, as numpy promotes it officially.
  Then the UDP transform back.

Gaussian blur: OpenCV's ``getGaussianKernel(kernel, 0)``: sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8 (2.0 for
kernel 11), taps exp(-i**2 / (2 sigma**2)) normalised in float64 and rounded to float32, except kernel <= 7 which
uses OpenCV's fixed binomial-like tables; applied separably (rows, then columns) in float32. The Hugging Face
transformers port differs: its ``post_dark_unbiased_data_processing`` blurs with ``scipy.ndimage.gaussian_filter``
at sigma 0.8 instead of OpenCV's kernel-11 sigma 2.0; we follow the official code.

Transform back (``transform_preds``; center (cx, cy) and scale (sx, sy) in units of pixel_std = 200):
x_img = x * (sx * 200) / D + cx - sx * 200 / 2 (same for y with sy, H), with D = W - 1 for UDP and D = W otherwise.

Deliberate deviations, limited to degenerate maps (the returned score is <= 0 or the official code errors):
- udp: a keypoint whose map maximum is <= 0 stays at heatmap (-1, -1). Officially its stencil reads through a
  flattened-array index that can land in the neighbouring person's/keypoint's padded map (or wrap to the end of
  the batch); we clamp to its own map, which gives the official result whenever those neighbours are flat there.
- udp: an exactly singular ``H + eps I`` (numpy raises ``LinAlgError``) leaves the keypoint unrefined.
- dark: a blurred map whose maximum is 0 is not rescaled (officially 0/0 = NaN, never read since its keypoint
  is at -1 and skips the Taylor step).
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DECODE_METHODS",
    "decode_heatmaps",
    "decode_heatmaps_ref",
    "decode_heatmaps_torch",
    "heatmap_keypoints",
    "get_max_preds",
    "transform_preds",
    "gaussian_kernel1d",
    "gaussian_blur",
]

DECODE_METHODS: Tuple[str, ...] = ("argmax", "default", "dark", "udp")
PIXEL_STD = 200.0
# numpy's float32 machine epsilon, added to the Hessian diagonal by post_dark_udp.
_EPS_F32 = float(np.finfo(np.float32).eps)
# OpenCV's getGaussianKernel uses these fixed tables for odd ksize <= 7 when sigma <= 0.
_CV_SMALL_GAUSSIAN = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[Sequence[float]]]


def gaussian_kernel1d(kernel: int) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel(kernel, sigma=0, CV_32F)`` as a float32 [kernel] tensor (see module doc)."""
    if kernel < 1 or kernel % 2 != 1:
        raise ValueError(f"blur kernel size must be a positive odd int, got {kernel}")
    if kernel in _CV_SMALL_GAUSSIAN:
        return torch.tensor(_CV_SMALL_GAUSSIAN[kernel], dtype=torch.float32)
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    x = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    taps = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (taps / taps.sum()).to(torch.float32)


def _reflect101_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source indices of a length-``n`` axis padded by ``pad`` on both sides with BORDER_REFLECT_101 (any pad,
    reflecting repeatedly like OpenCV's ``borderInterpolate``; a length-1 axis repeats its only element)."""
    p = torch.arange(-pad, n + pad, device=device, dtype=torch.int64)
    if n == 1:
        return torch.zeros_like(p)
    period = 2 * (n - 1)
    p = torch.remainder(p, period)
    return torch.where(p >= n, period - p, p)


def gaussian_blur(heatmaps: torch.Tensor, kernel: int = 11, border: str = "reflect101") -> torch.Tensor:
    """Separable OpenCV-rule Gaussian blur of every [H, W] map of a [..., H, W] float tensor (float32 result).

    ``border="reflect101"`` is ``cv2.GaussianBlur``'s default border (used by ``post_dark_udp``);
    ``border="zero"`` is the zero-padded blur inside the official ``_gaussian_blur`` (before its max rescale).
    Every output pixel sums its taps in the same order (rows, then columns, as OpenCV), so a constant map
    stays exactly constant, as with cv2: its log-derivatives are exactly 0 and udp/dark leave it unrefined.
    """
    if border not in ("reflect101", "zero"):
        raise ValueError(f"border must be 'reflect101' or 'zero', got {border!r}")
    shape = heatmaps.shape
    H, W = shape[-2], shape[-1]
    x = heatmaps.reshape(-1, 1, H, W).to(torch.float32)
    taps = gaussian_kernel1d(kernel).to(x.device)
    r = kernel // 2
    if border == "zero":
        x = F.pad(x, (r, r, r, r))
    else:
        x = x.index_select(3, _reflect101_index(W, r, x.device)).index_select(2, _reflect101_index(H, r, x.device))
    # cuDNN would run these in TF32 on Ampere+ (~1e-3 relative), which moves the Newton step; keep fp32.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        x = F.conv2d(x, taps.view(1, 1, 1, kernel))
        x = F.conv2d(x, taps.view(1, 1, kernel, 1))
    return x.reshape(shape)


def get_max_preds(heatmaps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Official ``_get_max_preds``, batched.

    Args:
        heatmaps: [N, K, H, W] tensor.
    Returns:
        coords: [N, K, 2] float32 (x, y) of each map's first maximum, (-1, -1) where that maximum is <= 0.
        maxvals: [N, K] float32 raw maxima (the keypoint scores).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    idx, maxvals, _ = _argmax(heatmaps.to(torch.float32))
    return _coords_from_index(idx, heatmaps.shape[-1], maxvals), maxvals


def _argmax(heatmaps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int64 flat argmax per map ([N, K]), the maxima ([N, K]) and the maps flattened to [N, K, H*W]."""
    N, K, H, W = heatmaps.shape
    flat = heatmaps.reshape(N, K, H * W)
    maxvals, idx = flat.max(dim=2)  # first maximum on ties, like np.argmax
    return idx.to(torch.int64), maxvals, flat


def _coords_from_index(idx: torch.Tensor, W: int, maxvals: torch.Tensor) -> torch.Tensor:
    xy = torch.stack((idx % W, torch.div(idx, W, rounding_mode="floor")), dim=-1).to(torch.float32)
    return torch.where((maxvals > 0).unsqueeze(-1), xy, torch.full_like(xy, -1.0))


def _gather(flat: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, W: int) -> torch.Tensor:
    """flat[n, k, iy * W + ix] for int64 [N, K] indices (already inside the map)."""
    return flat.gather(2, (iy * W + ix).unsqueeze(-1)).squeeze(-1)


def _refine_default(flat: torch.Tensor, idx: torch.Tensor, valid_max: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Quarter-pixel shift toward the higher neighbour; returns the [N, K, 2] offset (0 where not applied)."""
    x, y = idx % W, torch.div(idx, W, rounding_mode="floor")
    ok = valid_max & (x > 1) & (x < W - 1) & (y > 1) & (y < H - 1)
    # Clamp only to keep the reads inside the map where ``ok`` is False; those offsets are discarded.
    xm, xp = (x - 1).clamp(0, W - 1), (x + 1).clamp(0, W - 1)
    ym, yp = (y - 1).clamp(0, H - 1), (y + 1).clamp(0, H - 1)
    diff = torch.stack(
        (_gather(flat, xp, y, W) - _gather(flat, xm, y, W), _gather(flat, x, yp, W) - _gather(flat, x, ym, W)), -1
    )
    return torch.where(ok.unsqueeze(-1), torch.sign(diff) * 0.25, torch.zeros_like(diff))


def _refine_dark(heatmaps: torch.Tensor, idx: torch.Tensor, valid_max: torch.Tensor, kernel: int) -> torch.Tensor:
    """Official 'unbiased' (DARK) refinement; returns the [N, K, 2] offset (0 where not applied)."""
    N, K, H, W = heatmaps.shape
    origin_max = heatmaps.reshape(N, K, -1).amax(dim=2)
    blurred = gaussian_blur(heatmaps, kernel, border="zero")
    blurred_max = blurred.reshape(N, K, -1).amax(dim=2)
    factor = origin_max / torch.where(blurred_max == 0, torch.ones_like(blurred_max), blurred_max)
    blurred = blurred * factor[..., None, None]
    logmap = torch.log(torch.clamp_min(blurred, 1e-10)).reshape(N, K, H * W)

    x, y = idx % W, torch.div(idx, W, rounding_mode="floor")
    ok = valid_max & (x > 1) & (x < W - 2) & (y > 1) & (y < H - 2)

    def at(dx: int, dy: int) -> torch.Tensor:
        return _gather(logmap, (x + dx).clamp(0, W - 1), (y + dy).clamp(0, H - 1), W)

    c = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = ok & (det != 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    off = torch.stack((-(dyy * dx - dxy * dy) / safe_det, -(dxx * dy - dxy * dx) / safe_det), dim=-1)
    return torch.where(ok.unsqueeze(-1), off, torch.zeros_like(off))


def _refine_udp(heatmaps: torch.Tensor, idx: torch.Tensor, valid_max: torch.Tensor, kernel: int) -> torch.Tensor:
    """Official ``post_dark_udp`` Newton step; returns the [N, K, 2] offset to add to the argmax coords."""
    N, K, H, W = heatmaps.shape
    logmap = torch.log(gaussian_blur(heatmaps, kernel).clamp(0.001, 50.0)).reshape(N, K, H * W)

    # Keypoints at (-1, -1) read the (0, 0) corner: official pad index (x + 1, y + 1) = (0, 0), see module doc.
    x = torch.where(valid_max, idx % W, torch.zeros_like(idx))
    y = torch.where(valid_max, torch.div(idx, W, rounding_mode="floor"), torch.zeros_like(idx))

    def at(dx: int, dy: int) -> torch.Tensor:
        # Clamping reproduces the official one-pixel edge padding.
        return _gather(logmap, (x + dx).clamp(0, W - 1), (y + dy).clamp(0, H - 1), W)

    i_, ix1, ix1_, iy1, iy1_ = at(0, 0), at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
    ix1y1, ix1_y1_ = at(1, 1), at(-1, -1)
    # float32 stencils, exactly in the official operation order.
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    # float64 solve of (Hess + eps I) d = grad, as numpy promotes it officially.
    a, b, d = dxx.double() + _EPS_F32, dxy.double(), dyy.double() + _EPS_F32
    gx, gy = dx.double(), dy.double()
    det = a * d - b * b
    ok = det != 0
    safe_det = torch.where(ok, det, torch.ones_like(det))
    off = torch.stack((-(d * gx - b * gy) / safe_det, -(a * gy - b * gx) / safe_det), dim=-1)
    return torch.where(ok.unsqueeze(-1), off, torch.zeros_like(off))


def heatmap_keypoints(heatmaps: torch.Tensor, method: str = "udp", kernel: int = 11) -> torch.Tensor:
    """Decode [N, K, H, W] heatmaps to [N, K, 3] float32 (x, y, score) in HEATMAP pixel coordinates.

    Any float dtype and device; computed in float32 (the udp 2x2 solve in float64). See the module doc for the
    methods. ``kernel`` is the blur size of ``dark`` and ``udp`` (official ViTPose: 11).
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown decode method {method!r}; expected one of {DECODE_METHODS}")
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    if not heatmaps.is_floating_point():
        raise TypeError(f"heatmaps must be a floating-point tensor, got {heatmaps.dtype}")
    hm = heatmaps.detach().to(torch.float32)
    N, K, H, W = hm.shape
    if N * K == 0:
        return hm.new_zeros((N, K, 3))
    idx, maxvals, flat = _argmax(hm)
    valid_max = maxvals > 0
    coords = _coords_from_index(idx, W, maxvals)
    if method == "default":
        coords = coords + _refine_default(flat, idx, valid_max, H, W)
    elif method == "dark":
        coords = coords + _refine_dark(hm, idx, valid_max, kernel)
    elif method == "udp":
        # Officially float32 coords -= float64 offset, stored back as float32.
        coords = (coords.double() + _refine_udp(hm, idx, valid_max, kernel)).to(torch.float32)
    return torch.cat((coords, maxvals.unsqueeze(-1)), dim=-1)


def _as_tensor(value: ArrayLike, name: str, n: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    t = t.to(device=device, dtype=torch.float64)
    if t.shape != (n, 2):
        raise ValueError(f"{name} must have shape [N, 2] = [{n}, 2], got {tuple(t.shape)}")
    return t


def transform_preds(
    coords: torch.Tensor,
    centers: ArrayLike,
    scales: ArrayLike,
    heatmap_size: Tuple[int, int],
    use_udp: bool,
) -> torch.Tensor:
    """Official ``transform_preds``, batched: [N, K, 2] heatmap coords -> [N, K, 2] image coords.

    ``heatmap_size`` is (W, H); centers/scales [N, 2] (numpy or torch; scales in units of 200 px). Computed in
    float64, returned in ``coords``' dtype.
    """
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be [N, K, 2], got shape {tuple(coords.shape)}")
    n = coords.shape[0]
    c = _as_tensor(centers, "centers", n, coords.device)
    s = _as_tensor(scales, "scales", n, coords.device) * PIXEL_STD
    size = torch.tensor(heatmap_size, dtype=torch.float64, device=coords.device)
    if use_udp:
        size = size - 1.0
    out = coords.double() * (s / size)[:, None, :] + (c - s * 0.5)[:, None, :]
    return out.to(coords.dtype)


def decode_heatmaps(
    heatmaps: torch.Tensor,
    centers: ArrayLike,
    scales: ArrayLike,
    method: str = "udp",
    kernel: int = 11,
) -> torch.Tensor:
    """Decode [N, K, h, w] heatmaps to [N, K, 3] float32 (x, y, score) in IMAGE coordinates.

    ``centers``/``scales`` are [N, 2] in the official convention (scale in units of pixel_std = 200). ``udp``
    maps back with (heatmap_size - 1), every other method with heatmap_size. See the module doc for formulas.
    """
    kp = heatmap_keypoints(heatmaps, method, kernel)
    H, W = heatmaps.shape[-2:]
    xy = transform_preds(kp[..., :2], centers, scales, (W, H), use_udp=method == "udp")
    return torch.cat((xy, kp[..., 2:]), dim=-1)


decode_heatmaps_ref = decode_heatmaps
decode_heatmaps_torch = decode_heatmaps
