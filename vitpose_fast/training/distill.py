"""Knowledge-token distillation (ViTPose paper section 3.4, Table 8): transfer a teacher's knowledge through a
learned token and/or its heatmaps. The official repository has no code for it; this is our implementation.

Stage 1 (``--stage token``): append a learnable token (trunc_normal(0.02), ``--num-tokens`` T, default 1) to a
frozen teacher's patch tokens and train only the token against the GT heatmaps (``JointsMSELoss`` with target
weights), then save it as ``OUT/token.pth``. The teacher stays in eval mode (no drop path, BatchNorm running
statistics): it is frozen, so only the token may change. Optimiser: AdamW on the token alone, the preset's lr,
betas, warmup + step schedule and grad clip, no weight decay (an embedding, like ``pos_embed``).

Stage 2 (``--stage student``): train the student (the preset's model, optionally ``--init`` weights) with the
preset's recipe (AdamW, layer-wise lr decay, warmup + step schedule, grad clip), optionally with the frozen token
appended (``--token``: ``requires_grad=False``, never updated) and/or heatmap distillation (``--teacher T
--heatmap-distill W``: loss = MSE(S, GT) + W * MSE(S, teacher heatmaps), both ``JointsMSELoss`` with the same
target weights; the teacher runs in eval mode without gradients, with the ``--token`` appended when given, as
the paper's teacher learned it). Saves the student in our format (``OUT/student.pth``: the token is part of the
model and of its config; ``Model.from_pretrained`` loads it).

Token width. The paper transfers ViTPose-L's token (width 1024) to ViTPose-B (768) without saying how the widths
are reconciled. We do not invent a mapping: the token's width must equal the student's, so stage 1 must use a
teacher of the student's width (e.g. a ViTPose-B teacher trained longer or at a higher resolution). Heatmap
distillation has no such constraint (only the heatmaps are compared: same input size and keypoints).

Table 8 rows (ViTPose-B student, COCO)::

    # stage 1: the token, learned on a frozen teacher of the student's width
    python train/distill.py --stage token --preset vitpose_b_coco_256x192 --teacher teacher_b.pth \\
        --data-root data/coco --epochs 10 --out runs/token
    # stage 2
    python train/distill.py --stage student --preset vitpose_b_coco_256x192 --init mae_pretrain_vit_base.pth \\
        --data-root data/coco --out runs/none                                                    # none
    ...                    --token runs/token/token.pth --out runs/token_only                    # token
    ...                    --teacher vitpose_l.pth --heatmap-distill 1.0 --out runs/heatmap      # heatmap
    ...                    --token runs/token/token.pth --teacher teacher_b.pth --heatmap-distill 1.0 \\
                           --out runs/both                                                       # both

    # CPU smoke run: a synthetic set, the tiny preset, a randomly initialised teacher (a preset name)
    python -m vitpose_fast.data.synthetic --out data/synth --images 50
    python train/distill.py --stage token --preset tiny_synthetic --teacher tiny_synthetic \\
        --data-root data/synth --device cpu --max-steps 20 --batch-size 8 --out runs/tok

``--teacher`` (and ``--init``) take a checkpoint path (any format ``Model.from_pretrained`` reads) or a training
preset name (random weights: smoke tests only). One process; ``metrics.jsonl`` in ``--out`` logs the losses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

from vitpose_fast.training.presets import PRESETS, TrainPreset, get_preset
from vitpose_fast.config import BACKENDS, with_overrides
from vitpose_fast.inference.model import Model
from vitpose_fast.training.core import (
    ShardedSampler,
    ScheduleConfig,
    build_scheduler,
    joints_mse_loss,
    param_groups,
    save_checkpoint,
)

TOKEN_FORMAT = "vitpose_fast-knowledge-token"
Batch = Dict[str, torch.Tensor]
LossFn = Callable[[Batch], Tuple[torch.Tensor, Dict[str, torch.Tensor]]]


# ------------------------------------------------------------------------------------------------ tokens
def with_knowledge_token(model: Model, token: Optional[torch.Tensor] = None, num_tokens: int = 1,
                         trainable: bool = True) -> Model:
    """``model`` with knowledge tokens: a new :class:`Model` whose config has ``num_knowledge_tokens`` = T and
    whose every other tensor *is* ``model``'s (shared storage, no copy; an existing token is replaced).

    ``token`` [1, T, C] (or [T, C]) is copied in; None draws a fresh trunc_normal(0.02) [1, num_tokens, C].
    ``trainable`` sets the token's ``requires_grad``; the other parameters keep theirs."""
    c = model.config.backbone.embed_dim
    ref = model.backbone.pos_embed
    if token is None:
        token = nn.init.trunc_normal_(torch.empty(1, num_tokens, c), std=0.02)
    token = token.detach().reshape(1, -1, token.shape[-1]) if token.dim() == 2 else token.detach()
    if token.dim() != 3 or token.shape[0] != 1 or token.shape[1] < 1 or token.shape[2] != c:
        raise ValueError(
            f"knowledge token must be [1, T, {c}] (T >= 1, the model's width {c}); got {tuple(token.shape)}. "
            "Tokens transfer only between models of the same width (the paper does not say how ViTPose-L's "
            "token reaches ViTPose-B): learn the token on a teacher of the student's width"
        )
    cfg = with_overrides(model.config, num_knowledge_tokens=token.shape[1])
    with torch.device("meta"):
        new = Model(cfg, backend=model.backend)
    sd = {k: v for k, v in model.state_dict().items() if k != "backbone.knowledge_token"}
    sd["backbone.knowledge_token"] = token.to(device=ref.device, dtype=ref.dtype).clone()
    new.load_state_dict(sd, assign=True)
    old = dict(model.named_parameters())
    for name, p_new in new.named_parameters():
        if name in old:
            p_new.requires_grad_(old[name].requires_grad)
    new.backbone.knowledge_token.requires_grad_(trainable)
    new.backbone.grad_checkpointing = model.backbone.grad_checkpointing
    return new.train(model.training)


