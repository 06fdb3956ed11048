"""The one place that chooses an implementation for each op.

Backends:
- ``reference``: plain PyTorch from :mod:`vitpose_fast.reference` (explicit softmax, F.interpolate, conv2d):
  the parity oracle, readable first.
- ``torch``: fast PyTorch ops (SDPA, the exact decoder reorder done with cuBLAS/cuDNN, ...). Runs anywhere.
- ``triton``: our kernels (:mod:`vitpose_fast.kernels`), on CUDA tensors of shapes the kernel supports; any
  other input falls back to ``torch``.
- ``auto`` (the default): ``triton`` on CUDA where a kernel exists, ``torch`` elsewhere.

FP8 inference (``Model.quantize_fp8``) goes through :func:`quantize_fp8` and :func:`fp8_linear` here too.

A model's ``backend`` attribute wins; a model left at ``auto`` follows ``VITPOSE_FAST_BACKEND``. Every backend
uses the same parameters, so switching never changes a state dict.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from math import log
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from vitpose_fast.config import BACKENDS, AttentionSpec
from vitpose_fast.kernels import runtime as _runtime
from vitpose_fast.reference import attention as _ref_attention
from vitpose_fast.reference import fp8 as _ref_fp8
from vitpose_fast.reference import heatmap_decode as _ref_heatmap_decode
from vitpose_fast.reference.bias_gelu import bias_gelu_ref
from vitpose_fast.reference.residual_layer_norm import residual_layer_norm_ref
from vitpose_fast.reference import simple_decoder as _ref_simple_decoder

ENV_VAR = "VITPOSE_FAST_BACKEND"


def env_backend() -> str:
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={value!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    return value


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def resolve(backend: Optional[str], device: torch.device) -> str:
    """The concrete backend (``reference``, ``torch`` or ``triton``) for a requested one on ``device``."""
    backend = check_backend(backend or "auto")
    if backend == "auto":
        backend = env_backend()
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    return backend


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _triton_usable(*tensors: torch.Tensor) -> bool:
    # The interpreter (TRITON_INTERPRET=1) runs kernels on CPU tensors; compiled kernels need CUDA.
    return triton_available() and _runtime.on_device(*tensors)


# --------------------------------------------------------------------------------------------------------------
# attention
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    grid: Tuple[int, int],
    rel_pos_h: Optional[torch.Tensor] = None,
    rel_pos_w: Optional[torch.Tensor] = None,
    backend: str = "torch",
    extra_k: Optional[torch.Tensor] = None,
    extra_v: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Multi-head attention of q, k, v [B, N, heads, head_dim] (N = Hp * Wp tokens, row-major) -> same shape,
    with the window / shift / pool / rel-pos semantics of :mod:`vitpose_fast.reference.attention`.

    ``extra_k``, ``extra_v`` [B, T, heads, head_dim] (optional): extra global key/value tokens every query sees
    besides its window (the knowledge tokens; no mask, no rel-pos term).

    ``backend`` is a resolved backend (see :func:`resolve`). ``triton``: plain global attention on CUDA goes to
    the fastest installed vendor kernel (flash-attn, xFormers, else SDPA; extra tokens concatenated to k and v;
    see :func:`global_attention`), every other spec to our fused kernel; inputs
    the kernel does not support fall back to ``torch`` (the SDPA composition).
    """
    if backend == "reference":
        return _ref_attention.attention_ref(q, k, v, spec, grid, rel_pos_h, rel_pos_w, extra_k, extra_v)
    if backend == "triton" and _triton_usable(q) and _attention_kernel_supports(q, spec):
        from vitpose_fast.kernels import attention as _k

        if q.is_cuda and spec.kind == "global" and not spec.rel_pos:
            _ref_attention.check_inputs(q, k, v, spec, grid, rel_pos_h, rel_pos_w)
            return global_attention(q, k, v, extra_k, extra_v)
        return _k.attention(q, k, v, spec, grid, rel_pos_h, rel_pos_w, extra_k, extra_v)
    return _ref_attention.attention_torch(q, k, v, spec, grid, rel_pos_h, rel_pos_w, extra_k, extra_v)


