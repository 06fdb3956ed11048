"""Train ViTPose on COCO-format keypoints with the official recipe: one process, or many through torchrun.

Usage (COCO layout: ``DIR/annotations/person_keypoints_{train,val}2017.json``, ``DIR/train2017/``,
``DIR/val2017/``; the person detections for evaluation are looked up as
``DIR/person_detection_results/COCO_val2017_detections_AP_H_56_person.json`` or
``DIR/annotations/person_detection_results_val2017.json``, else pass ``--det-file`` or ``--use-gt-bbox``)::

    # the official ViTPose-B recipe on 8 GPUs (batch 64 per GPU, 210 epochs), from an MAE checkpoint
    torchrun --nproc_per_node=8 train/train.py --preset vitpose_b_coco_256x192 --data-root data/coco \\
        --init mae_pretrain_vit_base.pth --out runs/vitpose_b --amp bf16

    # larger models: activation checkpointing, FSDP
    torchrun --nproc_per_node=8 train/train.py --preset vitpose_h_coco_256x192 --data-root data/coco \\
        --init mae_pretrain_vit_huge.pth --out runs/vitpose_h --amp bf16 --checkpointing --fsdp

    # CPU: a synthetic set and the tiny preset, two processes (gloo)
    python -m vitpose_fast.data.synthetic --out data/synth --images 400
    torchrun --nproc_per_node=2 train/train.py --preset tiny_synthetic --data-root data/synth \\
        --device cpu --epochs 10 --batch-size 16 --workers 1 --out runs/tiny

    # resume a killed or stopped run (model, optimizer, schedule, scaler, RNGs and the position in the epoch)
    torchrun --nproc_per_node=2 train/train.py --preset tiny_synthetic --data-root data/synth \\
        --device cpu --epochs 10 --batch-size 16 --workers 1 --out runs/tiny --resume runs/tiny/last.pth

    # curves
    python train/plot.py runs/tiny/metrics.jsonl --out runs/tiny/curves.png

Outputs in ``--out``: ``metrics.jsonl`` (one JSON object per logged step and per evaluation), ``last.pth``
(training state, written atomically every ``--save-interval`` epochs and when ``--max-steps`` stops the run),
``best.pth`` (model weights of the best val AP, ``Model.from_pretrained``-loadable) and ``final.pth`` (weights
at the end).

Reproducibility: every sample's augmentation is seeded by (seed, epoch, index) and the sampler can start in
the middle of an epoch, so ``--resume`` continues bit-identically (CPU, or GPU with ``--deterministic``) from any
checkpoint, including one written mid-epoch by ``--max-steps``; the global batches are the same for any number
of processes with the same global batch size (per-process BatchNorm statistics of the classic head and
per-process drop-path masks are the only differences between process counts; ``--sync-bn`` removes the first).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

if __package__ in (None, ""):  # run as a script: make `train.presets` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train.presets import PRESETS, TrainPreset, get_preset  # noqa: E402
from vitpose_fast.config import BACKENDS, with_overrides  # noqa: E402
from vitpose_fast.data import transforms as T  # noqa: E402
from vitpose_fast.data.coco import CocoKeypoints, collate, gpu_crop_batch, load_coco, upper_body_ids  # noqa: E402
from vitpose_fast.model import Model  # noqa: E402
from vitpose_fast.training import (  # noqa: E402
    ShardedSampler,
    build_scheduler,
    capture_rng_state,
    joints_mse_loss,
    load_checkpoint,
    param_groups,
    restore_rng_state,
    save_checkpoint,
    training_state,
)

DET_FILE_CANDIDATES = (
    "person_detection_results/COCO_val2017_detections_AP_H_56_person.json",
    "annotations/person_detection_results_val2017.json",
)


# ------------------------------------------------------------------------------------------------ arguments
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), metavar="NAME",
                   help="training preset: " + ", ".join(sorted(PRESETS)))
    d = p.add_argument_group("data")
    d.add_argument("--data-root", type=Path, help="COCO-layout folder (annotations/, train2017/, val2017/)")
    d.add_argument("--train-ann", type=Path)
    d.add_argument("--train-images", type=Path)
    d.add_argument("--val-ann", type=Path)
    d.add_argument("--val-images", type=Path)
    d.add_argument("--det-file", type=Path, help="COCO person detections for evaluation")
    d.add_argument("--use-gt-bbox", action="store_true", help="evaluate on ground-truth boxes")
    d.add_argument("--workers", type=int, help="DataLoader workers per process")
    d.add_argument("--gpu-crop", action="store_true",
                   help="decode on the host, crop/normalise batched on the device")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, help="total epochs (lr milestones are scaled with it)")
    o.add_argument("--batch-size", type=int, help="per-process batch size")
    o.add_argument("--lr", type=float)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--layer-decay", type=float)
    o.add_argument("--warmup-iters", type=int)
    o.add_argument("--grad-clip", type=float, help="max grad L2 norm; 0 disables")
    o.add_argument("--drop-path", type=float, help="override the backbone drop-path rate")
    o.add_argument("--head", choices=("classic", "simple"), help="override the decoder")
    o.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    o.add_argument("--checkpointing", action="store_true", help="activation checkpointing per block")
    o.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm in the classic head (DDP)")
    o.add_argument("--fsdp", action="store_true", help="FullyShardedDataParallel (one unit per block)")
    o.add_argument("--init", type=Path, help="MAE/timm/ViTPose checkpoint to start from (non-strict)")
    r = p.add_argument_group("run")
    r.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    r.add_argument("--backend", choices=BACKENDS, default="auto")
    r.add_argument("--out", type=Path, default=Path("runs/train"))
    r.add_argument("--resume", type=Path, help="training checkpoint (last.pth) to continue from")
    r.add_argument("--eval-interval", type=int, help="epochs between evaluations (0: never)")
    r.add_argument("--save-interval", type=int, help="epochs between checkpoints")
    r.add_argument("--val-batch-size", type=int)
    r.add_argument("--max-val-images", type=int, help="evaluate on the first N val images only")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--deterministic", action="store_true")
    r.add_argument("--max-steps", type=int, help="stop (and save last.pth) after this many optimiser steps")
    r.add_argument("--log-interval", type=int, default=20, help="steps between metrics.jsonl records")
    r.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    r.add_argument("--eval-only", action="store_true", help="evaluate the --init weights and exit")
    return p.parse_args(argv)


def resolve_preset(args: argparse.Namespace) -> TrainPreset:
    """The preset with the command-line overrides applied."""
    pre = get_preset(args.preset)
    model_over: Dict[str, Any] = {}
    if args.drop_path is not None:
        model_over["drop_path_rate"] = args.drop_path
    if args.head is not None:
        model_over["kind"] = args.head
    if args.layer_decay is not None:
        model_over["layer_decay"] = args.layer_decay
    model_cfg = with_overrides(pre.model, **model_over) if model_over else pre.model
    optim = pre.optim
    if args.epochs is not None:
        optim = dataclasses.replace(optim, schedule=optim.schedule.scaled_to(args.epochs))
    if args.warmup_iters is not None:
        optim = dataclasses.replace(optim, schedule=dataclasses.replace(optim.schedule, warmup_iters=args.warmup_iters))
    if args.lr is not None:
        optim = dataclasses.replace(optim, lr=args.lr)
    if args.weight_decay is not None:
        optim = dataclasses.replace(optim, weight_decay=args.weight_decay)
    if args.grad_clip is not None:
        optim = dataclasses.replace(optim, grad_clip=args.grad_clip or None)
    data = dataclasses.replace(pre.data, use_gt_bbox=pre.data.use_gt_bbox or args.use_gt_bbox)
    over = {k: getattr(args, a) for k, a in (("batch_size", "batch_size"), ("workers", "workers"),
                                               ("eval_interval", "eval_interval"), ("save_interval", "save_interval"),
                                               ("val_batch_size", "val_batch_size")) if getattr(args, a) is not None}
    return dataclasses.replace(pre, model=model_cfg, optim=optim, data=data, **over)


def data_paths(args: argparse.Namespace, need_train: bool = True) -> Dict[str, Optional[Path]]:
    root = args.data_root
    def pick(explicit: Optional[Path], rel: str) -> Optional[Path]:
        return explicit if explicit is not None else (root / rel if root is not None else None)
    paths = {
        "train_ann": pick(args.train_ann, "annotations/person_keypoints_train2017.json"),
        "train_images": pick(args.train_images, "train2017"),
        "val_ann": pick(args.val_ann, "annotations/person_keypoints_val2017.json"),
        "val_images": pick(args.val_images, "val2017"),
        "det_file": args.det_file,
    }
    if paths["det_file"] is None and root is not None:
        paths["det_file"] = next((root / c for c in DET_FILE_CANDIDATES if (root / c).exists()), None)
    for key in ("val_ann", "val_images"):
        if paths[key] is not None and not paths[key].exists():
            paths[key] = None
    if paths["val_images"] is None:
        paths["val_ann"] = None
    for key in ("train_ann", "train_images") if need_train else ():
        if paths[key] is None or not paths[key].exists():
            raise FileNotFoundError(f"{key.replace('_', ' ')} not found ({paths[key]}); pass --data-root (COCO "
                                    f"layout) or --{key.replace('_', '-')}")
    return paths


# ------------------------------------------------------------------------------------------------ distributed
def init_distributed(device_arg: Optional[str]) -> Tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(kind)
    if device.type == "cuda":
        device = torch.device("cuda", local if device.index is None else device.index)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def all_gather(obj: Any, world: int) -> List[Any]:
    if world == 1:
        return [obj]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def unwrap(model: nn.Module) -> Model:
    return model.module if hasattr(model, "module") else model


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# ------------------------------------------------------------------------------------------------ model
def build_model(pre: TrainPreset, args: argparse.Namespace, log) -> Model:
    model = Model(pre.model, backend=args.backend)
    if args.init is not None:
        load_init(model, args.init, log)
    if args.checkpointing:
        model.set_grad_checkpointing(True)
    return model


def load_init(model: Model, path: Path, log) -> None:
    """Start from an MAE/timm, ViTPose or Hugging Face checkpoint as the official loader does (``strict=False``:
    14->16 patch kernels zero-padded, pos_embed resized bicubically, MAE ``norm`` not mapped to ``last_norm``;
    tensors whose shape does not fit are skipped, like mmcv's ``load_state_dict``)."""
    from vitpose_fast.checkpoint import adapt_state_dict, read_checkpoint

    sd, cfg, _ = read_checkpoint(path)
    sd = adapt_state_dict(sd, model.config, cfg.backbone.grid if cfg is not None else None)
    own = model.state_dict()
    fits = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in sd if k in own and own[k].shape != sd[k].shape)
    model.load_state_dict(fits, strict=False)
    missing = sorted(set(own) - set(fits))
    log(f"init from {path}: loaded {len(fits)} tensors; {len(missing)} left at their init"
        f"{' (' + ', '.join(missing[:6]) + (', ...' if len(missing) > 6 else '') + ')' if missing else ''}"
        f"{'; skipped (shape): ' + ', '.join(skipped) if skipped else ''}")


