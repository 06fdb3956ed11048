"""Top-down COCO-style evaluation as official ViTPose (``TopDownCocoDataset.evaluate`` in mmpose 0.x):
per-person rescoring, per-image OKS-NMS (``mmpose/core/post_processing/nms.py``) and pycocotools ``COCOeval``
with iouType 'keypoints'.

Official settings: ``vis_thr=0.2``, ``oks_thr=0.9``, hard (not soft) NMS, the dataset's OKS sigmas, and the
person area used by NMS = prod(scale * 200) of its detection box.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from vitpose_fast.data.crop import PIXEL_STD, box_to_center_scale
from vitpose_fast.data.datasets import COCO as _COCO_INFO
from vitpose_fast.data.detections import match_detections
from vitpose_fast.data.transforms import clean_bbox

__all__ = ["STATS_NAMES", "rescore", "oks_iou", "oks_nms", "rescore_and_nms", "results_to_coco",
           "evaluate_coco", "format_ap_table", "gt_boxes", "eval_boxes", "person_areas", "EvalPersons",
           "coco_subset", "score_persons"]

STATS_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
_COCO_SIGMAS = np.array(_COCO_INFO.sigmas)


def rescore(keypoints: np.ndarray, box_scores: np.ndarray, vis_thr: float = 0.2) -> np.ndarray:
    """Person scores: box score x mean of the keypoint scores above ``vis_thr`` (0 if none is above).

    keypoints [N, K, 3] (x, y, score), box_scores [N] -> [N] float64.
    """
    kp_scores = np.asarray(keypoints, dtype=np.float64)[..., 2]
    above = kp_scores > vis_thr
    count = above.sum(axis=1)
    mean = np.where(above, kp_scores, 0.0).sum(axis=1) / np.maximum(count, 1)
    return mean * np.asarray(box_scores, dtype=np.float64)


def oks_iou(g: np.ndarray, d: np.ndarray, area_g: float, area_d: np.ndarray,
            sigmas: Optional[Sequence[float]] = None) -> np.ndarray:
    """OKS between one pose ``g`` ([K, 3] or flat [3K]) and poses ``d`` ([M, K, 3] or [M, 3K]); [M] float32.

    As official ``oks_iou``: e = d^2 / (2 sigma)^2 / ((area_g + area_d) / 2 + eps) / 2, OKS = mean(exp(-e)) over
    ALL keypoints (no visibility mask). ``sigmas`` defaults to COCO's.
    """
    sig = _COCO_SIGMAS if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    var = (sig * 2) ** 2
    g = np.asarray(g, dtype=np.float64).reshape(-1, 3)
    d = np.asarray(d, dtype=np.float64).reshape(-1, g.shape[0], 3)
    if len(var) != g.shape[0]:
        raise ValueError(f"{len(var)} sigmas for {g.shape[0]} keypoints")
    d2 = (d[..., 0] - g[:, 0]) ** 2 + (d[..., 1] - g[:, 1]) ** 2
    area = (area_g + np.asarray(area_d, dtype=np.float64).reshape(-1)) / 2 + np.spacing(1)
    e = d2 / var / area[:, None] / 2
    return np.exp(-e).mean(axis=1).astype(np.float32)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float = 0.9,
            sigmas: Optional[Sequence[float]] = None) -> np.ndarray:
    """Greedy OKS-NMS: visit poses by decreasing score; keep one and drop the rest with OKS > ``thr`` to it.

    keypoints [N, K, 3], scores [N], areas [N] -> kept indices (int64, in visiting order). Ties in score are
    visited in the official order (reversed numpy quicksort argsort).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if len(keypoints) == 0:
        return np.zeros(0, dtype=np.int64)
    areas = np.asarray(areas, dtype=np.float64)
    order = np.asarray(scores).argsort()[::-1]
    keep = []
    while len(order) > 0:
        i = order[0]
        keep.append(i)
        ovr = oks_iou(keypoints[i], keypoints[order[1:]], areas[i], areas[order[1:]], sigmas)
        order = order[np.where(ovr <= thr)[0] + 1]
    return np.asarray(keep, dtype=np.int64)


