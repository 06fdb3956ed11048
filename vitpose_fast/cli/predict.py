"""``vitpose-fast predict --weights W IMAGE_OR_DIR... [--boxes DETS.json] [--ann ANN.json] --out preds.json [--vis DIR]``

Top-down keypoints for every image, written as COCO keypoint results (one entry per person, plus its ``bbox``
xywh and the image's ``file_name``). The output file is valid JSON after every finished image, so an interrupted
run keeps what it finished. Without ``--boxes`` each image is ONE person whose box is the whole image.
Detections are matched to images by ``file_name`` when they carry one, else by ``image_id``: the ids of
``--ann``'s images (by file name), else the number in the file name (``000123.jpg`` -> 123)
(:mod:`vitpose_fast.data.detections`). ``--detector module:callable`` or ``yolo:PATH.pt`` finds the persons of
each image as it is decoded (:mod:`vitpose_fast.inference.detectors`) instead. One video file, webcam index or
stream URL goes to :mod:`vitpose_fast.cli.video`. ``--engine ray`` and torchrun runs write a results folder
instead (:mod:`vitpose_fast.cli.sharded`).

Nothing is dropped silently: detections that match no image, images without detections and unusable detections
are counted, images that fail (unreadable, or a box the model cannot use) are reported and skipped (exit status
1; ``--strict`` stops at the first), and the output paths are checked before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from vitpose_fast.cli import common, sharded
from vitpose_fast.cli.common import CliError, warn

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def add_parser(sub) -> None:
    p = sub.add_parser("predict", parents=[common.inference_options()],
                       help="keypoints for images (COCO results json) or a video")
    p.add_argument("images", nargs="+", help="image files or folders; or one video file, stream URL or webcam index")
    p.add_argument("--boxes", help="COCO detection results json, matched by file_name or image_id (without it "
                                   "each image is one person whose box is the whole image); for a video, "
                                   "per-frame boxes json (see vitpose_fast.inference.video.load_frame_boxes)")
    p.add_argument("--ann", help="COCO json whose images give the image ids (by file name); default: the "
                                 "number in each file name")
    p.add_argument("--box-thr", type=float, default=0.0, help="minimum detection score")
    p.add_argument("--out", required=True, help="output json (valid after every finished image; for a video: JSON "
                                               "lines, one per frame)")
    p.add_argument("--vis", help="folder for skeleton PNGs (for a video: the annotated video file, .mp4/.avi)")
    p.add_argument("--frames-per-batch", type=common.positive_int, default=8, help="video frames per detector call")
    p.add_argument("--max-frames", type=common.positive_int, default=None,
                   help="stop a video or stream after this many frames")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="minimum keypoint score drawn")
    p.add_argument("--track", action="store_true", help="video: a track_id per person (vitpose_fast.inference.tracking)")
    p.add_argument("--smooth", choices=("none", "one_euro"), default="none",
                   help="video: smooth keypoints per track (one_euro: vitpose_fast.inference.smoothing)")
    p.add_argument("--detect-every", type=common.positive_int, default=1, metavar="N",
                   help="video: detector (or boxes file) on every N-th frame, boxes from the tracks in between")
    p.add_argument("--detector", help="person detector: module:callable (image -> (boxes_xyxy, scores[, labels]); "
                   "the module is imported as `python -m` would, the working directory first) or yolo:PATH.pt "
                   "(Ultralytics, installed separately)")
    p.add_argument("--det-thr", type=float, default=0.3, help="minimum detector score (official demo: 0.3)")
    p.add_argument("--det-classes", type=lambda v: [int(c) for c in v.split(",")], default=None,
                   help="detector labels kept, comma-separated (default: all; yolo: keeps persons)")
    sharded.add_options(p)
    p.set_defaults(func=run)


def collect_images(inputs: Sequence[str]) -> List[Path]:
    from vitpose_fast.inference.video import is_video_source

    videos = [i for i in inputs if is_video_source(i)]
    if videos:
        raise CliError(f"{', '.join(videos)}: predict takes one video (or stream, or webcam) per run, alone; got "
                       f"{len(inputs)} inputs; run one command per video")
    paths: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        elif p.is_file():
            paths.append(p)
        else:
            raise CliError(f"no such image file or folder: {item}")
    if not paths:
        raise CliError(f"no images found in {', '.join(inputs)}")
    return paths


def vis_names(paths: Sequence[Path]) -> List[str]:
    """A PNG name per image, distinct for distinct files: the stem, with the suffix kept where stems collide
    (``a.jpg`` and ``a.png`` -> ``a.jpg.png``, ``a.png.png``), then a counter where those collide too (the same
    file given twice keeps one name)."""
    files = list(dict.fromkeys(p.resolve() for p in paths))
    stems: Dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    name_of: Dict[Path, str] = {}
    taken: set = set()
    for f in files:
        base = f.stem if stems[f.stem] == 1 else f.name
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        name_of[f] = f"{name}.png"
    return [name_of[p.resolve()] for p in paths]


def report_matching(dets: List[dict], unmatched: List[dict], n_images: int, without: int, source: str) -> None:
    if unmatched:
        examples = sorted({str(d.get("file_name") or d["image_id"]) for d in unmatched})[:5]
        warn(f"{len(unmatched)} of {len(dets)} detections in {source} match no image (e.g. image "
             f"{', '.join(examples)})")
    if without:
        warn(f"{without} of {n_images} images have no detections (no persons predicted for them)")


def read_boxes(args, paths: List[Path], ids: List[int]) -> List[np.ndarray]:
    from vitpose_fast.data.detections import match_detections, read_detections

    found = read_detections(args.boxes, args.box_thr)
    if found.skipped_note():
        warn(found.skipped_note())
    dets = found.kept
    boxes, unmatched = match_detections(dets, ids, [p.name for p in paths])
    if dets and len(unmatched) == len(dets):
        examples = sorted({str(d.get("file_name") or d["image_id"]) for d in dets})[:5]
        raise CliError(f"none of the {len(dets)} detections in {args.boxes} matches an image (their image ids, "
                       f"e.g. {', '.join(examples)}, vs the images' {', '.join(map(str, sorted(set(ids))[:5]))}); "
                       "pass --ann with the images' ids, or detections with file_name")
    report_matching(dets, unmatched, len(paths), len(paths) - len(boxes), args.boxes)
    return [boxes.get(k, np.zeros((0, 5))) for k in range(len(paths))]


def run(args) -> int:
    from vitpose_fast.data.detections import image_ids_of, read_annotation_images
    from vitpose_fast.inference.results import JsonListWriter, coco_records
    from vitpose_fast.inference.video import is_video_source
    from vitpose_fast.inference.visualize import save_poses

    if len(args.images) == 1 and is_video_source(args.images[0]):
        from vitpose_fast.cli.video import run as run_video

        return run_video(args)
    if args.boxes and args.detector:
        raise CliError("pass either --boxes or --detector, not both")
    in_parts = sharded.is_sharded(args)
    if not in_parts:
        common.check_output_file(args.out, "--out")
    if args.vis:
        common.check_output_dir(args.vis, "--vis")
    paths = collect_images(args.images)
    ids = image_ids_of(paths, read_annotation_images(args.ann) if args.ann else None)
    names = [p.name for p in paths]
    detector = None
    if args.boxes:
        per_image = read_boxes(args, paths, ids)
        total = sum(len(b) for b in per_image)
    elif args.detector:
        from vitpose_fast.inference.detectors import load_detector

        detector = load_detector(args.detector, device=args.device)
        per_image, total = [None] * len(paths), None  # persons: known once detected
    else:
        per_image, total = [None] * len(paths), len(paths)
    if args.engine == "ray":
        return sharded.predict_ray(args, paths, per_image)
    model = common.inference_model(args, "predict")
    if not args.boxes and not args.detector:
        warn("no --boxes given: each image is one person whose box is the whole image")
    info, k = common.resolve_dataset(model, args)
    common.fail_unknown_keypoints(info, k, args)
    if in_parts:
        return sharded.predict_shard(args, model, info, k, paths, per_image, detector)
    skeleton = info.skeleton if info is not None else ()
    pngs = vis_names(paths) if args.vis else None
    items = ((str(p), b, i) for i, (p, b) in enumerate(zip(paths, per_image)))
    writer = JsonListWriter(args.out)
    failed: List[str] = []
    try:
        for r in common.stream(model, items, args, info, total, "predict", detector):
            if r.error is not None:
                failed.append(f"{paths[r.meta]} ({r.error})")
                continue
            writer.add(coco_records(ids[r.meta], names[r.meta], r.persons))
            if pngs is not None:
                save_poses(r.image, r.persons, Path(args.vis) / pngs[r.meta], kpt_thr=args.kpt_thr, skeleton=skeleton)
    finally:
        writer.close()
    print(f"wrote {writer.count} persons from {len(paths) - len(failed)} images to {args.out}")
    if failed:
        warn(f"{len(failed)} of {len(paths)} images failed and were skipped: "
             f"{'; '.join(failed[:5])}{'; ...' if len(failed) > 5 else ''}")
        return 1
    return 0
