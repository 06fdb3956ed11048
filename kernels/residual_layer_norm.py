"""Fused residual add + LayerNorm: ``s = x + (branch + bias); h = layer_norm(s) * weight + ln_bias`` -> (s, h).

Where the model uses it (pre-norm ViT, :mod:`vitpose_fast.model.backbone`): the attention output (proj GEMM without
its bias) into ``norm2``, the MLP output (fc2 GEMM without its bias) into the next block's ``norm1`` or into
``last_norm`` after the last block, and the position-embedding add into the first ``norm1``. Unfused that is a
bias add, a residual add and a LayerNorm: 3 reads and 2 writes of the [rows, C] stream more than this kernel,
which reads x and branch once and writes s and h once.

Algorithm. Forward: one program per BLOCK_M rows; the whole row (BLOCK_N = next power of two >= C, masked) sits
in registers: s = x + branch + bias in fp32, rounded once to s's dtype and stored; mean and 1/std are taken from
the rounded s (so h is exactly LayerNorm of the s the next block sees), h = (s - mean) * rstd * w + b, and the
per-row mean and rstd (fp32) are kept for the backward. Backward (Liger-Kernel's scheme): with xhat = (s - mean)
* rstd and g = dh * w, ``ds = rstd * (g - xhat * mean(g * xhat) - mean(g)) + ds_residual`` (ds is both dx and
dbranch); the weight, LayerNorm-bias and Linear-bias gradients are column sums over rows: each of G programs
walks a contiguous run of rows and writes its fp32 partial sums to row ``pid`` of a [G, C] buffer, summed by
torch afterwards. Deterministic, no atomics.

Shapes: x [B, ..., C]; branch of x's shape or [1, ..., C] (broadcast over the batch: the position embedding;
its gradient is then summed over the batch); bias, weight, ln_bias [C]. C <= 65536 (one row per tile).
Dtypes: x, branch fp32 / fp16 / bf16 (s and h in torch's promoted dtype of the two), parameters any float
dtype; maths in fp32; int64 row offsets. Gradients come back in each input's own dtype.

Limits: CUDA tensors, or CPU under TRITON_INTERPRET=1 (which has no bf16 arithmetic: bf16 is checked on GPU and
through the torch path's error on CPU).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from vitpose_fast.kernels import fp8_quant, runtime
from vitpose_fast.kernels.fp8_quant import quantize_tile
from vitpose_fast.reference.fp8 import E4M3_MAX, EPS, FP8

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_COLS = 65536


# --------------------------------------------------------------------------------------------------------------
# kernels
@triton.jit
def _add_norm_tile(X, BR, BIAS, W, LB, S, rows, cols, n_rows, n_cols, br_rows, stride_x, stride_br, stride_s, eps,
                   HAS_BIAS: tl.constexpr):
    """s = x + branch (+ bias) stored in S's dtype; returns (h, mean, rstd) in fp32 for the rows x cols tile (h =
    layer_norm(s), statistics of s as stored; masked columns are zero)."""
    rmask = rows < n_rows
    cmask = cols < n_cols
    mask = rmask[:, None] & cmask[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(BR + (rows % br_rows)[:, None] * stride_br + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b += tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    s = (x + b).to(S.dtype.element_ty)
    tl.store(S + rows[:, None] * stride_s + cols[None, :], s, mask=mask)

    s = s.to(tl.float32)
    mean = tl.sum(s, 1) / n_cols
    sc = tl.where(mask, s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(sc * sc, 1) / n_cols + eps)
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    lb = tl.load(LB + cols, mask=cmask, other=0.0).to(tl.float32)
    return tl.where(mask, sc * rstd[:, None] * w[None, :] + lb[None, :], 0.0), mean, rstd


@triton.jit
def _fwd_kernel(
    X,  # [n_rows, n_cols] residual stream in
    BR,  # [br_rows, n_cols] branch (br_rows divides n_rows: row r reads branch row r % br_rows)
    BIAS,  # [n_cols] Linear bias of the branch (unused unless HAS_BIAS)
    W, LB,  # [n_cols] LayerNorm weight and bias
    S, H,  # [n_rows, n_cols] outputs: residual stream out, normalised
    MEAN, RSTD,  # [n_rows] fp32
    n_rows, n_cols, br_rows, stride_x, stride_br, stride_s, stride_h,
    eps,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    h, mean, rstd = _add_norm_tile(X, BR, BIAS, W, LB, S, rows, cols, n_rows, n_cols, br_rows, stride_x, stride_br,
                                   stride_s, eps, HAS_BIAS)
    rmask = rows < n_rows
    mask = rmask[:, None] & (cols < n_cols)[None, :]
    tl.store(H + rows[:, None] * stride_h + cols[None, :], h.to(H.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=rmask)
    tl.store(RSTD + rows, rstd, mask=rmask)


@triton.jit
def _bwd_kernel(
    S,  # [n_rows, n_cols] the forward's residual output (LayerNorm input)
    W,  # [n_cols] LayerNorm weight
    MEAN, RSTD,  # [n_rows] fp32
    DH,  # [n_rows, n_cols] gradient of h
    DSR,  # [n_rows, n_cols] gradient of s from its other uses (the residual stream; unused unless HAS_DRES)
    DS,  # [n_rows, n_cols] out: gradient of s (= of x and of the branch)
    DW_PART, DLB_PART, DBIAS_PART,  # [G, n_cols] fp32 out: per-program column sums
    n_rows, n_cols, rows_per_program, stride_s, stride_dh, stride_dsr, stride_ds,
    HAS_DRES: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    cmask = cols < n_cols
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_N], tl.float32)
    dlb_acc = tl.zeros([BLOCK_N], tl.float32)
    dbias_acc = tl.zeros([BLOCK_N], tl.float32)
    row_start = pid.to(tl.int64) * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    for start in range(row_start, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        rmask = rows < row_end
        mask = rmask[:, None] & cmask[None, :]
        s = tl.load(S + rows[:, None] * stride_s + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dh = tl.load(DH + rows[:, None] * stride_dh + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=rmask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
        xhat = tl.where(mask, (s - mean[:, None]) * rstd[:, None], 0.0)
        g = dh * w[None, :]
        c1 = tl.sum(xhat * g, 1) / n_cols
        c2 = tl.sum(g, 1) / n_cols
        ds = (g - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
        if HAS_DRES:
            ds += tl.load(DSR + rows[:, None] * stride_dsr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        ds = tl.where(mask, ds, 0.0)
        tl.store(DS + rows[:, None] * stride_ds + cols[None, :], ds.to(DS.dtype.element_ty), mask=mask)
        dw_acc += tl.sum(dh * xhat, 0)
        dlb_acc += tl.sum(dh, 0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ds, 0)
    tl.store(DW_PART + pid * n_cols + cols, dw_acc, mask=cmask)
    tl.store(DLB_PART + pid * n_cols + cols, dlb_acc, mask=cmask)
    if HAS_BIAS:
        tl.store(DBIAS_PART + pid * n_cols + cols, dbias_acc, mask=cmask)


# --------------------------------------------------------------------------------------------------------------
# launch settings (no autotune: one tile shape per width, as Liger's calculate_settings)
def settings(n_cols: int) -> Tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for rows of ``n_cols``: about 4K elements per program on GPU (2 rows at
    C = 1280), more rows per program under the interpreter (:func:`runtime.row_elements`)."""
    block_m, block_n = runtime.row_tile(n_cols, runtime.row_elements(4096))
    elems = block_m * block_n
    num_warps = 16 if elems >= 16384 else 8 if elems >= 2048 else 4
    return block_m, block_n, num_warps


