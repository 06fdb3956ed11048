"""The training script's plumbing (:mod:`vitpose_fast.training.train` keeps the recipe and its options): the
processes (rank, device, wrapping, collectives), the optimisation step, ``metrics.jsonl``, the training
checkpoints and weights it writes, and resuming from them."""

from __future__ import annotations

import json
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from vitpose_fast.training.core import (
    MultiHeadModel,
    SavePolicy,
    check_resume_layout,
    joints_mse_loss,
    load_training_state,
    lr_factor,
    multi_dataset_loss,
    rescaled_position,
    restore_rng_state,
    save_checkpoint,
    saved_global_batch,
    truncate_metrics,
)
from vitpose_fast.training.distributed import (
    ensure_process_group,
    full_state_dict,
    is_sharded,
    is_sharded_checkpoint,
    load_sharded,
    read_train_state,
    shard_model,
)


# ------------------------------------------------------------------------------------------------ processes
def init_distributed(device_arg: Optional[str]) -> Tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group under torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device_arg}: this torch has no usable CUDA device; use --device cpu")
        device = torch.device("cuda", local if device.index is None else device.index)
        torch.cuda.set_device(device)
    if world > 1:
        ensure_process_group(device)
    return rank, world, device


def global_mean(value: torch.Tensor, world: int) -> float:
    """The mean of a scalar over the ranks (every rank calls this)."""
    if world == 1:
        return value.item()
    value = value.detach().float().clone()
    dist.all_reduce(value)
    return value.item() / world


