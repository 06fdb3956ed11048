"""FP8 inference: the backbone's four GEMMs per block (qkv, proj, fc1, fc2, and the ViTPose+ experts) on
float8_e4m3fn operands, everything else unchanged.

- Weights: quantized once (:meth:`vitpose_fast.Model.quantize_fp8`), one fp32 scale per output channel
  (amax / 448); the codes replace the bf16 weights (half the memory).
- Activations: quantized per token on the fly (scale = amax / 448; :func:`vitpose_fast.ops.quantize_fp8`, a
  fused Triton pass on CUDA), or handed over already quantized by the op that produced them.
- GEMMs: ``torch._scaled_mm`` with row-wise scales and the bias in its epilogue, bf16 output
  (:func:`vitpose_fast.ops.fp8_linear`).
- Attention, the patch embedding, LayerNorm (statistics in fp32), GELU, residual adds and the heads stay in the
  model's dtype (bf16 for ``precision="fp8"``).

Precisions: see :mod:`vitpose_fast.model.precision` (``fp8`` = the bf16 model with FP8 GEMMs, applied by its
:func:`~vitpose_fast.model.precision.apply_precision`). FP8 needs FP8 tensor cores on CUDA (sm_89 Ada, sm_90
Hopper or newer) or the CPU, and a torch whose ``torch._scaled_mm`` takes row-wise scales on that device
(:func:`check_fp8_support` runs that call once per device on tiny tensors: torch 2.11's CPU build, for one, has
tensor-wise scales only); anything else fails with :class:`Fp8UnavailableError` saying what is missing.
Inference only: a quantized model has no trainable GEMM weights and refuses ``train()`` forwards.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from vitpose_fast import ops
from vitpose_fast.reference.fp8 import FP8, fp8_linear_torch, quantize_weight

MIN_CAPABILITY = (8, 9)


class Fp8UnavailableError(RuntimeError):
    """FP8 was asked for where it cannot run (old GPU, torch without ``_scaled_mm``, other devices)."""


def fp8_unavailable_reason(device: torch.device) -> Optional[str]:
    """Why FP8 GEMMs cannot run on ``device`` (None when they can)."""
    device = torch.device(device)
    fallback = "use precision 'bf16' (CLI: --precision bf16) instead"
    if FP8 is None or not hasattr(torch, "_scaled_mm"):
        return (f"torch {torch.__version__} has no torch._scaled_mm / float8_e4m3fn: FP8 GEMMs need torch >= 2.4; "
                f"upgrade torch or {fallback}")
    if device.type == "cuda":
        if getattr(torch.version, "hip", None):
            return f"FP8 here is written for NVIDIA GPUs (sm_89+), this torch is a ROCm build; {fallback}"
        cap = tuple(torch.cuda.get_device_capability(device))
        if cap < MIN_CAPABILITY:
            name = torch.cuda.get_device_name(device)
            return (f"{name} is sm_{cap[0]}{cap[1]}: FP8 tensor cores need sm_89 (Ada) or sm_90 (Hopper) and newer; "
                    f"{fallback}")
        return None
    if device.type != "cpu":
        return f"FP8 GEMMs run on CUDA (sm_89+) and CPU, not on {device.type}; {fallback}"
    return None


# The probe's answer per (device type, index): None (the call works) or why not.
_PROBED: Dict[Tuple[str, Optional[int]], Optional[str]] = {}


def _probe_scaled_mm(device: torch.device) -> Optional[str]:
    """Why the GEMM of :func:`vitpose_fast.reference.fp8.fp8_linear_torch` (row-wise scales, bf16 bias and output)
    fails on ``device`` or gives wrong values (None when it works), from one call on 16 x 16 operands whose exact
    product is known: row i of the result is 16 * (i + 1)."""
    fallback = "use precision 'bf16' (CLI: --precision bf16) instead"
    what = f"torch {torch.__version__} cannot run FP8 GEMMs with row-wise scales on {device}"
    try:
        ones = torch.ones(16, 16, device=device).to(FP8)
        row_scale = torch.arange(1, 17, device=device, dtype=torch.float32).reshape(16, 1)
        col_scale = torch.ones(1, 16, device=device)
        out = fp8_linear_torch(ones, row_scale, ones, col_scale, torch.zeros(16, device=device))
    except Exception as e:  # whatever the build raises: unsupported scales, dtypes, kernels
        first = (str(e).strip().splitlines() or [""])[0]
        return f"{what} (torch._scaled_mm failed: {type(e).__name__}: {first}); {fallback}"
    if not torch.equal(out.float().cpu(), (16 * row_scale).expand(16, 16).cpu()):
        return f"{what} (torch._scaled_mm returned wrong values on a probe with a known product); {fallback}"
    return None


def check_fp8_support(device: torch.device) -> None:
    """Raise :class:`Fp8UnavailableError` naming why FP8 GEMMs cannot run on ``device``: the static checks of
    :func:`fp8_unavailable_reason`, then the real ``torch._scaled_mm`` call (probed once per device, cached)."""
    device = torch.device(device)
    reason = fp8_unavailable_reason(device)
    if reason is None:
        key = (device.type, device.index)
        if key not in _PROBED:
            with torch.no_grad():
                _PROBED[key] = _probe_scaled_mm(device)
        reason = _PROBED[key]
    if reason is not None:
        raise Fp8UnavailableError(reason)


class Fp8Linear(nn.Module):
    """A frozen ``nn.Linear`` with float8_e4m3fn weight codes [N, K] and fp32 per-output-channel scales [1, N]
    (buffers ``weight``, ``weight_scale``; ``bias`` [N] in the model's dtype). ``forward(x [..., K])``
    quantizes x per token and returns [..., N] in x's dtype; x may also be a (codes [M, K], scales [M, 1])
    pair from a producer that quantized it already (the fused LayerNorm and bias+GELU ops of the block). The
    caller passes the resolved backend (:func:`vitpose_fast.ops.resolve`), as to every op: the layer keeps none.

    ``Module.to(dtype)`` leaves the codes and scales as they are (only devices move): casting codes to another
    dtype would lose nothing, but scales in bf16 would."""

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor]):
        super().__init__()
        if weight.dtype != FP8 or weight.ndim != 2:
            raise TypeError(f"Fp8Linear needs [N, K] float8_e4m3fn weight codes, got {weight.dtype} {tuple(weight.shape)}")
        if weight_scale.shape != (1, weight.shape[0]) or weight_scale.dtype != torch.float32:
            raise ValueError(f"weight_scale must be [1, N={weight.shape[0]}] float32, got "
                             f"{weight_scale.dtype} {tuple(weight_scale.shape)}")
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        q, scale = quantize_weight(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, scale, bias).train(linear.training)

    def _apply(self, fn, recurse=True):
        codes, scale = self.weight, self.weight_scale
        super()._apply(fn, recurse)
        self.weight = codes.to(self.weight.device)
        self.weight_scale = scale.to(self.weight_scale.device)
        return self

    def forward(self, x, backend: str = "torch", with_bias: bool = True):
        if self.training:
            raise RuntimeError("FP8 layers are inference-only (no gradients): call model.eval() or use a model "
                               "that was not quantized for training")
        return linear_layers(x, [self], backend, with_bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, fp8"


Fp8Input = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def linear_layers(x: Fp8Input, layers: Sequence[Fp8Linear], backend: str = "torch",
                  with_bias: bool = True) -> torch.Tensor:
    """x [..., K] through the layers concatenated along their output features, as one FP8 GEMM (per-channel
    scales concatenate too; ViTPose+'s fc2 plus one expert). x is a tensor (quantized here per token; the output
    has its dtype) or a (codes [..., K], scales [..., 1]) pair from a producer that quantized it (the output has
    the bias's dtype, i.e. the model's). ``backend``: a resolved backend (:func:`vitpose_fast.ops.resolve`).
    ``with_bias=False`` leaves the bias to the fused op that follows."""
    first = layers[0]
    if len(layers) == 1:
        weight, scale = first.weight, first.weight_scale
    else:
        weight = torch.cat([m.weight for m in layers])
        scale = torch.cat([m.weight_scale for m in layers], dim=1)
    bias = layers_bias(layers)
    if isinstance(x, tuple):
        codes, scales = x
        # The model's activation dtype, which the bias follows through Module.to (bf16 without one).
        lead, out_dtype = codes.shape[:-1], torch.bfloat16 if first.bias is None else first.bias.dtype
        flat = (codes.reshape(-1, codes.shape[-1]), scales.reshape(-1, 1))
    else:
        lead, out_dtype = x.shape[:-1], x.dtype
        flat = x.reshape(-1, x.shape[-1])
    out = ops.fp8_linear(flat, weight, scale, bias if with_bias else None, backend)
    return out.to(out_dtype).view(*lead, weight.shape[0])


def layers_bias(layers: Sequence[nn.Module]) -> Optional[torch.Tensor]:
    """The concatenated biases of layers (None if any has none)."""
    if any(m.bias is None for m in layers):
        return None
    return layers[0].bias if len(layers) == 1 else torch.cat([m.bias for m in layers])


@torch.no_grad()
def quantize_backbone(backbone: nn.Module) -> List[str]:
    """Replace every block's qkv, proj, fc1, fc2 and ViTPose+ experts by :class:`Fp8Linear` in place; returns
    the replaced module names (relative to ``backbone``). Layers already in FP8 are left alone."""
    done: List[str] = []
    for i, blk in enumerate(backbone.blocks):
        for prefix, parent in (("attn", blk.attn), ("mlp", blk.mlp)):
            for name in ("qkv", "proj", "fc1", "fc2"):
                child = getattr(parent, name, None)
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Fp8Linear.from_linear(child))
                    done.append(f"blocks.{i}.{prefix}.{name}")
            experts = getattr(parent, "experts", None)
            for e, child in enumerate(experts if experts is not None else ()):
                if isinstance(child, nn.Linear):
                    experts[e] = Fp8Linear.from_linear(child)
                    done.append(f"blocks.{i}.{prefix}.experts.{e}")
    return done


def is_quantized(module: nn.Module) -> bool:
    return any(isinstance(m, Fp8Linear) for m in module.modules())
