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
from typing import Dict, List, Optional, Sequence

import numpy as np

from vitpose_fast.data.datasets import COCO as _COCO_INFO

__all__ = ["STATS_NAMES", "rescore", "oks_iou", "oks_nms", "rescore_and_nms", "results_to_coco",
           "evaluate_coco", "format_ap_table"]

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
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

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