def wrap_model(model: Model, args: argparse.Namespace, world: int, device: torch.device) -> nn.Module:
    if world == 1:
        return model
    if args.fsdp:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        from vitpose_fast.backbone import Block

        # use_orig_params keeps the official parameter names, which the layer-decay groups are keyed on.
        return FSDP(model, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True,
                    device_id=device if device.type == "cuda" else None)
    if args.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def model_state(model: nn.Module, args: argparse.Namespace) -> Dict[str, torch.Tensor]:
    if args.fsdp and hasattr(model, "module"):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return unwrap(model).state_dict()


def optim_state(model: nn.Module, optimizer, args: argparse.Namespace) -> Dict[str, Any]:
    if args.fsdp and hasattr(model, "module"):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


# ------------------------------------------------------------------------------------------------ evaluation
def eval_boxes(coco, image_ids: List[int], det_file: Optional[Path], use_gt: bool,
               det_thr: float) -> Dict[int, np.ndarray]:
    """Per image [N, 5] (x, y, w, h, score) boxes: cleaned GT boxes of persons with keypoints (score 1, as
    official ``use_gt_bbox``) or the detections of category 1 with score >= ``det_thr``."""
    out: Dict[int, List[List[float]]] = {i: [] for i in image_ids}
    if use_gt or det_file is None:
        for img_id in image_ids:
            info = coco.loadImgs(img_id)[0]
            for obj in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)):
                box = T.clean_bbox(obj.get("bbox", [0, 0, 0, 0]), info["width"], info["height"])
                if box is None or max(obj.get("keypoints", [0])) == 0 or obj.get("num_keypoints", 1) == 0:
                    continue
                out[img_id].append([*box, 1.0])
    else:
        for det in json.loads(Path(det_file).read_text()):
            if det.get("category_id", 1) != 1 or det["score"] < det_thr or det["image_id"] not in out:
                continue
            out[det["image_id"]].append([*det["bbox"][:4], det["score"]])
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 5) for k, v in out.items()}