def results_to_coco(image_ids: Sequence[int], keypoints: np.ndarray, scores: Sequence[float],
                    category_id: int = 1) -> List[dict]:
    """COCO keypoint results: one dict per person with image_id, category_id, flat keypoints [x, y, s, ...]
    and score."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if not len(image_ids) == len(keypoints) == len(scores):
        raise ValueError(f"got {len(image_ids)} image ids, {len(keypoints)} poses and {len(scores)} scores")
    return [
        {"image_id": int(i), "category_id": int(category_id), "keypoints": kp.reshape(-1).tolist(),
         "score": float(s)}
        for i, kp, s in zip(image_ids, keypoints, scores)
    ]


def rescore_and_nms(image_ids: Sequence[int], keypoints: np.ndarray, box_scores: np.ndarray, areas: np.ndarray,
                    sigmas: Optional[Sequence[float]] = None, vis_thr: float = 0.2, oks_thr: float = 0.9,
                    category_id: int = 1) -> List[dict]:
    """The official post-processing of top-down predictions: rescore every person, OKS-NMS per image, and
    return the COCO result list. ``areas`` = prod(scale * 200) of each person's box."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = rescore(keypoints, box_scores, vis_thr)
    areas = np.asarray(areas, dtype=np.float64)
    by_image: Dict[int, List[int]] = defaultdict(list)
    for n, image_id in enumerate(image_ids):
        by_image[int(image_id)].append(n)
    kept: List[int] = []
    for rows in by_image.values():
        rows_a = np.asarray(rows)
        kept += rows_a[oks_nms(keypoints[rows_a], scores[rows_a], areas[rows_a], oks_thr, sigmas)].tolist()
    return results_to_coco([int(image_ids[n]) for n in kept], keypoints[kept], scores[kept], category_id)


def evaluate_coco(results: List[dict], ann_file, sigmas: Optional[Sequence[float]] = None,
                  quiet: bool = True) -> Dict[str, float]:
    """Run pycocotools ``COCOeval(iouType='keypoints')`` on COCO-format ``results``.

    ``ann_file`` is a path to a COCO annotation json or a ``pycocotools.coco.COCO`` object; ``sigmas`` (default
    COCO's) sets ``params.kpt_oks_sigmas``. Returns {name: value} for ``STATS_NAMES``. ``quiet`` silences the
    pycocotools prints.
    """
    from vitpose_fast.data.coco import pycocotools

    COCO, COCOeval = pycocotools()

    if not results:
        raise ValueError("no results to evaluate (pycocotools cannot load an empty result list)")
    sink = io.StringIO() if quiet else None
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        gt = ann_file if isinstance(ann_file, COCO) else COCO(str(ann_file))
        dt = gt.loadRes(list(results))
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.useSegm = None
        ev.params.kpt_oks_sigmas = _COCO_SIGMAS if sigmas is None else np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STATS_NAMES, ev.stats)}


def format_ap_table(stats: Dict[str, float]) -> str:
    """A two-row markdown table of the stats as fractions (three decimals), as training logs them."""
    names = [n for n in STATS_NAMES if n in stats] + [n for n in stats if n not in STATS_NAMES]
    head = "| " + " | ".join(names) + " |"
    rule = "|" + "|".join("---" for _ in names) + "|"
    row = "| " + " | ".join(f"{stats[n]:.3f}" for n in names) + " |"
    return "\n".join((head, rule, row))


# ------------------------------------------------------------------------------------------------ boxes and runs
def gt_boxes(coco, image_id: int) -> np.ndarray:
    """Official ``TopDownCocoDataset`` GT boxes of one image as [N, 5] xywh + score 1: non-crowd persons with a
    positive area and labelled keypoints, cleaned by :func:`vitpose_fast.data.transforms.clean_bbox` (clipped,
    ``x2 = x1 + w - 1``; boxes left empty are skipped)."""
    info = coco.loadImgs(image_id)[0]
    out = []
    for obj in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False)):
        if "bbox" not in obj or max(obj.get("keypoints") or [0]) == 0:
            continue
        if obj.get("num_keypoints", 1) == 0 or obj.get("area", 1) <= 0:
            continue
        box = clean_bbox(obj["bbox"], info["width"], info["height"])
        if box is not None:
            out.append([*box, 1.0])
    return np.array(out, dtype=np.float64).reshape(-1, 5)


