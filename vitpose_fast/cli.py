"""The ``vitpose-fast`` command line.

``vitpose-fast predict --weights W IMAGE_OR_DIR... [--boxes DETS.json] --out preds.json [--vis OUTDIR]``
    Top-down keypoints for every image, written as COCO keypoint results (one entry per person, plus its
    ``bbox`` xywh). Without ``--boxes`` each image is one person box; with a COCO detection-results file the
    boxes of image id ``int(file stem)`` are used (category 1, score >= ``--box-thr``).
``vitpose-fast predict --weights W CLIP.mp4 [--detector SPEC | --boxes PER_FRAME.json] --out poses.jsonl [--vis out.mp4]``
    A video file, webcam index or stream URL: one JSON line per frame (:mod:`vitpose_fast.video`).
    ``--detector module:callable`` or ``yolo:PATH.pt`` finds the persons for images and videos
    (:mod:`vitpose_fast.detectors`).
``vitpose-fast export --onnx OUT.onnx --weights W [--res HxW] [--dataset-index I] [--check]``
    ONNX export of the plain-PyTorch path (:mod:`vitpose_fast.onnx_export`).
``vitpose-fast eval --weights W --ann ANN.json --images DIR [--dets DETS.json] [--no-flip]``
    The official COCO top-down evaluation: GT boxes (official clean-up: clipped, ``w - 1``) or detections,
    flip test, rescoring, OKS-NMS, ``COCOeval``; prints the AP table.

``--precision fp32|bf16|fp8`` (both commands): the model's numerics; ``fp8`` runs the backbone's GEMMs on FP8
tensor cores (see :mod:`vitpose_fast.fp8`), so ``eval --precision fp8`` measures its AP on your data.

``--weights`` is anything :meth:`vitpose_fast.Model.from_pretrained` loads (our checkpoints, official ``.pth``,
Hugging Face folders, Hub ids); ``--model PRESET`` instead builds that preset and loads the weights into it strictly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from .config import PRESET_NAMES
from .crop import box_to_center_scale
from .decode import DECODE_METHODS
from .fp8 import PRECISIONS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGES_PER_CALL = 16  # images per predict() call: enough persons to fill a batch, bounded host memory


def _load_model(weights: str, preset: Optional[str], device: str, precision: str = "fp32"):
    from .checkpoint import load_into, read_checkpoint
    from .fp8 import Fp8UnavailableError, apply_precision, check_fp8_support
    from .model import Model

    try:
        if precision == "fp8":  # before loading: a GPU without FP8 says so at once
            check_fp8_support(torch.device(device))
        if preset is None:
            model = Model.from_pretrained(weights)
        else:
            model = Model.from_config(preset)
            load_into(model, read_checkpoint(weights)[0])
        return apply_precision(model.to(device).eval(), precision)
    except Fp8UnavailableError as e:
        raise SystemExit(f"vitpose-fast: --precision fp8: {e}") from None


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _collect_images(inputs: Sequence[str]) -> List[Path]:
    paths: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            paths.append(p)
        else:
            raise SystemExit(f"vitpose-fast: no such image file or folder: {item}")
    if not paths:
        raise SystemExit(f"vitpose-fast: no images found in {', '.join(inputs)}")
    return paths


def _load_dets(path: str, thr: float) -> Tuple[Dict[int, np.ndarray], int]:
    """COCO detection results -> {image_id: [N, 5] xywh + score} for category 1 with score >= thr and w, h > 0;
    also the number of degenerate (w or h <= 0) boxes skipped."""
    by_image: Dict[int, list] = defaultdict(list)
    skipped = 0
    for det in json.loads(Path(path).read_text()):
        if det.get("category_id", 1) != 1 or det["score"] < thr:
            continue
        x, y, w, h = det["bbox"][:4]
        if w <= 0 or h <= 0:
            skipped += 1
            continue
        by_image[int(det["image_id"])].append([x, y, w, h, det["score"]])
    return {k: np.array(v, dtype=np.float64) for k, v in by_image.items()}, skipped


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _predict_all(model, paths: List[Path], boxes: List[Optional[np.ndarray]], args, desc: str):
    """predict() over all images in chunks with a progress bar; yields (index, persons) per image."""
    from .pipeline import load_image, predict

    with tqdm(total=len(paths), unit="img", desc=desc, file=sys.stderr, disable=args.quiet) as bar:
        for idx in _chunks(len(paths), IMAGES_PER_CALL):
            images = [load_image(paths[i]) for i in idx]
            results = predict(
                model, images, [boxes[i] for i in idx], box_format="xywh", flip_test=not args.no_flip,
                decode=args.decode, batch_size=args.batch_size, dataset_index=args.dataset_index,
            )
            for i, image, persons in zip(idx, images, results):
                yield i, image, persons
            bar.update(len(idx))


def _image_id(path: Path, fallback: int) -> int:
    return int(path.stem) if path.stem.isdigit() else fallback


def _detector(args):
    from .detectors import load_detector

    try:
        return load_detector(args.detector, device=args.device)
    except (ImportError, ValueError) as e:
        raise SystemExit(f"vitpose-fast: {e}") from e


def cmd_predict(args) -> int:
    from .evaluation import results_to_coco
    from .video import cmd_predict_video, is_video_source
    from .visualize import save_poses

    if len(args.images) == 1 and is_video_source(args.images[0]):
        return cmd_predict_video(args)
    paths = _collect_images(args.images)
    ids = [_image_id(p, i) for i, p in enumerate(paths)]
    if args.boxes and args.detector:
        raise SystemExit("vitpose-fast: pass either --boxes or --detector, not both")
    if args.boxes:
        dets, skipped = _load_dets(args.boxes, args.box_thr)
        if skipped:
            print(f"skipped {skipped} detections with zero width or height", file=sys.stderr)
        boxes = [dets.get(i, np.zeros((0, 5))) for i in ids]
    elif args.detector:
        from .detectors import detect_files

        boxes = detect_files(_detector(args), paths, args.det_thr, args.det_classes, args.quiet)
    else:
        boxes = [None] * len(paths)
    model = _load_model(args.weights, args.model, args.device, args.precision)
    results = []
    for i, image, persons in _predict_all(model, paths, boxes, args, "predict"):
        if persons:
            kps = np.stack([p["keypoints"] for p in persons])
            entries = results_to_coco([ids[i]] * len(persons), kps, [p["score"] for p in persons])
            for entry, p in zip(entries, persons):
                x1, y1, x2, y2 = (float(v) for v in p["box"])
                entry["bbox"] = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
            results.extend(entries)
        if args.vis:
            save_poses(image, persons, Path(args.vis) / f"{paths[i].stem}.png", kpt_thr=args.kpt_thr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results))
    print(f"wrote {len(results)} persons from {len(paths)} images to {args.out}")
    return 0


def _gt_boxes(coco, image_id: int) -> np.ndarray:
    """Official ``TopDownCocoDataset`` GT boxes: clipped, x2 = x1 + w - 1, kept as [x1, y1, x2 - x1, y2 - y1]
    for persons with labelled keypoints (boxes that end up with no width or height are skipped)."""
    info = coco.loadImgs(image_id)[0]
    width, height = info["width"], info["height"]
    out = []
    for obj in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)):
        if "bbox" not in obj or "keypoints" not in obj or max(obj["keypoints"]) == 0:
            continue
        if obj.get("num_keypoints", 1) == 0 or obj.get("area", 1) <= 0:
            continue
        x, y, w, h = obj["bbox"]
        x1, y1 = max(0.0, x), max(0.0, y)
        x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
        y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
        if x2 > x1 and y2 > y1:
            out.append([x1, y1, x2 - x1, y2 - y1, 1.0])
    return np.array(out, dtype=np.float64).reshape(-1, 5)


def cmd_eval(args) -> int:
    import contextlib
    import io

    from pycocotools.coco import COCO as CocoApi

    from .datasets import COCO
    from .evaluation import evaluate_coco, format_ap_table, rescore_and_nms

    with contextlib.redirect_stdout(io.StringIO()):
        coco = CocoApi(args.ann)
    image_ids = sorted(coco.getImgIds())
    if args.dets:
        dets, skipped = _load_dets(args.dets, args.det_thr)
        if skipped:
            print(f"skipped {skipped} detections with zero width or height", file=sys.stderr)
        boxes = [dets.get(i, np.zeros((0, 5))) for i in image_ids]
    else:
        boxes = [_gt_boxes(coco, i) for i in image_ids]
    paths = [Path(args.images) / coco.loadImgs(i)[0]["file_name"] for i in image_ids]
    model = _load_model(args.weights, args.model, args.device, args.precision)
    in_h, in_w = model.config.backbone.img_size
    all_ids, all_kps, all_scores, all_areas = [], [], [], []
    for i, _, persons in _predict_all(model, paths, boxes, args, "eval"):
        if not persons:
            continue
        _, scales = box_to_center_scale(torch.from_numpy(boxes[i]), in_w / in_h)
        all_areas.append((scales * 200).prod(-1).numpy())
        all_ids.extend([image_ids[i]] * len(persons))
        all_kps.append(np.stack([p["keypoints"] for p in persons]))
        all_scores.append(boxes[i][:, 4])
    if not all_kps:
        raise SystemExit("vitpose-fast: no persons to evaluate (no boxes in the annotation or detection file)")
    results = rescore_and_nms(
        all_ids, np.concatenate(all_kps), np.concatenate(all_scores), np.concatenate(all_areas), sigmas=COCO.sigmas
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results))
    stats = evaluate_coco(results, coco, sigmas=COCO.sigmas)
    source = f"detections {args.dets}" if args.dets else "GT boxes"
    print(f"COCO keypoints, {len(image_ids)} images, {source}, flip test {'off' if args.no_flip else 'on'}:")
    print(format_ap_table(stats))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitpose-fast", description="ViTPose top-down inference and evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", required=True, help="checkpoint file, Hugging Face folder or Hub id (org/name)")
    common.add_argument("--model", choices=PRESET_NAMES, help="build this preset and load the weights into it")
    common.add_argument("--device", default=_default_device(), help="torch device (default: cuda if available)")
    common.add_argument("--batch-size", type=int, default=64, help="crops per forward (flipped copies included)")
    common.add_argument("--no-flip", action="store_true", help="disable the flip test")
    common.add_argument("--decode", choices=DECODE_METHODS, default="udp")
    common.add_argument("--dataset-index", type=int, default=None, help="ViTPose+ expert/head (0 = COCO)")
    common.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default), bf16, or fp8: bf16 with the backbone GEMMs in FP8 (sm_89+ GPUs, CPU)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("predict", parents=[common], help="keypoints for images (COCO results json) or a video")
    p.add_argument("images", nargs="+", help="image files or folders; or one video file, stream URL or webcam index")
    p.add_argument("--boxes", help="COCO detection results json (image_id = int(file stem)); for a video, "
                   "per-frame boxes json (see vitpose_fast.video.load_frame_boxes)")
    p.add_argument("--box-thr", type=float, default=0.0, help="minimum detection score")
    p.add_argument("--out", required=True, help="output json (for a video: JSON lines, one per frame)")
    p.add_argument("--vis", help="folder for skeleton PNGs (for a video: the annotated video file, .mp4/.avi)")
    p.add_argument("--frames-per-batch", type=int, default=8, help="video frames per predict call")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video or stream after this many frames")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="minimum keypoint score drawn")
    p.add_argument("--detector", help="person detector: module:callable (image -> (boxes_xyxy, scores[, labels])) "
                   "or yolo:PATH.pt (Ultralytics, installed separately)")
    p.add_argument("--det-thr", type=float, default=0.3, help="minimum detector score (official demo: 0.3)")
    p.add_argument("--det-classes", type=lambda v: [int(c) for c in v.split(",")], default=None,
                   help="detector labels kept, comma-separated (default: all; yolo: keeps persons)")
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("eval", parents=[common], help="COCO keypoint AP on an annotated image set")
    e.add_argument("--ann", required=True, help="COCO person_keypoints json")
    e.add_argument("--images", required=True, help="image folder")
    e.add_argument("--dets", help="COCO detection results json (default: GT boxes)")
    e.add_argument("--det-thr", type=float, default=0.0, help="minimum detection score (official: 0.0)")
    e.add_argument("--out", help="also write the final (rescored, NMS'd) results json")
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="export the model to ONNX (plain-PyTorch path, dynamic batch)")
    x.add_argument("--onnx", required=True, help="output .onnx file")
    x.add_argument("--weights", required=True, help="checkpoint file, Hugging Face folder or Hub id")
    x.add_argument("--model", choices=PRESET_NAMES, help="build this preset and load the weights into it")
    x.add_argument("--res", help="input HxW (e.g. 384x288; the position embedding is resized)")
    x.add_argument("--dataset-index", type=int, default=None, help="ViTPose+: the dataset fixed in the graph")
    x.add_argument("--batch", type=int, default=None, help="fixed batch size (default: dynamic)")
    x.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    x.add_argument("--check", action="store_true", help="compare with PyTorch in ONNX Runtime (batch 1 and 3)")
    x.set_defaults(func=_cmd_export, batch_size=1)
    return parser


def _cmd_export(args) -> int:
    from .onnx_export import cmd_export

    return cmd_export(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise SystemExit("vitpose-fast: --batch-size must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
