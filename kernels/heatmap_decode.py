"""Fused top-down heatmap decoding: argmax, sub-pixel refinement and the transform back, in one launch.

Same maths as :mod:`vitpose_fast.reference.heatmap_decode` (official mmpose 0.x ``_get_max_preds``,
``post_process='default'``, DARK ``_gaussian_blur`` + ``_taylor``, ``post_dark_udp``, ``transform_preds``); see
its module doc for the formulas.

One program per (person, keypoint) map:

1. Max and argmax over the H*W values: per-lane running maxima over BLOCK-wide chunks (a lane only moves on a
   strictly greater value, so it keeps its first maximum), then the smallest flat index among the lanes holding
   the map maximum: the first maximum, like ``torch.argmax``/``np.argmax``. Score = that raw maximum.
2. Refinement (``METHOD``):
   - ``default``: four neighbour reads and the +-0.25 sign shift.
   - ``udp``/``dark``: the Gaussian blur is only needed at the stencil points, so the kernel blurs one small
     patch around the peak (edge rule: OpenCV BORDER_REFLECT_101 for ``udp``, zeros for ``dark``, whose official
     blur pads zeros first). Rows first, as OpenCV: one gathered [TILE rows, PATCH columns, taps] load reduced
     along the tap axis; then columns: KSIZE exact one-hot row selections accumulated in tap order. Every output
     thus sums the same taps in the same order, so a constant region blurs to bitwise-equal values and its
     log-derivatives are exactly zero, as in the reference's convolution (a reduction whose order depends on the
     output position would leave rounding noise that the Newton step amplifies to O(1) px on flat maps).
   - ``udp`` has no rescale: clip [0.001, 50], log, the edge-padded 7-point stencil (clamped indices), the
     float32 stencil sums in the official order, then the 2x2 solve in float64 (numpy promotes it officially).
   - ``dark`` rescales the blurred map by ``max(map) / max(blurred)`` before ``log(max(., 1e-10))``. A constant
     factor cancels in log-derivatives, but not through the 1e-10 clamp. With zero padding and taps summing to 1,
     max(blurred) <= max(map), so the factor is >= 1 and the clamp cannot act when all 13 stencil values exceed
     1e-9: then the factor is skipped. Otherwise (tiny or negative neighbourhoods) the program blurs the whole
     map to get max(blurred) exactly and applies the factor and the clamp as officially.
3. The official transform back (float64, like the reference): x * (s * 200) / D + c - s * 100 with D = W - 1 for
   ``udp`` and W otherwise; writes (x, y, score) as float32.

Shapes and dtypes: heatmaps [N, K, H, W] float32/float16/bfloat16 (contiguous; computed in float32), centers and
scales [N, 2] (any float; used as float64), output [N, K, 3] float32. Any H, W >= 1 (``udp`` needs H, W >= 2 for
its transform); H * W < 2**31; map base offsets are int64, so the batch may exceed 2**31 elements.
Blur kernel: odd, 1..17 (the patch window and the unrolled taps must stay small). NaN inputs are not supported
(the argmax skips NaN, torch would return it). Inference only (no autograd).

Tuning: one default config; ``VITPOSE_FAST_AUTOTUNE=1`` sweeps BLOCK x num_warps keyed on the map size
(:func:`vitpose_fast.kernels.runtime.tuned`).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from vitpose_fast.kernels import runtime
from vitpose_fast.reference.heatmap_decode import DECODE_METHODS, ArrayLike, gaussian_kernel1d

# The kernel's METHOD constexpr.
_METHOD_IDS = {name: i for i, name in enumerate(("argmax", "default", "dark", "udp"))}
assert set(_METHOD_IDS) == set(DECODE_METHODS), "method list out of sync with vitpose_fast.reference.heatmap_decode"
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_KERNEL = 17  # official configs use 11 (sigma 2) and 17 (sigma 3); larger ones unroll into huge code


@triton.jit
def _reflect101(p, n):
    """OpenCV BORDER_REFLECT_101 source index of any integer position p on an axis of length n >= 1."""
    period = tl.maximum(2 * n - 2, 1)
    p = ((p % period) + period) % period  # a non-negative remainder whatever the sign rule of `%`
    return tl.where(p >= n, period - p, p)


@triton.jit
def _blur_patch(
    base,
    G,
    H,
    W,
    y0,
    x0,
    KSIZE: tl.constexpr,
    KP: tl.constexpr,
    TILE: tl.constexpr,
    PATCH: tl.constexpr,
    REFLECT: tl.constexpr,
):
    """Separable Gaussian blur at the PATCH x PATCH positions (y0 + a, x0 + b) of one map -> [PATCH, PATCH] fp32.

    Valid for a, b < TILE - (KSIZE - 1); other entries are finite garbage. Borders: reflect-101 or zeros.
    KP = next power of two >= KSIZE (the padded tap axis).
    """
    RADIUS: tl.constexpr = KSIZE // 2
    ti = tl.arange(0, TILE)
    po = tl.arange(0, PATCH)
    tap = tl.arange(0, KP)
    g = tl.load(G + tap, mask=tap < KSIZE, other=0.0)  # [KP]
    rows = y0 - RADIUS + ti  # [TILE]: every input row a vertical tap can reach
    cols = x0 - RADIUS + po[:, None] + tap[None, :]  # [PATCH, KP]: input column of (output column, tap)
    if REFLECT:
        offs = (_reflect101(rows, H) * W)[:, None, None] + _reflect101(cols, W)[None, :, :]
        vals = tl.load(base + offs, mask=(tap < KSIZE)[None, None, :], other=0.0)
    else:
        ok = ((rows >= 0) & (rows < H))[:, None, None] & ((cols >= 0) & (cols < W) & (tap < KSIZE)[None, :])[None]
        vals = tl.load(base + (rows * W)[:, None, None] + cols[None, :, :], mask=ok, other=0.0)
    # Rows first (as OpenCV): hb[i, o] = sum_s g[s] * map[rows[i], x0 + o + s - RADIUS]. The reduction runs along
    # the tap axis, so its order is the same for every output.
    hb = tl.sum(vals.to(tl.float32) * g[None, None, :], axis=2)  # [TILE, PATCH]
    # Then columns: v[a, b] = sum_t g[t] * hb[a + t, b], taps accumulated in order; each row shift is an exact
    # one-hot selection (registers cannot be shifted directly).
    v = tl.zeros([PATCH, PATCH], dtype=tl.float32)
    for t in tl.static_range(KSIZE):
        pick = ti[:, None, None] == (po[None, :, None] + t)  # [TILE, PATCH, 1]
        shifted = tl.sum(tl.where(pick, hb[:, None, :], 0.0), axis=0)  # [PATCH, PATCH]
        v += tl.load(G + t) * shifted
    return v


@triton.jit
def _heatmap_decode_kernel(
    HM,  # [N*K, H, W] heatmaps, contiguous
    CENTER,  # [N, 2] float64
    SCALE,  # [N, 2] float64
    G,  # [KSIZE] float32 Gaussian taps
    OUT,  # [N*K, 3] float32
    K,
    H,
    W,
    METHOD: tl.constexpr,
    KSIZE: tl.constexpr,
    KP: tl.constexpr,
    TILE: tl.constexpr,
    PATCH: tl.constexpr,
    BLOCK: tl.constexpr,
):
    NOUT: tl.constexpr = TILE - (KSIZE - 1)  # valid outputs per blurred patch side
    pid = tl.program_id(0).to(tl.int64)
    HW = H * W
    base = HM + pid * HW

    # ---- 1. max and first argmax ------------------------------------------------------------------------------
    offs = tl.arange(0, BLOCK)
    best_v = tl.full([BLOCK], float("-inf"), tl.float32)
    best_i = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(0, HW, BLOCK):
        idx = start + offs
        x = tl.load(base + idx, mask=idx < HW, other=float("-inf")).to(tl.float32)
        take = x > best_v
        best_v = tl.where(take, x, best_v)
        best_i = tl.where(take, idx, best_i)
    maxval = tl.max(best_v, axis=0)
    # Lanes never updated keep index 0, which is only selected when the whole map is -inf (torch: index 0 too).
    am = tl.min(tl.where(best_v == maxval, best_i, HW), axis=0)
    px = am % W
    py = am // W
    valid = maxval > 0.0  # official: keypoints with a maximum <= 0 sit at (-1, -1)
    x_f = tl.where(valid, px.to(tl.float32), -1.0)
    y_f = tl.where(valid, py.to(tl.float32), -1.0)

    # ---- 2. refinement ----------------------------------------------------------------------------------------
    pi = tl.arange(0, PATCH)
    if METHOD == 1:  # default: +-0.25 toward the higher neighbour, strictly inside
        inner = valid & (px > 1) & (px < W - 1) & (py > 1) & (py < H - 1)
        row = base + py * W
        dxv = tl.load(row + tl.minimum(px + 1, W - 1)).to(tl.float32) - tl.load(row + tl.maximum(px - 1, 0)).to(
            tl.float32
        )
        dyv = tl.load(base + tl.minimum(py + 1, H - 1) * W + px).to(tl.float32) - tl.load(
            base + tl.maximum(py - 1, 0) * W + px
        ).to(tl.float32)
        sx = tl.where(dxv > 0, 0.25, tl.where(dxv < 0, -0.25, 0.0))
        sy = tl.where(dyv > 0, 0.25, tl.where(dyv < 0, -0.25, 0.0))
        x_f = tl.where(inner, x_f + sx, x_f)
        y_f = tl.where(inner, y_f + sy, y_f)
    elif METHOD == 2:  # dark: zero-padded blur, max rescale, log(max(., 1e-10)), _taylor
        ok = valid & (px > 1) & (px < W - 2) & (py > 1) & (py < H - 2)
        v = _blur_patch(base, G, H, W, py - 2, px - 2, KSIZE, KP, TILE, PATCH, False)  # v[2, 2] = blurred peak
        ra = pi[:, None]
        cb = pi[None, :]
        stencil = ((ra == 2) & (cb < 5)) | ((cb == 2) & (ra < 5)) | (((ra == 1) | (ra == 3)) & ((cb == 1) | (cb == 3)))
        vmin = tl.min(tl.min(tl.where(stencil, v, float("inf")), axis=1), axis=0)
        factor = tl.full([], 1.0, tl.float32)
        if ok & (vmin <= 1e-9):
            bmax = tl.full([], float("-inf"), tl.float32)
            for y0 in range(0, H, NOUT):
                for x0 in range(0, W, NOUT):
                    vb = _blur_patch(base, G, H, W, y0, x0, KSIZE, KP, TILE, PATCH, False)
                    in_a = (pi < NOUT) & (y0 + pi < H)
                    in_b = (pi < NOUT) & (x0 + pi < W)
                    vb = tl.where(in_a[:, None] & in_b[None, :], vb, float("-inf"))
                    bmax = tl.maximum(bmax, tl.max(tl.max(vb, axis=1), axis=0))
            factor = tl.math.div_rn(maxval, tl.where(bmax == 0.0, 1.0, bmax))
        # The reference's log(max(blurred * factor, 1e-10)); with factor 1 the clamp is inactive (see doc).
        lg = tl.log(tl.maximum(v * factor, 1e-10))
        r_m = tl.sum(tl.where(ra == 1, lg, 0.0), axis=0)  # row y - 1 (exact one-hot sums)
        r_0 = tl.sum(tl.where(ra == 2, lg, 0.0), axis=0)  # row y
        r_p = tl.sum(tl.where(ra == 3, lg, 0.0), axis=0)  # row y + 1
        c_0 = tl.sum(tl.where(cb == 2, lg, 0.0), axis=1)  # column x
        c = tl.sum(tl.where(pi == 2, r_0, 0.0), axis=0)
        xp1 = tl.sum(tl.where(pi == 3, r_0, 0.0), axis=0)
        xm1 = tl.sum(tl.where(pi == 1, r_0, 0.0), axis=0)
        xp2 = tl.sum(tl.where(pi == 4, r_0, 0.0), axis=0)
        xm2 = tl.sum(tl.where(pi == 0, r_0, 0.0), axis=0)
        yp1 = tl.sum(tl.where(pi == 3, c_0, 0.0), axis=0)
        ym1 = tl.sum(tl.where(pi == 1, c_0, 0.0), axis=0)
        yp2 = tl.sum(tl.where(pi == 4, c_0, 0.0), axis=0)
        ym2 = tl.sum(tl.where(pi == 0, c_0, 0.0), axis=0)
        pp = tl.sum(tl.where(pi == 3, r_p, 0.0), axis=0)  # (y + 1, x + 1)
        pm = tl.sum(tl.where(pi == 1, r_p, 0.0), axis=0)  # (y + 1, x - 1)
        mp = tl.sum(tl.where(pi == 3, r_m, 0.0), axis=0)  # (y - 1, x + 1)
        mm = tl.sum(tl.where(pi == 1, r_m, 0.0), axis=0)  # (y - 1, x - 1)
        dx = 0.5 * (xp1 - xm1)
        dy = 0.5 * (yp1 - ym1)
        dxx = 0.25 * (xp2 - 2 * c + xm2)
        dyy = 0.25 * (yp2 - 2 * c + ym2)
        dxy = 0.25 * (pp - mp - pm + mm)
        det = dxx * dyy - dxy * dxy
        ok = ok & (det != 0.0)
        safe_det = tl.where(ok, det, 1.0)
        # IEEE division (div_rn) like torch's; Triton's fp32 `/` is an approximate one on GPU.
        x_f = tl.where(ok, x_f + tl.math.div_rn(-(dyy * dx - dxy * dy), safe_det), x_f)
        y_f = tl.where(ok, y_f + tl.math.div_rn(-(dxx * dy - dxy * dx), safe_det), y_f)
    elif METHOD == 3:  # udp: reflect-101 blur, clip, log, edge-padded stencil, float64 Newton step
        # Keypoints at (-1, -1) take their stencil at the (0, 0) corner, as the reference does.
        cx = tl.where(valid, px, 0)
        cy = tl.where(valid, py, 0)
        v = _blur_patch(base, G, H, W, cy - 1, cx - 1, KSIZE, KP, TILE, PATCH, True)  # v[1, 1] = blurred (cy, cx)
        lg = tl.log(tl.minimum(tl.maximum(v, 0.001), 50.0))
        # Edge padding = clamped indices; patch index = clamped position - (c - 1).
        ax_m = tl.maximum(cx - 1, 0) - cx + 1
        ax_p = tl.minimum(cx + 1, W - 1) - cx + 1
        ay_m = tl.maximum(cy - 1, 0) - cy + 1
        ay_p = tl.minimum(cy + 1, H - 1) - cy + 1
        r_m = tl.sum(tl.where(pi[:, None] == ay_m, lg, 0.0), axis=0)  # rows (exact one-hot sums)
        r_0 = tl.sum(tl.where(pi[:, None] == 1, lg, 0.0), axis=0)
        r_p = tl.sum(tl.where(pi[:, None] == ay_p, lg, 0.0), axis=0)
        i_ = tl.sum(tl.where(pi == 1, r_0, 0.0), axis=0)
        ix1 = tl.sum(tl.where(pi == ax_p, r_0, 0.0), axis=0)
        ix1_ = tl.sum(tl.where(pi == ax_m, r_0, 0.0), axis=0)
        iy1 = tl.sum(tl.where(pi == 1, r_p, 0.0), axis=0)
        iy1_ = tl.sum(tl.where(pi == 1, r_m, 0.0), axis=0)
        ix1y1 = tl.sum(tl.where(pi == ax_p, r_p, 0.0), axis=0)
        ix1_y1_ = tl.sum(tl.where(pi == ax_m, r_m, 0.0), axis=0)
        # float32 stencil sums in the official operation order.
        dx = 0.5 * (ix1 - ix1_)
        dy = 0.5 * (iy1 - iy1_)
        dxx = ix1 - 2 * i_ + ix1_
        dyy = iy1 - 2 * i_ + iy1_
        dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
        # (Hessian + eps_f32 I)^-1 grad in float64; eps_f32 = 2**-23 is exact as a literal.
        ha = dxx.to(tl.float64) + 1.1920928955078125e-07
        hb_ = dxy.to(tl.float64)
        hd = dyy.to(tl.float64) + 1.1920928955078125e-07
        gx = dx.to(tl.float64)
        gy = dy.to(tl.float64)
        det = ha * hd - hb_ * hb_
        ok = det != 0.0
        safe_det = tl.where(ok, det, 1.0)
        off_x = tl.where(ok, -(hd * gx - hb_ * gy) / safe_det, 0.0)
        off_y = tl.where(ok, -(ha * gy - hb_ * gx) / safe_det, 0.0)
        x_f = (x_f.to(tl.float64) + off_x).to(tl.float32)
        y_f = (y_f.to(tl.float64) + off_y).to(tl.float32)

    # ---- 3. back to the image (float64, as the reference) -----------------------------------------------------
    n = pid // K
    cxy = CENTER + n * 2
    sxy = SCALE + n * 2
    s_x = tl.load(sxy).to(tl.float64) * 200.0
    s_y = tl.load(sxy + 1).to(tl.float64) * 200.0
    # tl.cast, not .to: H or W == 1 arrive as constexpr (Triton specialises integer arguments equal to 1).
    if METHOD == 3:
        d_x = tl.cast(W - 1, tl.float64)
        d_y = tl.cast(H - 1, tl.float64)
    else:
        d_x = tl.cast(W, tl.float64)
        d_y = tl.cast(H, tl.float64)
    out_x = x_f.to(tl.float64) * (s_x / d_x) + (tl.load(cxy).to(tl.float64) - s_x * 0.5)
    out_y = y_f.to(tl.float64) * (s_y / d_y) + (tl.load(cxy + 1).to(tl.float64) - s_y * 0.5)
    o = OUT + pid * 3
    tl.store(o, out_x.to(tl.float32))
    tl.store(o + 1, out_y.to(tl.float32))
    tl.store(o + 2, maxval)


# ------------------------------------------------------------------------------------------------------------------
# configs
_DEFAULT_CONFIG = triton.Config({"BLOCK": 2048}, num_warps=4)


_SWEEP = tuple(triton.Config({"BLOCK": b}, num_warps=w) for b in (512, 1024, 2048, 4096) for w in (2, 4, 8))


# ------------------------------------------------------------------------------------------------------------------
# launcher
def _check(heatmaps: torch.Tensor, method: str, kernel: int) -> None:
    if method not in _METHOD_IDS:
        raise ValueError(f"unknown decode method {method!r}; expected one of {DECODE_METHODS}")
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    if heatmaps.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"heatmaps must be float32, float16 or bfloat16, got {heatmaps.dtype}")
    if not (1 <= kernel <= _MAX_KERNEL and kernel % 2 == 1):
        raise ValueError(f"blur kernel size must be an odd int in [1, {_MAX_KERNEL}], got {kernel}")
    h, w = heatmaps.shape[-2:]
    if not 1 <= h * w < 2**31:
        raise ValueError(f"one heatmap must have between 1 and 2**31 - 1 values, got {h} x {w}")


@functools.lru_cache(maxsize=None)
def _taps(kernel: int, device: torch.device) -> torch.Tensor:
    # Cached per device: a fresh host-to-device copy on every call would cost more than the kernel.
    return gaussian_kernel1d(kernel).to(device)


def _as_pairs(value: ArrayLike, name: str, n: int, device: torch.device) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    t = t.to(device=device, dtype=torch.float64).contiguous()
    if t.shape != (n, 2):
        raise ValueError(f"{name} must have shape [N, 2] = [{n}, 2], got {tuple(t.shape)}")
    return t


def _launch(heatmaps: torch.Tensor, centers: torch.Tensor, scales: torch.Tensor, method: str, kernel: int):
    _check(heatmaps, method, kernel)
    N, K, H, W = heatmaps.shape
    out = torch.empty((N, K, 3), dtype=torch.float32, device=heatmaps.device)
    if N * K == 0:
        return out
    hm = heatmaps.detach().contiguous()
    taps = _taps(kernel, hm.device)
    # The blur window covers the 5 x 5 stencil patch (dark's) plus the kernel radius on each side.
    tile = triton.next_power_of_2(5 + kernel - 1)
    patch = triton.next_power_of_2(tile - (kernel - 1))
    args = (hm, centers, scales, taps, out, K, H, W)
    meta = dict(METHOD=_METHOD_IDS[method], KSIZE=kernel, KP=triton.next_power_of_2(kernel), TILE=tile, PATCH=patch)
    # dark's blur-17 patches ([32, 16, 32] gathers, [32, 16, 16] selections) spill ~0.8 KB per thread at 4
    # warps on sm_90a; 8 warps halve each thread's share (kernel report).
    default = triton.Config(_DEFAULT_CONFIG.kwargs, num_warps=8) if method == "dark" and kernel > 11 else (
        _DEFAULT_CONFIG)

    def run(cfg: triton.Config) -> None:
        _heatmap_decode_kernel[(N * K,)](*args, **meta, **cfg.kwargs, num_warps=cfg.num_warps)

    # The map size keys the sweep: the chunk loop length and the patch costs depend on it only.
    run(runtime.tuned(("heatmap_decode", H, W, method, kernel, hm.dtype, hm.device), default, _SWEEP, run))
    return out


# ------------------------------------------------------------------------------------------------------------------
# torch.library registration (inference only: no autograd formula)
@torch.library.custom_op("vitpose_fast::heatmap_decode", mutates_args=())
def _heatmap_decode_op(
    heatmaps: torch.Tensor, centers: torch.Tensor, scales: torch.Tensor, method: str, kernel: int
) -> torch.Tensor:
    return _launch(heatmaps, centers, scales, method, kernel)


@_heatmap_decode_op.register_fake
def _(heatmaps: torch.Tensor, centers: torch.Tensor, scales: torch.Tensor, method: str, kernel: int) -> torch.Tensor:
    _check(heatmaps, method, kernel)
    return heatmaps.new_empty((heatmaps.shape[0], heatmaps.shape[1], 3), dtype=torch.float32)


def decode_heatmaps_triton(
    heatmaps: torch.Tensor, centers: ArrayLike, scales: ArrayLike, method: str = "udp", kernel: int = 11
) -> torch.Tensor:
    """Decode [N, K, H, W] heatmaps to [N, K, 3] float32 (x, y, score) in image coordinates, in one launch.

    Same signature and results as :func:`vitpose_fast.reference.heatmap_decode.decode_heatmaps_ref` (see the
    module doc for limits).
    """
    _check(heatmaps, method, kernel)
    n = heatmaps.shape[0]
    c = _as_pairs(centers, "centers", n, heatmaps.device)
    s = _as_pairs(scales, "scales", n, heatmaps.device)
    return torch.ops.vitpose_fast.heatmap_decode(heatmaps, c, s, method, kernel)


def supports(heatmaps: torch.Tensor, method: str, kernel: int = 11) -> bool:
    """Whether :func:`decode_heatmaps_triton` handles these heatmaps (else use the torch decoding)."""
    if method not in _METHOD_IDS or heatmaps.ndim != 4 or heatmaps.dtype not in _SUPPORTED_DTYPES:
        return False
    if not (1 <= kernel <= _MAX_KERNEL and kernel % 2 == 1):
        return False
    h, w = heatmaps.shape[-2:]
    if h * w >= 2**31 or h * w == 0:
        return False
    # udp maps back with (size - 1): a one-pixel axis has no defined transform.
    return method != "udp" or (h >= 2 and w >= 2)


# ------------------------------------------------------------------------------------------------------------------
# kernel resource report (python -m vitpose_fast.kernels.report)
def report_cases(batch: int = 32, keypoints: int = 17, size=(144, 108), dtype=torch.float32):
    """The report's cases: every method at each blur size the official configs use (11: sigma 2, 17: sigma 3;
    the blur only matters for dark and udp), ViTPose-H 576x432 heatmaps, the launcher's default config."""
    from vitpose_fast.kernels.report_case import Case, meta_tensor

    cases = []
    for method in ("argmax", "default", "dark", "udp"):
        for k in (11, 17) if method in ("dark", "udp") else (11,):

            def launch(method=method, k=k):
                pairs = meta_tensor(batch, 2, dtype=torch.float64)
                _launch(meta_tensor(batch, keypoints, *size, dtype=dtype), pairs, pairs, method, k)

            spec = f"{method}" + (f" blur {k}" if method in ("dark", "udp") else "")
            cases.append(Case(module=__name__, kernels={"_heatmap_decode_kernel": "heatmap_decode"}, launch=launch,
                              spec=spec))
    return cases
