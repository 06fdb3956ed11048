"""Typed configuration for ViTPose models (and Sapiens, ViTPose's sibling on the same backbone and head code).

Everything that decides a model's parameters or its computation lives in these dataclasses; there is no
registry and no string-built config. Presets are plain functions of the official values
(ViTAE-Transformer/ViTPose configs, ``configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco``; Sapiens:
facebookresearch/sapiens ``pose/configs/sapiens_pose/*/sapiens_*-210e_*-1024x768.py`` and the mmpretrain
``VisionTransformer.arch_zoo`` sizes).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Literal, Sequence, Tuple, Union

AttentionKind = Literal["global", "window"]
HeadKind = Literal["classic", "simple"]
NormAct = Literal["bn_relu", "in_silu"]
Backend = Literal["auto", "reference", "torch", "triton"]
BACKENDS = ("auto", "reference", "torch", "triton")
# ViTPose+'s datasets in the order of its experts and heads (dataset_index 0..5): the order lives here, below the
# model (whose messages name it); vitpose_fast.data.datasets builds the keypoint metadata in this order.
VITPOSE_PLUS_DATASET_NAMES = ("coco", "aic", "mpii", "ap10k", "apt36k", "coco_wholebody")


def vitpose_plus_order() -> str:
    """``0 coco, 1 aic, ...``: the dataset_index of each ViTPose+ dataset, for messages."""
    return ", ".join(f"{i} {name}" for i, name in enumerate(VITPOSE_PLUS_DATASET_NAMES))


@dataclass(frozen=True)
class AttentionSpec:
    """How one block attends over its Hp x Wp token grid.

    - ``kind="global"``: plain multi-head self-attention over all tokens (the official ViTPose).
    - ``kind="window"``: attention inside non-overlapping ``window`` = (wh, ww) windows; a grid the window
      does not divide is padded and the padded tokens are masked out as keys.
      ``shift=True`` displaces the partition by (wh // 2, ww // 2) (Swin's cyclic shift with its region mask);
      presets alternate unshifted and shifted blocks. ``pool=True`` appends the average-pooled (one token per
      window) keys and values of the whole map to every window's keys and values.
    - ``rel_pos=True`` adds ViTDet/MViTv2 decomposed relative-position logits (learned per-axis tables
      ``rel_pos_h`` [2*wh-1, head_dim] and ``rel_pos_w`` [2*ww-1, head_dim]; for global attention the
      "window" is the whole grid).
    """

    kind: AttentionKind = "global"
    window: Tuple[int, int] = (8, 8)
    shift: bool = False
    pool: bool = False
    rel_pos: bool = False

    def __post_init__(self):
        if self.kind not in ("global", "window"):
            raise ValueError(f"AttentionSpec.kind must be 'global' or 'window', got {self.kind!r}")
        if len(self.window) != 2 or min(self.window) < 1:
            raise ValueError(f"AttentionSpec.window must be two positive ints (wh, ww), got {self.window!r}")
        if self.kind == "global" and (self.shift or self.pool):
            raise ValueError("shift and pool apply to window attention only (kind='window')")
        object.__setattr__(self, "window", (int(self.window[0]), int(self.window[1])))


GLOBAL = AttentionSpec()


@dataclass(frozen=True)
class BackboneConfig:
    """The plain ViT backbone (``mmpose/models/backbones/vit.py``; ViTPose+: ``vit_moe.py``)."""

    img_size: Tuple[int, int] = (256, 192)  # (H, W) of the network input
    patch_size: int = 16
    patch_stride: int = 16  # 16: 1/16 features; 8: overlapping patches, 1/8 features
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.3
    layer_norm_eps: float = 1e-6
    num_experts: int = 1  # ViTPose+: > 1 splits the FFN output projection into shared + per-dataset parts
    part_features: int = 0  # ViTPose+: output features of each expert
    # One spec for every block, or one per block.
    attention: Union[AttentionSpec, Tuple[AttentionSpec, ...]] = GLOBAL
    # Knowledge tokens (paper section 3.4, Table 8): learned tokens appended to the patch tokens (0: none).
    num_knowledge_tokens: int = 0
    # Position embedding layout. True (ViTPose): [1, 1 + Hp*Wp, C], its cls slot added to every patch token.
    # False (Sapiens, mmpretrain ``with_cls_token=False``): [1, Hp*Wp, C], added as is.
    pos_embed_cls: bool = True

    def __post_init__(self):
        object.__setattr__(self, "img_size", (int(self.img_size[0]), int(self.img_size[1])))
        if self.num_knowledge_tokens < 0:
            raise ValueError(f"num_knowledge_tokens must be >= 0, got {self.num_knowledge_tokens}")
        if self.patch_stride not in (16, 8):
            raise ValueError(f"patch_stride must be 16 or 8 (the official ratio 1 or 2), got {self.patch_stride}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.num_experts > 1 and not 0 < self.part_features < self.embed_dim:
            raise ValueError(
                f"num_experts={self.num_experts} needs 0 < part_features < embed_dim ({self.embed_dim}), "
                f"got {self.part_features}"
            )
        if not isinstance(self.attention, AttentionSpec):
            specs = tuple(self.attention)
            if len(specs) != self.depth:
                raise ValueError(f"attention has {len(specs)} per-block specs but depth is {self.depth}")
            object.__setattr__(self, "attention", specs)

    @property
    def patch_padding(self) -> int:
        # Official PatchEmbed: padding = 4 + 2 * (ratio // 2 - 1) with ratio = 16 // stride.
        ratio = 16 // self.patch_stride
        return 4 + 2 * (ratio // 2 - 1)

    @property
    def grid(self) -> Tuple[int, int]:
        """Token grid (Hp, Wp) produced by the patch convolution."""
        p, k, s = self.patch_padding, self.patch_size, self.patch_stride
        return tuple((n + 2 * p - k) // s + 1 for n in self.img_size)  # type: ignore[return-value]

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def block_attention(self, i: int) -> AttentionSpec:
        return self.attention if isinstance(self.attention, AttentionSpec) else self.attention[i]


@dataclass(frozen=True)
class HeadConfig:
    """A keypoint head (``TopdownHeatmapSimpleHead``). Classic: 2x [deconv 4x4 s2 + BN + ReLU] + 1x1 conv.
    Simple: ReLU, bilinear x4 (align_corners=False), 3x3 conv.

    Sapiens' ``HeatmapHead`` is the classic head with ``conv_channels`` (1x1 convolutions with bias after the
    deconvolutions) and ``norm_act="in_silu"``: every deconv / conv is followed by InstanceNorm2d (no affine, no
    running statistics) and SiLU instead of BatchNorm and ReLU."""

    kind: HeadKind = "classic"
    num_keypoints: int = 17
    deconv_channels: Tuple[int, ...] = (256, 256)
    conv_channels: Tuple[int, ...] = ()
    norm_act: NormAct = "bn_relu"

    def __post_init__(self):
        if self.kind not in ("classic", "simple"):
            raise ValueError(f"head kind must be 'classic' or 'simple', got {self.kind!r}")
        if self.num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {self.num_keypoints}")
        if self.norm_act not in ("bn_relu", "in_silu"):
            raise ValueError(f"head norm_act must be 'bn_relu' or 'in_silu', got {self.norm_act!r}")
        object.__setattr__(self, "deconv_channels", tuple(int(c) for c in self.deconv_channels))
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        if self.kind == "simple" and (self.conv_channels or self.norm_act != "bn_relu"):
            raise ValueError("conv_channels and norm_act='in_silu' apply to the classic head only (kind='classic')")


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    # ViTPose+ / multi-dataset models: keypoint counts of the extra heads (official `associate_keypoint_heads`),
    # for dataset indices 1, 2, ... ; index 0 is `head`.
    extra_heads: Tuple[int, ...] = ()
    layer_decay: float = 0.75  # training metadata: the official layer-wise lr decay of the preset
    name: str = "custom"

    def __post_init__(self):
        object.__setattr__(self, "extra_heads", tuple(int(k) for k in self.extra_heads))

    @property
    def head_upsample(self) -> int:
        """Heatmap size over feature size: 4 at stride 16, 2 at stride 8 (heatmaps stay at 1/4 of the input)."""
        return self.backbone.patch_stride // 4

    @property
    def heatmap_size(self) -> Tuple[int, int]:
        """(h, w) of the output heatmaps: 1/4 of the input."""
        hp, wp = self.backbone.grid
        return hp * self.head_upsample, wp * self.head_upsample

    @property
    def num_datasets(self) -> int:
        return 1 + len(self.extra_heads)

    def to_dict(self) -> dict:
        """Plain nested dict of primitives (safe for ``torch.load(weights_only=True)`` and JSON)."""
        d = dataclasses.asdict(self)
        att = self.backbone.attention
        d["backbone"]["attention"] = (
            dataclasses.asdict(att) if isinstance(att, AttentionSpec) else [dataclasses.asdict(a) for a in att]
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        b = dict(d["backbone"])
        att = b.get("attention", dataclasses.asdict(GLOBAL))
        b["attention"] = AttentionSpec(**_tupled(att)) if isinstance(att, dict) else tuple(
            AttentionSpec(**_tupled(a)) for a in att
        )
        b["img_size"] = tuple(b["img_size"])
        h = dict(d["head"])
        return cls(
            backbone=BackboneConfig(**b),
            head=HeadConfig(**h),
            extra_heads=tuple(d.get("extra_heads", ())),
            layer_decay=d.get("layer_decay", 0.75),
            name=d.get("name", "custom"),
        )


def _tupled(a: dict) -> dict:
    a = dict(a)
    if "window" in a:
        a["window"] = tuple(a["window"])
    return a


# --------------------------------------------------------------------------------------------------------------
# Presets: official values (embed, depth, heads, drop path, layer decay). ViTPose-H uses the repository's 0.85
# layer decay (the paper's Table 1 says 0.80).
_PRESETS = {
    "vitpose_s": dict(embed_dim=384, depth=12, num_heads=12, drop_path_rate=0.1, layer_decay=0.8, part_features=96),
    "vitpose_b": dict(embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.3, layer_decay=0.75, part_features=192),
    "vitpose_l": dict(embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.5, layer_decay=0.8, part_features=256),
    "vitpose_h": dict(embed_dim=1280, depth=32, num_heads=16, drop_path_rate=0.55, layer_decay=0.85, part_features=320),
    # ViTAE-G's internals are unpublished: we knowingly substitute a plain ViT of ~1B parameters
    # (width 1408, depth 40, MLP 6144, 16 heads -> head dim 88), with the paper's G recipe (ld 0.85, dpr 0.55).
    "vitpose_g": dict(
        embed_dim=1408, depth=40, num_heads=16, mlp_ratio=6144 / 1408, drop_path_rate=0.55, layer_decay=0.85,
        part_features=352,
    ),
}
# Sapiens (facebookresearch/sapiens): the mmpretrain arch_zoo sizes (embed, layers, heads, FFN = 4 x embed) and the
# pose configs' settings: 1024x768 input, patch 16 with padding 2 (64x48 tokens), no cls token, final norm,
# drop_path_rate 0.0, layer decay 0.85; HeatmapHead deconv (768, 768) + conv 1x1 (768, 768), InstanceNorm + SiLU.
_SAPIENS_PRESETS = {
    "sapiens_0.3b": dict(embed_dim=1024, depth=24, num_heads=16),
    "sapiens_0.6b": dict(embed_dim=1280, depth=32, num_heads=16),
    "sapiens_1b": dict(embed_dim=1536, depth=40, num_heads=24),
    "sapiens_2b": dict(embed_dim=1920, depth=48, num_heads=32),
}
_SAPIENS_BACKBONE = dict(img_size=(1024, 768), drop_path_rate=0.0, pos_embed_cls=False)
_SAPIENS_HEAD = dict(deconv_channels=(768, 768), conv_channels=(768, 768), norm_act="in_silu")
SAPIENS_PRESET_NAMES = tuple(_SAPIENS_PRESETS)
PRESET_NAMES = tuple(_PRESETS) + SAPIENS_PRESET_NAMES

_BACKBONE_FIELDS = {f.name for f in fields(BackboneConfig)}
_HEAD_FIELDS = {f.name for f in fields(HeadConfig)}
_MODEL_FIELDS = {"extra_heads", "layer_decay", "name"}
_ALIASES = {"res": "img_size", "decoder": "kind", "head": "kind"}


def preset(name: str, **overrides) -> ModelConfig:
    """The config of a preset (``vitpose_s|b|l|h|g``, ``sapiens_0.3b|0.6b|1b|2b``) with flat keyword overrides.

    Overrides name any field of :class:`BackboneConfig`, :class:`HeadConfig` or :class:`ModelConfig`, plus
    the aliases ``res`` (= ``img_size``) and ``decoder`` (= head ``kind``). ``part_features`` defaults to the
    preset's released ViTPose+ value when ``num_experts > 1``. Sapiens presets predict the 17 COCO keypoints
    unless ``num_keypoints=133`` (COCO-WholeBody) or ``308`` (Goliath) is given.
    """
    if name in _SAPIENS_PRESETS:
        bkw: dict = dict(_SAPIENS_PRESETS[name], **_SAPIENS_BACKBONE)
        hkw: dict = dict(_SAPIENS_HEAD)
        mkw: dict = {"layer_decay": 0.85, "name": name}
        default_part = bkw["embed_dim"] // 4
    elif name in _PRESETS:
        base = dict(_PRESETS[name])
        mkw = {"layer_decay": base.pop("layer_decay"), "name": name}
        default_part = base.pop("part_features")
        bkw = dict(base)
        hkw = {}
    else:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
    for key, value in overrides.items():
        key = _ALIASES.get(key, key)
        if key in _BACKBONE_FIELDS:
            bkw[key] = value
        elif key in _HEAD_FIELDS:
            hkw[key] = value
        elif key in _MODEL_FIELDS:
            mkw[key] = value
        else:
            valid = sorted(_BACKBONE_FIELDS | _HEAD_FIELDS | _MODEL_FIELDS | set(_ALIASES))
            raise TypeError(f"unknown config override {key!r}; valid overrides: {', '.join(valid)}")
    if bkw.get("num_experts", 1) > 1 and not bkw.get("part_features"):
        bkw["part_features"] = default_part
    return ModelConfig(backbone=BackboneConfig(**bkw), head=HeadConfig(**hkw), **mkw)


def with_overrides(config: ModelConfig, **overrides) -> ModelConfig:
    """A copy of ``config`` with the same flat overrides :func:`preset` accepts."""
    b, h, m = {}, {}, {}
    for key, value in overrides.items():
        key = _ALIASES.get(key, key)
        target = b if key in _BACKBONE_FIELDS else h if key in _HEAD_FIELDS else m if key in _MODEL_FIELDS else None
        if target is None:
            raise TypeError(f"unknown config override {key!r}")
        target[key] = value
    return replace(
        config, backbone=replace(config.backbone, **b), head=replace(config.head, **h), **m
    )


def attention_preset(name: str, depth: int = 12, window: Sequence[int] = (8, 8), rel_pos: bool = True):
    """Per-block attention specs reproducing the rows of the paper's Table 5 (ViTPose-B at 1/8 features).

    ``full``, ``window``, ``window_shift``, ``window_pool``, ``window_shift_pool``, ``full_window`` (ViTDet:
    global attention in every depth/4-th block, 1-based blocks depth/4, 2*depth/4, ...). Shifted presets shift
    the odd (0-based) blocks.
    """
    w = tuple(window)
    if name == "full":
        return tuple(AttentionSpec() for _ in range(depth))
    shift = name in ("window_shift", "window_shift_pool")
    pool = name in ("window_pool", "window_shift_pool")
    if name in ("window", "window_shift", "window_pool", "window_shift_pool"):
        return tuple(
            AttentionSpec("window", w, shift=shift and i % 2 == 1, pool=pool, rel_pos=rel_pos) for i in range(depth)
        )
    if name == "full_window":
        every = max(depth // 4, 1)
        return tuple(
            AttentionSpec(rel_pos=rel_pos) if (i + 1) % every == 0 else AttentionSpec("window", w, rel_pos=rel_pos)
            for i in range(depth)
        )
    raise ValueError(
        f"unknown attention preset {name!r}; expected full, window, window_shift, window_pool, "
        "window_shift_pool or full_window"
    )


TABLE5_ROWS = {
    "full": dict(name="full"),
    "window_8x8": dict(name="window", window=(8, 8)),
    "window_shift_8x8": dict(name="window_shift", window=(8, 8)),
    "window_pool_8x8": dict(name="window_pool", window=(8, 8)),
    "window_shift_pool_8x8": dict(name="window_shift_pool", window=(8, 8)),
    "full_window_8x8": dict(name="full_window", window=(8, 8)),
    "window_shift_pool_16x12": dict(name="window_shift_pool", window=(16, 12)),
}


def parse_res(text: str) -> Tuple[int, int]:
    """``"256x192"`` -> (256, 192): an input resolution HxW as the command lines take it (an argparse type)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 256x192), got {text!r}") from None
    return h, w