def save_token(path: Path, token: torch.Tensor, **meta: Any) -> None:
    """``{"format", "version", "token" [1, T, C] float32, "embed_dim", **meta}`` (``weights_only`` loadable)."""
    save_checkpoint(path, {"format": TOKEN_FORMAT, "version": 1, "token": token.detach().float().cpu(),
                           "embed_dim": token.shape[-1], **meta})


def load_token(path: Path) -> torch.Tensor:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != TOKEN_FORMAT:
        raise ValueError(f"{str(path)!r} is not a knowledge-token file (written by `distill.py --stage token`)")
    return obj["token"]


def load_model_arg(name_or_path: str, backend: str = "auto") -> Model:
    """A checkpoint path (any format ``Model.from_pretrained`` reads), or a training preset name (random
    official-init weights)."""
    if Path(name_or_path).exists():
        return Model.from_pretrained(name_or_path, backend=backend)
    if name_or_path in PRESETS:
        print(f"warning: {name_or_path!r} is a preset name: a RANDOMLY initialised model (no checkpoint); pass a "
              "trained checkpoint for a meaningful teacher", file=sys.stderr, flush=True)
        return Model(get_preset(name_or_path).model, backend=backend)
    raise FileNotFoundError(f"{name_or_path!r} is neither an existing checkpoint nor a training preset "
                            f"({', '.join(sorted(PRESETS))})")


def freeze(model: Model) -> Model:
    """Eval mode and no gradients for any parameter (a frozen teacher)."""
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ losses
def _autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


def token_loss(teacher: Model, device: torch.device, amp_dtype: Optional[torch.dtype] = None) -> LossFn:
    """Stage 1: JointsMSE(teacher({t; X}), GT) (the teacher frozen, only its knowledge token trainable)."""

    def fn(batch: Batch):
        images, target, weight = (batch[k].to(device, non_blocking=True)
                                  for k in ("image", "target", "target_weight"))
        with _autocast(device, amp_dtype):
            heatmaps = teacher(images)
        loss = joints_mse_loss(heatmaps, target, weight)
        return loss, {"loss_gt": loss}

    return fn


