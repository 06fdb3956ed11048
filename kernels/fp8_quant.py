"""Per-row (per-token) dynamic FP8 quantization: x [..., K] -> float8_e4m3fn codes + one fp32 scale per row.

Algorithm (one program per BLOCK_M rows, whole rows in registers; :func:`quantize_tile` is the shared epilogue): load the row as fp32, amax = max |x|,
scale = max(amax, 1e-12) / 448 (IEEE division, ``div_rn``), y = clamp(x / scale, -448, 448) (IEEE division),
then round y to nearest-even on the e4m3 grid *in fp32 bits* and cast (the cast is then exact):
- normal range (|y| >= 2^-6): e4m3 keeps 3 of fp32's 23 mantissa bits, so add 0x7FFFF plus the lowest kept bit
  and clear the low 20 bits (a carry correctly moves into the exponent);
- subnormals (|y| < 2^-6, steps of 2^-9): (|y| * 512 + 1.5 * 2^23) - 1.5 * 2^23 is round-half-even to an
  integer in fp32, times 2^-9, with the sign bit put back (so -0.0 stays -0.0).
The codes are bit-identical to ``quantize_rows_ref`` (torch's own RNE, saturating cast), on the GPU too: IEEE
divisions and an exact final cast leave nothing to the hardware's rounding.

Why round by hand: the Triton 3.9 interpreter's fp32 -> float8e4nv conversion drops the exponent carry when a
value rounds up into the next binade (125.7 -> 64 instead of 128, measured), so under ``TRITON_INTERPRET=1`` a
plain ``.to(tl.float8e4nv)`` is wrong for ~2% of random inputs. Exact values convert correctly there, so the
hand rounding makes the interpreter test the same code the GPU runs. It costs a few integer ops in a
memory-bound kernel.

Shapes and dtypes: x [..., K] float32/bfloat16/float16 with a unit last stride (leading dims are flattened; rows
may be strided), 1 <= K <= 16384 (a row lives in registers); returns q [..., K] float8_e4m3fn (contiguous) and
scale [..., 1] float32. Row offsets are int64. NaN/inf inputs are not supported. Inference only (no autograd):
the FP8 path is a forward-only transform of a trained model.
"""

from __future__ import annotations

import functools
from typing import Tuple

import torch
import triton
import triton.language as tl

from vitpose_fast.kernels import runtime
from vitpose_fast.reference.fp8 import E4M3_MAX, EPS, FP8

MAX_K = 16384
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _round_to_e4m3(y):
    """Round-half-even of fp32 y (|y| <= 448) onto the float8_e4m3fn grid, returned as fp32 (exactly
    representable, so a following cast to float8e4nv is exact)."""
    bits = y.to(tl.int32, bitcast=True)
    lsb = (bits >> 20) & 1
    normal = ((bits + 0x7FFFF + lsb) & -1048576).to(tl.float32, bitcast=True)  # -1048576 = 0xFFF00000
    sub = ((tl.abs(y) * 512.0 + 12582912.0) - 12582912.0) * 0.001953125
    sub = (sub.to(tl.int32, bitcast=True) | (bits & -2147483648)).to(tl.float32, bitcast=True)
    return tl.where(tl.abs(y) < 0.015625, sub, normal)


