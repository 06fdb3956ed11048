"""Fused simple decoder ``conv3x3(bilinear_x4(relu(x)))`` without the C-channel upsampled tensor.

Algorithm (the exact reorder). Bilinear upsampling (align_corners=False) is linear and acts on every channel
alike, so it commutes with the conv's channel mixing. With ``W_t = weight[:, :, ty, tx]`` (K x C) for the nine
taps t = (ty, tx) and ``(dy, dx) = (ty - 1, tx - 1)``::

    conv3x3(up(r))[k](oy, ox) = bias[k] + sum_t sum_c W_t[k, c] up(r_c)(oy + dy, ox + dx)
                              = bias[k] + sum_t up(W_t r)[k](oy + dy, ox + dx)

where a position outside [0, 4h) x [0, 4w) reads zero (the conv pads the UPSAMPLED map). ``up`` is separable,
``up(v)(u, u') = sum_{i, j} U_h(u, i) U_w(u', j) v(i, j)``, with PyTorch's ``upsample_bilinear2d`` weights:
src = max((u + 0.5) / 4 - 0.5, 0), i0 = floor(src), i1 = i0 + (i0 < n - 1), lambda1 = src - i0,
lambda0 = 1 - lambda1 (every value is a multiple of 1/8, exact in fp32). So:

1. ``y = relu(x) @ W`` with W [C, 9 * KT]: one low-resolution GEMM (cuBLAS), y [B, h, w, 9, KT]; each tap's
   K channels are padded with zero weight columns to KT = K rounded up to 8, so the kernels' channel loads and
   stores are 16-byte vectors (K = 17 -> 24: 41 % more columns in a GEMM that is tiny next to the backbone).
2. ``out(oy, ox)[k] = bias[k] + sum_t sum_{i, j} U_h(oy + dy, i) U_w(ox + dx, j) y[i, j, t, k]`` with
   U(u, .) = 0 for u outside the map: ``_upconv_fwd_kernel``. Output pixel (oy, ox = 4j + rx) only reads
   low-res rows ``oy // 4 + {-1, 0, 1}`` and columns ``j + {-1, 0, 1}``.

Backward, the adjoint of step 2 (``_upconv_bwd_kernel``)::

    grad_y[i, j, t, k] = sum_{oy, ox} grad_out[k](oy, ox) U_h(oy + dy, i) U_w(ox + dx, j)

a gather per low-res pixel over output rows 4i - 3 .. 4i + 6 and columns 4j - 3 .. 4j + 6 (no atomics:
deterministic). The GEMM backward stays in cuBLAS: grad_r = grad_y @ W^T masked by relu, grad_W = r^T grad_y;
grad_bias = sum of grad_out.

Kernel shapes. Forward: one program per (b, output row oy, block of BLOCK_J low-res columns, block of BLOCK_K
channels), a [BLOCK_K, BLOCK_J, 4] tile of outputs (ox = 4j + rx). Per (tx, column offset) it first folds the
vertical part (3 ty taps x 2 bilinear rows, scalar weights) into a [BLOCK_K, BLOCK_J] tile, then spreads it
over the 4 phases rx with per-column weights: 54 tile loads (contiguous along k) per 4 outputs per channel.
Backward: one program per (b, low-res row i, column block, channel block); each of the 10 grad_out rows is loaded
once as a [BLOCK_K, BLOCK_J, 16] window (columns 4j - 3 .. 4j + 12) and folded into three per-ty accumulators;
each of the 9 taps is then a weighted reduction over the window.

Dtypes: x, weight, bias in fp32 / fp16 / bf16 (weight and bias are cast to x's dtype); the GEMM accumulates in
fp32 (cuBLAS), step 2 loads its inputs in their dtype and accumulates in fp32; outputs and gradients come back
in x's dtype. Any B, C, h, w, K. Output [B, K, 4h, 4w], contiguous.

Limits: CUDA tensors (or CPU under TRITON_INTERPRET=1); float64 and other kernel sizes go to the PyTorch
fallback (``supports``). Prior art: none found that fuses a bilinear upsample into the following conv; this
reorder replaces it with a GEMM at low resolution.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import triton
import triton.language as tl

from vitpose_fast.kernels import runtime

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------------------------
# jit helpers and kernels
@triton.jit
def _src_index(u, n):
    """PyTorch's upsample_bilinear2d source rule (align_corners=False, scale 1/4) for up position u on an axis of
    n low-res samples: (i0, i1, lambda0, lambda1, u inside [0, 4n))."""
    src = tl.maximum((u.to(tl.float32) + 0.5) * 0.25 - 0.5, 0.0)
    i0 = src.to(tl.int32)  # truncation is floor: src >= 0
    i1 = tl.where(i0 < n - 1, i0 + 1, i0)
    lam1 = src - i0.to(tl.float32)
    lam0 = 1.0 - lam1
    return i0, i1, lam0, lam1, (u >= 0) & (u < 4 * n)


@triton.jit
def _up_weight(u, idx, n):
    """U(u, idx): the weight up position u puts on low-res sample idx (0 where u is padding)."""
    i0, i1, lam0, lam1, inside = _src_index(u, n)
    wgt = tl.where(i0 == idx, lam0, 0.0) + tl.where(i1 == idx, lam1, 0.0)
    return tl.where(inside, wgt, 0.0)


@triton.jit
def _upconv_fwd_kernel(
    Y,  # [B, h, w, 9, KT] contiguous (channels K..KT zero)
    Bias,  # [K] (unused unless HAS_BIAS)
    Out,  # [B, K, 4h, 4w], contiguous
    H,
    W,
    K,
    HAS_BIAS: tl.constexpr,
    KT: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    pid_row = tl.program_id(0)  # b * 4h + oy
    pid_j = tl.program_id(1)
    pid_k = tl.program_id(2)
    H4 = 4 * H
    W4 = 4 * W
    b = pid_row // H4
    oy = pid_row % H4

    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # [BK]
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)  # [BJ] low-res columns
    mask_k = offs_k < K
    # Loads run over the padded tap (multiple of 8 channels, zeros past K): a mask constant over 8 channels and
    # strides that are multiples of 8 let them be 16-byte vectors instead of 2-byte scalars.
    load_k = offs_k < KT
    stride_yw = 9 * KT
    stride_yh = W * stride_yw
    ox = 4 * offs_j[:, None] + tl.arange(0, 4)[None, :]  # [BJ, 4] output columns, phase rx fastest

    y_b = Y + b.to(tl.int64) * H * stride_yh
    acc = tl.zeros([BLOCK_K, BLOCK_J, 4], dtype=tl.float32)
    for tx in tl.static_range(3):
        for c in tl.static_range(3):
            col = offs_j + (c - 1)  # [BJ] the low-res column this pass reads
            col_ok = (col >= 0) & (col < W)
            m = load_k[:, None] & col_ok[None, :]
            # Vertical part first: the 3 ty taps x 2 bilinear rows have per-program scalar weights.
            z = tl.zeros([BLOCK_K, BLOCK_J], dtype=tl.float32)
            for ty in tl.static_range(3):
                i0, i1, lam0, lam1, inside = _src_index(oy + (ty - 1), H)
                ptrs = y_b + ((ty * 3 + tx) * KT + offs_k)[:, None] + col[None, :] * stride_yw
                v0 = tl.load(ptrs + i0 * stride_yh, mask=m, other=0.0).to(tl.float32)
                v1 = tl.load(ptrs + i1 * stride_yh, mask=m, other=0.0).to(tl.float32)
                z += tl.where(inside, lam0, 0.0) * v0 + tl.where(inside, lam1, 0.0) * v1
            # Horizontal part: column `col` feeds phase rx through up position ox + dx (zero off the map, and
            # zero for a clamped-away column, whose load is masked anyway).
            wh = _up_weight(ox + (tx - 1), col[:, None], W)  # [BJ, 4]
            acc += z[:, :, None] * wh[None, :, :]

    if HAS_BIAS:
        bias = tl.load(Bias + offs_k, mask=mask_k, other=0.0).to(tl.float32)
        acc += bias[:, None, None]
    plane = H4 * W4
    out_ptrs = (
        Out
        + b.to(tl.int64) * K * plane
        + offs_k.to(tl.int64)[:, None, None] * plane
        + oy * W4
        + ox[None, :, :]
    )
    mask = mask_k[:, None, None] & (offs_j < W)[None, :, None]
    tl.store(out_ptrs, acc.to(Out.dtype.element_ty), mask=mask)


@triton.jit
def _store_tap_row(r, ty: tl.constexpr, gy_ptrs, ox, offs_j, W, KT: tl.constexpr, mask):
    """The three taps (ty, tx) of one vertically folded window r [BK, BJ, 16]: weighted sums over the window."""
    for tx in tl.static_range(3):
        wh = _up_weight(ox + (tx - 1), offs_j[:, None], W)  # [BJ, 16]
        g = tl.sum(r * wh[None, :, :], axis=2)  # [BK, BJ]
        tl.store(gy_ptrs + (ty * 3 + tx) * KT, g.to(gy_ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _upconv_bwd_kernel(
    GO,  # [B, K, 4h, 4w], unit stride along the output row
    GY,  # [B, h, w, 9, KT] contiguous (channels K..KT written as zeros)
    H,
    W,
    K,
    stride_gob,
    stride_gok,
    stride_goh,
    KT: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    pid_row = tl.program_id(0)  # b * h + i
    pid_j = tl.program_id(1)
    pid_k = tl.program_id(2)
    b = pid_row // H
    i = pid_row % H
    H4 = 4 * H
    W4 = 4 * W

    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # [BK]
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)  # [BJ]
    mask_k = offs_k < K
    mask_j = offs_j < W
    # Output columns 4j - 3 .. 4j + 6 reach column j through some dx; the window is padded to 16 (weights 0).
    ox = 4 * offs_j[:, None] + (tl.arange(0, 16) - 3)[None, :]  # [BJ, 16]
    col_ok = (ox >= 0) & (ox < W4) & mask_j[:, None]
    go_ptrs = GO + b.to(tl.int64) * stride_gob + offs_k.to(tl.int64)[:, None, None] * stride_gok + ox[None, :, :]
    m = mask_k[:, None, None] & col_ok[None, :, :]

    # r{ty}[k, j, e] = sum_oy U_h(oy + ty - 1, i) grad_out[k](oy, 4j + e - 3): output rows 4i - 3 .. 4i + 6.
    r0 = tl.zeros([BLOCK_K, BLOCK_J, 16], dtype=tl.float32)
    r1 = tl.zeros([BLOCK_K, BLOCK_J, 16], dtype=tl.float32)
    r2 = tl.zeros([BLOCK_K, BLOCK_J, 16], dtype=tl.float32)
    zero_row = tl.zeros([1, 1, 16], dtype=tl.int32)
    for f in tl.static_range(10):
        oy = 4 * i + (f - 3)
        # The row check is broadcast as a tensor: the interpreter mistypes (scalar bool & tensor bool) masks.
        oy_t = oy + zero_row
        t = tl.load(go_ptrs + oy * stride_goh, mask=m & (oy_t >= 0) & (oy_t < H4), other=0.0).to(tl.float32)
        r0 += _up_weight(oy - 1, i, H) * t
        r1 += _up_weight(oy, i, H) * t
        r2 += _up_weight(oy + 1, i, H) * t

    stride_gyw = 9 * KT
    gy_ptrs = GY + (pid_row.to(tl.int64) * W + offs_j[None, :]) * stride_gyw + offs_k[:, None]
    mask = (offs_k < KT)[:, None] & mask_j[None, :]
    _store_tap_row(r0, 0, gy_ptrs, ox, offs_j, W, KT, mask)
    _store_tap_row(r1, 1, gy_ptrs, ox, offs_j, W, KT, mask)
    _store_tap_row(r2, 2, gy_ptrs, ox, offs_j, W, KT, mask)


# --------------------------------------------------------------------------------------------------------------
# configs: one default per kernel; the sweep only with VITPOSE_FAST_AUTOTUNE=1 (:func:`runtime.tuned`)
def _default_fwd_config(k: int, w: int) -> Dict[str, int]:
    # BLOCK_K 16 wastes no more lanes than 32 for K = 17 (2 blocks either way) and fewer for K = 133. The 54 tile
    # loads per program are all issued ahead of the arithmetic, so registers grow with the tile per thread:
    # [16, 32] over 4 warps built at 255 registers plus spills with triton 3.6 (107 with 3.9); [16, 16] stays
    # at ~150 with both (kernel report).
    block_k = min(16, triton.next_power_of_2(k))
    return {"BLOCK_K": block_k, "BLOCK_J": min(16, triton.next_power_of_2(w)), "num_warps": 4}


def _default_bwd_config(k: int, w: int) -> Dict[str, int]:
    # Four [BK, BJ, 16] fp32 tiles are live: BK * BJ = 128 over 8 warps builds at ~118 registers for sm_90
    # (4 warps need ~229, halving occupancy).
    block_k = min(32, triton.next_power_of_2(k))
    block_j = min(128 // block_k, triton.next_power_of_2(w))
    return {"BLOCK_K": block_k, "BLOCK_J": block_j, "num_warps": 8 if block_k * block_j >= 128 else 4}


def _sweep(pairs: List[Tuple[int, int]], warps: Tuple[int, ...]) -> List[Dict[str, int]]:
    return [{"BLOCK_K": bk, "BLOCK_J": bj, "num_warps": nw} for bk, bj in pairs for nw in warps]


_FWD_SWEEP = _sweep([(bk, bj) for bk in (16, 32, 64) for bj in (8, 16, 32)], (2, 4, 8))
_BWD_SWEEP = _sweep([(16, 4), (16, 8), (32, 4), (32, 8), (64, 2), (64, 4)], (2, 4, 8))


# --------------------------------------------------------------------------------------------------------------
# launchers
def tap_width(k: int) -> int:
    """Channels per tap in y and grad_y: K rounded up to a multiple of 8 (16-byte rows in half precision)."""
    return -(-k // 8) * 8


def upconv_fwd(y: torch.Tensor, bias: Optional[torch.Tensor], k: int) -> torch.Tensor:
    """Step 2: y [B, h, w, 9 * tap_width(k)] contiguous (taps (ty, tx) row-major, channels past k zero) + bias [k]
    -> out [B, k, 4h, 4w]."""
    kt = tap_width(k)
    if y.dim() != 4 or y.shape[-1] != 9 * kt or not y.is_contiguous():
        raise ValueError(f"upconv_fwd expects a contiguous y [B, h, w, {9 * kt}] for k = {k}, got {tuple(y.shape)} "
                         f"strides {y.stride()}")
    b, h, w, _ = y.shape
    if bias is not None and (bias.shape != (k,) or not bias.is_contiguous()):
        raise ValueError(f"upconv_fwd expects a contiguous bias of shape ({k},), got {tuple(bias.shape)}")
    out = torch.empty(b, k, 4 * h, 4 * w, device=y.device, dtype=y.dtype)
    if out.numel() == 0:
        return out
    args = (y, bias if bias is not None else y, out, h, w, k)

    def run(cfg: Dict[str, int]) -> None:
        grid = (b * 4 * h, triton.cdiv(w, cfg["BLOCK_J"]), triton.cdiv(k, cfg["BLOCK_K"]))
        _upconv_fwd_kernel[grid](*args, HAS_BIAS=bias is not None, KT=kt, **cfg)

    run(runtime.tuned(("upconv_fwd", h, w, k, y.dtype, y.device), _default_fwd_config(k, w), _FWD_SWEEP, run))
    return out


def upconv_bwd(grad_out: torch.Tensor) -> torch.Tensor:
    """Adjoint of step 2: grad_out [B, K, 4h, 4w] -> grad_y [B, h, w, 9 * tap_width(K)] contiguous (zeros past
    K in each tap), in grad_out's dtype."""
    if grad_out.dim() != 4 or grad_out.shape[2] % 4 != 0 or grad_out.shape[3] % 4 != 0:
        raise ValueError(f"upconv_bwd expects grad_out [B, K, 4h, 4w], got {tuple(grad_out.shape)}")
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    b, k, h4, w4 = grad_out.shape
    h, w = h4 // 4, w4 // 4
    kt = tap_width(k)
    grad_y = torch.empty(b, h, w, 9 * kt, device=grad_out.device, dtype=grad_out.dtype)
    if grad_y.numel() == 0:
        return grad_y
    args = (grad_out, grad_y, h, w, k, grad_out.stride(0), grad_out.stride(1), grad_out.stride(2))

    def run(cfg: Dict[str, int]) -> None:
        # Programs cover channel blocks up to kt so the padding is written (zeros) too.
        grid = (b * h, triton.cdiv(w, cfg["BLOCK_J"]), triton.cdiv(kt, cfg["BLOCK_K"]))
        _upconv_bwd_kernel[grid](*args, KT=kt, **cfg)

    run(runtime.tuned(("upconv_bwd", h, w, k, grad_out.dtype, grad_out.device), _default_bwd_config(k, w),
                      _BWD_SWEEP, run))
    return grad_y