def student_loss(student: Model, device: torch.device, teacher: Optional[Model] = None,
                 heatmap_weight: float = 0.0, amp_dtype: Optional[torch.dtype] = None) -> LossFn:
    """Stage 2: JointsMSE(S, GT) + heatmap_weight * JointsMSE(S, teacher heatmaps) (same target weights; the
    teacher without gradients)."""
    if (teacher is None) != (heatmap_weight == 0.0):
        raise ValueError("heatmap distillation needs both a teacher and a weight > 0 (or neither)")

    def fn(batch: Batch):
        images, target, weight = (batch[k].to(device, non_blocking=True)
                                  for k in ("image", "target", "target_weight"))
        with _autocast(device, amp_dtype):
            heatmaps = student(images)
        gt = joints_mse_loss(heatmaps, target, weight)
        parts = {"loss_gt": gt}
        if teacher is None:
            return gt, parts
        with torch.no_grad(), _autocast(device, amp_dtype):
            soft = teacher(images)
        kd = joints_mse_loss(heatmaps, soft, weight)
        parts["loss_heatmap_distill"] = kd
        return gt + heatmap_weight * kd, parts

    return fn


# ------------------------------------------------------------------------------------------------ loop
def fit(loss_fn: LossFn, optimizer: torch.optim.Optimizer, batches: Iterable[Batch], max_steps: int,
        scheduler=None, grad_clip: Optional[float] = None, log_interval: int = 20,
        log: Callable[[Dict[str, Any]], None] = lambda record: None,
        progress: bool = False) -> List[Dict[str, Any]]:
    """Plain optimisation loop; returns the logged records (every ``log_interval`` steps and the last)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    history = []
    step = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_steps, unit="step", dynamic_ncols=True, file=sys.stderr)
    for batch in batches:
        if step >= max_steps:
            break
        loss, parts = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        lr = optimizer.param_groups[-1]["lr"]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        if bar is not None:
            bar.update(1)
        if step % log_interval == 0 or step == max_steps:
            record = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in parts.items()}, "lr": lr}
            history.append(record)
            log(record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.3e}", lr=f"{lr:.2e}")
    if bar is not None:
        bar.close()
    return history


def build_loader(pre: TrainPreset, model: Model, ann_file: Path, image_dir: Path, batch_size: int, workers: int,
                 seed: int) -> Tuple[Iterator[Batch], int]:
    """An endless iterator of training batches (the official train pipeline at the model's input and heatmap
    sizes; every epoch reshuffled and re-augmented) and the number of batches per epoch."""
    from vitpose_fast.data.coco import CocoKeypoints, collate, upper_body_ids
    from vitpose_fast.data.datasets import get_dataset

    info = get_dataset(pre.data.dataset)
    in_h, in_w = model.config.backbone.img_size
    hm_h, hm_w = model.config.heatmap_size
    data = CocoKeypoints(ann_file, image_dir, (in_w, in_h), (hm_w, hm_h), info.flip_pairs,
                         upper_body_ids(info.keypoint_names), train=True, udp=pre.data.udp, sigma=pre.data.sigma,
                         augment=pre.data.augment, seed=seed, host_crop=True,
                         num_joints=model.config.head.num_keypoints)
    sampler = ShardedSampler(len(data), batch_size, seed=seed, shuffle=True, drop_last=True)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(seed))

    def endless() -> Iterator[Batch]:
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    return endless(), sampler.num_batches


# ------------------------------------------------------------------------------------------------ CLI
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, choices=("token", "student"))
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), metavar="NAME",
                   help="training preset (data pipeline, optimiser, schedule; stage 2: the student model)")
    p.add_argument("--teacher", help="stage 1: the teacher; stage 2: the heatmap-distillation teacher "
                                     "(checkpoint path or training preset name)")
    p.add_argument("--num-tokens", type=int, default=1, help="stage 1: knowledge tokens to learn (paper: 1)")
    p.add_argument("--token", type=Path, help="stage 2: token.pth from stage 1, appended frozen to the student")
    p.add_argument("--heatmap-distill", type=float, default=0.0, metavar="W",
                   help="stage 2: weight of MSE(student, teacher heatmaps)")
    p.add_argument("--init", help="stage 2: student weights to start from (checkpoint path or preset name)")
    p.add_argument("--data-root", type=Path, help="COCO-layout folder (annotations/, train2017/)")
    p.add_argument("--train-ann", type=Path)
    p.add_argument("--train-images", type=Path)
    p.add_argument("--epochs", type=int, help="epochs (lr milestones scaled with it; default: the preset's)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--lr", type=float)
    p.add_argument("--workers", type=int)
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("runs/distill"))
    return p.parse_args(argv)


def _paths(args: argparse.Namespace) -> Tuple[Path, Path]:
    root = args.data_root
    ann = args.train_ann or (root / "annotations/person_keypoints_train2017.json" if root else None)
    images = args.train_images or (root / "train2017" if root else None)
    for name, path in (("train annotations", ann), ("train images", images)):
        if path is None or not path.exists():
            raise FileNotFoundError(f"{name} not found ({path}); pass --data-root (COCO layout) or "
                                    "--train-ann/--train-images")
    return ann, images


def _check_teacher_fits(teacher: Model, student: Model) -> None:
    t, s = teacher.config, student.config
    if (t.backbone.img_size, t.heatmap_size, t.head.num_keypoints) != (
            s.backbone.img_size, s.heatmap_size, s.head.num_keypoints):
        raise ValueError(
            f"teacher (input {t.backbone.img_size}, heatmaps {t.heatmap_size}, {t.head.num_keypoints} keypoints) "
            f"and student (input {s.backbone.img_size}, heatmaps {s.heatmap_size}, {s.head.num_keypoints} "
            "keypoints) must share input size, heatmap size and keypoints for heatmap distillation"
        )


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run one stage; returns ``{"stage", "steps", "history", "out"}``."""
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    pre = get_preset(args.preset)
    optim = pre.optim if args.lr is None else dataclasses.replace(pre.optim, lr=args.lr)
    schedule: ScheduleConfig = optim.schedule if args.epochs is None else optim.schedule.scaled_to(args.epochs)
    batch_size = args.batch_size or pre.batch_size
    workers = pre.workers if args.workers is None else args.workers
    amp_dtype = torch.bfloat16 if args.amp == "bf16" else None
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = (args.out / "metrics.jsonl").open("a")

    def log(record: Dict[str, Any]) -> None:
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        print(json.dumps(record), flush=True)

    if args.stage == "token":
        if args.teacher is None:
            raise SystemExit("--stage token needs --teacher")
        if args.token or args.init or args.heatmap_distill:
            raise SystemExit("--token, --init and --heatmap-distill belong to --stage student")
        teacher = freeze(load_model_arg(args.teacher, args.backend))
        teacher = with_knowledge_token(teacher, num_tokens=args.num_tokens, trainable=True).to(device)
        model, loss_fn = teacher, token_loss(teacher, device, amp_dtype)
        token = teacher.backbone.knowledge_token
        optimizer = torch.optim.AdamW([token], lr=optim.lr, betas=optim.betas, weight_decay=0.0)
    else:
        if args.heatmap_distill < 0 or (args.teacher is None) != (args.heatmap_distill == 0):
            raise SystemExit("heatmap distillation needs --teacher together with --heatmap-distill W > 0")
        student = load_model_arg(args.init, args.backend) if args.init else Model(pre.model, backend=args.backend)
        token = load_token(args.token) if args.token is not None else None
        if token is not None:
            student = with_knowledge_token(student, token, trainable=False)
        student = student.to(device).train()
        teacher = None
        if args.teacher is not None:
            teacher = freeze(load_model_arg(args.teacher, args.backend))
            _check_teacher_fits(teacher, student)
            if token is not None:
                teacher = freeze(with_knowledge_token(teacher, token, trainable=False))
            teacher = teacher.to(device)
        model, loss_fn = student, student_loss(student, device, teacher, args.heatmap_distill, amp_dtype)
        groups = param_groups(student, optim.lr, optim.weight_decay, student.config.layer_decay)
        optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)

    batches, iters_per_epoch = build_loader(pre, model, *_paths(args), batch_size, workers, args.seed)
    scheduler = build_scheduler(optimizer, iters_per_epoch, schedule)
    total = schedule.epochs * iters_per_epoch
    max_steps = min(total, args.max_steps) if args.max_steps else total
    history = fit(loss_fn, optimizer, batches, max_steps, scheduler, optim.grad_clip, args.log_interval, log,
                  progress=not args.no_progress)
    metrics.close()
    if args.stage == "token":
        out = args.out / "token.pth"
        save_token(out, model.backbone.knowledge_token, teacher=str(args.teacher), steps=max_steps)
    else:
        out = args.out / "student.pth"
        model.save(out)
    print(json.dumps({"saved": str(out)}), flush=True)
    return {"stage": args.stage, "steps": max_steps, "history": history, "out": out}


def run() -> None:
    main()


if __name__ == "__main__":
    run()