@torch.no_grad()
def evaluate(model: Model, pre: TrainPreset, paths: Dict[str, Optional[Path]], rank: int, world: int,
             max_images: Optional[int] = None, out_dir: Optional[Path] = None) -> Dict[str, float]:
    """Top-down COCO evaluation: the official test pipeline (``vitpose_fast.pipeline.predict``: UDP crop,
    flip test, UDP decoding) on this rank's share of the val images, results gathered on rank 0, rescoring,
    OKS-NMS and COCOeval (``vitpose_fast.evaluation``). Returns the COCOeval stats (AP, AP50, ...) on every rank;
    rank 0 writes the kept COCO-format results to ``out_dir/val_keypoints.json``."""
    from vitpose_fast.datasets import get_dataset
    from vitpose_fast.evaluation import evaluate_coco, rescore_and_nms
    from vitpose_fast.pipeline import predict

    coco = load_coco(paths["val_ann"])
    image_ids = sorted(coco.getImgIds())[:max_images] if max_images else sorted(coco.getImgIds())
    boxes = eval_boxes(coco, image_ids, paths["det_file"], pre.data.use_gt_bbox, pre.data.det_bbox_thr)
    in_h, in_w = pre.model.backbone.img_size
    mine = image_ids[rank::world]
    persons: List[Tuple[int, np.ndarray, float, float]] = []  # image id, keypoints [K, 3], box score, area
    chunk = 16
    for start in range(0, len(mine), chunk):
        ids = [i for i in mine[start:start + chunk] if len(boxes[i])]
        if not ids:
            continue
        files = [str(paths["val_images"] / coco.loadImgs(i)[0]["file_name"]) for i in ids]
        results = predict(model, files, [boxes[i] for i in ids], box_format="xywh", flip_test=pre.data.flip_test,
                          batch_size=pre.val_batch_size, dataset=pre.data.dataset)
        for img_id, people in zip(ids, results):
            for person, box in zip(people, boxes[img_id]):
                # NMS area = prod(scale * 200) of the person's box (official), scale from _xywh2cs.
                _, scale = T.xywh_to_center_scale(*box[:4], aspect_ratio=in_w / in_h)
                persons.append((int(img_id), np.asarray(person["keypoints"], np.float32), float(box[4]),
                                float(np.prod(scale * 200.0))))
    gathered = all_gather(persons, world)
    stats: Dict[str, float] = {}
    if rank == 0:
        everyone = sorted((p for part in gathered for p in part), key=lambda p: p[0])
        if everyone:
            info = get_dataset(pre.data.dataset)
            results = rescore_and_nms([p[0] for p in everyone], np.stack([p[1] for p in everyone]),
                                      np.array([p[2] for p in everyone]), np.array([p[3] for p in everyone]),
                                      sigmas=info.sigmas)
            gt = coco if not max_images else _subset(coco, image_ids)
            stats = evaluate_coco(results, gt, sigmas=info.sigmas)
            if out_dir is not None:
                (out_dir / "val_keypoints.json").write_text(json.dumps(results))
        else:
            stats = {"AP": 0.0}
    return all_gather(stats, world)[0]


