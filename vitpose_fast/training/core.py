"""Training building blocks shared by the training scripts: the official loss, the multi-dataset (ViTPose+) forward
and per-head loss, layer-wise lr decay parameter groups, the step/warmup schedule, a resumable sharded sampler,
RNG capture and atomic training checkpoints.

Official sources: ``mmpose/models/losses/mse_loss.py`` (``JointsMSELoss``),
``mmcv_custom/layer_decay_optimizer_constructor.py`` (``LayerDecayOptimizerConstructor``) and mmcv's
``StepLrUpdaterHook`` with linear warmup.
"""

from __future__ import annotations

import math
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Sampler

from vitpose_fast.model.checkpoint import atomic_save

__all__ = [
    "joints_mse_loss",
    "MultiHeadModel",
    "multi_dataset_loss",
    "layer_id_for_vit",
    "param_groups",
    "build_optimizer",
    "ScheduleConfig",
    "lr_factor",
    "build_scheduler",
    "ShardedSampler",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointFileError",
    "load_training_state",
    "check_resume_layout",
    "rescaled_position",
    "truncate_metrics",
    "SavePolicy",
    "training_state",
]


# ------------------------------------------------------------------------------------------------------ loss
def joints_mse_loss(pred: torch.Tensor, target: torch.Tensor, target_weight: Optional[torch.Tensor] = None,
                    loss_weight: float = 1.0) -> torch.Tensor:
    """Official ``JointsMSELoss(use_target_weight=True)``: mean over K of ``MSELoss(pred_k * w_k, gt_k * w_k)``
    with MSELoss averaging over B * H * W, i.e. the mean of ``((pred - gt) * w)**2`` over all elements
    (mmpose 0.x has no 0.5 factor). pred, target: [B, K, H, W]; target_weight: [B, K, 1] or [B, K]. The sum is
    taken in at least float32 whatever the prediction's dtype (bf16 autocast)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    diff = pred.to(dtype) - target.to(dtype)
    if target_weight is not None:
        diff = diff * target_weight.to(dtype).reshape(pred.shape[0], pred.shape[1], 1, 1)
    return diff.pow(2).mean() * loss_weight


class MultiHeadModel(nn.Module):
    """A multi-dataset model (one head per dataset, optionally ViTPose+ experts) on a mixed batch, as one module
    (what DDP wraps: its ``forward`` must produce every output that the loss uses).

    ``forward(pixel_values [B, 3, H, W], dataset_index int64 [B], groups {d: int64 [n_d] batch positions})
    -> {d: heatmaps [n_d, K_d, h, w]}``: the backbone runs once, each sample's FFN through its dataset's expert
    (each expert only on its own samples), then head ``d`` runs on the features of dataset ``d``'s samples only,
    so a head's BatchNorm statistics and gradients come from its own dataset alone. ``module`` is the wrapped
    :class:`~vitpose_fast.model.model.Model` (state-dict keys gain a ``module.`` prefix: save ``.module``'s).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model

    def forward(self, pixel_values: torch.Tensor, dataset_index: torch.Tensor,
                groups: Dict[int, torch.Tensor]) -> Dict[int, torch.Tensor]:
        feats = self.module.forward_features(pixel_values, dataset_index)
        backend = self.module.resolved_backend(pixel_values.device)
        out = {}
        for d, positions in groups.items():
            # Groups partition the batch: a group as large as the batch is all of it (no gather).
            x = feats if len(positions) == feats.shape[0] else feats.index_select(0, positions.to(feats.device))
            out[d] = self.module.head_for(d).forward(x, backend)
        return out


def multi_dataset_loss(heatmaps: Dict[int, torch.Tensor], targets: Dict[int, Dict[str, torch.Tensor]],
                       global_counts: Optional[torch.Tensor] = None, world_size: int = 1,
                       loss_weights: Optional[Dict[int, float]] = None
                       ) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
    """Per-head normalised multi-dataset loss: (total to backpropagate, {d: head d's loss}).

    Head ``d``'s loss is :func:`joints_mse_loss` (the official ``JointsMSELoss`` with target weights) of its
    predictions ``heatmaps[d]`` [n_d, K_d, h, w] against ``targets[d]["target"]`` [n_d, K_d, h, w] /
    ``["target_weight"]`` [n_d, K_d, 1], i.e. a mean over that head's samples only; the total is
    ``sum_d loss_weights[d] * loss_d`` (weights default 1).

    Why per head: the official ViTPose+ code runs every head on the whole batch with the other datasets'
    targets and weights masked to zero and averages over the FULL batch, so each head's loss is scaled by its
    dataset's share of that batch (and varies with the batch composition). Here each dataset's loss is exactly
    the official single-dataset loss on its own samples, independent of the batch composition; the sampler's
    ratios set how often each dataset is seen, ``loss_weights`` how much each head counts.

    Data parallel: DDP averages gradients over ranks, so with ``global_counts`` (int [D] indexed by dataset: the
    samples of each dataset in the GLOBAL batch, an all-reduce of the per-rank counts) each rank's head loss is
    scaled by ``world_size * n_d / N_d``; the averaged gradient is then the one of the mean over all ranks'
    samples of dataset d (a rank without samples of d contributes zero), exactly as one process with the global
    batch. The returned per-head losses are the local, unscaled means (for logging).
    """
    total: Optional[torch.Tensor] = None
    parts: Dict[int, torch.Tensor] = {}
    for d, pred in heatmaps.items():
        t = targets[d]
        loss = joints_mse_loss(pred, t["target"].to(pred.device), t["target_weight"].to(pred.device))
        parts[d] = loss
        if global_counts is not None:
            loss = loss * (world_size * pred.shape[0] / global_counts[d].clamp(min=1).to(loss.dtype))
        weighted = loss * (loss_weights or {}).get(d, 1.0)
        total = weighted if total is None else total + weighted
    if total is None:
        raise ValueError("multi_dataset_loss got no heatmaps (an empty batch)")
    return total, parts


# ------------------------------------------------------------------------------------------- layer-wise decay
def layer_id_for_vit(name: str, num_layers: int) -> int:
    """Official ``get_num_layer_for_vit``: embeddings 0, ``backbone.blocks.i`` i + 1, everything else
    (``last_norm``, every head) ``num_layers - 1``; ``num_layers`` = depth + 2."""
    # The knowledge token is ours (not official): it sits with the embeddings, like cls_token.
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed", "backbone.knowledge_token"):
        return 0
    if name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.blocks"):
        return int(name.split(".")[2]) + 1
    return num_layers - 1


def param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float,
                 depth: Optional[int] = None) -> List[Dict[str, Any]]:
    """Optimizer groups of the official ``LayerDecayOptimizerConstructor.add_params``.

    ``lr_scale = layer_decay ** (num_layers - layer_id - 1)`` with ``num_layers = depth + 2`` (``depth`` defaults
    to the model's backbone depth, the official configs' ``paramwise_cfg.num_layers``); weight decay 0 for 1-D
    tensors, names ending in ``.bias`` and names containing ``pos_embed``; frozen parameters are skipped.
    Names must be the official ones (``backbone.*``, ``keypoint_head.*``): pass the unwrapped model. Each group
    holds ``params``, ``param_names``, ``lr`` (scaled), ``lr_scale``, ``weight_decay`` and ``group_name``.
    """
    if depth is None:
        depth = model.config.backbone.depth
    num_layers = depth + 2
    groups: Dict[str, Dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name.endswith(".bias") or "pos_embed" in name
        layer = layer_id_for_vit(name, num_layers)
        key = f"layer_{layer}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            scale = layer_decay ** (num_layers - layer - 1)
            groups[key] = dict(params=[], param_names=[], lr=lr * scale, lr_scale=scale,
                               weight_decay=0.0 if no_decay else weight_decay, group_name=key)
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, lr: float = 5e-4, weight_decay: float = 0.1, layer_decay: float = 0.75,
                    betas: Tuple[float, float] = (0.9, 0.999), fused: Optional[bool] = None) -> torch.optim.AdamW:
    """The official AdamW with layer-wise lr decay (ViTPose COCO: lr 5e-4, wd 0.1, betas 0.9/0.999)."""
    groups = param_groups(model, lr, weight_decay, layer_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)


