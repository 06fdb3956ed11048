"""Typed training presets reproducing the official ViTPose COCO configs, plus a tiny CPU preset.

Names: ``vitpose_{s,b,l,h,g}[_simple]_coco_{256x192,384x288,576x432}``,
``sapiens_{0.3b,0.6b,1b,2b}_coco_1024x768``, ``tiny_synthetic`` and
``tiny_synthetic_multi`` (the tiny model as a ViTPose+ with 6 experts, for multi-dataset runs on synthetic sets). The 256x192 values
are the official ``ViTPose_{small,base,large,huge}[_simple]_coco_256x192.py`` (AdamW lr 5e-4, wd 0.1, betas
0.9/0.999, layer decay S 0.8 / B 0.75 / L 0.8 / H 0.85, drop path S 0.1 / B 0.3 / L 0.5 / H 0.55, batch 64 per
GPU x 8, 210 epochs, x0.1 at 170 and 200, 500 warmup iters from 0.001x, grad clip 1.0, UDP, sigma 2).

Where we had to choose: the official repository has no 384x288 or 576x432 ViTPose configs; we keep the recipe
and scale sigma with the heatmap (2 -> 3 -> 4.5; mmpose's HRNet 384x288 configs use 3). The official configs
clip gradients at 1.0 although the released ViTPose-B log shows no grad norm (probably trained unclipped).
``vitpose_g`` is the ~1B plain-ViT stand-in of :mod:`vitpose_fast.config` with the same recipe (no official
config is public); it needs ``--fsdp`` on common GPUs (``train.py --estimate-memory``).

Sapiens (``pose/configs/sapiens_pose/coco/sapiens_*-210e_coco-1024x768.py``): the same optimiser, schedule and
clipping, layer decay 0.85, no stochastic depth, UDP targets with sigma 6 at 256x192 heatmaps, evaluation every
epoch. Where we differ: the augmentation is our ViTPose pipeline; Sapiens adds photometric distortion, blur,
median blur and one coarse dropout hole, which we do not implement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from vitpose_fast.config import BackboneConfig, HeadConfig, ModelConfig, preset
from vitpose_fast.data.transforms import AugmentConfig
from vitpose_fast.training.core import ScheduleConfig


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "coco"  # keypoint metadata from vitpose_fast.data.datasets.get_dataset
    udp: bool = True  # UDP affine + UDP Gaussian targets; False: standard affine + MSRA targets
    sigma: float = 2.0
    augment: AugmentConfig = AugmentConfig()
    # Evaluation boxes: GT boxes (use_gt_bbox) or a person detection file (official: the 56.4 AP detector's).
    use_gt_bbox: bool = False
    det_bbox_thr: float = 0.0
    flip_test: bool = True


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: Tuple[float, float] = (0.9, 0.999)
    grad_clip: Optional[float] = 1.0  # max L2 norm; None: no clipping
    schedule: ScheduleConfig = ScheduleConfig()


@dataclass(frozen=True)
class TrainPreset:
    name: str
    model: ModelConfig
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    batch_size: int = 64  # per process (official: 64 per GPU x 8 GPUs)
    val_batch_size: int = 32
    workers: int = 4
    eval_interval: int = 10  # epochs
    save_interval: int = 10  # epochs

    @property
    def layer_decay(self) -> float:
        return self.model.layer_decay


_SIZES = {"s": "vitpose_s", "b": "vitpose_b", "l": "vitpose_l", "h": "vitpose_h", "g": "vitpose_g"}
_RESOLUTIONS = {"256x192": ((256, 192), 2.0), "384x288": ((384, 288), 3.0), "576x432": ((576, 432), 4.5)}


def _official(size: str, simple: bool, res: str) -> TrainPreset:
    img_size, sigma = _RESOLUTIONS[res]
    model = preset(_SIZES[size], res=img_size, decoder="simple" if simple else "classic")
    name = f"vitpose_{size}{'_simple' if simple else ''}_coco_{res}"
    return TrainPreset(name=name, model=replace(model, name=name), data=DataConfig(sigma=sigma))


def _sapiens(size: str) -> TrainPreset:
    name = f"sapiens_{size}_coco_1024x768"
    model = preset(f"sapiens_{size}")
    return TrainPreset(name=name, model=replace(model, name=name), data=DataConfig(sigma=6.0), eval_interval=1)


def tiny_synthetic(head: str = "classic") -> TrainPreset:
    """A ~3M-parameter ViT (width 192, 6 blocks, 3 heads of 64) at 128x96 for CPU runs on the synthetic set.

    Trained from scratch, so a milder layer decay (0.9) and a shorter warmup than the official fine-tuning."""
    model = ModelConfig(
        backbone=BackboneConfig(img_size=(128, 96), embed_dim=192, depth=6, num_heads=3, drop_path_rate=0.1),
        head=HeadConfig(kind=head, deconv_channels=(128, 128)),
        layer_decay=0.9,
        name="tiny_synthetic",
    )
    optim = OptimConfig(lr=1e-3, weight_decay=0.05, grad_clip=1.0,
                        schedule=ScheduleConfig(epochs=30, milestones=(24, 28), warmup_iters=50))
    return TrainPreset(name="tiny_synthetic", model=model, data=DataConfig(use_gt_bbox=False), optim=optim,
                       batch_size=32, val_batch_size=32, workers=2, eval_interval=5, save_interval=5)


def tiny_synthetic_multi() -> TrainPreset:
    """:func:`tiny_synthetic` as a ViTPose+ (6 experts of C/4 = 48 features, the ratio of every released
    ViTPose+ checkpoint) for ``--datasets`` runs; train.py adds one head per dataset index up to the largest one
    used. lr 1e-3 as the official ViTPose+ configs (and as the tiny preset)."""
    base = tiny_synthetic()
    model = replace(base.model, backbone=replace(base.model.backbone, num_experts=6, part_features=48),
                    name="tiny_synthetic_multi")
    return replace(base, name="tiny_synthetic_multi", model=model)


def _all_presets() -> Dict[str, TrainPreset]:
    out = {}
    for size in _SIZES:
        for simple in (False, True):
            for res in _RESOLUTIONS:
                p = _official(size, simple, res)
                out[p.name] = p
    for size in ("0.3b", "0.6b", "1b", "2b"):
        p = _sapiens(size)
        out[p.name] = p
    out["tiny_synthetic"] = tiny_synthetic()
    out["tiny_synthetic_multi"] = tiny_synthetic_multi()
    return out


PRESETS: Dict[str, TrainPreset] = _all_presets()


def get_preset(name: str) -> TrainPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown training preset {name!r}; expected one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
