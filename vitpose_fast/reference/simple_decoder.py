"""The simple decoder ``conv3x3(bilinear_x4(relu(x)))`` (paper Eq. 3; official TopdownHeatmapSimpleHead with
num_deconv_layers=0, upsample=4, final_conv_kernel=3).

x: [B, C, h, w]; weight: [K, C, 3, 3]; bias: [K] or None. Output: [B, K, 4h, 4w].

Two implementations with the same signature:

- :func:`simple_decoder_ref`: the official order, literally. It builds the C-channel 4x-upsampled tensor.
- :func:`simple_decoder_torch`: the exact reorder. Bilinear upsampling is linear and acts on every channel
  alike, so it commutes with the conv's channel mixing::

      conv3x3(up(r))[k] = bias[k] + sum_{ty, tx} shift_{ty-1, tx-1}(up(W_{ty,tx} r))[k]

  with ``W_{ty,tx} = weight[:, :, ty, tx]`` (K x C) and ``shift`` reading zeros outside the 4h x 4w map (the
  conv's zero padding lives in the upsampled space). One low-resolution GEMM r [B*h*w, C] x [C, 9K] gives
  y [B, h, w, 3, 3, K]; the upsample + 9-tap sum is then two small dense contractions with the 1-D operators
  ``A[oy, ty, i] = up_h(oy + ty - 1, i)`` ([4h, 3, h]) and ``A_w`` ([4w, 3, w]). Nothing of size C exists at high
  resolution; autograd differentiates both steps.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def simple_decoder_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The official order, literally: ReLU, bilinear x4 (align_corners=False), 3x3 conv with padding 1."""
    up = F.interpolate(F.relu(x), scale_factor=4, mode="bilinear", align_corners=False)
    return F.conv2d(up, weight, bias, padding=1)


def upsample_x4_matrix(n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """M [4n, n] with ``up(v)[u] = sum_i M[u, i] v[i]``: PyTorch's bilinear x4 along one axis, align_corners=False.

    The rule of ``upsample_bilinear2d``: src = max((u + 0.5) / 4 - 0.5, 0), i0 = floor(src),
    i1 = i0 + (i0 < n - 1), lambda1 = src - i0, lambda0 = 1 - lambda1. All of these are exact in fp32.
    """
    u = torch.arange(4 * n, device=device, dtype=torch.float64)
    src = ((u + 0.5) * 0.25 - 0.5).clamp(min=0)
    i0 = src.floor().long()
    i1 = torch.where(i0 < n - 1, i0 + 1, i0)
    lam1 = src - i0
    m = torch.zeros(4 * n, n, device=device, dtype=torch.float64)
    rows = torch.arange(4 * n, device=device)
    m.index_put_((rows, i0), 1 - lam1, accumulate=True)
    m.index_put_((rows, i1), lam1, accumulate=True)
    return m.to(dtype)


def shifted_upsample_x4_matrix(n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A [4n, 3, n] with ``A[o, t, i] = M[o + t - 1, i]``, zero where o + t - 1 is outside [0, 4n) (zero padding)."""
    m = upsample_x4_matrix(n, device, dtype)
    padded = F.pad(m, (0, 0, 1, 1))  # [4n + 2, n]: rows -1 and 4n are the conv's zero padding
    return torch.stack([padded[t : t + 4 * n] for t in range(3)], dim=1)


def simple_decoder_torch(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The exact reorder (module docstring): low-res GEMM to 9K channels, then upsample + 9-tap sum.

    The GEMM runs in x's dtype (fp32 accumulation in cuBLAS); the upsample + tap sum runs in fp32 (for fp16/bf16
    inputs, its 36-term sums would otherwise round twice) and the result is cast back to x's dtype.
    """
    if x.dim() != 4 or weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"simple_decoder_torch expects x [B, C, h, w] and weight [K, C, 3, 3]; got x {tuple(x.shape)}, "
            f"weight {tuple(weight.shape)}"
        )
    b, c, h, w = x.shape
    k = weight.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    r = F.relu(x).permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view when x came from [B, N, C] tokens
    w_mat = weight.to(x.dtype).permute(1, 2, 3, 0).reshape(c, 9 * k)  # column (ty * 3 + tx) * K + k
    y = (r @ w_mat).view(b, h, w, 3, 3, k).to(acc)
    a_h = shifted_upsample_x4_matrix(h, x.device, acc)  # [4h, 3, h]
    a_w = shifted_upsample_x4_matrix(w, x.device, acc)  # [4w, 3, w]
    t = torch.einsum("vxj,bijyxk->biyvk", a_w, y)  # [B, h, 3, 4w, K]: horizontal upsample + tx taps
    out = torch.einsum("uyi,biyvk->bkuv", a_h, t)  # [B, K, 4h, 4w]: vertical upsample + ty taps
    if bias is not None:
        out = out + bias.to(acc).view(1, k, 1, 1)
    return out.to(x.dtype).contiguous()