def all_gather(obj: Any, world: int) -> List[Any]:
    if world == 1:
        return [obj]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain Model inside DDP / FSDP / :class:`MultiHeadModel` wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def wrap_model(model: nn.Module, world: int, device: torch.device, fsdp: bool = False, sync_bn: bool = False,
               param_dtype: Optional[torch.dtype] = None) -> nn.Module:
    """DDP over ``world`` processes, or FSDP2 (``fsdp``: also with one process, the same code path and
    checkpoint format as on many); ``sync_bn`` converts the classic head's BatchNorms first."""
    if sync_bn and (world > 1 or fsdp):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if fsdp:
        ensure_process_group(device)
        return shard_model(model, device, param_dtype)
    if world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    if isinstance(model, MultiHeadModel):
        # A rank's batch may lack a dataset: its head and expert then take no part in that rank's graph.
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def model_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The full weights (sharded models: gathered on rank 0, every rank calls this)."""
    return full_state_dict(model) if is_sharded(model) else unwrap(model).state_dict()


def save_due(policy: SavePolicy, step: int, world: int) -> bool:
    """Whether ``--save-every`` asks for a checkpoint now; a wall-time policy is decided by rank 0 (every rank
    must enter the checkpoint's collectives together)."""
    due = policy.due(step)
    if world > 1 and policy.seconds is not None:
        flag = torch.tensor([int(due)])
        dist.broadcast(flag, 0)
        due = bool(flag.item())
    return due


# ------------------------------------------------------------------------------------------------ the step
@dataclass
class StepResult:
    loss: torch.Tensor
    head_losses: Dict[int, torch.Tensor]
    grad_norm: Optional[float]
    lr: float
    images: int


class TrainStep:
    """One optimisation step on a batch: forward under ``amp``, the heatmap loss (per head for multi-dataset
    batches, the heads' means over the GLOBAL batch), backward, clipping, the optimizer and the lr schedule."""

    def __init__(self, ddp_model: nn.Module, optimizer, scheduler, device: torch.device, amp: str = "none",
                 grad_clip: Optional[float] = None, world: int = 1, multi: bool = False, num_datasets: int = 1,
                 loss_weights: Optional[Dict[int, float]] = None, gpu_crop_size: Optional[Tuple[int, int]] = None):
        self.model, self.optimizer, self.scheduler, self.device = ddp_model, optimizer, scheduler, device
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        self.grad_clip, self.world, self.multi = grad_clip, world, multi
        self.num_datasets, self.loss_weights, self.gpu_crop_size = num_datasets, loss_weights, gpu_crop_size
        self._params: Optional[List[torch.Tensor]] = None

    @property
    def params(self) -> List[torch.Tensor]:
        # Listed at the first step, not here: loading a sharded checkpoint may replace the parameters.
        if self._params is None:
            self._params = [p for p in self.model.parameters() if p.requires_grad]
        return self._params

    def __call__(self, batch: Dict[str, Any]) -> StepResult:
        from vitpose_fast.data.coco import gpu_crop_batch

        device = self.device
        if self.gpu_crop_size is not None:
            images = gpu_crop_batch(batch, self.gpu_crop_size, device)
        else:
            images = batch["image"].to(device, non_blocking=True)
        ctx = torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()
        head_losses: Dict[int, torch.Tensor] = {}
        if not self.multi:
            target = batch["target"].to(device, non_blocking=True)
            weight = batch["target_weight"].to(device, non_blocking=True)
            with ctx:
                heatmaps = self.model(images)
            loss = joints_mse_loss(heatmaps, target, weight)
        else:
            index = batch["dataset_index"].to(device, non_blocking=True)
            targets = {d: {k: v.to(device, non_blocking=True) for k, v in g.items()}
                       for d, g in batch["targets"].items()}
            with ctx:
                outs = self.model(images, index, {d: g["index"] for d, g in targets.items()})
            counts = None
            if self.world > 1:  # per-head means over the GLOBAL batch (see multi_dataset_loss)
                counts = torch.bincount(index, minlength=self.num_datasets)
                dist.all_reduce(counts)
            loss, head_losses = multi_dataset_loss(outs, targets, counts, self.world, self.loss_weights)
        optimizer, scaler = self.optimizer, self.scaler
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        grad_norm = None
        if self.grad_clip:
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = optimizer.param_groups[-1]["lr"]  # the head's group: lr scale 1
        self.scheduler.step()
        return StepResult(loss, head_losses, grad_norm, lr, images.shape[0])


# ------------------------------------------------------------------------------------------------ outputs
class MetricsLog:
    """``metrics.jsonl`` (rank 0): one JSON object per line."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def save_weights(path: Path, config, state_dict: Dict[str, torch.Tensor]) -> None:
    """A ``Model.from_pretrained``-loadable weights file (our format: config + state dict)."""
    from vitpose_fast.model.checkpoint import FORMAT, VERSION

    save_checkpoint(path, {"format": FORMAT, "version": VERSION, "config": config.to_dict(),
                           "state_dict": state_dict})


def resume_from(path: Path, ddp_model: nn.Module, optimizer, scheduler, scaler, datasets: Optional[List[str]],
                world: int, rank: int, batch_size: int, iters_per_epoch: int, schedule, allow_change: bool,
                metrics_path: Path, log) -> Tuple[int, int, int, float]:
    """Load ``--resume`` (a ``last.pth`` file, or a sharded ``last.dcp`` folder on any process count, with or
    without ``--fsdp``) into the model, optimizer, schedule, scaler and RNGs; returns (epoch, step, batch in
    epoch, best AP). Refuses a file that is not a training state, another dataset list and (unless
    ``allow_change``) another global batch; drops the metrics records after its step."""
    sharded_ckpt = is_sharded_checkpoint(path)
    if sharded_ckpt:
        state = read_train_state(path)
    elif is_sharded(ddp_model):
        raise ValueError(f"--fsdp resumes from a sharded checkpoint folder (OUT/last.dcp), got the file "
                         f"{path}; resume it without --fsdp")
    else:
        state = load_training_state(path)
    if state.get("datasets") != datasets:
        raise ValueError(f"{path} was trained on datasets {state.get('datasets')}, this run has {datasets}")
    changed = check_resume_layout(state, path, world, batch_size, allow_change)
    if sharded_ckpt:
        load_sharded(path, ddp_model, optimizer)  # DCP reshards to this run's processes
    else:
        unwrap(ddp_model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    epoch, step, batch = state["epoch"], state["step"], state["batch_in_epoch"]
    if rank == 0:
        dropped = truncate_metrics(metrics_path, step)
        if dropped:
            log(f"metrics.jsonl: dropped {dropped} records after step {step} (the resumed run writes them again)")
    if changed:
        epoch, batch, step = rescaled_position(state, world, batch_size, iters_per_epoch)
        scheduler.last_epoch = step
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_factor(step, iters_per_epoch, schedule)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        log(f"warning: resuming global batch {saved_global_batch(state)} as {world} x {batch_size}: position "
            f"converted to epoch {epoch}, batch {batch}, step {step}")
    rng = state["rng"]
    if len(rng) != world:
        log(f"warning: checkpoint has RNG states of {len(rng)} processes, this run has {world}; "
            "drop-path masks will differ from an uninterrupted run")
    restore_rng_state(rng[rank % len(rng)])
    log(f"resumed from {path}: epoch {epoch}, batch {batch}, step {step}")
    return epoch, step, batch, state.get("best_ap", -1.0)
