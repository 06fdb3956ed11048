"""A tiny synthetic COCO-keypoints data set: stick figures with the 17 COCO joints on textured backgrounds.

For tests, smoke runs and training-loop checks without downloading COCO. The layout is the standard one::

    OUT/annotations/person_keypoints_{train,val}2017.json
    OUT/annotations/person_detection_results_val2017.json     (COCO detection-results format, val only)
    OUT/train2017/000000000001.jpg ...
    OUT/val2017/000001000001.jpg ...

Figures: forward kinematics of a plausible skeleton (torso lean, head, arms and legs with random joint angles,
random body turn that narrows the shoulders/hips), random size, position and in-plane rotation; 1-3 persons per
image in separate horizontal slots. Limbs are thick lines coloured by body side (left warm, right cool), joints
are discs with one fixed colour per joint, so that a tiny model can tell left from right. Visibility follows
COCO: 0 = not labelled (outside the image; x = y = 0), 1 = labelled but occluded (under a random occluding
rectangle drawn over the figures), 2 = visible. ``bbox`` is the clipped box around the drawn figure, ``area``
its w * h (COCO uses the mask area; for stick figures the box is the meaningful size for OKS).

Deterministic for a given seed (NumPy ``default_rng`` + PIL drawing + PIL's encoder). Run as
``python -m vitpose_fast.data.synthetic --out DIR --images N --seed S``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from vitpose_fast.data.datasets import COCO

KEYPOINT_NAMES: Tuple[str, ...] = COCO.keypoint_names
# COCO's person category skeleton in the annotation files' 1-based joint ids.
COCO_SKELETON: Tuple[Tuple[int, int], ...] = tuple((a + 1, b + 1) for a, b in COCO.skeleton)
# Drawn limbs (0-based): side 0 = left, 1 = right, 2 = centre.
_LIMBS: Tuple[Tuple[int, int, int], ...] = (
    (5, 7, 0), (7, 9, 0), (11, 13, 0), (13, 15, 0), (5, 11, 0),
    (6, 8, 1), (8, 10, 1), (12, 14, 1), (14, 16, 1), (6, 12, 1),
    (5, 6, 2), (11, 12, 2),
)
_SIDE_COLOURS = ((235, 90, 40), (40, 120, 235), (230, 230, 230))
_JOINT_COLOURS = tuple(
    tuple(int(255 * c) for c in rgb) for rgb in (
        (1.0, 1.0, 1.0), (1.0, 0.2, 0.2), (0.2, 0.2, 1.0), (1.0, 0.6, 0.0), (0.0, 0.6, 1.0),
        (0.9, 0.9, 0.0), (0.0, 0.9, 0.9), (1.0, 0.0, 0.6), (0.5, 0.0, 1.0), (0.6, 1.0, 0.0), (0.0, 1.0, 0.4),
        (0.7, 0.3, 0.0), (0.0, 0.3, 0.7), (1.0, 0.5, 0.5), (0.5, 0.5, 1.0), (0.4, 0.0, 0.0), (0.0, 0.0, 0.4),
    )
)
SPLITS: Tuple[str, ...] = ("train2017", "val2017")
_ID_STRIDE = 1_000_000  # image ids of split i start at i * _ID_STRIDE + 1, so ids never collide across splits


@dataclass(frozen=True)
class SyntheticCoco:
    """Paths of a generated data set; ``ann_files``/``image_dirs`` are keyed by split name."""

    root: Path
    ann_files: Dict[str, Path]
    image_dirs: Dict[str, Path]
    det_file: Optional[Path]


def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _pose(rng: np.random.Generator) -> np.ndarray:
    """[17, 2] joints of a figure of height ~1 (y down), hip centre at the origin, facing the camera
    (the person's left is image right)."""
    k = np.zeros((17, 2))
    up = _rot(np.array([0.0, -1.0]), rng.normal(0, math.radians(10)))  # torso direction, hip -> neck
    side = np.array([-up[1], up[0]])  # image-right, perpendicular to the torso
    turn = rng.uniform(0.35, 1.0)  # a turned body looks narrower
    neck = up * 0.30
    k[5], k[6] = neck + side * 0.11 * turn, neck - side * 0.11 * turn
    k[11], k[12] = side * 0.075 * turn, -side * 0.075 * turn
    head_tilt = rng.normal(0, math.radians(12))
    head_up = _rot(up, head_tilt)
    head_side = np.array([-head_up[1], head_up[0]])
    look = rng.uniform(-0.4, 0.4)  # nose moves sideways when the head turns
    k[0] = neck + head_up * 0.13 + head_side * 0.03 * look
    k[1], k[2] = k[0] + head_up * 0.025 + head_side * 0.03, k[0] + head_up * 0.025 - head_side * 0.03
    k[3], k[4] = k[0] + head_up * 0.01 + head_side * 0.06, k[0] + head_up * 0.01 - head_side * 0.06
    down = -up
    for shoulder, elbow, wrist, sign in ((5, 7, 9, 1.0), (6, 8, 10, -1.0)):
        # Outward angle from hanging down, then an elbow bend (either way).
        a1 = sign * rng.uniform(-0.4, 2.6)
        k[elbow] = k[shoulder] + _rot(down, a1) * 0.17
        k[wrist] = k[elbow] + _rot(down, a1 + sign * rng.uniform(-0.3, 2.2)) * 0.15
    for hip, knee, ankle, sign in ((11, 13, 15, 1.0), (12, 14, 16, -1.0)):
        a1 = sign * rng.uniform(-0.35, 0.9)
        k[knee] = k[hip] + _rot(down, a1) * 0.25
        k[ankle] = k[knee] + _rot(down, a1 - sign * rng.uniform(0.0, 1.3)) * 0.24
    return k


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Low-frequency colour noise plus a few random muted lines and rectangles (clutter)."""
    cells = rng.integers(3, 9)
    small = rng.uniform(30, 200, (cells, cells, 3)).astype(np.uint8)
    img = Image.fromarray(small, "RGB").resize((width, height), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(c) for c in rng.integers(40, 170, 3))
        x0, x1 = sorted(rng.uniform(0, width, 2))
        y0, y1 = sorted(rng.uniform(0, height, 2))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 4)))
    return img


def _person(rng: np.random.Generator, width: int, height: int, slot: Tuple[float, float]) -> Tuple[np.ndarray, float]:
    """Image-space joints [17, 2] and line width of one figure inside a horizontal slot."""
    size = rng.uniform(0.45, 0.95) * height
    joints = _pose(rng)
    angle = rng.normal(0, math.radians(12))
    joints = np.stack([_rot(p, angle) for p in joints]) * size
    centre = 0.5 * (joints.min(0) + joints.max(0))
    # Centre inside the slot horizontally; vertically anywhere that leaves most of the figure in view.
    target = np.array([rng.uniform(*slot) * width, rng.uniform(0.3, 0.7) * height])
    return joints - centre + target, max(2.0, size * 0.035)


def _draw_person(draw: ImageDraw.ImageDraw, joints: np.ndarray, line: float) -> None:
    width = int(round(line))
    head_r = float(np.linalg.norm(joints[3] - joints[4])) * 0.5 + line * 0.5
    cx, cy = joints[:5].mean(0)
    draw.ellipse([cx - head_r, cy - head_r, cx + head_r, cy + head_r], fill=(225, 190, 160))
    neck = 0.5 * (joints[5] + joints[6])
    draw.line([tuple(neck), (cx, cy)], fill=_SIDE_COLOURS[2], width=width)
    for a, b, side in _LIMBS:
        draw.line([tuple(joints[a]), tuple(joints[b])], fill=_SIDE_COLOURS[side], width=width)
    for j, (x, y) in enumerate(joints):
        r = line * (0.55 if j < 5 else 0.9)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_JOINT_COLOURS[j])


def _render(rng: np.random.Generator, width: int, height: int) -> Tuple[Image.Image, List[dict]]:
    img = _background(rng, width, height)
    draw = ImageDraw.Draw(img)
    n = int(rng.integers(1, 4))
    people = []
    for i in range(n):
        joints, line = _person(rng, width, height, ((i + 0.3) / n, (i + 0.7) / n))
        _draw_person(draw, joints, line)
        people.append((joints, line))
    occluders = []
    for _ in range(int(rng.integers(0, 3))):
        if rng.random() < 0.5:
            continue
        jx, jy = people[int(rng.integers(0, n))][0][int(rng.integers(0, 17))]
        w, h = rng.uniform(0.08, 0.25) * width, rng.uniform(0.08, 0.25) * height
        box = (jx - w * rng.random(), jy - h * rng.random())
        box = (box[0], box[1], box[0] + w, box[1] + h)
        draw.rectangle(box, fill=tuple(int(c) for c in rng.integers(20, 120, 3)))
        occluders.append(box)
    anns = []
    for joints, line in people:
        inside = (joints[:, 0] >= 0) & (joints[:, 0] <= width - 1) & (joints[:, 1] >= 0) & (joints[:, 1] <= height - 1)
        hidden = np.zeros(17, bool)
        for x0, y0, x1, y1 in occluders:
            hidden |= (joints[:, 0] >= x0) & (joints[:, 0] <= x1) & (joints[:, 1] >= y0) & (joints[:, 1] <= y1)
        vis = np.where(inside, np.where(hidden, 1, 2), 0)
        if (vis > 0).sum() < 3:
            continue  # COCO ignores persons without keypoints; avoid near-empty ones too
        pad = line * 1.2
        lo = np.clip(joints.min(0) - pad, 0, [width - 1, height - 1])
        hi = np.clip(joints.max(0) + pad, 0, [width - 1, height - 1])
        kps = np.where(vis[:, None] > 0, joints, 0.0)
        bw, bh = float(hi[0] - lo[0]), float(hi[1] - lo[1])
        anns.append(
            dict(
                keypoints=[v for (x, y), s in zip(kps.round(2).tolist(), vis.tolist()) for v in (x, y, int(s))],
                num_keypoints=int((vis > 0).sum()),
                bbox=[round(float(lo[0]), 2), round(float(lo[1]), 2), round(bw, 2), round(bh, 2)],
                area=round(bw * bh, 2),
                iscrowd=0,
                category_id=1,
            )
        )
    return img, anns


def _jittered_dets(rng: np.random.Generator, anns: Sequence[dict], width: int, height: int) -> List[dict]:
    """Detector-like boxes: each GT box with its position and size jittered by ~5 %, plus rare false positives."""
    dets = []
    for ann in anns:
        x, y, w, h = ann["bbox"]
        dx, dy, dw, dh = rng.normal(0, 0.05, 4)
        nw, nh = w * math.exp(dw), h * math.exp(dh)
        dets.append(
            dict(
                image_id=ann["image_id"], category_id=1,
                bbox=[round(x + dx * w, 2), round(y + dy * h, 2), round(nw, 2), round(nh, 2)],
                score=round(float(rng.uniform(0.5, 1.0)), 4),
            )
        )
    if anns and rng.random() < 0.3:
        w, h = rng.uniform(0.1, 0.3) * width, rng.uniform(0.2, 0.5) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        dets.append(
            dict(
                image_id=anns[0]["image_id"], category_id=1,
                bbox=[round(float(x), 2), round(float(y), 2), round(w, 2), round(h, 2)],
                score=round(float(rng.uniform(0.05, 0.4)), 4),
            )
        )
    return dets


def _categories() -> List[dict]:
    return [
        dict(
            supercategory="person", id=1, name="person",
            keypoints=list(KEYPOINT_NAMES), skeleton=[list(p) for p in COCO_SKELETON],
        )
    ]


def make_synthetic_coco(
    out_dir: Union[str, os.PathLike],
    num_images: Union[int, Mapping[str, int]],
    seed: int = 0,
    image_size: Tuple[int, int] = (320, 240),
    splits: Sequence[str] = SPLITS,
    image_format: str = "jpg",
) -> SyntheticCoco:
    """Write a synthetic COCO-keypoints data set and return its paths.

    num_images: images per split (an int for every split, or ``{split: count}``); image_size: (W, H);
    splits: split folder names (the annotation file of split ``S`` is ``person_keypoints_S.json``); a
    detection-results file is written for every split whose name starts with ``val``. image_format: ``jpg``
    (quality 95) or ``png``.
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    width, height = int(image_size[0]), int(image_size[1])
    if width < 16 or height < 16:
        raise ValueError(f"image_size must be at least 16x16, got {width}x{height}")
    counts = {s: int(num_images[s]) if isinstance(num_images, Mapping) else int(num_images) for s in splits}
    root = Path(out_dir)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_files, image_dirs, det_file = {}, {}, None
    for split_no, split in enumerate(splits):
        rng = np.random.default_rng([seed, split_no])
        image_dir = root / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations, dets = [], [], []
        for i in range(counts[split]):
            image_id = split_no * _ID_STRIDE + i + 1
            file_name = f"{image_id:012d}.{image_format}"
            img, anns = _render(rng, width, height)
            while not anns:  # every image shows at least one labelled person
                img, anns = _render(rng, width, height)
            if image_format == "jpg":
                img.save(image_dir / file_name, quality=95)
            else:
                img.save(image_dir / file_name, compress_level=1)
            images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
            for ann in anns:
                ann.update(id=len(annotations) + 1 + split_no * _ID_STRIDE * 4, image_id=image_id)
                annotations.append(ann)
            dets.extend(_jittered_dets(rng, anns, width, height))
        ann_file = root / "annotations" / f"person_keypoints_{split}.json"
        coco = dict(
            info=dict(description="vitpose_fast synthetic stick figures", version="1.0", year=2024),
            licenses=[], images=images, annotations=annotations, categories=_categories(),
        )
        ann_file.write_text(json.dumps(coco))
        ann_files[split], image_dirs[split] = ann_file, image_dir
        if split.startswith("val"):
            det_file = root / "annotations" / f"person_detection_results_{split}.json"
            det_file.write_text(json.dumps(dets))
    return SyntheticCoco(root=root, ann_files=ann_files, image_dirs=image_dirs, det_file=det_file)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic COCO-keypoints data set of stick figures.")
    parser.add_argument("--out", required=True, help="output folder (COCO layout)")
    parser.add_argument("--images", type=int, default=100, help="images per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    args = parser.parse_args(argv)
    paths = make_synthetic_coco(args.out, args.images, args.seed, tuple(args.size), image_format=args.format)
    for split, ann in paths.ann_files.items():
        print(f"{split}: {paths.image_dirs[split]} ({ann})")
    if paths.det_file is not None:
        print(f"detections: {paths.det_file}")


if __name__ == "__main__":
    main()
