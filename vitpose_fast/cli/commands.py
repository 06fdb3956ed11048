"""The ``vitpose-fast`` command line.

``vitpose-fast predict --weights W IMAGE_OR_DIR... [--boxes DETS.json] [--ann ANN.json] --out preds.json [--vis DIR]``
    Top-down keypoints for every image, written as COCO keypoint results (one entry per person, plus its
    ``bbox`` xywh and the image's ``file_name``). The output file is valid JSON after every finished image, so
    an interrupted run keeps what it finished. Without ``--boxes`` each image is ONE person whose box is the
    whole image. Detections are matched to images by ``file_name`` when they carry one, else by ``image_id``:
    the ids of ``--ann``'s images (by file name), else the number in the file name (``000123.jpg`` -> 123).
``vitpose-fast predict --weights W IMAGE_OR_DIR... --detector SPEC --out preds.json``
    ``--detector module:callable`` or ``yolo:PATH.pt`` finds the persons of each image as it is decoded
    (:mod:`vitpose_fast.inference.detectors`), instead of ``--boxes``.
``vitpose-fast predict --weights W CLIP.mp4 [--detector SPEC | --boxes PER_FRAME.json] --out poses.jsonl [--vis out.mp4]``
    A video file, webcam index or stream URL: one JSON line per frame (:mod:`vitpose_fast.inference.video`).
``vitpose-fast predict --weights W FOLDER... --engine ray [--address auto] --workers N --out DIR``
``torchrun --nproc-per-node N -m vitpose_fast.cli predict --weights W FOLDER... --out DIR``
    Past one process: Ray Data actors (:mod:`vitpose_fast.ray`) or one share of the sorted paths per torchrun
    rank write per-image rows into ``DIR/parts/``, merged into ``DIR/results.json`` (the COCO results above);
    a rerun skips the images already written (:mod:`vitpose_fast.inference.sharding`).
``vitpose-fast merge DIR [--ann ANN.json]``
    ``DIR/parts/`` -> ``DIR/results.json`` again.
``vitpose-fast export --onnx OUT.onnx --weights W [--res HxW] [--dataset-index I] [--check]``
    ONNX export of the plain-PyTorch path (:mod:`vitpose_fast.model.onnx_export`).
``vitpose-fast eval --weights W --ann ANN.json --images DIR [--dets DETS.json] [--no-flip]``
    The official COCO top-down evaluation: GT boxes (official clean-up: clipped, ``w - 1``) or detections,
    flip test, rescoring, OKS-NMS, ``COCOeval``; prints the AP table (fractions, as training logs them).

``--precision fp32|bf16|fp8`` (both commands): the model's numerics; ``fp8`` runs the backbone's GEMMs on FP8
tensor cores (see :mod:`vitpose_fast.model.fp8`), so ``eval --precision fp8`` measures its AP on your data.

``--weights`` is anything :meth:`vitpose_fast.Model.from_pretrained` loads (our checkpoints, official ``.pth``,
Hugging Face folders, Hub ids); ``--model PRESET`` instead builds that preset and loads the weights into it strictly.
``--dataset NAME`` sets the keypoint metadata (flip pairs, skeleton, OKS sigmas); by default the head's dataset.

Nothing is dropped silently: detections that match no image and images without detections are counted,
unreadable images are reported and skipped (exit status 1; ``--strict`` stops at the first), and the output
paths are checked before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from vitpose_fast.config import PRESET_NAMES
from vitpose_fast.data.crop import box_to_center_scale
from vitpose_fast.data.datasets import DATASETS
from vitpose_fast.inference.decode import DECODE_METHODS
from vitpose_fast.model.precision import PRECISIONS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _fail(msg: str) -> "SystemExit":
    return SystemExit(f"vitpose-fast: {msg}")


def _warn(msg: str) -> None:
    print(f"vitpose-fast: {msg}", file=sys.stderr)


def _load_model(weights: str, preset: Optional[str], device: str, precision: Optional[str] = None):
    from vitpose_fast.inference.model import Model
    from vitpose_fast.model.fp8 import Fp8UnavailableError

    try:
        return Model.load(weights, preset, device=device, precision=precision)
    except Fp8UnavailableError as e:
        raise SystemExit(f"vitpose-fast: --precision fp8: {e}") from None


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_output_file(path: str, flag: str) -> None:
    """Fail now (before loading anything) when ``path`` cannot be written as a file."""
    p = Path(path)
    if p.is_dir():
        raise _fail(f"{flag} {path} is a directory; expected a file name such as {p / 'preds.json'}")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise _fail(f"{flag} {path}: cannot create a file there ({parent} is not a writable directory)")


def _check_output_dir(path: str, flag: str) -> None:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _fail(f"{flag} {path} exists and is not a directory")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise _fail(f"{flag} {path}: {parent} is not writable")


def _collect_images(inputs: Sequence[str]) -> List[Path]:
    paths: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        elif p.is_file():
            paths.append(p)
        else:
            raise _fail(f"no such image file or folder: {item}")
    if not paths:
        raise _fail(f"no images found in {', '.join(inputs)}")
    return paths


def _image_ids(paths: List[Path], ann_images: Optional[List[dict]]) -> List[int]:
    """Image id of every path: ``--ann``'s id for its file name, else the number in the file name (numbers must
    not collide: ``001.jpg`` and ``1.jpg`` are an error); names without a number get ids after the largest."""
    if ann_images is not None:
        by_name: Dict[str, int] = {}
        for im in ann_images:
            by_name[Path(im["file_name"]).name] = int(im["id"])
        missing = [p.name for p in paths if p.name not in by_name]
        if missing:
            raise _fail(f"{len(missing)} image(s) are not in the annotation file's images, e.g. "
                        f"{', '.join(missing[:5])}")
        return [by_name[p.name] for p in paths]
    owner: Dict[int, Path] = {}
    ids: List[Optional[int]] = []
    for p in paths:
        if not p.stem.isdigit():
            ids.append(None)
            continue
        i = int(p.stem)
        if i in owner and owner[i].resolve() != p.resolve():
            raise _fail(f"{owner[i]} and {p} both get image id {i} from their names; rename one, or pass --ann "
                        "with the images' ids")
        owner[i] = p
        ids.append(i)
    nxt = max(owner, default=-1) + 1
    named: Dict[Path, int] = {}
    for k, p in enumerate(paths):
        if ids[k] is None:
            key = p.resolve()
            if key not in named:
                named[key], nxt = nxt, nxt + 1
            ids[k] = named[key]
    return [int(i) for i in ids]


def _read_dets(path: str, thr: float) -> Tuple[List[dict], int]:
    """COCO detection results of category 1 with score >= thr and w, h > 0; also how many degenerate (w or
    h <= 0) boxes were skipped."""
    try:
        dets = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read detections {path}: {exc}") from None
    if not isinstance(dets, list):
        raise _fail(f"detections {path}: expected a JSON list of COCO detection results, got {type(dets).__name__}")
    kept, skipped = [], 0
    for det in dets:
        if det.get("category_id", 1) != 1 or det["score"] < thr:
            continue
        if det["bbox"][2] <= 0 or det["bbox"][3] <= 0:
            skipped += 1
            continue
        kept.append(det)
    return kept, skipped


def match_detections(dets: List[dict], image_ids: Sequence[int], file_names: Sequence[str]
                     ) -> Tuple[Dict[int, np.ndarray], List[dict]]:
    """{position in the image list: [N, 5] xywh + score} and the detections that matched no image. A detection
    with a ``file_name`` matches the image of that name, otherwise the one with its ``image_id``."""
    by_id = {int(i): k for k, i in enumerate(image_ids)}
    by_name = {Path(n).name: k for k, n in enumerate(file_names)}
    boxes: Dict[int, list] = defaultdict(list)
    unmatched = []
    for det in dets:
        k = by_name.get(Path(det["file_name"]).name) if det.get("file_name") else by_id.get(int(det["image_id"]))
        if k is None:
            unmatched.append(det)
        else:
            boxes[k].append([*det["bbox"][:4], det["score"]])
    return {k: np.asarray(v, dtype=np.float64) for k, v in boxes.items()}, unmatched


def _report_matching(dets: List[dict], unmatched: List[dict], n_images: int, without: int, source: str) -> None:
    if unmatched:
        examples = sorted({str(d.get("file_name") or d["image_id"]) for d in unmatched})[:5]
        _warn(f"{len(unmatched)} of {len(dets)} detections in {source} match no image (e.g. image "
              f"{', '.join(examples)})")
    if without:
        _warn(f"{without} of {n_images} images have no detections (no persons predicted for them)")


def _resolve_dataset(model, args):
    """The DatasetInfo for ``--dataset`` (checked against the head) or the head's own; None if unknown."""
    from vitpose_fast.data.datasets import get_dataset
    from vitpose_fast.inference.pipeline import head_dataset, head_num_keypoints

    k = head_num_keypoints(model, args.dataset_index)
    if args.dataset is None:
        return head_dataset(model, args.dataset_index), k
    info = get_dataset(args.dataset)
    if info.num_keypoints != k:
        raise _fail(f"--dataset {args.dataset} has {info.num_keypoints} keypoints but the model's head "
                    f"{args.dataset_index or 0} predicts {k}")
    return info, k


