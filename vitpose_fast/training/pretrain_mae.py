"""MAE pretraining of a ViTPose backbone on person crops, whole images or an image folder (paper Table 3).

Examples::

    # "COCO (crop)": every person with keypoints, box x1.25 at the input aspect, ViT-B at 256x192
    python train/pretrain_mae.py --data-root data/coco --crop --encoder vitpose_b --res 256x192 \\
        --epochs 1600 --batch-size 256 --out runs/mae_coco_crop

    # "COCO+AIC (no crop)": whole images, letterboxed to the input size (repeat --data-root per data set)
    python train/pretrain_mae.py --data-root data/coco --data-root data/aic --no-crop --out runs/mae_noCrop

    # any folder of images; a tiny model for a smoke run
    python train/pretrain_mae.py --images DIR --embed-dim 64 --depth 2 --num-heads 2 --res 64x48 \\
        --decoder-dim 32 --decoder-depth 1 --decoder-heads 2 --epochs 2 --batch-size 8 --out runs/smoke

Then fine-tune from ``OUT/mae_backbone.pth``: ``Model.from_pretrained(path, strict=False, drop_path_rate=...)``
or ``vitpose_fast.model.mae.load_backbone(model, path)`` into a preset model (pos_embed is resized for other inputs).

Data: ``--data-root`` is a COCO-layout folder (``annotations/person_keypoints_{split}.json`` + ``{split}/``);
``--crop`` takes every non-crowd person with at least one labelled keypoint (the ~150K persons of COCO train),
its box clipped to the image, widened to the input aspect and scaled by 1.25 (the top-down crop); ``--no-crop``
takes each whole image, letterboxed (aspect kept, zero padding). ``--images`` adds every image of a folder
(recursively), letterboxed. Augmentation is MAE's: a random resized crop of the region (area fraction in
[``--min-crop-scale``, 1], aspect x[3/4, 4/3] of the input's), resized to the input with bilinear
``cv2.warpAffine``, and a horizontal flip with probability 0.5; then ImageNet normalisation.

Recipe (MAE's): AdamW betas (0.9, 0.95), weight decay 0.05 (none on biases and norms), lr = blr x batch / 256
with blr 1.5e-4, linear warmup for ``--warmup-epochs`` (default: 40, or 5% of a shorter run) then half-cycle cosine to ``--min-lr``, set every
iteration; mask ratio 0.75; normalised-pixel loss. ``--max-steps`` stops early (the schedule still spans
``--epochs``). bf16 autocast on CUDA (``--precision``). Outputs in ``--out``: ``metrics.jsonl`` (one JSON object
per ``--log-every`` steps: step, epoch, loss averaged over those steps, lr, samples/s), ``mae_last.pth`` (full
state after every ``--save-every`` epochs and at the end; ``--resume`` continues from it at the next epoch) and
``mae_backbone.pth`` (backbone only, official ``backbone.*`` keys) at the end. Single device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vitpose_fast.config import parse_res, preset
from vitpose_fast.data.crop import box_to_center_scale
from vitpose_fast.data.transforms import to_normalized_tensor
from vitpose_fast.model.mae import MAE, MAEConfig
from vitpose_fast.training.core import load_checkpoint, save_checkpoint

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# ------------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class Region:
    """A source region in continuous pixel coordinates (pixel i covers [i, i + 1)); its aspect w / h equals
    the network input's."""

    image_file: str
    cx: float
    cy: float
    w: float
    h: float


def _fit_aspect(cx: float, cy: float, w: float, h: float, aspect: float, padding: float) -> Tuple[float, ...]:
    """The top-down box rule (:func:`vitpose_fast.data.crop.box_to_center_scale`) in pixels."""
    _, size = box_to_center_scale(torch.tensor([[cx - w / 2, cy - h / 2, w, h]], dtype=torch.float64), aspect,
                                  padding, pixel_std=1.0)
    return cx, cy, float(size[0, 0]), float(size[0, 1])