def _attention_kernel_supports(q: torch.Tensor, spec: AttentionSpec) -> bool:
    try:
        from vitpose_fast.kernels import attention as _k
    except ImportError:
        return False
    return _k.supports(q, spec)


# --------------------------------------------------------------------------------------------------------------
# plain global attention on CUDA (the ``triton`` backend): our kernel or a vendor kernel, by measured speed
GLOBAL_ENV = "VITPOSE_FAST_GLOBAL_ATTENTION"
GLOBAL_CHOICES = ("auto", "flash", "xformers", "sdpa", "triton")


@dataclass(frozen=True)
class GlobalTiming:
    """One measured forward of plain global attention: our kernel vs the vendor kernel ``auto`` would call
    otherwise, on one device (``torch.cuda.get_device_name`` prefix), dtype and shape [batch, tokens, heads,
    head_dim]."""

    device: str
    dtype: torch.dtype
    batch: int
    tokens: int
    heads: int
    head_dim: int
    vendor: str  # "flash", "xformers" or "sdpa": what was timed against ours
    triton_ms: float
    vendor_ms: float


# Measured speeds (bench_attention.py, global spec). Empty until GPU measurements are committed: with no entry
# for a device / dtype / head dim, ``auto`` takes the vendor kernel.
GLOBAL_TIMINGS: Tuple[GlobalTiming, ...] = ()


_DEVICE_NAMES: dict = {}


def _device_name(device: torch.device) -> str:
    if device not in _DEVICE_NAMES:
        _DEVICE_NAMES[device] = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return _DEVICE_NAMES[device]


def choose_global(q: torch.Tensor, timings: Optional[Tuple[GlobalTiming, ...]] = None) -> str:
    """``"triton"`` or ``"vendor"`` for global attention on q [B, N, heads, d]: the entry of ``timings`` (default
    :data:`GLOBAL_TIMINGS`) measured on this device, dtype and head dim whose shape is nearest (log-distance in
    tokens, then in batch * heads) decides; no such entry -> ``"vendor"``."""
    timings = GLOBAL_TIMINGS if timings is None else timings
    b, n, h, d = q.shape
    name = _device_name(q.device)
    entries = [t for t in timings if t.head_dim == d and t.dtype == q.dtype and name.startswith(t.device)]
    if not entries:
        return "vendor"
    best = min(entries, key=lambda t: (abs(log(t.tokens / max(n, 1))), abs(log(t.batch * t.heads / max(b * h, 1)))))
    return "triton" if best.triton_ms < best.vendor_ms else "vendor"


def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def _xformers_attention():
    try:
        from xformers.ops import memory_efficient_attention
    except ImportError:
        return None
    return memory_efficient_attention


