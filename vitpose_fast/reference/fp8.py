"""FP8 (``float8_e4m3fn``) quantization and GEMMs in plain PyTorch: the oracle of ``kernels/fp8_quant.py`` and
of the ``torch._scaled_mm`` path.

Row-wise (per token / per output channel) scaling:
    amax = max |x| over the row (fp32), scale = max(amax, EPS) / 448,
    q = round_to_nearest_even(clamp(x / scale, -448, 448)) as float8_e4m3fn, so that x ~= q * scale.
e4m3 keeps 3 mantissa bits: a normal value is within 2^-4 relative of its code; values below 2^-6 * scale land
on the subnormal grid (steps of 2^-9 * scale). Activations get one scale per token (computed on the fly by
whoever produces them), weights one scale per output channel (computed once).

``fp8_linear_ref`` dequantizes and multiplies in fp32, then adds the bias and rounds to bf16: exactly what
``torch._scaled_mm(..., out_dtype=bfloat16)`` computes up to the order of its fp32 accumulation.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

E4M3_MAX = 448.0
EPS = 1e-12  # smallest amax: an all-zero row quantizes to zeros with a tiny positive scale
FP8 = getattr(torch, "float8_e4m3fn", None)


def quantize_rows_ref(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] (fp32/bf16/fp16) -> (q [..., K] float8_e4m3fn, scale [..., 1] float32), one scale per row."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp_min(EPS) / E4M3_MAX
    return (xf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8), scale


def quantize_weight(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A Linear weight [N, K] -> (codes [N, K] float8_e4m3fn, scales [1, N] float32): one scale per output
    channel, laid out as ``torch._scaled_mm``'s ``scale_b``."""
    q, scale = quantize_rows_ref(weight.detach())
    return q, scale.reshape(1, -1).contiguous()


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes [..., K] and row scales [..., 1] -> fp32 values."""
    return q.float() * scale


def fp8_linear_ref(
    qx: torch.Tensor, sx: torch.Tensor, qw: torch.Tensor, sw: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """qx [M, K] fp8, sx [M, 1] fp32, qw [N, K] fp8, sw [1, N] fp32, bias [N] -> [M, N] bfloat16."""
    out = (qx.float() @ qw.float().t()) * sx * sw
    if bias is not None:
        # _scaled_mm takes a bf16 bias: round it the same way before the fp32 add.
        out = out + bias.to(torch.bfloat16).float()
    return out.to(torch.bfloat16)


def fp8_linear_torch(
    qx: torch.Tensor, sx: torch.Tensor, qw: torch.Tensor, sw: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """The same product on the FP8 tensor cores (CPU: torch's own kernel): ``torch._scaled_mm`` with row-wise
    scales and a bf16 epilogue bias. Needs K and N multiples of 16 on CUDA (see :func:`scaled_mm_supports`)."""
    return torch._scaled_mm(
        qx, qw.t(), scale_a=sx, scale_b=sw, bias=None if bias is None else bias.to(torch.bfloat16),
        out_dtype=torch.bfloat16,
    )


def scaled_mm_supports(k: int, n: int) -> bool:
    """cuBLASLt / CUTLASS FP8 GEMMs need 16-aligned K and N (the token count M is free)."""
    return k % 16 == 0 and n % 16 == 0


# FP8-output variants of the fused block epilogues: the unquantized op, its output rounded to its dtype, then
# quantized per row (the oracle of the kernels' FP8 outputs).
def residual_layer_norm_fp8_ref(
    x: torch.Tensor, branch: torch.Tensor, bias: Optional[torch.Tensor], weight: torch.Tensor,
    ln_bias: torch.Tensor, eps: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, codes, scales) = (x + branch + bias, quantize_rows_ref(layer_norm(s)))."""
    from vitpose_fast.reference.residual_layer_norm import residual_layer_norm_ref

    s, h = residual_layer_norm_ref(x, branch, bias, weight, ln_bias, eps)
    return (s, *quantize_rows_ref(h))


def bias_gelu_fp8_ref(a: torch.Tensor, bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """quantize_rows_ref(gelu(a + bias))."""
    from vitpose_fast.reference.bias_gelu import bias_gelu_ref

    return quantize_rows_ref(bias_gelu_ref(a, bias))
