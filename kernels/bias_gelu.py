"""Fused bias + exact GELU on the fc1 output: ``y = gelu(a + bias)``, gelu(z) = z * Phi(z) = z/2 (1 + erf(z/sqrt 2)).

The fc1 GEMM runs without its bias (cuBLAS, ``F.linear(x, w)``); this kernel adds the bias and applies the exact
(erf) GELU in one read and one write of the [rows, 4C] activation, instead of the bias pass and the GELU pass.

Algorithm. Forward: one program per [BLOCK_M, BLOCK_N] tile, z = a + bias in fp32, y = z * Phi(z), stored in a's
dtype. Backward: da = dy * gelu'(z) with gelu'(z) = Phi(z) + z * phi(z) (phi the standard normal density),
recomputing z from the saved a (the same tensor the unfused path keeps for GELU's backward); dbias = column sums
of da: each of G row-programs per column block walks a contiguous run of rows and writes fp32 partial sums to
row ``pid`` of a [G, H] buffer, summed by torch afterwards (deterministic, no atomics).

Shapes: a [..., H] (last dim contiguous), bias [H]. Dtypes: a fp32 / fp16 / bf16, bias any float dtype; maths in
fp32; int64 offsets. Gradients in each input's dtype. Limits: CUDA tensors or CPU under TRITON_INTERPRET=1 (no
bf16 arithmetic there).
"""

from __future__ import annotations

import functools
from typing import Tuple

import torch
import triton
import triton.language as tl