def global_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    extra_k: Optional[torch.Tensor] = None,
    extra_v: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Plain global attention (no rel-pos) of CUDA q, k, v [B, N, heads, d] -> [B, N, heads, d].

    Extra key/value tokens ([B, T, heads, d]) are concatenated to k and v for the vendor kernels (they take
    N + T keys for N queries; one copy of k and v) and passed as appended tokens to ours.

    ``VITPOSE_FAST_GLOBAL_ATTENTION`` picks flash / xformers / sdpa / triton; ``auto`` (default) runs our kernel
    where :func:`choose_global` finds it measured faster for this device, dtype, head dim and shape (the d80 of
    ViT-H is the case in question: flash-attn pads it to 96, FlexAttention to 128), else flash-attn's
    ``flash_attn_func`` (fp16/bf16), else xFormers' ``memory_efficient_attention``, else SDPA: tuned vendor
    FA2/FA3/cuDNN kernels that read the [B, N, heads, d] layout directly (SDPA through transposed views).
    """
    choice = os.environ.get(GLOBAL_ENV, "auto").strip().lower() or "auto"
    if choice not in GLOBAL_CHOICES:
        raise ValueError(f"{GLOBAL_ENV}={choice!r}; expected one of {', '.join(GLOBAL_CHOICES)}")
    if choice == "auto" and choose_global(q) == "triton":
        choice = "triton"
    if choice == "triton" and _attention_kernel_supports(q, AttentionSpec()):
        from vitpose_fast.kernels import attention as _k

        return _k.attention(q, k, v, AttentionSpec(), (1, q.shape[1]), extra_k=extra_k, extra_v=extra_v)
    if _ref_attention.check_extra(q, extra_k, extra_v):
        k, v = torch.cat([k, extra_k], dim=1), torch.cat([v, extra_v], dim=1)
    half = q.dtype in (torch.float16, torch.bfloat16)
    if choice in ("auto", "flash") and half and q.shape[-1] <= 256 and _flash_attn_func() is not None:
        return _flash_attn_func()(q, k, v)
    if choice in ("auto", "xformers") and _xformers_attention() is not None:
        return _xformers_attention()(q, k, v)
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


# --------------------------------------------------------------------------------------------------------------
# simple decoder: conv3x3(bilinear_x4(relu(x)))
def simple_decoder(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], backend: str = "torch", scale: int = 4
):
    """The simple head on features x [B, C, h, w] with a 3x3 conv weight [K, C, 3, 3] -> [B, K, 4h, 4w].

    ``scale`` 2 (1/8 features) runs the plain composition; the fused paths are written for the official x4."""
    if scale != 4:
        up = F.interpolate(F.relu(x), scale_factor=scale, mode="bilinear", align_corners=False)
        return F.conv2d(up, weight, bias, padding=1)
    if backend == "reference":
        return _ref_simple_decoder.simple_decoder_ref(x, weight, bias)
    if backend == "triton" and _triton_usable(x):
        try:
            from vitpose_fast.kernels import simple_decoder as _k
        except ImportError:
            _k = None
        if _k is not None and _k.supports(x, weight):
            return _k.simple_decoder(x, weight, bias)
    return _ref_simple_decoder.simple_decoder_torch(x, weight, bias)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


# --------------------------------------------------------------------------------------------------------------
# fused epilogues of the transformer block (the ``torch`` and ``triton`` backends; ``reference`` keeps the plain
# modules, see :class:`vitpose_fast.model.backbone.Block`)
def fuses_linear_bias(backend: str) -> bool:
    """Whether the proj / fc1 / fc2 GEMMs run without bias and :func:`residual_layer_norm` / :func:`bias_gelu`
    add it (``triton``); the ``torch`` backend keeps the bias in the GEMM (addmm) and composes plain ops."""
    return backend == "triton"


def residual_layer_norm(
    x: torch.Tensor,
    branch: torch.Tensor,
    bias: Optional[torch.Tensor],
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    backend: str = "torch",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(s, h) = (x + branch + bias, layer_norm(s)): the residual add of a block branch (its Linear bias included)
    fused with the LayerNorm that follows. ``branch`` has x's shape or (1, *x.shape[1:])."""
    if backend == "triton" and _triton_usable(x, branch):
        from vitpose_fast.kernels import residual_layer_norm as _k

        if _k.supports(x, branch):
            return _k.residual_layer_norm(x, branch, bias, weight, ln_bias, eps)
    return residual_layer_norm_ref(x, branch, bias, weight, ln_bias, eps)


