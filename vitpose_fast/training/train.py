"""Train ViTPose on COCO-format keypoints with the official recipe: one process, or many through torchrun.

Usage (COCO layout: ``DIR/annotations/person_keypoints_{train,val}2017.json``, ``DIR/train2017/``,
``DIR/val2017/``; the person detections for evaluation are looked up as
``DIR/person_detection_results/COCO_val2017_detections_AP_H_56_person.json`` or
``DIR/annotations/person_detection_results_val2017.json``, else pass ``--det-file`` or ``--use-gt-bbox``)::

    # the official ViTPose-B recipe on 8 GPUs (batch 64 per GPU, 210 epochs), from an MAE checkpoint
    torchrun --nproc_per_node=8 train/train.py --preset vitpose_b_coco_256x192 --data-root data/coco \\
        --init mae_pretrain_vit_base.pth --out runs/vitpose_b --amp bf16

    # larger models: activation checkpointing, FSDP2 (sharded checkpoints in runs/vitpose_h/last.dcp; resume on
    # any process count with --resume runs/vitpose_h/last.dcp; `python -m vitpose_fast.training.distributed consolidate
    # runs/vitpose_h/last.dcp w.pth` makes Model.save weights of one; --estimate-memory prints the per-rank memory)
    torchrun --nproc_per_node=8 train/train.py --preset vitpose_h_coco_576x432 --data-root data/coco \\
        --init mae_pretrain_vit_huge.pth --out runs/vitpose_h --amp bf16 --checkpointing --fsdp

    # several machines: the same command on each, a rendezvous endpoint all of them reach, a shared --out
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_id=job --rdzv_endpoint=HOST:29400 \\
        train/train.py --preset vitpose_h_coco_576x432 --data-root data/coco --out /shared/runs/vitpose_h --fsdp

    # CPU: a synthetic set and the tiny preset, two processes (gloo)
    python -m vitpose_fast.data.synthetic --out data/synth --images 400
    torchrun --nproc_per_node=2 train/train.py --preset tiny_synthetic --data-root data/synth \\
        --device cpu --epochs 10 --batch-size 16 --workers 1 --out runs/tiny

    # resume a killed or stopped run (model, optimizer, schedule, scaler, RNGs and the position in the epoch)
    torchrun --nproc_per_node=2 train/train.py --preset tiny_synthetic --data-root data/synth \\
        --device cpu --epochs 10 --batch-size 16 --workers 1 --out runs/tiny --resume runs/tiny/last.pth

    # curves
    python train/plot.py runs/tiny/metrics.jsonl --out runs/tiny/curves.png

Multi-dataset training (ViTPose+: one expert and one head per dataset, mixed batches). ``--datasets`` takes
``name=DIR`` (the COCO layout above inside DIR) or ``name=TRAIN_ANN:TRAIN_IMAGES[:VAL_ANN:VAL_IMAGES]`` (any
COCO-format keypoint files), comma-separated; names are ViTPose+ datasets (coco, aic, mpii, ap10k, apt36k,
wholebody), whose order fixes the expert/head index (coco 0 ... wholebody 5) and whose metadata (keypoints, flip
pairs, UDP for COCO/MPII, MSRA for the others) comes from ``vitpose_fast.data.datasets``. ``--ratios`` sets each
set's expected share of a batch (default: proportional to the set sizes), ``--loss-weights`` each head's weight,
``--experts`` the ViTPose+ experts (1: a shared backbone with one head per dataset; part features from the
preset, else C/4). Each set with validation files is evaluated with COCOeval and its own OKS sigmas; ``AP`` is
their mean (``best.pth`` follows it)::

    # ViTPose+-B on COCO + AIC (any COCO-format AIC files; without a detection file a set is evaluated on its
    # ground-truth boxes)
    torchrun --nproc_per_node=8 train/train.py --preset vitpose_b_coco_256x192 --experts 6 --lr 1e-3 \\
        --batch-size 128 --amp bf16 --init mae_pretrain_vit_base.pth --out runs/vitpose_plus_b \\
        --datasets coco=data/coco \\
        --datasets aic=data/aic/aic_train.json:data/aic/train_images:data/aic/aic_val.json:data/aic/val_images

    # CPU: the synthetic set plus an AIC-style copy of it (14 keypoints: the COCO joints by name, neck = the
    # shoulders' midpoint, head top unlabelled), AIC at half COCO's share of each batch
    python -m vitpose_fast.data.synthetic --out data/synth --images 400
    python -m vitpose_fast.data.multi --src data/synth --dst data/synth_aic --as aic
    python train/train.py --preset tiny_synthetic_multi --datasets coco=data/synth,aic=data/synth_aic \\
        --ratios 1,0.5 --device cpu --epochs 10 --batch-size 16 --workers 1 --out runs/tiny_multi
    # ... resumed exactly as above with --resume runs/tiny_multi/last.pth; split into per-dataset models with
    # Model.from_pretrained("runs/tiny_multi/final.pth").split_datasets()

Outputs in ``--out``: ``metrics.jsonl`` (one JSON object per logged step, with the global batch's loss, and per
evaluation), ``last.pth`` (training state, written atomically every ``--save-interval`` epochs, every
``--save-every`` steps or minutes (mid-epoch too) and when ``--max-steps`` stops the run; with ``--fsdp`` the
sharded ``last.dcp`` folder instead, see ``vitpose_fast.training.distributed``; ``--resume`` takes either, drops the
``metrics.jsonl`` records after its step and refuses another global batch unless ``--allow-resume-change``),
``best.pth`` (model weights of the best val AP, ``Model.from_pretrained``-loadable) and ``final.pth`` (weights
at the end, also of a run that ``--max-steps`` stopped). ``Model.from_pretrained`` also loads ``last.dcp`` as it is
(e.g. of a killed run).

Reproducibility: every sample's augmentation is seeded by (seed, epoch, index) and the sampler can start in
the middle of an epoch, so ``--resume`` continues bit-identically (CPU, or GPU with ``--deterministic``) from any
checkpoint, including one written mid-epoch by ``--max-steps``; the global batches are the same for any number
of processes with the same global batch size (per-process BatchNorm statistics of the classic head and
per-process drop-path masks are the only differences between process counts; ``--sync-bn`` removes the first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from vitpose_fast.config import BACKENDS, with_overrides
from vitpose_fast.data.coco import CocoKeypoints, collate, upper_body_ids
from vitpose_fast.data.datasets import VITPOSE_PLUS_DATASETS, get_dataset
from vitpose_fast.data.multi import DatasetSource, MultiDataset, RatioSampler, collate_multi
from vitpose_fast.inference.model import Model
from vitpose_fast.training.core import (
    MultiHeadModel,
    SavePolicy,
    ShardedSampler,
    build_scheduler,
    capture_rng_state,
    param_groups,
    save_checkpoint,
    training_state,
)
from vitpose_fast.training.distributed import is_sharded, save_sharded
from vitpose_fast.training.loop import (
    MetricsLog,
    TrainStep,
    all_gather,
    global_mean,
    init_distributed,
    model_state,
    resume_from,
    save_due,
    save_weights,
    seed_everything,
    unwrap,
    wrap_model,
)
from vitpose_fast.training.presets import PRESETS, TrainPreset, get_preset
from vitpose_fast.training.validation import eval_note, evaluate, evaluate_sets, run_evaluation

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
    m = p.add_argument_group("multi-dataset (ViTPose+)")
    m.add_argument("--datasets", action="append", metavar="NAME=DIR[,...]",
                   help="train on several sets: name=DIR (COCO layout) or "
                        "name=TRAIN_ANN:TRAIN_IMAGES[:VAL_ANN:VAL_IMAGES], comma-separated or repeated")
    m.add_argument("--ratios", help="expected share of each --datasets set per batch, e.g. 1,0.5 "
                                    "(default: proportional to the set sizes)")
    m.add_argument("--loss-weights", help="weight of each --datasets head in the summed loss (default 1 each)")
    m.add_argument("--experts", type=int, help="ViTPose+ experts (default: the preset's; 1: no experts)")
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
    o.add_argument("--fsdp", action="store_true",
                   help="FSDP2 (fully_shard per block, then the root; bf16 parameters and fp32 reductions with "
                        "--amp bf16); checkpoints become sharded DCP folders (OUT/last.dcp)")
    o.add_argument("--init", type=Path, help="MAE/timm/ViTPose checkpoint to start from (non-strict)")
    o.add_argument("--freeze", choices=("attn", "ffn"), default=None,
                   help="partial fine-tuning, official meanings: attn = attention + norm1 of every block; "
                        "ffn = MLP + norm2 + patch embedding + pos_embed (frozen parameters get no gradients and "
                        "are not in the optimiser)")
    r = p.add_argument_group("run")
    r.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    r.add_argument("--backend", choices=BACKENDS, default="auto")
    r.add_argument("--out", type=Path, default=Path("runs/train"))
    r.add_argument("--resume", type=Path, help="training checkpoint to continue from (last.pth, or last.dcp of --fsdp)")
    r.add_argument("--allow-resume-change", action="store_true",
                   help="resume with another global batch (processes x --batch-size): keep the epoch, convert the "
                        "position and lr schedule to it (default: refused; the process count alone may change)")
    r.add_argument("--save-every", metavar="N|TIME",
                   help="also write last.pth every N optimiser steps or every TIME of wall clock (90s, 10m, 1h), "
                        "mid-epoch included")
    r.add_argument("--eval-interval", type=int, help="epochs between evaluations (0: never)")
    r.add_argument("--save-interval", type=int, help="epochs between checkpoints")
    r.add_argument("--val-batch-size", type=int)
    r.add_argument("--max-val-images", type=int, help="evaluate on the first N val images only")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--deterministic", action="store_true")
    r.add_argument("--max-steps", type=int, help="stop (and save last.pth or last.dcp, and final.pth) after this many "
                   "optimiser steps")
    r.add_argument("--log-interval", type=int, default=20, help="steps between metrics.jsonl records")
    r.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    r.add_argument("--eval-only", action="store_true", help="evaluate the --init weights and exit")
    r.add_argument("--estimate-memory", action="store_true",
                   help="print the per-rank memory of DDP and of FSDP on --ranks processes for the preset at its "
                        "batch (meta device, nothing allocated) and exit")
    r.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 64], help="process counts for --estimate-memory")
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
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"--data-root {root}: no such folder (expected the COCO layout: annotations/, "
                                "train2017/, val2017/)")

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


def dataset_sources(specs: List[str], need_train: bool = True) -> List[DatasetSource]:
    """``--datasets`` values -> one :class:`DatasetSource` per ``name=...`` item (see the module doc)."""
    form = "name=DIR or name=TRAIN_ANN:TRAIN_IMAGES[:VAL_ANN:VAL_IMAGES]"
    sources = []
    for item in (x.strip() for spec in specs for x in spec.split(",") if x.strip()):
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"--datasets expects {form}, got {item!r}")
        try:
            info = get_dataset(name)
        except KeyError as e:
            raise ValueError(f"--datasets: {e.args[0]}") from None
        det_file = None
        if ":" in value:
            parts = [Path(v) for v in value.split(":")]
            if len(parts) not in (2, 4):
                raise ValueError(f"--datasets {name}: expected {form}, got {len(parts)} ':'-separated paths")
            train_ann, train_images = parts[:2]
            val_ann, val_images = parts[2:] if len(parts) == 4 else (None, None)
        else:
            root = Path(value)
            train_ann, train_images = root / "annotations/person_keypoints_train2017.json", root / "train2017"
            val_ann, val_images = root / "annotations/person_keypoints_val2017.json", root / "val2017"
            det_file = next((root / c for c in DET_FILE_CANDIDATES if (root / c).exists()), None)
        for what, path in (("train annotations", train_ann), ("train images", train_images)) if need_train else ():
            if not path.exists():
                raise FileNotFoundError(f"--datasets {name}: {what} {str(path)!r} not found (expected {form})")
        if val_ann is None or val_images is None or not (val_ann.exists() and val_images.exists()):
            val_ann = val_images = None
        sources.append(DatasetSource(info, train_ann, train_images, val_ann, val_images, det_file))
    if not sources:
        raise ValueError(f"--datasets is empty; expected {form}")
    return sources


def parse_per_dataset(text: Optional[str], n: int, what: str) -> Optional[List[float]]:
    """``"1,0.5"`` -> [1.0, 0.5], checked to have one value per ``--datasets`` set."""
    if text is None:
        return None
    values = [float(v) for v in text.split(",")]
    if len(values) != n or any(v < 0 for v in values):
        raise ValueError(f"{what} needs {n} non-negative values (one per --datasets set), got {text!r}")
    return values


def multi_dataset_preset(pre: TrainPreset, sources: List[DatasetSource], experts: Optional[int]) -> TrainPreset:
    """The preset's model as a multi-dataset one: head 0 for COCO's 17 keypoints and one extra head per ViTPose+
    index up to the largest used (unused indices keep an untrained head, so the layout stays ViTPose+'s),
    ``experts`` experts (default the preset's) of the preset's part features, else C/4 (every released
    ViTPose+ checkpoint's ratio)."""
    top = max(s.index for s in sources)
    b = pre.model.backbone
    n = b.num_experts if experts is None else experts
    if n < 1 or 1 < n <= top:
        worst = max(sources, key=lambda s: s.index)
        raise ValueError(f"--experts {n}: {worst.info.name} is ViTPose+ dataset {top} and needs an expert of that "
                         f"index; use --experts {top + 1} or more (ViTPose+: 6), or 1 (a shared backbone)")
    part = (b.part_features or b.embed_dim // 4) if n > 1 else 0
    model = dataclasses.replace(
        pre.model, backbone=dataclasses.replace(b, num_experts=n, part_features=part),
        head=dataclasses.replace(pre.model.head, num_keypoints=VITPOSE_PLUS_DATASETS[0].num_keypoints),
        extra_heads=tuple(d.num_keypoints for d in VITPOSE_PLUS_DATASETS[1:top + 1]))
    return dataclasses.replace(pre, model=model)


# ------------------------------------------------------------------------------------------------ model
def build_model(pre: TrainPreset, args: argparse.Namespace, log) -> Model:
    model = Model(pre.model, backend=args.backend)
    if args.init is not None:
        load_init(model, args.init, log)
    if args.freeze:
        model.freeze(args.freeze)
    if args.checkpointing:
        model.set_grad_checkpointing(True)
    return model


def load_init(model: Model, path: Path, log) -> None:
    """Start from an MAE/timm, ViTPose or Hugging Face checkpoint as the official loader does (``strict=False``:
    14->16 patch kernels zero-padded, pos_embed resized bicubically, MAE ``norm`` not mapped to ``last_norm``;
    tensors whose shape does not fit are skipped, like mmcv's ``load_state_dict``)."""
    from vitpose_fast.model.checkpoint import adapt_state_dict, read_checkpoint

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


def estimate_memory_report(args: argparse.Namespace) -> Dict[str, Any]:
    """``--estimate-memory``: the per-rank memory table of the preset (at its per-process batch, ``--amp``,
    ``--checkpointing``, ``--freeze``) for DDP and for FSDP on each of ``--ranks``, printed and returned."""
    from vitpose_fast.training.memory import estimate_memory, memory_table

    pre = resolve_preset(args)
    amp = "bf16" if args.amp == "bf16" else "none"
    rows = estimate_memory(pre.model, pre.batch_size, args.ranks, amp, args.checkpointing, args.freeze)
    h, w = pre.model.backbone.img_size
    print(f"{pre.name} ({h}x{w}), batch {pre.batch_size} per rank, AdamW, amp {args.amp}"
          f"{', activation checkpointing' if args.checkpointing else ''}: GiB per rank")
    print(memory_table(rows))
    return {"memory": rows}


# ------------------------------------------------------------------------------------------------ training
def training_data(args: argparse.Namespace):
    """(preset with the run's overrides, multi-dataset sources or None, per-head loss weights or None, the
    single set's paths, whether there are val files)."""
    pre = resolve_preset(args)
    sources: Optional[List[DatasetSource]] = None  # multi-dataset run
    loss_weights: Optional[Dict[int, float]] = None
    if args.datasets:
        if args.data_root or args.train_ann or args.val_ann:
            raise ValueError("--datasets names every set's files; drop --data-root/--train-ann/--val-ann")
        if args.fsdp or args.sync_bn:
            # A rank whose batch lacks a dataset skips that head: FSDP/SyncBN collectives would not match up.
            raise ValueError("--fsdp and --sync-bn are not supported with --datasets")
        sources = dataset_sources(args.datasets, need_train=not args.eval_only)
        pre = multi_dataset_preset(pre, sources, args.experts)
        weights = parse_per_dataset(args.loss_weights, len(sources), "--loss-weights")
        loss_weights = {s.index: w for s, w in zip(sources, weights)} if weights else None
        paths: Dict[str, Optional[Path]] = {}
        has_val = any(s.val_ann is not None for s in sources)
    else:
        for flag in ("ratios", "loss_weights", "experts"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} needs --datasets (multi-dataset training)")
        paths = data_paths(args, need_train=not args.eval_only)
        has_val = paths["val_ann"] is not None
    return pre, sources, loss_weights, paths, has_val


def train_loader(pre: TrainPreset, args: argparse.Namespace, sources: Optional[List[DatasetSource]],
                 paths: Dict[str, Optional[Path]], rank: int, world: int, device: torch.device, log):
    """(train set, its sampler (this rank's share of each global batch), the DataLoader)."""
    in_h, in_w = pre.model.backbone.img_size
    hm_h, hm_w = pre.model.heatmap_size
    if sources is not None:
        train_set = MultiDataset(sources, (in_w, in_h), (hm_w, hm_h), train=True, sigma=pre.data.sigma,
                                 augment=pre.data.augment, seed=args.seed, host_crop=not args.gpu_crop)
        ratios = parse_per_dataset(args.ratios, len(sources), "--ratios")
        sampler = RatioSampler(train_set.sizes, pre.batch_size, ratios, rank, world, seed=args.seed)
        collate_fn = collate_multi
        for src, size, share in zip(sources, train_set.sizes, sampler.probs):
            log(f"dataset {src.index} {src.info.name}: {size} train instances, {src.info.num_keypoints} keypoints, "
                f"{src.info.encoding} targets, {share:.3f} of each batch, "
                f"{eval_note(src, pre.data.use_gt_bbox)}")
    else:
        info = get_dataset(pre.data.dataset)
        train_set = CocoKeypoints(
            paths["train_ann"], paths["train_images"], (in_w, in_h), (hm_w, hm_h), info.flip_pairs,
            upper_body_ids(info.keypoint_names),
            train=True, udp=pre.data.udp, sigma=pre.data.sigma, augment=pre.data.augment, seed=args.seed,
            host_crop=not args.gpu_crop, num_joints=pre.model.head.num_keypoints,
        )
        sampler = ShardedSampler(len(train_set), pre.batch_size, rank, world, seed=args.seed, shuffle=True,
                                 drop_last=True)
        collate_fn = collate
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=pre.batch_size, sampler=sampler, num_workers=pre.workers, collate_fn=collate_fn,
        pin_memory=device.type == "cuda", persistent_workers=pre.workers > 0, drop_last=True,
        # Its own generator: creating an iterator draws a worker base seed, which must not move the global
        # torch RNG (drop path), or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(args.seed),
    )
    return train_set, sampler, loader


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Train; returns a summary (``step``, ``epochs_done``, ``best_ap``, ``last_eval``, ``images_per_s``)."""
    args = parse_args(argv)
    if args.estimate_memory:
        return estimate_memory_report(args)
    rank, world, device = init_distributed(args.device)
    is_main = rank == 0
    if args.fsdp and args.amp == "fp16":
        raise ValueError("--fsdp trains with --amp bf16 or none (fp16 would need a grad scaler that agrees across "
                         "shards); use --amp bf16")

    def log(msg: str) -> None:
        if is_main:
            print(msg, flush=True)

    pre, sources, loss_weights, paths, has_val = training_data(args)
    seed_everything(args.seed + rank, args.deterministic)  # drop-path masks differ per rank, as per-GPU seeds do
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(args.out / "metrics.jsonl", is_main)

    model = build_model(pre, args, log).to(device)
    if args.eval_only:
        if not has_val:
            raise FileNotFoundError("--eval-only needs the val annotations and images (--data-root or --val-ann, "
                                    "or val files in --datasets)")
        if sources is not None:
            stats = evaluate_sets(model, pre, sources, rank, world, args.max_val_images, args.out, log)
        else:
            stats = evaluate(model, pre, paths, rank, world, args.max_val_images, args.out)
        log(json.dumps({"eval": stats}))
        return {"last_eval": stats}

    in_h, in_w = pre.model.backbone.img_size
    train_set, sampler, loader = train_loader(pre, args, sources, paths, rank, world, device, log)
    iters_per_epoch = sampler.num_batches

    own_group = args.fsdp and not dist.is_initialized()  # FSDP in one plain process: a group of one, ours
    ddp_model = wrap_model(MultiHeadModel(model) if sources is not None else model, world, device, args.fsdp,
                           args.sync_bn, torch.bfloat16 if args.amp == "bf16" else None)
    # Groups from the wrapped module's parameters (FSDP2: per-parameter DTensors); names are the official ones.
    groups = param_groups(unwrap(ddp_model), pre.optim.lr, pre.optim.weight_decay, pre.model.layer_decay,
                          pre.model.backbone.depth)
    optimizer = torch.optim.AdamW(groups, lr=pre.optim.lr, betas=pre.optim.betas, weight_decay=pre.optim.weight_decay)
    schedule = pre.optim.schedule
    scheduler = build_scheduler(optimizer, iters_per_epoch, schedule)
    train_step = TrainStep(ddp_model, optimizer, scheduler, device, args.amp, pre.optim.grad_clip, world,
                           multi=sources is not None, num_datasets=pre.model.num_datasets, loss_weights=loss_weights,
                           gpu_crop_size=(in_w, in_h) if args.gpu_crop else None)
    scaler = train_step.scaler

    start_epoch, step, start_batch, best_ap = 0, 0, 0, -1.0
    if args.resume is not None:
        start_epoch, step, start_batch, best_ap = resume_from(
            args.resume, ddp_model, optimizer, scheduler, scaler,
            [s.info.name for s in sources] if sources is not None else None, world, rank, pre.batch_size,
            iters_per_epoch, schedule, args.allow_resume_change, args.out / "metrics.jsonl", log)

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
    last_eval: Dict[str, float] = {}
    seen, t0 = 0, time.perf_counter()
    ips = 0.0

    multi_extra = {} if sources is None else {"datasets": [s.info.name for s in sources],
                                              "ratios": sampler.probs.tolist()}
    save_policy = SavePolicy(args.save_every)
    save_policy.start(step)

    def checkpoint(epoch: int, batch_in_epoch: int) -> None:
        rngs = all_gather(capture_rng_state(), world)
        # world_size and global_batch: a resume may change the process count if the global batch stays.
        state = training_state(unwrap(ddp_model), optimizer, scheduler, scaler, epoch=epoch, step=step,
                               batch_in_epoch=batch_in_epoch, rng_states=rngs, weights=False,
                               extra={"best_ap": best_ap, "preset": pre.name, "args": _jsonable(vars(args)),
                                      "world_size": world, "global_batch": pre.batch_size * world, **multi_extra})
        if is_sharded(ddp_model):
            save_sharded(args.out / "last.dcp", ddp_model, optimizer, state)
        elif is_main:
            state["model"], state["optimizer"] = unwrap(ddp_model).state_dict(), optimizer.state_dict()
            save_checkpoint(args.out / "last.pth", state)

    def write_weights(name: str) -> None:
        mstate = model_state(ddp_model)
        if is_main:
            save_weights(args.out / name, pre.model, mstate)

    ddp_model.train()
    epoch = start_epoch
    for epoch in range(start_epoch, schedule.epochs):
        if step >= stop_at:
            break
        first = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first)
        batch_in_epoch = first
        for batch in loader:
            out = train_step(batch)
            loss, head_losses, grad_norm, lr = out.loss, out.head_losses, out.grad_norm, out.lr
            step += 1
            batch_in_epoch += 1
            seen += out.images * world
            log_now = step % args.log_interval == 0 or step == stop_at
            if bar is not None or log_now:
                # Logged: the loss of the global batch (the mean of the ranks' means over equal shares).
                loss_value = global_mean(loss, world) if log_now else loss.item()
                ips = seen / max(time.perf_counter() - t0, 1e-9)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{schedule.epochs}", loss=f"{loss_value:.3e}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}")
                if log_now:
                    # Per-head losses: this process's mean over its samples of each dataset in this batch.
                    per_head = {f"loss/{VITPOSE_PLUS_DATASETS[d].name}": v.item() for d, v in head_losses.items()}
                    metrics.write(step=step, epoch=epoch, loss=loss_value, **per_head, lr=lr, images_per_s=ips,
                                  grad_norm=grad_norm, time=time.time())
            if step >= stop_at:
                break
            if batch_in_epoch < iters_per_epoch and save_due(save_policy, step, world):
                checkpoint(epoch, batch_in_epoch)
                save_policy.saved(step)
        epoch_done = batch_in_epoch >= iters_per_epoch
        if epoch_done:
            n = epoch + 1
            if pre.eval_interval and has_val and (n % pre.eval_interval == 0 or n == schedule.epochs):
                last_eval = run_evaluation(ddp_model, pre, paths, rank, world, args.max_val_images, args.out,
                                           args.backend, sources, log)
                ap = last_eval.get("AP", -1.0)
                metrics.write(step=step, epoch=n, **{f"val/{k}": v for k, v in last_eval.items()})
                per_set = "".join(f", {k[:-3]} {v:.4f}" for k, v in last_eval.items() if k.endswith("/AP"))
                log(f"epoch {n}: val AP {ap:.4f}{per_set}")
                if ap > best_ap:
                    best_ap = ap
                    write_weights("best.pth")
                ddp_model.train()
            if n % pre.save_interval == 0 or n == schedule.epochs or step >= stop_at or save_due(save_policy, step,
                                                                                                  world):
                checkpoint(n, 0)
                save_policy.saved(step)
        elif step >= stop_at:
            checkpoint(epoch, batch_in_epoch)
    if bar is not None:
        bar.close()
    write_weights("final.pth")  # also when --max-steps stopped the run: its weights, loadable as they are
    summary = {"step": step, "epochs_done": step // iters_per_epoch, "best_ap": best_ap, "last_eval": last_eval, "images_per_s": ips}
    log(json.dumps({"summary": summary}))
    if own_group:
        dist.destroy_process_group()
    return summary


def _jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def run(argv: Optional[List[str]] = None) -> None:
    """The command line: train, then let every rank leave together. A mistake in the options or the input files
    (every rank meets it alike) is one line on stderr, from rank 0 only, and exit status 1."""
    try:
        main(argv)
    except (ValueError, OSError, ImportError) as e:  # CheckpointError, CheckpointFileError are ValueErrors
        if dist.is_initialized():
            dist.destroy_process_group()
        if int(os.environ.get("RANK", "0")) != 0:
            raise SystemExit(1) from None
        text = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, OSError) and e.filename is not None and e.strerror:
            text = f"{e.filename}: {e.strerror}"
        raise SystemExit(f"train: {text}") from None
    if dist.is_initialized():
        # Every rank reaches here before any tears gloo down (a rank exiting while another is still in its last
        # collective can abort the process at exit).
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    run()