@triton.jit
def quantize_tile(x, FP8_MAX: tl.constexpr, AMAX_EPS: tl.constexpr):
    """fp32 rows [BLOCK_M, BLOCK_K] (masked lanes 0) -> (float8e4nv codes [BLOCK_M, BLOCK_K], fp32 scales
    [BLOCK_M]). Also the FP8 epilogue of the fused residual+LayerNorm and bias+GELU kernels."""
    amax = tl.max(tl.abs(x), axis=1)
    scale = tl.math.div_rn(tl.maximum(amax, AMAX_EPS), tl.full(amax.shape, FP8_MAX, tl.float32))
    y = tl.math.div_rn(x, tl.zeros_like(x) + scale[:, None])
    y = tl.minimum(tl.maximum(y, -FP8_MAX), FP8_MAX)
    return _round_to_e4m3(y).to(tl.float8e4nv), scale


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, M, K, stride_xm, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                          FP8_MAX: tl.constexpr, AMAX_EPS: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_K)
    rmask = rows < M
    mask = rmask[:, None] & (cols < K)[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    q, scale = quantize_tile(x, FP8_MAX, AMAX_EPS)
    tl.store(q_ptr + rows[:, None] * K + cols[None, :], q, mask=mask)
    tl.store(s_ptr + rows, scale, mask=rmask)


def tile_settings(k: int) -> tuple:
    """(BLOCK_M, BLOCK_K, num_warps) for whole rows of K: about 4K elements per program on GPU, 16K under the
    interpreter (:func:`runtime.row_elements`)."""
    block_m, block_k = runtime.row_tile(k, runtime.row_elements(4096))
    if runtime.interpreting():
        return block_m, block_k, 4
    return block_m, block_k, max(1, min(16, block_m * block_k // 256))


# ------------------------------------------------------------------------------------------------------------------
# launcher
def _check(x: torch.Tensor) -> None:
    if FP8 is None:
        raise RuntimeError(f"torch {torch.__version__} has no float8_e4m3fn dtype (FP8 needs torch >= 2.1)")
    if x.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"fp8 quantization takes float32, bfloat16 or float16 input, got {x.dtype}")
    if x.ndim < 1 or not 1 <= x.shape[-1] <= MAX_K:
        raise ValueError(f"fp8 quantization needs a last dim K in [1, {MAX_K}], got shape {tuple(x.shape)}")


def _launch(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    _check(x)
    k = x.shape[-1]
    rows = x.reshape(-1, k)  # a view for any row-strided 2-D input
    if rows.numel() and rows.stride(-1) != 1:
        rows = rows.contiguous()
    m = rows.shape[0]
    q = torch.empty((m, k), dtype=FP8, device=x.device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    if m:
        block_m, block_k, num_warps = tile_settings(k)
        _quantize_rows_kernel[(triton.cdiv(m, block_m),)](rows, q, scale, m, k, rows.stride(0), BLOCK_M=block_m,
                                                          BLOCK_K=block_k, FP8_MAX=E4M3_MAX, AMAX_EPS=EPS,
                                                          num_warps=num_warps)
    return q, scale


# ------------------------------------------------------------------------------------------------------------------
# torch.library registration (opaque to torch.compile; inference only)
@torch.library.custom_op("vitpose_fast::fp8_quantize_rows", mutates_args=())
def _quantize_rows_op(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return _launch(x)


@_quantize_rows_op.register_fake
def _(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    _check(x)
    m = x.numel() // x.shape[-1]
    return x.new_empty((m, x.shape[-1]), dtype=FP8), x.new_empty((m, 1), dtype=torch.float32)


def quantize_rows(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] -> (q [..., K] float8_e4m3fn, scale [..., 1] float32); same signature and bit-identical
    results as :func:`vitpose_fast.reference.fp8.quantize_rows_ref`."""
    q, scale = torch.ops.vitpose_fast.fp8_quantize_rows(x.detach())
    return q.view(x.shape), scale.view(*x.shape[:-1], 1)


def supports(x: torch.Tensor) -> bool:
    """Whether :func:`quantize_rows` handles ``x`` (else use the reference)."""
    return FP8 is not None and x.dtype in _SUPPORTED_DTYPES and x.ndim >= 1 and 1 <= x.shape[-1] <= MAX_K


# ------------------------------------------------------------------------------------------------------------------
# ahead-of-time compilation cases (sm_90a kernel report)
def report_cases(rows: int = 32 * 36 * 27, dtype=torch.bfloat16) -> list:
    """The kernel report's cases (:mod:`vitpose_fast.kernels.report`): the standalone quantization at the GEMM
    input widths of ViTPose-H (C = 1280, 4C = 5120), bf16 in, ViT-H 576x432 batch 32 rows, the launcher's
    settings. The FP8-output forms of the fused residual+LayerNorm and bias+GELU kernels are in their modules'
    cases."""
    from vitpose_fast.kernels.report_case import Case, meta_tensor

    def quantize(k):
        _launch(meta_tensor(rows, k, dtype=dtype))

    return [Case(module=__name__, kernels={"_quantize_rows_kernel": "fp8_quantize"},
                 launch=functools.partial(quantize, k), spec=f"K={k}") for k in (1280, 5120)]