def _subset(coco, image_ids: List[int]):
    """A COCO object restricted to ``image_ids`` (COCOeval scores every image of its ground truth)."""
    from pycocotools.coco import COCO

    keep = set(image_ids)
    d = coco.dataset
    sub = COCO()
    sub.dataset = {**d, "images": [im for im in d["images"] if im["id"] in keep],
                   "annotations": [a for a in d["annotations"] if a["image_id"] in keep]}
    with contextlib.redirect_stdout(io.StringIO()):
        sub.createIndex()
    return sub


def run_evaluation(ddp_model: nn.Module, model: Model, pre: TrainPreset, paths: Dict[str, Optional[Path]],
                   rank: int, world: int, args: argparse.Namespace) -> Dict[str, float]:
    """Evaluate the current weights. DDP: every rank scores its share of the images. FSDP: the full weights are
    gathered into a fresh model on rank 0, which scores all images (the sharded forward would need every rank
    in every call)."""
    if not (args.fsdp and world > 1):
        return evaluate(unwrap(ddp_model), pre, paths, rank, world, args.max_val_images, args.out)
    full = model_state(ddp_model, args)
    stats: Dict[str, float] = {}
    if rank == 0:
        copy = Model(pre.model, backend=args.backend)
        copy.load_state_dict(full)
        stats = evaluate(copy.to(next(model.parameters()).device), pre, paths, 0, 1, args.max_val_images,
                         args.out)
    return all_gather(stats, world)[0]