def bias_gelu(a: torch.Tensor, bias: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    """gelu(a + bias) (exact erf) on the bias-free fc1 output."""
    if backend == "triton" and _triton_usable(a):
        from vitpose_fast.kernels import bias_gelu as _k

        if _k.supports(a):
            return _k.bias_gelu(a, bias)
    return bias_gelu_ref(a, bias)


# --------------------------------------------------------------------------------------------------------------
# heatmap decoding: [N, K, H, W] + centers/scales [N, 2] -> [N, K, 3] image coordinates
def decode_heatmaps(heatmaps: torch.Tensor, centers, scales, method: str = "udp", kernel: int = 11,
                    backend: str = "torch") -> torch.Tensor:
    """Batched keypoint decoding (formulas: :mod:`vitpose_fast.reference.heatmap_decode`); ``triton`` fuses argmax,
    refinement and the transform back into one kernel that reads only the stencil points around each peak."""
    if backend == "triton" and _triton_usable(heatmaps):
        try:
            from vitpose_fast.kernels import heatmap_decode as _k
        except ImportError:
            _k = None
        if _k is not None and _k.supports(heatmaps, method, kernel):
            return _k.decode_heatmaps_triton(heatmaps, centers, scales, method=method, kernel=kernel)
    if backend == "reference":
        return _ref_heatmap_decode.decode_heatmaps_ref(heatmaps, centers, scales, method=method, kernel=kernel)
    return _ref_heatmap_decode.decode_heatmaps_torch(heatmaps, centers, scales, method=method, kernel=kernel)


# --------------------------------------------------------------------------------------------------------------
# FP8 GEMMs (inference): per-token activation scales, per-output-channel weight scales
def quantize_fp8(x: torch.Tensor, backend: str = "torch") -> Tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] -> (float8_e4m3fn codes [..., K], fp32 scales [..., 1]), one scale (amax / 448) per row.
    ``triton``: one fused pass (:mod:`vitpose_fast.kernels.fp8_quant`); the other backends: torch ops."""
    if backend == "triton" and _triton_usable(x):
        try:
            from vitpose_fast.kernels import fp8_quant as _k
        except ImportError:
            _k = None
        if _k is not None and _k.supports(x):
            return _k.quantize_rows(x)
    return _ref_fp8.quantize_rows_ref(x)


def fp8_linear(
    x: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: Optional[torch.Tensor],
    backend: str = "torch",
) -> torch.Tensor:
    """y = x W^T + b with FP8 operands: x [M, K] (quantized here per token) or already quantized
    (codes [M, K], scales [M, 1]); weight [N, K] float8_e4m3fn with weight_scale [1, N]; bias [N] or None.
    Returns [M, N] bfloat16 (the FP8 GEMMs' output type).

    ``reference``: dequantized fp32 matmul (the oracle); ``torch`` / ``triton``: ``torch._scaled_mm`` with
    row-wise scales, except for K or N not a multiple of 16 (the FP8 GEMMs' alignment), which take the oracle."""
    qx, sx = x if isinstance(x, tuple) else quantize_fp8(x, backend)
    if backend == "reference" or not _ref_fp8.scaled_mm_supports(qx.shape[-1], weight.shape[0]):
        return _ref_fp8.fp8_linear_ref(qx, sx, weight, weight_scale, bias)
    return _ref_fp8.fp8_linear_torch(qx, sx, weight, weight_scale, bias)


def residual_layer_norm_fp8(
    x: torch.Tensor,
    branch: torch.Tensor,
    bias: Optional[torch.Tensor],
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    backend: str = "torch",
) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """:func:`residual_layer_norm` for a LayerNorm that feeds an FP8 GEMM: (s, (codes, scales)), h quantized per
    row by the same pass on ``triton`` (inference only)."""
    if backend == "triton" and _triton_usable(x, branch):
        from vitpose_fast.kernels import residual_layer_norm as _k

        if _k.supports(x, branch) and x.shape[-1] <= _k.fp8_quant.MAX_K:
            s, q, scale = _k.residual_layer_norm_fp8(x, branch, bias, weight, ln_bias, eps)
            return s, (q, scale)
    s, q, scale = _ref_fp8.residual_layer_norm_fp8_ref(x, branch, bias, weight, ln_bias, eps)
    return s, (q, scale)


def bias_gelu_fp8(a: torch.Tensor, bias: torch.Tensor, backend: str = "torch") -> Tuple[torch.Tensor, torch.Tensor]:
    """gelu(a + bias) as (codes, scales) for the FP8 fc2 (one pass on ``triton``; inference only)."""
    if backend == "triton" and _triton_usable(a):
        from vitpose_fast.kernels import bias_gelu as _k

        if _k.supports(a) and a.shape[-1] <= _k.fp8_quant.MAX_K:
            return _k.bias_gelu_fp8(a, bias)
    return _ref_fp8.bias_gelu_fp8_ref(a, bias)