from vitpose_fast.kernels import fp8_quant, runtime
from vitpose_fast.kernels.fp8_quant import quantize_tile
from vitpose_fast.reference.fp8 import E4M3_MAX, EPS, FP8

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------------------------
# kernels
@triton.jit
def _fwd_kernel(
    A,  # [n_rows, n_cols] fc1 output without bias
    BIAS,  # [n_cols]
    Y,  # [n_rows, n_cols] out
    n_rows, n_cols, stride_a, stride_y,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < n_cols
    mask = (rows < n_rows)[:, None] & cmask[None, :]
    z = tl.load(A + rows[:, None] * stride_a + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    z += tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    y = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(
    A,  # [n_rows, n_cols] fc1 output without bias (saved by the forward)
    BIAS,  # [n_cols]
    DY,  # [n_rows, n_cols] gradient of y
    DA,  # [n_rows, n_cols] out: gradient of a (and of the fc1 output)
    DBIAS_PART,  # [G, n_cols] fp32 out: per-row-program column sums of DA
    n_rows, n_cols, rows_per_program, stride_a, stride_dy, stride_da,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < n_cols
    bias = tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_N], tl.float32)
    row_start = pid.to(tl.int64) * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    for start in range(row_start, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        mask = (rows < row_end)[:, None] & cmask[None, :]
        z = tl.load(A + rows[:, None] * stride_a + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        z += bias[None, :]
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327
        da = tl.where(mask, dy * (cdf + z * pdf), 0.0)
        tl.store(DA + rows[:, None] * stride_da + cols[None, :], da.to(DA.dtype.element_ty), mask=mask)
        acc += tl.sum(da, 0)
    tl.store(DBIAS_PART + pid * n_cols + cols, acc, mask=cmask)


# --------------------------------------------------------------------------------------------------------------
# launch settings (one tile shape; no autotune)
def settings(n_cols: int) -> Tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): 8 x 256 tiles on GPU (16 elements per thread at 4 warps; at 16 x 256 the
    sm_90a backward needed 154 registers, 8 x 256 keeps occupancy up for this memory-bound op); bigger tiles under
    the interpreter (fewer, larger numpy steps)."""
    interpreting = runtime.interpreting()
    block_m, block_n = runtime.row_tile(n_cols, runtime.row_elements(2048), 1024 if interpreting else 256)
    return block_m, block_n, 4


# --------------------------------------------------------------------------------------------------------------
# launchers
def _2d(t: torch.Tensor) -> torch.Tensor:
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _forward(a: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    a2 = _2d(a)
    n_rows, n_cols = a2.shape
    y = torch.empty((n_rows, n_cols), device=a.device, dtype=a.dtype)
    if a2.numel():
        block_m, block_n, num_warps = settings(n_cols)
        grid = (triton.cdiv(n_rows, block_m), triton.cdiv(n_cols, block_n))
        _fwd_kernel[grid](a2, bias.contiguous(), y, n_rows, n_cols, a2.stride(0), y.stride(0),
                          BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps)
    return y.view(a.shape)


def _backward(dy: torch.Tensor, a: torch.Tensor, bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    a2 = _2d(a)
    dy2 = _2d(dy)
    n_rows, n_cols = a2.shape
    da = torch.empty((n_rows, n_cols), device=a.device, dtype=a.dtype)
    block_m, block_n, num_warps = settings(n_cols)
    n_col_blocks = triton.cdiv(n_cols, block_n)
    programs = runtime.persistent_programs(a.device.index or 0)
    g = max(1, min(triton.cdiv(programs * 4, n_col_blocks), triton.cdiv(n_rows, block_m)))
    rows_per_program = triton.cdiv(triton.cdiv(max(n_rows, 1), g), block_m) * block_m
    g = max(1, triton.cdiv(n_rows, rows_per_program))
    part = torch.zeros((g, n_cols), device=a.device, dtype=torch.float32)
    if a2.numel():
        _bwd_kernel[(g, n_col_blocks)](a2, bias.contiguous(), dy2, da, part, n_rows, n_cols, rows_per_program,
                                       a2.stride(0), dy2.stride(0), da.stride(0),
                                       BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps)
    return da.view(a.shape), part.sum(0)


# --------------------------------------------------------------------------------------------------------------
# torch.library ops (opaque to torch.compile, with fake impls for tracing) and autograd
@torch.library.custom_op("vitpose_fast::bias_gelu_fwd", mutates_args=())
def _fwd_op(a: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return _forward(a, bias)


@_fwd_op.register_fake
def _fwd_fake(a, bias):
    return torch.empty_like(a, memory_format=torch.contiguous_format)


@torch.library.custom_op("vitpose_fast::bias_gelu_bwd", mutates_args=())
def _bwd_op(dy: torch.Tensor, a: torch.Tensor, bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return _backward(dy, a, bias)


@_bwd_op.register_fake
def _bwd_fake(dy, a, bias):
    return torch.empty_like(a, memory_format=torch.contiguous_format), a.new_empty(a.shape[-1], dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    a, bias = inputs
    ctx.save_for_backward(a, bias)


def _autograd_backward(ctx, dy):
    a, bias = ctx.saved_tensors
    da, dbias = torch.ops.vitpose_fast.bias_gelu_bwd(dy, a, bias)
    return da, dbias.to(bias.dtype)


_fwd_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------------------------
# public API
def supports(a: torch.Tensor) -> bool:
    """Whether :func:`bias_gelu` runs this input (device, dtype)."""
    return runtime.on_device(a) and a.dtype in _DTYPES and a.dim() >= 1 and a.shape[-1] > 0


def bias_gelu(a: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu(a + bias) (exact erf), differentiable in a and bias; same signature as
    :func:`vitpose_fast.reference.bias_gelu.bias_gelu_ref`."""
    if tuple(bias.shape) != (a.shape[-1],):
        raise ValueError(f"bias_gelu: bias must have shape ({a.shape[-1]},) for a {tuple(a.shape)}, "
                         f"got {tuple(bias.shape)}")
    if not supports(a):
        raise ValueError(f"bias_gelu kernel needs a CUDA (or TRITON_INTERPRET=1) tensor in {_DTYPES}; got "
                         f"{tuple(a.shape)} {a.dtype} on {a.device}")
    return _fwd_op(a, bias)


# --------------------------------------------------------------------------------------------------------------
# FP8 output (inference): the GELU output goes only to fc2 (and the ViTPose+ experts), so the kernel writes it
# as float8_e4m3fn codes with one scale per row. Whole rows per program (the row amax), tile settings of
# ``fp8_quant``; y is rounded to a's dtype first, so the codes are quantize_rows_ref(bias_gelu_ref(a, bias)).
@triton.jit
def _fwd_fp8_kernel(
    A, BIAS,
    Q, QS,  # [n_rows, n_cols] float8_e4m3fn codes, [n_rows] fp32 scales
    n_rows, n_cols, stride_a,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FP8_MAX: tl.constexpr, AMAX_EPS: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < n_rows
    cmask = cols < n_cols
    mask = rmask[:, None] & cmask[None, :]
    z = tl.load(A + rows[:, None] * stride_a + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    z += tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    y = (0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))).to(A.dtype.element_ty).to(tl.float32)
    q, scale = quantize_tile(tl.where(mask, y, 0.0), FP8_MAX, AMAX_EPS)
    tl.store(Q + rows[:, None] * n_cols + cols[None, :], q, mask=mask)
    tl.store(QS + rows, scale, mask=rmask)


def _forward_fp8(a: torch.Tensor, bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    a2 = _2d(a)
    n_rows, n_cols = a2.shape
    q = torch.empty((n_rows, n_cols), device=a.device, dtype=FP8)
    qs = torch.empty((n_rows, 1), device=a.device, dtype=torch.float32)
    if a2.numel():
        block_m, block_n, num_warps = fp8_quant.tile_settings(n_cols)
        _fwd_fp8_kernel[(triton.cdiv(n_rows, block_m),)](a2, bias.contiguous(), q, qs, n_rows, n_cols,
                                                         a2.stride(0), BLOCK_M=block_m, BLOCK_N=block_n,
                                                         FP8_MAX=E4M3_MAX, AMAX_EPS=EPS, num_warps=num_warps)
    return q.view(a.shape), qs.view(*a.shape[:-1], 1)


@torch.library.custom_op("vitpose_fast::bias_gelu_fp8", mutates_args=())
def _fwd_fp8_op(a: torch.Tensor, bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return _forward_fp8(a, bias)


@_fwd_fp8_op.register_fake
def _fwd_fp8_fake(a, bias):
    return a.new_empty(a.shape, dtype=FP8), a.new_empty((*a.shape[:-1], 1), dtype=torch.float32)


def bias_gelu_fp8(a: torch.Tensor, bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """gelu(a + bias) written as float8_e4m3fn codes [..., H] with per-row fp32 scales [..., 1] (amax / 448).
    Inference only; same signature and results as :func:`vitpose_fast.reference.fp8.bias_gelu_fp8_ref`."""
    if tuple(bias.shape) != (a.shape[-1],):
        raise ValueError(f"bias_gelu_fp8: bias must have shape ({a.shape[-1]},) for a {tuple(a.shape)}, "
                         f"got {tuple(bias.shape)}")
    if not supports(a) or a.shape[-1] > fp8_quant.MAX_K:
        raise ValueError(f"bias_gelu_fp8 kernel needs a CUDA (or TRITON_INTERPRET=1) tensor in {_DTYPES} with at "
                         f"most {fp8_quant.MAX_K} columns; got {tuple(a.shape)} {a.dtype} on {a.device}")
    return _fwd_fp8_op(a.detach(), bias.detach())


# --------------------------------------------------------------------------------------------------------------
# ahead-of-time compilation cases (sm_90a kernel report)
def report_cases(rows: int = 32 * 36 * 27, widths=(1536, 3072, 4096, 5120, 6144), dtype=torch.bfloat16,
                 fp8_width: int = 5120):
    """The kernel report's cases (:mod:`vitpose_fast.kernels.report`): forward and backward at every ViT MLP
    width, and the FP8-output forward at ViT-H's (``fp8_width``, when among ``widths``), ViTPose-H 576x432 batch
    32 rows, the launchers' own settings."""
    from vitpose_fast.kernels.report_case import Case, meta_tensor

    def fwd(h):
        _forward(meta_tensor(rows, h, dtype=dtype), meta_tensor(h, dtype=dtype))

    def bwd(h):
        a = meta_tensor(rows, h, dtype=dtype)
        _backward(meta_tensor(rows, h, dtype=dtype), a, meta_tensor(h, dtype=dtype))

    def fwd_fp8(h):
        _forward_fp8(meta_tensor(rows, h, dtype=dtype), meta_tensor(h, dtype=dtype))

    return [Case(module=__name__, kernels={name: label}, launch=functools.partial(fn, h), spec=f"H={h}")
            for h in widths for name, label, fn in (("_fwd_kernel", "bias_gelu_fwd", fwd),
                                                    ("_bwd_kernel", "bias_gelu_bwd", bwd))] + [
        Case(module=__name__, kernels={"_fwd_fp8_kernel": "bias_gelu_fp8"}, launch=functools.partial(fwd_fp8, h),
             spec=f"H={h}") for h in widths if h == fp8_width]