# --------------------------------------------------------------------------------------------------------------
# launchers
def _rows(t: torch.Tensor) -> torch.Tensor:
    """[..., C] -> [rows, C] with unit column stride (a view where possible)."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _forward(x: torch.Tensor, branch: torch.Tensor, bias: Optional[torch.Tensor], weight: torch.Tensor,
             ln_bias: torch.Tensor, eps: float):
    c = x.shape[-1]
    x2, br2 = _rows(x), _rows(branch)
    n_rows = x2.shape[0]
    out_dtype = torch.promote_types(x.dtype, branch.dtype)
    s = torch.empty((n_rows, c), device=x.device, dtype=out_dtype)
    h = torch.empty_like(s)
    mean = torch.empty(n_rows, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if n_rows:
        block_m, block_n, num_warps = settings(c)
        _fwd_kernel[(triton.cdiv(n_rows, block_m),)](
            x2, br2, bias if bias is not None else weight, weight.contiguous(), ln_bias.contiguous(), s, h, mean,
            rstd, n_rows, c, br2.shape[0], x2.stride(0), br2.stride(0), s.stride(0), h.stride(0), eps,
            HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
        )
    shape = x.shape
    return s.view(shape), h.view(shape), mean, rstd


def _backward(s: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, dh: torch.Tensor,
              dsr: Optional[torch.Tensor], has_bias: bool):
    c = s.shape[-1]
    s2 = s.reshape(-1, c)
    dh2 = dh.reshape(-1, c).contiguous()
    dsr2 = dsr.reshape(-1, c).contiguous() if dsr is not None else None
    n_rows = s2.shape[0]
    ds = torch.empty_like(s2)
    block_m, block_n, num_warps = settings(c)
    dev = s.device.index if s.is_cuda else 0
    g = max(1, min(runtime.persistent_programs(dev or 0, 2), triton.cdiv(n_rows, block_m)))
    rows_per_program = triton.cdiv(triton.cdiv(n_rows, g), block_m) * block_m
    g = max(1, triton.cdiv(n_rows, rows_per_program))
    parts = [torch.empty((g, c), device=s.device, dtype=torch.float32) for _ in range(3 if has_bias else 2)]
    if n_rows:
        _bwd_kernel[(g,)](
            s2, weight.contiguous(), mean, rstd, dh2, dsr2 if dsr2 is not None else dh2, ds,
            parts[0], parts[1], parts[2] if has_bias else parts[0],
            n_rows, c, rows_per_program, s2.stride(0), dh2.stride(0), (dsr2 if dsr2 is not None else dh2).stride(0),
            ds.stride(0), HAS_DRES=dsr2 is not None, HAS_BIAS=has_bias, BLOCK_M=block_m, BLOCK_N=block_n,
            num_warps=num_warps,
        )
    sums = [p.sum(0) for p in parts]
    dbias = sums[2] if has_bias else sums[0].new_empty(0)
    return ds.view(s.shape), sums[0], sums[1], dbias


# --------------------------------------------------------------------------------------------------------------
# torch.library ops (opaque to torch.compile, with fake impls for tracing) and autograd
@torch.library.custom_op("vitpose_fast::residual_layer_norm_fwd", mutates_args=())
def _fwd_op(x: torch.Tensor, branch: torch.Tensor, bias: Optional[torch.Tensor], weight: torch.Tensor,
            ln_bias: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward(x, branch, bias, weight, ln_bias, eps)


@_fwd_op.register_fake
def _fwd_fake(x, branch, bias, weight, ln_bias, eps):
    dtype = torch.promote_types(x.dtype, branch.dtype)
    rows = x.numel() // x.shape[-1]
    s = x.new_empty(x.shape, dtype=dtype)
    return s, torch.empty_like(s), x.new_empty(rows, dtype=torch.float32), x.new_empty(rows, dtype=torch.float32)


@torch.library.custom_op("vitpose_fast::residual_layer_norm_bwd", mutates_args=())
def _bwd_op(s: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, dh: torch.Tensor,
            dsr: Optional[torch.Tensor], has_bias: bool
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(s, weight, mean, rstd, dh, dsr, has_bias)


@_bwd_op.register_fake
def _bwd_fake(s, weight, mean, rstd, dh, dsr, has_bias):
    c = s.shape[-1]
    f32 = dict(dtype=torch.float32)
    return torch.empty_like(s), s.new_empty(c, **f32), s.new_empty(c, **f32), s.new_empty(c if has_bias else 0, **f32)


def _setup_context(ctx, inputs, output):
    x, branch, bias, weight, ln_bias, eps = inputs
    s, _, mean, rstd = output
    ctx.save_for_backward(s, weight, mean, rstd)
    ctx.meta = (x.dtype, branch.dtype, tuple(branch.shape), None if bias is None else bias.dtype,
                ln_bias.dtype)


def _autograd_backward(ctx, ds_out, dh, _dmean, _drstd):
    s, weight, mean, rstd = ctx.saved_tensors
    x_dtype, br_dtype, br_shape, bias_dtype, lb_dtype = ctx.meta
    if dh is None:
        dh = torch.zeros_like(s)
    ds, dw, dlb, dbias = torch.ops.vitpose_fast.residual_layer_norm_bwd(
        s, weight, mean, rstd, dh, ds_out, bias_dtype is not None
    )
    dbranch = ds
    if tuple(dbranch.shape) != br_shape:  # broadcast over the batch: sum it back
        dbranch = dbranch.sum(0, keepdim=True, dtype=torch.float32)
    return (ds.to(x_dtype), dbranch.to(br_dtype), None if bias_dtype is None else dbias.to(bias_dtype),
            dw.to(weight.dtype), dlb.to(lb_dtype), None)


_fwd_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------------------------
# public API
def supports(x: torch.Tensor, branch: torch.Tensor) -> bool:
    """Whether :func:`residual_layer_norm` runs these inputs (device, dtypes, width)."""
    on_device = runtime.on_device(x, branch)
    return (on_device and x.dtype in _DTYPES and branch.dtype in _DTYPES and x.dim() >= 2
            and 0 < x.shape[-1] <= MAX_COLS)


def residual_layer_norm(
    x: torch.Tensor,
    branch: torch.Tensor,
    bias: Optional[torch.Tensor],
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(s, h) = (x + branch + bias, layer_norm(s)): see the module docstring. Differentiable in x, branch, bias,
    weight and ln_bias; same signature as :func:`vitpose_fast.reference.residual_layer_norm.residual_layer_norm_ref`."""
    c = x.shape[-1]
    bshape = tuple(branch.shape)
    if bshape != tuple(x.shape) and bshape != (1,) + tuple(x.shape[1:]):
        raise ValueError(
            f"residual_layer_norm: branch must have x's shape {tuple(x.shape)} or (1, *x.shape[1:]); got {bshape}"
        )
    for name, t in (("bias", bias), ("weight", weight), ("ln_bias", ln_bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"residual_layer_norm: {name} must have shape ({c},), got {tuple(t.shape)}")
    if not supports(x, branch):
        raise ValueError(
            f"residual_layer_norm kernel needs CUDA (or TRITON_INTERPRET=1) x/branch in {_DTYPES} with 1 <= C <= "
            f"{MAX_COLS}; got x {tuple(x.shape)} {x.dtype} on {x.device}, branch {branch.dtype} on {branch.device}"
        )
    s, h, _, _ = _fwd_op(x, branch, bias, weight, ln_bias, float(eps))
    return s, h


# --------------------------------------------------------------------------------------------------------------
# FP8 output (inference): h goes only to the next GEMM (qkv after norm1, fc1 after norm2), so the kernel writes
# it as float8_e4m3fn codes with one scale per row instead (``fp8_quant.quantize_tile`` on h rounded to s's
# dtype: exactly quantize_rows_ref(h) of the unquantized path)
@triton.jit
def _fwd_fp8_kernel(
    X, BR, BIAS, W, LB,
    S,  # [n_rows, n_cols] residual stream out
    Q, QS,  # [n_rows, n_cols] float8_e4m3fn codes of h, [n_rows] fp32 scales
    n_rows, n_cols, br_rows, stride_x, stride_br, stride_s,
    eps,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    FP8_MAX: tl.constexpr, AMAX_EPS: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    h, _, _ = _add_norm_tile(X, BR, BIAS, W, LB, S, rows, cols, n_rows, n_cols, br_rows, stride_x, stride_br,
                             stride_s, eps, HAS_BIAS)
    rmask = rows < n_rows
    mask = rmask[:, None] & (cols < n_cols)[None, :]
    q, scale = quantize_tile(h.to(S.dtype.element_ty).to(tl.float32), FP8_MAX, AMAX_EPS)
    tl.store(Q + rows[:, None] * n_cols + cols[None, :], q, mask=mask)
    tl.store(QS + rows, scale, mask=rmask)


def _forward_fp8(x: torch.Tensor, branch: torch.Tensor, bias: Optional[torch.Tensor], weight: torch.Tensor,
                 ln_bias: torch.Tensor, eps: float):
    c = x.shape[-1]
    x2, br2 = _rows(x), _rows(branch)
    n_rows = x2.shape[0]
    s = torch.empty((n_rows, c), device=x.device, dtype=torch.promote_types(x.dtype, branch.dtype))
    q = torch.empty((n_rows, c), device=x.device, dtype=FP8)
    qs = torch.empty((n_rows, 1), device=x.device, dtype=torch.float32)
    if n_rows:
        block_m, block_n, num_warps = settings(c)
        _fwd_fp8_kernel[(triton.cdiv(n_rows, block_m),)](
            x2, br2, bias if bias is not None else weight, weight.contiguous(), ln_bias.contiguous(), s, q, qs,
            n_rows, c, br2.shape[0], x2.stride(0), br2.stride(0), s.stride(0), eps,
            HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, FP8_MAX=E4M3_MAX, AMAX_EPS=EPS,
            num_warps=num_warps,
        )
    return s.view(x.shape), q.view(x.shape), qs.view(*x.shape[:-1], 1)


@torch.library.custom_op("vitpose_fast::residual_layer_norm_fp8", mutates_args=())
def _fwd_fp8_op(x: torch.Tensor, branch: torch.Tensor, bias: Optional[torch.Tensor], weight: torch.Tensor,
                ln_bias: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward_fp8(x, branch, bias, weight, ln_bias, eps)


@_fwd_fp8_op.register_fake
def _fwd_fp8_fake(x, branch, bias, weight, ln_bias, eps):
    s = x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, branch.dtype))
    return s, x.new_empty(x.shape, dtype=FP8), x.new_empty((*x.shape[:-1], 1), dtype=torch.float32)


def residual_layer_norm_fp8(
    x: torch.Tensor,
    branch: torch.Tensor,
    bias: Optional[torch.Tensor],
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, codes, scales): s as :func:`residual_layer_norm`, h = layer_norm(s) written as float8_e4m3fn codes
    [..., C] with per-row fp32 scales [..., 1] (amax / 448). Inference only (no autograd); same signature and
    results as :func:`vitpose_fast.reference.fp8.residual_layer_norm_fp8_ref`."""
    if not supports(x, branch) or x.shape[-1] > fp8_quant.MAX_K:
        raise ValueError(f"residual_layer_norm_fp8 kernel needs CUDA (or TRITON_INTERPRET=1) x/branch in {_DTYPES} "
                         f"with C <= {fp8_quant.MAX_K}; got x {tuple(x.shape)} {x.dtype} on {x.device}")
    return _fwd_fp8_op(x.detach(), branch.detach(), None if bias is None else bias.detach(), weight.detach(),
                       ln_bias.detach(), float(eps))


# --------------------------------------------------------------------------------------------------------------
# ahead-of-time compilation cases (sm_90a kernel report)
def report_cases(rows: int = 32 * 36 * 27, widths=(384, 768, 1024, 1280, 1408), dtype=torch.bfloat16,
                 fp8_width: int = 1280):
    """The kernel report's cases (:mod:`vitpose_fast.kernels.report`): forward and backward at every ViT width,
    and the FP8-output forward at ViT-H's (``fp8_width``, when among ``widths``), ViTPose-H 576x432 batch 32
    rows, the launchers' own settings."""
    from vitpose_fast.kernels.report_case import Case, meta_tensor

    def fwd(c):
        x = meta_tensor(rows, c, dtype=dtype)
        vec = meta_tensor(c, dtype=dtype)
        _forward(x, meta_tensor(rows, c, dtype=dtype), vec, vec, vec, 1e-6)

    def bwd(c):
        s = meta_tensor(rows, c, dtype=dtype)
        stats = meta_tensor(rows, dtype=torch.float32)
        _backward(s, meta_tensor(c, dtype=dtype), stats, stats, meta_tensor(rows, c, dtype=dtype),
                  meta_tensor(rows, c, dtype=dtype), True)

    def fwd_fp8(c):
        vec = meta_tensor(c, dtype=dtype)
        _forward_fp8(meta_tensor(rows, c, dtype=dtype), meta_tensor(rows, c, dtype=dtype), vec, vec, vec, 1e-6)

    return [Case(module=__name__, kernels={name: label}, launch=functools.partial(fn, c), spec=f"C={c}")
            for c in widths for name, label, fn in (("_fwd_kernel", "residual_ln_fwd", fwd),
                                                    ("_bwd_kernel", "residual_ln_bwd", bwd))] + [
        Case(module=__name__, kernels={"_fwd_fp8_kernel": "residual_ln_fp8"}, launch=functools.partial(fwd_fp8, c),
             spec=f"C={c}") for c in widths if c == fp8_width]