def eval_boxes(coco, image_ids: Sequence[int], dets: Optional[List[dict]] = None
               ) -> Tuple[List[np.ndarray], List[dict]]:
    """Per image of ``image_ids``, [N, 5] xywh + score boxes: :func:`gt_boxes` without ``dets``, else the
    detections (:func:`vitpose_fast.data.detections.read_detections`) matched to the images by file name or id.
    Also returns the detections that matched no image."""
    if dets is None:
        return [gt_boxes(coco, i) for i in image_ids], []
    names = [coco.loadImgs(i)[0]["file_name"] for i in image_ids]
    matched, unmatched = match_detections(dets, image_ids, names)
    return [matched.get(k, np.zeros((0, 5))) for k in range(len(image_ids))], unmatched


def person_areas(boxes_xywh: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """The person areas OKS-NMS uses (official): prod(scale * 200) of each box's test-time (center, scale)."""
    _, scales = box_to_center_scale(torch.from_numpy(np.asarray(boxes_xywh, dtype=np.float64)), aspect_ratio)
    return (scales * PIXEL_STD).prod(-1).numpy()


@dataclass
class EvalPersons:
    """Predicted persons of an evaluation, gathered image by image (and across processes with :meth:`merge`)."""

    image_ids: List[int] = field(default_factory=list)
    keypoints: List[np.ndarray] = field(default_factory=list)  # [K, 3] each
    box_scores: List[float] = field(default_factory=list)
    areas: List[float] = field(default_factory=list)

    def add(self, image_id: int, persons: Sequence[Dict[str, Any]], boxes_xywh: np.ndarray,
            aspect_ratio: float) -> None:
        """One image's predicted persons (box order) and the [N, 5] xywh + score boxes they were predicted in."""
        areas = person_areas(boxes_xywh[:, :4], aspect_ratio) if len(boxes_xywh) else []
        for person, box, area in zip(persons, boxes_xywh, areas):
            self.image_ids.append(int(image_id))
            self.keypoints.append(np.asarray(person["keypoints"], np.float32))
            self.box_scores.append(float(box[4]))
            self.areas.append(float(area))

    def __len__(self) -> int:
        return len(self.image_ids)

    @classmethod
    def merge(cls, parts: Iterable["EvalPersons"]) -> "EvalPersons":
        """One set from several processes' shares, ordered by image id (the order does not depend on how the
        images were shared)."""
        rows = sorted((r for p in parts for r in zip(p.image_ids, p.keypoints, p.box_scores, p.areas)),
                      key=lambda r: r[0])
        return cls(*(list(col) for col in zip(*rows))) if rows else cls()


def coco_subset(coco, image_ids: Sequence[int]):
    """A COCO object restricted to ``image_ids`` (COCOeval scores every image of its ground truth)."""
    from vitpose_fast.data.coco import pycocotools

    COCO, _ = pycocotools()

    keep = set(image_ids)
    d = coco.dataset
    sub = COCO()
    sub.dataset = {**d, "images": [im for im in d["images"] if im["id"] in keep],
                   "annotations": [a for a in d["annotations"] if a["image_id"] in keep]}
    with contextlib.redirect_stdout(io.StringIO()):
        sub.createIndex()
    return sub


def score_persons(persons: EvalPersons, coco, sigmas: Optional[Sequence[float]] = None
                  ) -> Tuple[List[dict], Dict[str, float]]:
    """The official post-processing and COCOeval of predicted persons: (kept COCO results, stats)."""
    if not len(persons):
        raise ValueError("no persons to evaluate (no boxes in the annotation or detection file, or no readable "
                         "image)")
    results = rescore_and_nms(persons.image_ids, np.stack(persons.keypoints), np.array(persons.box_scores),
                              np.array(persons.areas), sigmas=sigmas)
    return results, evaluate_coco(results, coco, sigmas=sigmas)