# ------------------------------------------------------------------------------------------------ training
class MetricsLog:
    """``metrics.jsonl`` (rank 0): one JSON object per line."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Train; returns a summary (``step``, ``epochs_done``, ``best_ap``, ``last_eval``, ``images_per_s``)."""
    args = parse_args(argv)
    rank, world, device = init_distributed(args.device)
    is_main = rank == 0

    def log(msg: str) -> None:
        if is_main:
            print(msg, flush=True)

    pre = resolve_preset(args)
    paths = data_paths(args, need_train=not args.eval_only)
    seed_everything(args.seed + rank, args.deterministic)  # drop-path masks differ per rank, as per-GPU seeds do
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(args.out / "metrics.jsonl", is_main)

    model = build_model(pre, args, log).to(device)
    if args.eval_only:
        if paths["val_ann"] is None:
            raise FileNotFoundError("--eval-only needs the val annotations and images (--data-root or --val-ann)")
        stats = evaluate(model, pre, paths, rank, world, args.max_val_images, args.out)
        log(json.dumps({"eval": stats}))
        return {"last_eval": stats}

    from vitpose_fast.datasets import get_dataset

    info = get_dataset(pre.data.dataset)
    in_h, in_w = pre.model.backbone.img_size
    hm_h, hm_w = pre.model.heatmap_size
    train_set = CocoKeypoints(
        paths["train_ann"], paths["train_images"], (in_w, in_h), (hm_w, hm_h), info.flip_pairs,
        upper_body_ids(info.keypoint_names),
        train=True, udp=pre.data.udp, sigma=pre.data.sigma, augment=pre.data.augment, seed=args.seed,
        host_crop=not args.gpu_crop, num_joints=pre.model.head.num_keypoints,
    )
    sampler = ShardedSampler(len(train_set), pre.batch_size, rank, world, seed=args.seed, shuffle=True, drop_last=True)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=pre.batch_size, sampler=sampler, num_workers=pre.workers, collate_fn=collate,
        pin_memory=device.type == "cuda", persistent_workers=pre.workers > 0, drop_last=True,
        # Its own generator: creating an iterator draws a worker base seed, which must not move the global
        # torch RNG (drop path), or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(args.seed),
    )
    iters_per_epoch = sampler.num_batches

    ddp_model = wrap_model(model, args, world, device)
    # Groups from the wrapped module's parameters (FSDP's use_orig_params views); names are the official ones.
    groups = param_groups(unwrap(ddp_model), pre.optim.lr, pre.optim.weight_decay, pre.model.layer_decay,
                          pre.model.backbone.depth)
    optimizer = torch.optim.AdamW(groups, lr=pre.optim.lr, betas=pre.optim.betas, weight_decay=pre.optim.weight_decay)
    schedule = pre.optim.schedule
    scheduler = build_scheduler(optimizer, iters_per_epoch, schedule)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None

    start_epoch, step, start_batch, best_ap = 0, 0, 0, -1.0
    if args.resume is not None:
        state = load_checkpoint(args.resume)
        if args.fsdp and world > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(ddp_model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True))
        else:
            unwrap(ddp_model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, step, start_batch = state["epoch"], state["step"], state["batch_in_epoch"]
        best_ap = state.get("best_ap", -1.0)
        rng = state["rng"]
        if len(rng) != world:
            log(f"warning: checkpoint has RNG states of {len(rng)} processes, this run has {world}; "
                "drop-path masks will differ from an uninterrupted run")
        restore_rng_state(rng[rank % len(rng)])
        log(f"resumed from {args.resume}: epoch {start_epoch}, batch {start_batch}, step {step}")

    n_params = sum(p.numel() for p in unwrap(ddp_model).parameters())
    log(f"{pre.name}: {n_params / 1e6:.2f}M params, {len(train_set)} train instances, {world} process(es) x batch "
        f"{pre.batch_size}, {iters_per_epoch} iters/epoch, {schedule.epochs} epochs, lr milestones "
        f"{schedule.milestones}, device {device}, backend {unwrap(ddp_model).resolved_backend(device)}")

    total_steps = schedule.epochs * iters_per_epoch
    stop_at = min(total_steps, args.max_steps) if args.max_steps else total_steps
    bar = None
    if is_main and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, dynamic_ncols=True, unit="it")
    params = [p for p in ddp_model.parameters() if p.requires_grad]
    last_eval: Dict[str, float] = {}
    seen, t0 = 0, time.perf_counter()
    ips = 0.0

    def checkpoint(epoch: int, batch_in_epoch: int) -> None:
        rngs = all_gather(capture_rng_state(), world)
        mstate, ostate = model_state(ddp_model, args), optim_state(ddp_model, optimizer, args)
        if is_main:
            state = training_state(unwrap(ddp_model), optimizer, scheduler, scaler, epoch=epoch, step=step,
                                   batch_in_epoch=batch_in_epoch, rng_states=rngs,
                                   extra={"best_ap": best_ap, "preset": pre.name, "args": _jsonable(vars(args))})
            state["model"], state["optimizer"] = mstate, ostate
            save_checkpoint(args.out / "last.pth", state)

    def save_weights(name: str) -> None:
        mstate = model_state(ddp_model, args)
        if is_main:
            from vitpose_fast.checkpoint import FORMAT, VERSION

            save_checkpoint(args.out / name, {"format": FORMAT, "version": VERSION,
                                              "config": pre.model.to_dict(), "state_dict": mstate})

    ddp_model.train()
    epoch = start_epoch
    for epoch in range(start_epoch, schedule.epochs):
        if step >= stop_at:
            break
        first = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first)
        batch_in_epoch = first
        for batch in loader:
            if args.gpu_crop:
                images = gpu_crop_batch(batch, (in_w, in_h), device)
            else:
                images = batch["image"].to(device, non_blocking=True)
            target = batch["target"].to(device, non_blocking=True)
            weight = batch["target_weight"].to(device, non_blocking=True)
            ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
            with ctx:
                heatmaps = ddp_model(images)
            loss = joints_mse_loss(heatmaps, target, weight)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            grad_norm = None
            if pre.optim.grad_clip:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, pre.optim.grad_clip))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr = optimizer.param_groups[-1]["lr"]  # the head's group: lr scale 1
            scheduler.step()
            step += 1
            batch_in_epoch += 1
            seen += images.shape[0] * world
            if bar is not None or step % args.log_interval == 0 or step == stop_at:
                loss_value = loss.item()
                ips = seen / max(time.perf_counter() - t0, 1e-9)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss_value:.3e}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}")
                if step % args.log_interval == 0 or step == stop_at:
                    metrics.write(step=step, epoch=epoch, loss=loss_value, lr=lr, images_per_s=ips,
                                  grad_norm=grad_norm, time=time.time())
            if step >= stop_at:
                break
        epoch_done = batch_in_epoch >= iters_per_epoch
        if epoch_done:
            n = epoch + 1
            if pre.eval_interval and paths["val_ann"] is not None and (n % pre.eval_interval == 0
                                                                       or n == schedule.epochs):
                last_eval = run_evaluation(ddp_model, model, pre, paths, rank, world, args)
                ap = last_eval.get("AP", -1.0)
                metrics.write(step=step, epoch=n, **{f"val/{k}": v for k, v in last_eval.items()})
                log(f"epoch {n}: val AP {ap:.4f}")
                if ap > best_ap:
                    best_ap = ap
                    save_weights("best.pth")
                ddp_model.train()
            if n % pre.save_interval == 0 or n == schedule.epochs or step >= stop_at:
                checkpoint(n, 0)
        elif step >= stop_at:
            checkpoint(epoch, batch_in_epoch)
    if bar is not None:
        bar.close()
    if step >= total_steps:
        save_weights("final.pth")
    summary = {"step": step, "epochs_done": step // iters_per_epoch, "best_ap": best_ap, "last_eval": last_eval, "images_per_s": ips}
    log(json.dumps({"summary": summary}))
    return summary


def _jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


if __name__ == "__main__":
    main()
    if dist.is_initialized():
        dist.destroy_process_group()