def coco_regions(root: Path, split: str, crop: bool, aspect: float, padding: float = 1.25) -> List[Region]:
    """Regions of a COCO-layout data set: one per person with a labelled keypoint (``crop``) or per image."""
    ann_file = root / "annotations" / f"person_keypoints_{split}.json"
    if not ann_file.exists():
        raise FileNotFoundError(f"{ann_file} does not exist (expected COCO layout: annotations/"
                                f"person_keypoints_{split}.json and {split}/)")
    coco = json.loads(ann_file.read_text())
    images = {im["id"]: im for im in coco["images"]}
    image_dir = root / split
    out: List[Region] = []
    if not crop:
        for im in sorted(images.values(), key=lambda im: im["id"]):
            w, h = float(im["width"]), float(im["height"])
            out.append(Region(str(image_dir / im["file_name"]), *_fit_aspect(w / 2, h / 2, w, h, aspect, 1.0)))
        return out
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) == 0 or "bbox" not in ann:
            continue
        im = images[ann["image_id"]]
        x, y, bw, bh = ann["bbox"][:4]
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(float(im["width"]), x + bw), min(float(im["height"]), y + bh)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        box = _fit_aspect((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, aspect, padding)
        out.append(Region(str(image_dir / im["file_name"]), *box))
    return out


def folder_regions(folder: Path, aspect: float) -> List[Region]:
    """Every image under ``folder`` (recursively), whole and letterboxed."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise FileNotFoundError(f"cannot read image {p}")
        h, w = float(img.shape[0]), float(img.shape[1])
        out.append(Region(str(p), *_fit_aspect(w / 2, h / 2, w, h, aspect, 1.0)))
    return out


def random_resized_box(rng: np.random.Generator, r: Region, min_scale: float,
                       ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> Tuple[float, float, float, float]:
    """torchvision's ``RandomResizedCrop.get_params`` inside a region: (x0, y0, w, h) with area fraction in
    [min_scale, 1] and aspect ``ratio`` times the region's; the whole region after 10 failed draws."""
    area = r.w * r.h
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        ar = (r.w / r.h) * math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = math.sqrt(target * ar), math.sqrt(target / ar)
        if w <= r.w and h <= r.h:
            x0 = r.cx - r.w / 2 + rng.uniform(0.0, r.w - w)
            y0 = r.cy - r.h / 2 + rng.uniform(0.0, r.h - h)
            return x0, y0, w, h
    return r.cx - r.w / 2, r.cy - r.h / 2, r.w, r.h


def crop_matrix(box: Tuple[float, float, float, float], out_hw: Tuple[int, int], flip: bool) -> np.ndarray:
    """[2, 3] affine taking source pixel indices to output pixel indices, mapping the continuous box
    [x0, x0 + w) x [y0, y0 + h) onto the whole output (mirrored when ``flip``)."""
    x0, y0, w, h = box
    oh, ow = out_hw
    sx, sy = ow / w, oh / h
    m = np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]])
    if flip:
        m[0] = [-m[0, 0], 0.0, ow - 1 - m[0, 2]]
    return m