# ------------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class ScheduleConfig:
    """mmcv ``policy='step'`` with ``warmup='linear'`` (ViTPose: 500 iters from 0.001x, x0.1 at epochs
    170 and 200 of 210)."""

    epochs: int = 210
    milestones: Tuple[int, ...] = (170, 200)
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.001

    def scaled_to(self, epochs: int) -> "ScheduleConfig":
        """The same schedule for a run of ``epochs`` epochs (milestones scaled proportionally)."""
        if epochs == self.epochs:
            return self
        ms = tuple(max(1, round(m * epochs / self.epochs)) for m in self.milestones)
        return ScheduleConfig(epochs, ms, self.gamma, self.warmup_iters, self.warmup_ratio)


def lr_factor(step: int, iters_per_epoch: int, cfg: ScheduleConfig) -> float:
    """Multiplier of every group's initial lr at global iteration ``step`` (0-based, before the update).

    Step decay by epoch (``gamma ** #milestones <= epoch``), then mmcv's linear warmup on top:
    ``1 - (1 - step / warmup_iters) * (1 - warmup_ratio)`` while ``step < warmup_iters``."""
    epoch = step // max(iters_per_epoch, 1)
    factor = cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    if step < cfg.warmup_iters:
        k = (1 - step / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
        factor *= 1 - k
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, iters_per_epoch: int,
                    cfg: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per iteration (after ``optimizer.step()``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, iters_per_epoch, cfg))