# --------------------------------------------------------------------------------------------------------------
# torch.library ops (opaque to torch.compile, with fake impls for tracing)
@torch.library.custom_op("vitpose_fast::simple_decoder_upconv_fwd", mutates_args=())
def _upconv_fwd_op(y: torch.Tensor, bias: Optional[torch.Tensor], k: int) -> torch.Tensor:
    return upconv_fwd(y, bias, k)


@_upconv_fwd_op.register_fake
def _(y: torch.Tensor, bias: Optional[torch.Tensor], k: int) -> torch.Tensor:
    b, h, w, _ = y.shape
    return y.new_empty(b, k, 4 * h, 4 * w)


@torch.library.custom_op("vitpose_fast::simple_decoder_upconv_bwd", mutates_args=())
def _upconv_bwd_op(grad_out: torch.Tensor) -> torch.Tensor:
    return upconv_bwd(grad_out)


@_upconv_bwd_op.register_fake
def _(grad_out: torch.Tensor) -> torch.Tensor:
    b, k, h4, w4 = grad_out.shape
    return grad_out.new_empty(b, h4 // 4, w4 // 4, 9 * tap_width(k))


# --------------------------------------------------------------------------------------------------------------
# autograd
def _weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """[K, C, 3, 3] -> [C, 9 * KT] with column (ty * 3 + tx) * KT + k, KT = tap_width(K), zero columns past K."""
    k, c = weight.shape[:2]
    w = weight.permute(1, 2, 3, 0)
    return torch.nn.functional.pad(w, (0, tap_width(k) - k)).reshape(c, -1)


class SimpleDecoderFunction(torch.autograd.Function):
    """x [B, C, h, w], weight [K, C, 3, 3], bias [K] or None (all one dtype) -> [B, K, 4h, 4w]."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        b, c, h, w = x.shape
        # [B*h*w, C]: a view (no copy) when x is the NCHW view of [B, N, C] backbone tokens.
        r = torch.relu(x.permute(0, 2, 3, 1).reshape(b * h * w, c))
        w_mat = _weight_matrix(weight)
        y = torch.mm(r, w_mat).view(b, h, w, w_mat.shape[1])
        out = _upconv_fwd_op(y, bias, weight.shape[0])
        ctx.save_for_backward(r, w_mat)
        ctx.x_shape = (b, c, h, w)
        ctx.k = weight.shape[0]
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        r, w_mat = ctx.saved_tensors
        b, c, h, w = ctx.x_shape
        k, kt = ctx.k, w_mat.shape[1] // 9
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_y = _upconv_bwd_op(grad_out).view(b * h * w, 9 * kt)
            if ctx.needs_input_grad[0]:
                grad_r = torch.mm(grad_y, w_mat.t()) * (r > 0)  # relu's backward: pass where relu(x) > 0
                grad_x = grad_r.view(b, h, w, c).permute(0, 3, 1, 2)
            if ctx.needs_input_grad[1]:
                grad_weight = torch.mm(r.t(), grad_y).view(c, 3, 3, kt)[..., :k].permute(3, 0, 1, 2).contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=(0, 2, 3), dtype=torch.float32).to(grad_out.dtype)
        return grad_x, grad_weight, grad_bias


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernel path takes these inputs: x [B, C, h, w] and weight [K, C, 3, 3], float16/bfloat16/
    float32 x, floating weight, non-empty."""
    return (
        x.dim() == 4
        and weight.dim() == 4
        and tuple(weight.shape[1:]) == (x.shape[1], 3, 3)
        and x.dtype in _SUPPORTED_DTYPES
        and weight.dtype.is_floating_point
        and x.numel() > 0
        and weight.numel() > 0
    )


def simple_decoder(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``conv3x3(bilinear_x4(relu(x)), weight, bias, padding=1)`` (align_corners=False) in x's dtype, with grads
    for x, weight and bias. See the module docstring for the algorithm; check :func:`supports` first."""
    if not supports(x, weight):
        raise ValueError(
            f"simple_decoder kernel expects x [B, C, h, w] in float16/bfloat16/float32 and weight [K, C, 3, 3]; "
            f"got x {tuple(x.shape)} {x.dtype}, weight {tuple(weight.shape)} {weight.dtype}"
        )
    weight = weight.to(x.dtype)
    if bias is not None:
        bias = bias.to(x.dtype).contiguous()
    return SimpleDecoderFunction.apply(x, weight, bias)


# --------------------------------------------------------------------------------------------------------------
# kernel resource report (python -m vitpose_fast.kernels.report)
def report_cases(batch: int = 32, grid=(36, 27), keypoints: int = 17, dtype=torch.bfloat16):
    """The report's cases: forward and backward of step 2 at ViTPose-H 576x432 (36 x 27 -> 144 x 108 heatmaps,
    17 keypoints), bf16, the launchers' default configs."""
    from vitpose_fast.kernels.report_case import Case, meta_tensor

    h, w = grid

    def fwd():
        y = meta_tensor(batch, h, w, 9 * tap_width(keypoints), dtype=dtype)
        upconv_fwd(y, meta_tensor(keypoints, dtype=dtype), keypoints)

    def bwd():
        upconv_bwd(meta_tensor(batch, keypoints, 4 * h, 4 * w, dtype=dtype))

    common = dict(module=__name__, spec=f"{4 * h}x{4 * w} K{keypoints}")
    return [Case(kernels={"_upconv_fwd_kernel": "decoder_fwd"}, launch=fwd, **common),
            Case(kernels={"_upconv_bwd_kernel": "decoder_bwd"}, launch=bwd, **common)]