def _stream(model, items, args, info, total: Optional[int], desc: str, detector=None) -> Iterator[Any]:
    """predict_iter over ``items`` (with ``detector``: each image's boxes found by it) with a per-person progress
    bar; unreadable images are reported (or fatal with --strict). Yields ImageResults."""
    from vitpose_fast.inference.pipeline import predict_iter

    with tqdm(total=total, unit="person", desc=desc, file=sys.stderr, disable=args.quiet) as bar:
        stream = predict_iter(
            model, items, box_format="xywh", flip_test=not args.no_flip, decode=args.decode,
            batch_size=args.batch_size, dataset_index=args.dataset_index, dataset=info,
            on_error="raise" if args.strict else "skip", progress=bar.update,
            detector=detector, det_thr=getattr(args, "det_thr", 0.3), det_classes=getattr(args, "det_classes", None),
        )
        try:
            for result in stream:
                if result.error is not None:
                    bar.write(f"vitpose-fast: skipped an image: {result.error}", file=sys.stderr)
                yield result
        except (OSError, ValueError, TypeError) as exc:
            if args.strict:
                raise _fail(f"{exc} (--strict: stopping at the first bad image)") from exc
            raise


class JsonListWriter:
    """Writes a JSON list record by record; the file is a complete JSON list after every :meth:`add`, so an
    interrupted run leaves every finished image's records readable with ``json.load``."""

    def __init__(self, path: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "wb")
        self._f.write(b"[]\n")
        self._f.flush()
        self._end = 1  # offset of the closing bracket
        self.count = 0

    def add(self, records: List[dict]) -> None:
        if not records:
            return
        text = ",\n".join(json.dumps(r) for r in records)
        self._f.seek(self._end)
        self._f.write((("\n" if self.count == 0 else ",\n") + text + "\n]\n").encode())
        self._f.flush()
        self._end = self._f.tell() - 2
        self.count += len(records)

    def close(self) -> None:
        self._f.close()


