"""The one precision vocabulary of the library, the CLI and the benchmarks.

- ``"fp32"``: float32 weights and activations.
- ``"bf16"``: bfloat16 weights and activations (LayerNorm and softmax statistics in fp32).
- ``"fp8"``: the bf16 model with the backbone's GEMMs on FP8 operands (:mod:`vitpose_fast.model.fp8`).
- ``None`` or ``"auto"``: :func:`default_precision` of the device.

The default is bf16 where the hardware computes it natively (NVIDIA GPUs from sm_80, CPUs with AVX512-BF16 or
AMX) and fp32 elsewhere: emulated bf16 is slower than fp32. bf16's accuracy on the trained tiny model equals
fp32's (``benchmarks/results/cpu_fp8_accuracy_2026-12-02.md``). FP8 is never a default: it changes the GEMMs'
numerics and needs FP8 tensor cores to pay off.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional, Tuple

import torch

PRECISIONS = ("fp32", "bf16", "fp8")
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp8": torch.bfloat16}
AUTO = "auto"
MIN_BF16_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

logger = logging.getLogger("vitpose_fast")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    """The CPU feature flags of /proc/cpuinfo (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _default(device: torch.device) -> Tuple[str, str]:
    """(precision, why) for ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        if getattr(torch.version, "hip", None):
            if torch.cuda.is_bf16_supported():
                return "bf16", "this ROCm GPU computes bf16 natively"
            return "fp32", "this ROCm GPU has no native bf16"
        cap = tuple(torch.cuda.get_device_capability(device))
        name = torch.cuda.get_device_name(device)
        if cap >= MIN_BF16_CAPABILITY:
            return "bf16", f"{name} (sm_{cap[0]}{cap[1]}) has bf16 tensor cores"
        return "fp32", f"{name} (sm_{cap[0]}{cap[1]}) has no bf16 tensor cores (sm_80+)"
    if device.type == "cpu":
        native = [f for f in CPU_BF16_FLAGS if f in cpu_flags()]
        if native and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
            return "bf16", f"the CPU computes bf16 natively ({', '.join(native)})"
        return "fp32", "the CPU has no native bf16 (no avx512_bf16 or amx_bf16)"
    return "fp32", f"no native-bf16 detection for {device.type}"


def default_precision(device) -> str:
    """``"bf16"`` where ``device`` computes bf16 natively, else ``"fp32"``."""
    return _default(device)[0]


def check_precision(precision: Optional[str]) -> str:
    """``precision`` validated (None becomes ``"auto"``); raises ValueError naming the choices."""
    if precision is None:
        return AUTO
    if not isinstance(precision, str) or precision.strip().lower() not in PRECISIONS + (AUTO,):
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}, "
                         f"'{AUTO}' or None (the device's default)")
    return precision.strip().lower()


def choose_precision(precision: Optional[str], device) -> Tuple[str, str]:
    """(the concrete precision, why it was chosen) for a requested one on ``device``."""
    precision = check_precision(precision)
    if precision != AUTO:
        return precision, "asked for"
    chosen, why = _default(device)
    return chosen, f"the default on {torch.device(device).type}: {why}"


def resolve_precision(precision: Optional[str], device) -> str:
    """The concrete precision (``fp32``, ``bf16`` or ``fp8``): ``None`` / ``"auto"`` -> the device's default,
    anything else validated (ValueError naming the choices)."""
    return choose_precision(precision, device)[0]


def precision_of(model) -> Optional[str]:
    """The precision ``model``'s weights are at (None for dtypes the vocabulary does not name)."""
    from vitpose_fast.model import fp8

    if fp8.is_quantized(model.backbone):
        return "fp8"
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(model.backbone.pos_embed.dtype)


def prepare_precision(precision: Optional[str], device) -> str:
    """:func:`resolve_precision` plus, for ``fp8``, the device check (the one ``check_fp8_support`` of a path;
    raises :class:`vitpose_fast.model.fp8.Fp8UnavailableError`). Call it before work that FP8 would waste."""
    from vitpose_fast.model import fp8

    precision = resolve_precision(precision, device)
    if precision == "fp8":
        fp8.check_fp8_support(device)
    return precision


def apply_precision(model, precision: Optional[str] = None):
    """Put ``model`` (a :class:`vitpose_fast.model.model.ViTPose`) at ``precision`` (None / ``"auto"``: the
    device's default) and return it: ``fp32`` / ``bf16`` cast it; ``fp8`` checks the device, casts to bf16 and
    quantizes the backbone's GEMMs in place (eval mode). A model already at ``fp8`` is left as it is (no second
    check); an FP8 model cannot go back (ValueError)."""
    from vitpose_fast.model import fp8

    device = model.backbone.pos_embed.device
    if fp8.is_quantized(model.backbone):
        return apply_prepared(model, resolve_precision(precision, device))
    return apply_prepared(model, prepare_precision(precision, device))


def apply_prepared(model, precision: str):
    """:func:`apply_precision` for a precision :func:`prepare_precision` returned (nothing checked again)."""
    from vitpose_fast.model import fp8

    if fp8.is_quantized(model.backbone):
        if precision != "fp8":
            raise ValueError(f"this model's GEMM weights are FP8 already; precision {precision!r} needs the model "
                             "loaded again")
        model.precision = precision
        return model.eval()
    model = model.to(PRECISION_DTYPES[precision])
    if precision == "fp8":
        fp8.quantize_backbone(model.eval().backbone)
    model.precision = precision
    return model
