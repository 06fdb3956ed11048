"""vitpose_fast: a fast, faithful ViTPose (arXiv 2204.12484).

``vitpose_fast.Model`` is the drop-in model; configs are typed dataclasses in :mod:`vitpose_fast.config`.
"""

from vitpose_fast.config import (
    PRESET_NAMES,
    AttentionSpec,
    BackboneConfig,
    HeadConfig,
    ModelConfig,
    attention_preset,
    preset,
)
from vitpose_fast.inference.model import Model

__all__ = [
    "Model",
    "ModelConfig",
    "BackboneConfig",
    "HeadConfig",
    "AttentionSpec",
    "attention_preset",
    "preset",
    "PRESET_NAMES",
]
__version__ = "0.1.0"