def _coco_records(image_id: int, file_name: str, persons: List[dict]) -> List[dict]:
    from vitpose_fast.inference.sharding import coco_records

    return coco_records(image_id, file_name, persons)


def _load_ann_images(path: str) -> List[dict]:
    try:
        data = json.loads(Path(path).read_text())
        return list(data["images"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _fail(f"cannot read the images of annotation file {path}: {exc!r}") from None


def _detector(args):
    from vitpose_fast.inference.detectors import load_detector

    try:
        return load_detector(args.detector, device=args.device)
    except (ImportError, ValueError) as e:
        raise SystemExit(f"vitpose-fast: {e}") from e


def cmd_predict_video(args) -> int:
    """``vitpose-fast predict VIDEO ...`` (called by the CLI when its single input is a video or stream)."""
    from vitpose_fast.inference.detectors import load_detector
    from vitpose_fast.inference.model import Model
    from vitpose_fast.inference.video import load_frame_boxes, predict_video
    from vitpose_fast.model.fp8 import Fp8UnavailableError

    if args.boxes and args.detector:
        raise SystemExit("vitpose-fast: pass either --boxes or --detector, not both")
    try:
        frame_boxes = load_frame_boxes(args.boxes) if args.boxes else None
    except (OSError, ValueError) as e:
        raise SystemExit(f"vitpose-fast: --boxes: {e}") from e
    try:
        detector = load_detector(args.detector, device=args.device) if args.detector else None
    except (ImportError, ValueError) as e:
        raise SystemExit(f"vitpose-fast: {e}") from e
    try:
        model = Model.load(args.weights, args.model, device=args.device, precision=args.precision)
    except Fp8UnavailableError as e:
        raise SystemExit(f"vitpose-fast: --precision fp8: {e}") from None
    try:
        stats = predict_video(
            model, args.images[0], args.out, vis=args.vis, detector=detector, boxes=frame_boxes,
            det_thr=args.det_thr, det_classes=args.det_classes, box_thr=args.box_thr,
            frames_per_batch=args.frames_per_batch, max_frames=args.max_frames, kpt_thr=args.kpt_thr,
            progress=not args.quiet, flip_test=not args.no_flip, decode=args.decode, batch_size=args.batch_size,
            dataset_index=args.dataset_index, dataset=args.dataset, track=args.track, smooth=args.smooth,
            detect_every=args.detect_every,
        )
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"vitpose-fast: {e}") from e
    print(f"wrote {stats['persons']} persons in {stats['frames']} frames to {args.out} "
          f"({stats['fps']:.1f} frames/s, {stats['persons_per_s']:.1f} persons/s)")
    return 0


def cmd_predict(args) -> int:
    from vitpose_fast.inference.video import is_video_source
    from vitpose_fast.inference.visualize import save_poses

    if len(args.images) == 1 and is_video_source(args.images[0]):
        return cmd_predict_video(args)
    if args.boxes and args.detector:
        raise _fail("pass either --boxes or --detector, not both")
    sharded = _sharded(args)
    if not sharded:
        _check_output_file(args.out, "--out")
    if args.vis:
        _check_output_dir(args.vis, "--vis")
    paths = _collect_images(args.images)
    ids = _image_ids(paths, _load_ann_images(args.ann) if args.ann else None)
    names = [p.name for p in paths]
    detector = None
    if args.boxes:
        dets, skipped = _read_dets(args.boxes, args.box_thr)
        if skipped:
            _warn(f"skipped {skipped} detections with zero width or height")
        boxes, unmatched = match_detections(dets, ids, names)
        if dets and len(unmatched) == len(dets):
            examples = sorted({str(d.get("file_name") or d["image_id"]) for d in dets})[:5]
            raise _fail(f"none of the {len(dets)} detections in {args.boxes} matches an image (their image ids, "
                        f"e.g. {', '.join(examples)}, vs the images' {', '.join(map(str, sorted(set(ids))[:5]))}); "
                        "pass --ann with the images' ids, or detections with file_name")
        _report_matching(dets, unmatched, len(paths), len(paths) - len(boxes), args.boxes)
        per_image = [boxes.get(k, np.zeros((0, 5))) for k in range(len(paths))]
        total = sum(len(b) for b in per_image)
    elif args.detector:
        detector = _detector(args)
        per_image = [None] * len(paths)
        total = None  # persons: known once detected
    else:
        _warn("no --boxes given: each image is one person whose box is the whole image")
        per_image = [None] * len(paths)
        total = len(paths)
    if args.engine == "ray":
        return _predict_ray(args, paths, per_image)
    model = _load_model(args.weights, args.model, args.device, args.precision)
    info, k = _resolve_dataset(model, args)
    if info is None and not args.no_flip:
        raise _fail(f"the model's head predicts {k} keypoints of no known dataset: pass --dataset NAME "
                    f"({', '.join(sorted(DATASETS))}) for its flip pairs and skeleton, or --no-flip")
    skeleton = info.skeleton if info is not None else ()
    if sharded:
        return _predict_shard(args, model, info, k, paths, per_image, detector)
    items = ((str(p), b, i) for i, (p, b) in enumerate(zip(paths, per_image)))
    writer = JsonListWriter(args.out)
    failed: List[str] = []
    try:
        for r in _stream(model, items, args, info, total, "predict", detector):
            if r.error is not None:
                failed.append(str(paths[r.meta]))
                continue
            writer.add(_coco_records(ids[r.meta], names[r.meta], r.persons))
            if args.vis:
                save_poses(r.image, r.persons, Path(args.vis) / f"{paths[r.meta].stem}.png", kpt_thr=args.kpt_thr,
                           skeleton=skeleton)
    finally:
        writer.close()
    print(f"wrote {writer.count} persons from {len(paths) - len(failed)} images to {args.out}")
    if failed:
        _warn(f"{len(failed)} of {len(paths)} images could not be read and were skipped: "
              f"{', '.join(failed[:10])}{', ...' if len(failed) > 10 else ''}")
        return 1
    return 0


def _sharded(args) -> bool:
    """Whether ``--out`` is a results folder of parts (``--engine ray``, or started by torchrun); checks it."""
    from vitpose_fast.inference.sharding import torchrun_rank

    if args.engine == "local" and torchrun_rank() is None:
        return False
    where = "with --engine ray" if args.engine == "ray" else "under torchrun"
    if Path(args.out).suffix == ".json" and not Path(args.out).is_dir():
        raise _fail(f"--out {args.out}: {where} --out is a folder (parts/ and results.json go in it)")
    _check_output_dir(args.out, "--out")
    if args.engine == "local" and args.device == "cuda":  # one GPU per rank of the node
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if args.vis:
        raise _fail(f"--vis is for one process, not {where}")
    if args.strict and args.engine == "ray":
        raise _fail("--strict is not for --engine ray: its bad images are reported once the run ends")
    return True


def _merge_summary(out: str, summary: dict, failed: int, total: int) -> int:
    from vitpose_fast.inference.sharding import RESULTS

    print(f"wrote {summary['persons']} persons from {summary['images']} images to {Path(out) / RESULTS}")
    if failed:
        _warn(f"{failed} of {total} images could not be read and were skipped (a rerun retries them)")
        return 1
    return 0


def _ids_for(ann: Optional[str]):
    ann_images = _load_ann_images(ann) if ann else None
    return lambda paths: _image_ids([Path(p) for p in paths], ann_images)


def _predict_shard(args, model, info, k, paths, per_image, detector) -> int:
    """This torchrun rank's share into ``--out``'s parts; rank 0 merges them at the end."""
    from vitpose_fast.inference.sharding import TorchrunShard

    shard = TorchrunShard(args.out, [str(p) for p in paths], k, _warn)
    args.quiet = args.quiet or shard.rank != 0
    if shard.skipped:
        _warn(f"rank {shard.rank}: {shard.skipped} images already have results in {args.out}; skipped")
    items = ((str(paths[i]), per_image[i], i) for i in shard.todo)
    total = None if detector is not None else sum(1 if per_image[i] is None else len(per_image[i])
                                                  for i in shard.todo)
    failed = 0
    for r in _stream(model, items, args, info, total, f"predict (rank {shard.rank})", detector):
        if r.error is not None:
            failed += 1
        else:
            shard.writer.add(shard.paths[r.meta], r.persons)
    failed, summary = shard.finish(failed, _ids_for(args.ann), _warn)
    if summary is None:
        return 1 if failed else 0
    return _merge_summary(args.out, summary, failed, len(set(shard.paths)))


def _predict_ray(args, paths, per_image) -> int:
    """``--engine ray``: Ray Data writes the parts (vitpose_fast.ray.predict_folder); then they are merged."""
    from vitpose_fast.inference.sharding import merge
    from vitpose_fast.ray import predict_folder

    boxes = None if args.boxes is None else {str(p): b for p, b in zip(paths, per_image)}
    try:
        predict_folder([str(p) for p in paths], args.out, weights=args.weights, workers=args.workers,
                       gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker, boxes=boxes,
                       output_format=args.format, address=args.address, model=args.model,
                       batch_size=args.batch_size, precision=args.precision, flip_test=not args.no_flip,
                       decode=args.decode, dataset_index=args.dataset_index, dataset=args.dataset, box_format="xywh",
                       detector=args.detector, det_thr=args.det_thr, det_classes=args.det_classes)
    except (ImportError, ValueError) as e:
        raise _fail(str(e)) from None
    summary = merge(args.out, _ids_for(args.ann), _warn)
    for path, error in sorted(summary["failed"].items()):
        _warn(f"skipped an image: {error}")
    return _merge_summary(args.out, summary, len(summary["failed"]), len(set(map(os.path.abspath, paths))))


def cmd_merge(args) -> int:
    from vitpose_fast.inference.sharding import PARTS, merge

    if not (Path(args.folder) / PARTS).is_dir():
        raise _fail(f"{args.folder} has no {PARTS}/ folder: expected the --out folder of a sharded or Ray predict")
    summary = merge(args.folder, _ids_for(args.ann), _warn)
    for path, error in sorted(summary["failed"].items()):
        _warn(f"no results for an image: {error}")
    return _merge_summary(args.folder, summary, len(summary["failed"]), summary["images"] + len(summary["failed"]))


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

    from vitpose_fast.inference.evaluation import evaluate_coco, format_ap_table, rescore_and_nms

    if args.out:
        _check_output_file(args.out, "--out")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = CocoApi(args.ann)
    image_ids = sorted(coco.getImgIds())
    names = [coco.loadImgs(i)[0]["file_name"] for i in image_ids]
    if args.dets:
        dets, skipped = _read_dets(args.dets, args.det_thr)
        if skipped:
            _warn(f"skipped {skipped} detections with zero width or height")
        matched, unmatched = match_detections(dets, image_ids, names)
        if unmatched:
            examples = sorted({str(d.get("file_name") or d["image_id"]) for d in unmatched})[:5]
            msg = (f"{len(unmatched)} of {len(dets)} detections in {args.dets} name images that are not in "
                   f"{args.ann} (e.g. {', '.join(examples)})")
            if not args.allow_unmatched_dets:
                raise _fail(msg + "; wrong detection file? (--allow-unmatched-dets ignores them)")
            _warn(msg + "; ignored")
        _report_matching(dets, [], len(image_ids), len(image_ids) - len(matched), args.dets)
        boxes = [matched.get(k, np.zeros((0, 5))) for k in range(len(image_ids))]
    else:
        boxes = [_gt_boxes(coco, i) for i in image_ids]
    paths = [Path(args.images) / n for n in names]
    model = _load_model(args.weights, args.model, args.device, args.precision)
    info, k = _resolve_dataset(model, args)
    if info is None or info.sigmas is None:
        raise _fail(f"COCOeval needs OKS sigmas for the head's {k} keypoints: pass --dataset NAME "
                    f"({', '.join(sorted(n for n, d in DATASETS.items() if d.sigmas))})")
    in_h, in_w = model.config.backbone.img_size
    all_ids, all_kps, all_scores, all_areas = [], [], [], []
    failed: List[str] = []
    items = ((str(paths[i]), boxes[i], i) for i in range(len(image_ids)) if len(boxes[i]))
    for r in _stream(model, items, args, info, sum(len(b) for b in boxes), "eval"):
        i = r.meta
        if r.error is not None:
            failed.append(str(paths[i]))
            continue
        _, scales = box_to_center_scale(torch.from_numpy(boxes[i]), in_w / in_h)
        all_areas.append((scales * 200).prod(-1).numpy())
        all_ids.extend([image_ids[i]] * len(r.persons))
        all_kps.append(np.stack([p["keypoints"] for p in r.persons]))
        all_scores.append(boxes[i][:, 4])
    if not all_kps:
        raise _fail("no persons to evaluate (no boxes in the annotation or detection file, or no readable image)")
    results = rescore_and_nms(all_ids, np.concatenate(all_kps), np.concatenate(all_scores),
                              np.concatenate(all_areas), sigmas=info.sigmas)
    if args.out:
        for r in results:
            r["file_name"] = names[image_ids.index(r["image_id"])]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results))
    stats = evaluate_coco(results, coco, sigmas=info.sigmas)
    source = f"detections {args.dets}" if args.dets else "GT boxes"
    print(f"{info.name} keypoints, {len(image_ids)} images, {source}, flip test {'off' if args.no_flip else 'on'}:")
    print(format_ap_table(stats))
    if failed:
        _warn(f"{len(failed)} images could not be read and were skipped (their people count as missed): "
              f"{', '.join(failed[:10])}{', ...' if len(failed) > 10 else ''}")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitpose-fast", description="ViTPose top-down inference and evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", required=True, help="checkpoint file, Hugging Face folder or Hub id (org/name)")
    common.add_argument("--model", choices=PRESET_NAMES, help="build this preset and load the weights into it")
    common.add_argument("--device", default=_default_device(), help="torch device (default: cuda if available)")
    common.add_argument("--batch-size", type=int, default=64,
                        help="crops per forward (flipped copies included); bounds the memory of every step")
    common.add_argument("--no-flip", action="store_true", help="disable the flip test")
    common.add_argument("--decode", choices=DECODE_METHODS, default="udp")
    common.add_argument("--dataset-index", type=int, default=None, help="ViTPose+ expert/head (0 = COCO)")
    common.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                        help="keypoint metadata: flip pairs, skeleton, OKS sigmas (default: the head's dataset)")
    common.add_argument("--strict", action="store_true", help="stop at the first unreadable image (default: "
                                                              "report it, skip it, exit with status 1)")
    common.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default), bf16, or fp8: bf16 with the backbone GEMMs in FP8 (sm_89+ GPUs, CPU)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("predict", parents=[common], help="keypoints for images (COCO results json) or a video")
    p.add_argument("images", nargs="+", help="image files or folders; or one video file, stream URL or webcam index")
    p.add_argument("--boxes", help="COCO detection results json, matched by file_name or image_id (without it "
                                   "each image is one person whose box is the whole image); for a video, per-frame boxes json "
                   "(see vitpose_fast.inference.video.load_frame_boxes)")
    p.add_argument("--ann", help="COCO json whose images give the image ids (by file name); default: the "
                                 "number in each file name")
    p.add_argument("--box-thr", type=float, default=0.0, help="minimum detection score")
    p.add_argument("--out", required=True, help="output json (valid after every finished image; for a video: JSON "
                                               "lines, one per frame)")
    p.add_argument("--vis", help="folder for skeleton PNGs (for a video: the annotated video file, "
                                   ".mp4/.avi)")
    p.add_argument("--frames-per-batch", type=int, default=8, help="video frames per detector call")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video or stream after this many frames")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="minimum keypoint score drawn")
    p.add_argument("--track", action="store_true", help="video: a track_id per person (vitpose_fast.inference.tracking)")
    p.add_argument("--smooth", choices=("none", "one_euro"), default="none",
                   help="video: smooth keypoints per track (one_euro: vitpose_fast.inference.smoothing)")
    p.add_argument("--detect-every", type=int, default=1, metavar="N",
                   help="video: detector (or boxes file) on every N-th frame, boxes from the tracks in between")
    p.add_argument("--detector", help="person detector: module:callable (image -> (boxes_xyxy, scores[, labels])) "
                   "or yolo:PATH.pt (Ultralytics, installed separately)")
    p.add_argument("--det-thr", type=float, default=0.3, help="minimum detector score (official demo: 0.3)")
    p.add_argument("--det-classes", type=lambda v: [int(c) for c in v.split(",")], default=None,
                   help="detector labels kept, comma-separated (default: all; yolo: keeps persons)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (under torchrun: this rank's share, --out is then a folder); "
                        "ray: Ray Data workers, --out is a folder")
    p.add_argument("--address", default=None, help="--engine ray: the cluster (auto: the running one; default: "
                                                    "a local one)")
    p.add_argument("--workers", type=int, default=1, help="--engine ray: model actors (one per GPU)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="--engine ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="--engine ray: CPUs per actor (default: 1 with GPUs; else the cluster's CPUs less one, shared)")
    p.add_argument("--format", choices=("parquet", "json"), default="parquet", help="--engine ray: Ray's writer")
    p.set_defaults(func=cmd_predict)

    m = sub.add_parser("merge", help="merge the parts of a sharded or Ray predict folder into FOLDER/results.json")
    m.add_argument("folder", help="the --out folder of `predict --engine ray` or of a torchrun predict")
    m.add_argument("--ann", help="COCO json whose images give the image ids (by file name); default: the "
                                 "number in each file name")
    m.set_defaults(func=cmd_merge, batch_size=1)

    e = sub.add_parser("eval", parents=[common], help="COCO keypoint AP on an annotated image set")
    e.add_argument("--ann", required=True, help="COCO person_keypoints json")
    e.add_argument("--images", required=True, help="image folder")
    e.add_argument("--dets", help="COCO detection results json (default: GT boxes)")
    e.add_argument("--det-thr", type=float, default=0.0, help="minimum detection score (official: 0.0)")
    e.add_argument("--allow-unmatched-dets", action="store_true",
                   help="warn about (instead of refusing) detections of images not in --ann")
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