class MAEImages(Dataset):
    """Augmented, normalised network inputs [3, H, W] float32 from a list of regions (see the module doc).

    Each sample's random draws come from a generator seeded by torch's RNG, so runs are reproducible from
    ``torch.manual_seed`` (DataLoader workers get distinct torch seeds)."""

    def __init__(self, regions: Sequence[Region], image_size: Tuple[int, int], augment: bool = True,
                 min_crop_scale: float = 0.2):
        if not regions:
            raise ValueError("no training images found (check --data-root/--images and --crop)")
        self.regions = list(regions)
        self.image_size = image_size  # (H, W)
        self.augment = augment
        self.min_crop_scale = min_crop_scale

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, i: int) -> torch.Tensor:
        r = self.regions[i]
        img = cv2.imread(r.image_file, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read image {r.image_file!r}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(2**62, ()).item()))
            box = random_resized_box(rng, r, self.min_crop_scale)
            flip = bool(rng.random() < 0.5)
        else:
            box, flip = (r.cx - r.w / 2, r.cy - r.h / 2, r.w, r.h), False
        h, w = self.image_size
        out = cv2.warpAffine(img, crop_matrix(box, (h, w), flip), (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return to_normalized_tensor(out)


# ------------------------------------------------------------------------------------------------ schedule
def resolve_defaults(args: argparse.Namespace) -> None:
    """Defaults that depend on the machine and the run: loader workers from the CPU count, warmup scaled
    with the run (MAE's 40 epochs of 800 would leave a short run in warmup, its lr near 0)."""
    if args.workers is None:
        args.workers = min(8, max(0, (os.cpu_count() or 1) - 1))
    if args.warmup_epochs is None:
        args.warmup_epochs = min(40.0, 0.05 * args.epochs)


def mae_lr(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: float, lr: float, min_lr: float) -> float:
    """MAE's ``adjust_learning_rate`` at a fractional epoch: linear warmup from 0, then half-cycle cosine."""
    epoch = step / steps_per_epoch
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-12)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict]:
    """timm's ``add_weight_decay`` as MAE uses it: no decay for 1-D parameters and biases; frozen skipped."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


# ------------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MAE pretraining of a ViTPose backbone.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data-root", action="append", default=[], help="COCO-layout folder (repeatable)")
    d.add_argument("--split", default="train2017", help="split of every --data-root")
    d.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True,
                   help="person crops (--crop) or whole images (--no-crop) from --data-root")
    d.add_argument("--images", action="append", default=[], help="folder of images (repeatable)")
    d.add_argument("--min-crop-scale", type=float, default=0.2, help="random resized crop: least area fraction")
    d.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers (default: one less than the CPU cores, at most 8)")
    m = p.add_argument_group("model")
    m.add_argument("--encoder", default="vitpose_b", help="preset whose backbone to pretrain")
    m.add_argument("--embed-dim", type=int)
    m.add_argument("--depth", type=int)
    m.add_argument("--num-heads", type=int)
    m.add_argument("--drop-path", type=float, default=0.0)
    m.add_argument("--res", type=parse_res, default=(256, 192), help="input HxW")
    m.add_argument("--mask-ratio", type=float, default=0.75)
    m.add_argument("--decoder-dim", type=int, default=512)
    m.add_argument("--decoder-depth", type=int, default=8)
    m.add_argument("--decoder-heads", type=int, default=16)
    m.add_argument("--norm-pix-loss", action=argparse.BooleanOptionalAction, default=True)
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=1600)
    o.add_argument("--batch-size", type=int, default=256)
    o.add_argument("--blr", type=float, default=1.5e-4, help="base lr; lr = blr * batch / 256")
    o.add_argument("--lr", type=float, help="absolute lr (overrides --blr)")
    o.add_argument("--min-lr", type=float, default=0.0)
    o.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warmup (default: 40 or 5%% of --epochs, whichever is smaller: MAE's 40 of 800)")
    o.add_argument("--weight-decay", type=float, default=0.05)
    o.add_argument("--clip-grad", type=float, help="max grad norm (MAE: none)")
    o.add_argument("--max-steps", type=int, help="stop after this many steps")
    o.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 elsewhere")
    o.add_argument("--compile", action="store_true", help="torch.compile the model")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    r = p.add_argument_group("output")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--log-every", type=int, default=20)
    r.add_argument("--save-every", type=int, default=1, help="epochs between mae_last.pth saves")
    r.add_argument("--resume", help="mae_last.pth to continue from")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def build_config(args: argparse.Namespace) -> MAEConfig:
    overrides = {k: v for k, v in (("embed_dim", args.embed_dim), ("depth", args.depth),
                                   ("num_heads", args.num_heads)) if v is not None}
    encoder = preset(args.encoder, res=args.res, drop_path_rate=args.drop_path, **overrides).backbone
    return MAEConfig(encoder=encoder, mask_ratio=args.mask_ratio, decoder_dim=args.decoder_dim,
                     decoder_depth=args.decoder_depth, decoder_heads=args.decoder_heads,
                     norm_pix_loss=args.norm_pix_loss)


def build_dataset(args: argparse.Namespace) -> MAEImages:
    h, w = args.res
    regions: List[Region] = []
    for root in args.data_root:
        regions += coco_regions(Path(root), args.split, args.crop, aspect=w / h)
    for folder in args.images:
        regions += folder_regions(Path(folder), aspect=w / h)
    if not args.data_root and not args.images:
        raise SystemExit("give at least one --data-root or --images")
    return MAEImages(regions, (h, w), min_crop_scale=args.min_crop_scale)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Run pretraining; returns a summary (steps, last logged loss, output paths)."""
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    config = build_config(args)
    model = MAE(config).to(device)
    dataset = build_dataset(args)
    resolve_defaults(args)
    print(f"{len(dataset)} samples, {args.workers} loader workers, warmup {args.warmup_epochs:g} of "
          f"{args.epochs} epochs", file=sys.stderr, flush=True)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda", drop_last=len(dataset) >= args.batch_size,
                        persistent_workers=args.workers > 0)
    steps_per_epoch = len(loader)
    lr = args.lr if args.lr is not None else args.blr * args.batch_size / 256
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=lr, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    start_epoch, step = 0, 0
    if args.resume:
        state = load_checkpoint(args.resume)
        if MAEConfig.from_dict(state["config"]) != config:
            raise SystemExit(f"--resume {args.resume}: its MAE config differs from this command's")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
    forward = torch.compile(model) if args.compile else model

    def save_state(epoch: int) -> None:
        save_checkpoint(out / "mae_last.pth", {"format": "vitpose_fast-mae", "config": config.to_dict(),
                                               "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                               "epoch": epoch, "step": step})

    total = args.epochs * steps_per_epoch if args.max_steps is None else min(args.max_steps,
                                                                          args.epochs * steps_per_epoch)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=min(step, total), unit="step", dynamic_ncols=True, file=sys.stderr)
    log = open(out / "metrics.jsonl", "a")
    window_loss, window_n, window_t = torch.zeros((), device=device), 0, time.perf_counter()
    last_loss = float("nan")
    model.train()
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, args.epochs):
            for imgs in loader:
                if step >= total:
                    break
                cur_lr = mae_lr(step, steps_per_epoch, args.epochs, args.warmup_epochs, lr, args.min_lr)
                for g in optimizer.param_groups:
                    g["lr"] = cur_lr
                imgs = imgs.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = forward(imgs)[0]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if args.clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
                optimizer.step()
                step += 1
                window_loss += loss.detach()
                window_n += imgs.shape[0]
                if step % args.log_every == 0 or step == total:
                    steps_in_window = (step - 1) % args.log_every + 1
                    last_loss = window_loss.item() / steps_in_window
                    if not math.isfinite(last_loss):
                        raise FloatingPointError(f"loss is {last_loss} at step {step} (lr {cur_lr:.3g})")
                    now = time.perf_counter()
                    record = dict(step=step, epoch=epoch, loss=last_loss, lr=cur_lr,
                                  samples_per_s=window_n / max(now - window_t, 1e-9))
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    window_loss.zero_()
                    window_n, window_t = 0, now
                    if bar is not None:
                        bar.set_postfix(epoch=f"{epoch + 1}/{args.epochs}", loss=f"{last_loss:.4f}",
                                        lr=f"{cur_lr:.2e}")
                if bar is not None:
                    bar.update(1)
            if step >= total:
                break
            if (epoch + 1) % args.save_every == 0:
                save_state(epoch)
    finally:
        log.close()
        if bar is not None:
            bar.close()
    save_state(epoch)
    model.save_backbone(out / "mae_backbone.pth")
    return dict(steps=step, loss=last_loss, backbone=str(out / "mae_backbone.pth"),
                metrics=str(out / "metrics.jsonl"))


def run() -> None:
    main()


if __name__ == "__main__":
    run()
