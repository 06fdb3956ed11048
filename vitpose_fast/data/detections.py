"""COCO detection-result files (person boxes for top-down inference and evaluation) and their matching to images.

A detection file is a JSON list of ``{"image_id": int, "bbox": [x, y, w, h], "score": float[, "category_id":
1][, "file_name": str]}``. A detection with a ``file_name`` matches the image of that name, otherwise the one
with its ``image_id``. Image ids of a list of files come from a COCO annotation file's ``images`` (by file name)
or from the number in each file name (``000123.jpg`` -> 123).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["DetectionFileError", "Detections", "read_detections", "match_detections", "image_ids_of",
           "read_annotation_images"]


class DetectionFileError(ValueError):
    """A detection or annotation file that cannot be read or has the wrong layout."""


@dataclass
class Detections:
    """The usable detections of a file and what was left out: ``degenerate`` (w or h <= 0) and ``non_finite``
    (NaN or infinite numbers) counts; detections below the score threshold or of another category are not
    counted."""

    kept: List[dict] = field(default_factory=list)
    degenerate: int = 0
    non_finite: int = 0

    def skipped_note(self) -> Optional[str]:
        parts = [f"{n} {what}" for n, what in ((self.degenerate, "with zero width or height"),
                                                (self.non_finite, "with NaN or infinite numbers")) if n]
        return f"skipped detections: {', '.join(parts)}" if parts else None


def _number(value, what: str, path, i: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DetectionFileError(f"detections {path}: entry {i}: {what} must be a number, got {value!r}")
    return float(value)


def read_detections(path: Union[str, os.PathLike], score_thr: float = 0.0) -> Detections:
    """The person detections (category 1) of a COCO results file with score >= ``score_thr``. Raises
    :class:`DetectionFileError` naming the first malformed entry (not a list of dicts with a 4-number ``bbox``, a
    numeric ``score`` and an ``image_id`` or ``file_name``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DetectionFileError(f"cannot read detections {path}: {exc}") from None
    if not isinstance(data, list):
        hint = (" (this looks like a COCO annotation file: pass it as --ann, and detection results as --boxes)"
                if isinstance(data, dict) and "images" in data else "")
        raise DetectionFileError(f"detections {path}: expected a JSON list of COCO detection results "
                                 f"[{{'image_id', 'bbox': [x, y, w, h], 'score'}}, ...], got a "
                                 f"{type(data).__name__}{hint}")
    out = Detections()
    for i, det in enumerate(data):
        if not isinstance(det, dict) or "bbox" not in det or "score" not in det:
            raise DetectionFileError(f"detections {path}: entry {i} is not a detection with 'bbox' and 'score': "
                                     f"{str(det)[:80]}")
        if "image_id" not in det and not det.get("file_name"):
            raise DetectionFileError(f"detections {path}: entry {i} has neither 'image_id' nor 'file_name'")
        bbox = det["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise DetectionFileError(f"detections {path}: entry {i}: bbox must be [x, y, w, h], got {bbox!r}")
        box = [_number(v, "bbox", path, i) for v in bbox]
        score = _number(det["score"], "score", path, i)
        if det.get("category_id", 1) != 1 or score < score_thr:
            continue
        if not all(math.isfinite(v) for v in box) or not math.isfinite(score):
            out.non_finite += 1
        elif box[2] <= 0 or box[3] <= 0:
            out.degenerate += 1
        else:
            out.kept.append({**det, "bbox": box, "score": score})
    return out


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


def read_annotation_images(path: Union[str, os.PathLike]) -> List[dict]:
    """The ``images`` list of a COCO annotation file."""
    try:
        data = json.loads(Path(path).read_text())
        return list(data["images"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DetectionFileError(f"cannot read the images of annotation file {path}: {exc!r}") from None


def image_ids_of(paths: Sequence[Path], ann_images: Optional[List[dict]] = None) -> List[int]:
    """Image id of every path: ``ann_images``' id for its file name, else the number in the file name (numbers
    must not collide: ``001.jpg`` and ``1.jpg`` are an error); names without a number get ids after the largest."""
    if ann_images is not None:
        by_name: Dict[str, int] = {Path(im["file_name"]).name: int(im["id"]) for im in ann_images}
        missing = [p.name for p in paths if p.name not in by_name]
        if missing:
            raise DetectionFileError(f"{len(missing)} image(s) are not in the annotation file's images, e.g. "
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
            raise DetectionFileError(f"{owner[i]} and {p} both get image id {i} from their names; rename one, or "
                                     "pass --ann with the images' ids")
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