def _parse_res(value: str):
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise SystemExit(f"vitpose-fast: --res expects HxW (e.g. 256x192), got {value!r}") from None
    return h, w


def _cmd_export(args) -> int:
    """``vitpose-fast export --onnx OUT.onnx --weights W [--res HxW] [--dataset-index I] [--batch N] [--check]``."""
    from vitpose_fast.model.checkpoint import CheckpointError
    from vitpose_fast.model.onnx_export import OnnxExportError, check_onnx, export_onnx
    from vitpose_fast.inference.model import Model

    overrides = {"res": _parse_res(args.res)} if args.res else {}
    try:
        model = Model.load(args.weights, args.model, precision="fp32", **overrides)
        path = export_onnx(model, args.onnx, batch=args.batch, opset=args.opset, dataset_index=args.dataset_index)
    except (CheckpointError, OnnxExportError, ImportError) as e:
        raise SystemExit(f"vitpose-fast: {e}") from e
    h, w = model.config.backbone.img_size
    batch = "dynamic batch" if args.batch is None else f"batch {args.batch}"
    print(f"wrote {path}: pixel_values [{batch}, 3, {h}, {w}] -> heatmaps, opset {args.opset}")
    if args.check:
        errors = check_onnx(model, path, batches=(1, 3) if args.batch is None else (args.batch,),
                            dataset_index=args.dataset_index)
        print("ONNX Runtime vs PyTorch (fp32), max |diff| / max |heatmap|: "
              + ", ".join(f"batch {b}: {e:.2e}" for b, e in errors.items()))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise _fail("--batch-size must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