# ------------------------------------------------------------------------------------------------- sampler
class ShardedSampler(Sampler):
    """``DistributedSampler`` semantics (seeded permutation per epoch, padded by wrap-around to a multiple of
    the world size, rank r takes positions r, r + world, ...) plus what resumption needs: it yields
    ``(index, epoch)`` keys (the dataset seeds each sample's augmentation with them) and can start mid-epoch.

    With ``drop_last`` the shard is cut to whole batches of ``batch_size``. ``set_epoch(epoch, start_batch)``
    skips the first ``start_batch`` batches of that epoch (for resuming); one process with batch ``world * b``
    sees exactly the global batches of ``world`` processes with batch ``b``.
    """

    def __init__(self, size: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.size, self.batch_size, self.rank, self.world = size, batch_size, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.start_batch = 0, 0
        per_rank = math.ceil(size / world_size)
        self.num_batches = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
        if self.num_batches == 0:
            raise ValueError(f"{size} samples over {world_size} ranks make no full batch of {batch_size}")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _shard(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = math.ceil(self.size / self.world) * self.world
        order = (order * math.ceil(total / self.size))[:total]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        shard = self._shard()
        lo, hi = self.start_batch * self.batch_size, min(len(shard), self.num_batches * self.batch_size)
        return iter([(i, self.epoch) for i in shard[lo:hi]])

    def __len__(self) -> int:
        return max(self.num_batches - self.start_batch, 0) * self.batch_size


# ------------------------------------------------------------------------------------------------ RNG state
def capture_rng_state() -> Dict[str, Any]:
    """torch (CPU and current CUDA device), numpy global and python ``random`` states, as tensors and
    primitives only (loadable with ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x


# ------------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: os.PathLike, state: Dict[str, Any]) -> None:
    """Write ``state`` atomically (:func:`vitpose_fast.model.checkpoint.atomic_save`)."""
    atomic_save(state, path)


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be used; the message names the file, what it is and what was expected."""


_ZIP_MAGIC = b"PK\x03\x04"


def _describe_unreadable(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` failed on ``path``, in words: empty, text, an interrupted ``.tmp`` write, truncated."""
    size = path.stat().st_size
    if size == 0:
        return f"{str(path)!r} is empty (0 bytes), not a checkpoint"
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(_ZIP_MAGIC) and head[:1] != b"\x80":
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and all(c.isprintable() or c.isspace() for c in text):
            return f"{str(path)!r} is a text file (it starts with {text[:40]!r}), not a torch checkpoint"
        return f"{str(path)!r} is not a torch checkpoint (unknown format, {size} bytes)"
    if path.name.endswith(".tmp"):
        return (f"{str(path)!r} is a temporary file whose write was interrupted ({size} bytes, incomplete); the "
                f"checkpoint of the run is {str(path.with_name(path.name[:-4]))!r}")
    return f"{str(path)!r} is truncated or corrupt ({size} bytes; torch: {exc})"


def load_checkpoint(path: os.PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``). A file that is missing,
    empty, text, truncated (an interrupted ``.tmp`` write) or holds Python objects other than tensors and
    primitives raises :class:`CheckpointFileError` (FileNotFoundError when missing) saying which."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointFileError(f"{str(path)!r} is a directory; expected a checkpoint file such as last.pth")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
            raise CheckpointFileError(
                f"{str(path)!r} holds Python objects other than tensors and plain values (torch.load with "
                "weights_only=True refuses it); it was not written by vitpose_fast's training scripts"
            ) from None
        raise CheckpointFileError(_describe_unreadable(path, exc)) from None


TRAINING_STATE_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "batch_in_epoch", "rng")


def load_training_state(path: os.PathLike) -> Dict[str, Any]:
    """:func:`load_checkpoint` of a ``--resume`` file, checked to be a training state (:func:`training_state`),
    with a clear message for a weights-only file (``best.pth``/``final.pth``) or anything else."""
    state = load_checkpoint(path)
    where = repr(str(path))
    if not isinstance(state, dict):
        raise CheckpointFileError(f"{where} holds a {type(state).__name__}, not a training state (a dict)")
    if state.get("format") == "vitpose_fast" or ("state_dict" in state and "optimizer" not in state):
        raise CheckpointFileError(
            f"{where} holds model weights only (like best.pth or final.pth), not a training state: resuming "
            "needs last.pth (model, optimizer, schedule, RNGs and position) from the run's --out folder; to start "
            "a new run from these weights, pass them to --init")
    missing = [k for k in TRAINING_STATE_KEYS if k not in state]
    if missing:
        raise CheckpointFileError(
            f"{where} is not a training state written by train.py (format {state.get('format')!r}): it lacks "
            f"{', '.join(missing)}")
    return state


def saved_global_batch(state: Dict[str, Any]) -> Optional[int]:
    """The global batch (samples per optimiser step over all processes) a training state was written with;
    None for a state that does not record it."""
    if state.get("global_batch") is not None:
        return int(state["global_batch"])
    return None


def check_resume_layout(state: Dict[str, Any], path: os.PathLike, world: int, batch_size: int,
                        allow_change: bool) -> bool:
    """Compare the global batch (processes x per-process batch) of a resumed run with the checkpoint's: the step
    count, lr schedule and position in the epoch are in its units, while the process count alone may change
    (the sampler's global batches do not depend on it). Returns True when the global batch differs and
    ``allow_change`` is set (the caller then rescales the position, :func:`rescaled_position`); raises
    ValueError naming both layouts when it differs without it. A state without a recorded global batch passes."""
    g0 = saved_global_batch(state)
    if g0 is None or g0 == world * batch_size:
        return False
    if allow_change:
        return True
    w0 = state.get("world_size", len(state.get("rng", [])))
    raise ValueError(
        f"{str(path)!r} was written by {w0} process(es) x batch {g0 // max(w0, 1)} (global batch {g0}); this run "
        f"has {world} x {batch_size} (global {world * batch_size}). Its step count, lr schedule and position in the "
        "epoch are in units of its global batch. Resume with the same global batch (--batch-size x processes), or "
        "pass --allow-resume-change to keep its epoch and convert the position and lr schedule to the new batch "
        "(not bit-identical to an uninterrupted run)")


def rescaled_position(state: Dict[str, Any], world: int, batch_size: int,
                      iters_per_epoch: int) -> Tuple[int, int, int]:
    """(epoch, batch in epoch, global step) of ``state`` converted to a new global batch: the same epoch and
    the same number of samples seen in it (rounded down to whole batches)."""
    g0, g = saved_global_batch(state), world * batch_size
    epoch = state["epoch"]
    batch = min(state["batch_in_epoch"] * g0 // g, iters_per_epoch)
    return epoch, batch, epoch * iters_per_epoch + batch


def truncate_metrics(path: os.PathLike, step: int) -> int:
    """Drop the records of ``metrics.jsonl`` after ``step`` (a resumed run writes them again); atomic. Returns
    how many were dropped. Unparseable lines (a torn last line) are dropped too."""
    import json

    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        os.replace(tmp, path)
    return dropped


class SavePolicy:
    """``--save-every``: a checkpoint every N optimiser steps (``"500"``) or every so much wall time
    (``"90s"``, ``"10m"``, ``"1h"``); ``None`` never (epoch checkpoints only)."""

    _UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

    def __init__(self, spec: Optional[str], clock=None):
        import time

        self.clock = clock or time.monotonic
        self.steps: Optional[int] = None
        self.seconds: Optional[float] = None
        if spec is not None:
            text = str(spec).strip().lower()
            try:
                if text and text[-1] in self._UNITS:
                    self.seconds = float(text[:-1]) * self._UNITS[text[-1]]
                else:
                    self.steps = int(text)
            except ValueError:
                raise ValueError(f"--save-every expects steps (500) or a time (90s, 10m, 1h), got {spec!r}") from None
            if (self.steps is not None and self.steps < 1) or (self.seconds is not None and self.seconds <= 0):
                raise ValueError(f"--save-every must be positive, got {spec!r}")
        self._last_step = 0
        self._last_time = self.clock()

    def start(self, step: int) -> None:
        self._last_step, self._last_time = step, self.clock()

    def due(self, step: int) -> bool:
        if self.steps is not None:
            return step - self._last_step >= self.steps
        if self.seconds is not None:
            return self.clock() - self._last_time >= self.seconds
        return False

    def saved(self, step: int) -> None:
        self.start(step)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler, *, epoch: int,
                   step: int, batch_in_epoch: int, rng_states: Sequence[Dict[str, Any]],
                   extra: Optional[Dict[str, Any]] = None, weights: bool = True) -> Dict[str, Any]:
    """Everything a resumed run needs to continue bit-identically: model, optimizer, scheduler, grad scaler,
    position (``epoch``, global ``step``, batches done in ``epoch``) and one RNG state per rank. ``weights=False``
    leaves out the model and optimizer states (a sharded checkpoint stores those through DCP)."""
    state = {
        "format": "vitpose_fast-train",
        "version": 1,
        "config": model.config.to_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "step": step,
        "batch_in_epoch": batch_in_epoch,
        "rng": list(rng_states),
    }
    if weights:
        state["model"], state["optimizer"] = model.state_dict(), optimizer.state_dict()
    state.update(extra or {})
    return state
