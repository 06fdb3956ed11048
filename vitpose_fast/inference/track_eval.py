"""Tracking and smoothing evaluation against ground truth (the synthetic video of
:mod:`vitpose_fast.data.synthetic_video`, or any MOTChallenge-format ground truth).

Tracking metrics come from the standard libraries, on box IoU (match threshold 0.5, as MOTChallenge):

- ``motmetrics`` (py-motmetrics; ``pip install motmetrics``, in the ``video`` and ``dev`` extras): IDF1, MOTA,
  MOTP, id switches, fragmentations, mostly tracked. Its IoU helper calls ``np.asfarray``, which NumPy 2 removed,
  so the IoU distance matrices are ours (:func:`vitpose_fast.inference.tracking.box_iou`).
- ``trackeval`` (the official HOTA code; optional): HOTA, DetA, AssA, and its own IDF1/MOTA/IDSW. It is not in
  the extras: its PyPI package requires the GUI ``opencv-python``, which replaces ``opencv-python-headless``'s
  ``cv2`` and needs the system's libGL. Its metrics need only NumPy and SciPy, so install it with
  ``pip install --no-deps trackeval``; without it HOTA is reported as absent.

Smoothing: on the still person, jitter = RMS distance of the keypoints to their (fixed) true positions; on the
moving persons, lag = the time shift (frames, fractional) that best aligns the smoothed keypoints with the true
ones, and the RMS error of raw and smoothed keypoints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from vitpose_fast.inference.tracking import box_iou

__all__ = ["read_mot", "evaluate_tracking", "trackeval_available", "keypoint_jitter", "keypoint_lag"]

Frames = Mapping[int, Mapping[int, np.ndarray]]  # {frame: {id: box xyxy}}


def read_mot(path: Union[str, os.PathLike]) -> Dict[int, Dict[int, np.ndarray]]:
    """A MOTChallenge text file -> ``{frame (0-based): {id: box xyxy}}`` (rows with conf 0, MOT's "ignore",
    are skipped)."""
    out: Dict[int, Dict[int, np.ndarray]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        v = line.split(",")
        try:
            frame, pid, x, y, w, h = int(float(v[0])), int(float(v[1])), *map(float, v[2:6])
            conf = float(v[6]) if len(v) > 6 else 1.0
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{n}: expected 'frame, id, left, top, width, height, ...', got {line!r}") from None
        if conf == 0:
            continue
        out.setdefault(frame - 1, {})[pid] = np.array([x, y, x + w, y + h])
    return out


def trackeval_available() -> bool:
    try:
        import trackeval.metrics  # noqa: F401
    except ImportError:
        return False
    return True


def _sequence(gt: Frames, results: Frames, num_frames: int):
    """Per frame: gt ids, result ids, IoU [gt, res]."""
    for f in range(num_frames):
        g, r = gt.get(f, {}), results.get(f, {})
        gid, rid = sorted(g), sorted(r)
        iou = box_iou(np.array([g[i] for i in gid]).reshape(-1, 4), np.array([r[i] for i in rid]).reshape(-1, 4))
        yield gid, rid, iou


def _motmetrics(gt: Frames, results: Frames, num_frames: int, iou_thr: float) -> Dict[str, float]:
    try:
        import motmetrics as mm
    except ImportError:
        raise ImportError("tracking metrics need motmetrics (pip install motmetrics, or pip install "
                          "'vitpose-fast[video]')") from None
    acc = mm.MOTAccumulator(auto_id=True)
    for gid, rid, iou in _sequence(gt, results, num_frames):
        dist = np.where(iou >= iou_thr, 1.0 - iou, np.nan)
        acc.update(gid, rid, dist)
    names = ["idf1", "idp", "idr", "mota", "motp", "num_switches", "num_fragmentations", "mostly_tracked",
             "num_unique_objects", "num_false_positives", "num_misses"]
    row = mm.metrics.create().compute(acc, metrics=names, name="seq").iloc[0]
    keys = ["IDF1", "IDP", "IDR", "MOTA", "MOTP", "IDSW", "Frag", "MT", "GT_IDs", "FP", "FN"]
    out = {k: float(row[n]) for k, n in zip(keys, names)}
    out["MOTP"] = 1.0 - out["MOTP"]  # motmetrics reports the mean distance (1 - IoU); MOTChallenge the IoU
    return out


def _trackeval(gt: Frames, results: Frames, num_frames: int, iou_thr: float) -> Dict[str, float]:
    from trackeval.metrics import CLEAR, HOTA, Identity

    gt_ids = sorted({i for f in gt.values() for i in f})
    res_ids = sorted({i for f in results.values() for i in f})
    gmap = {v: k for k, v in enumerate(gt_ids)}
    rmap = {v: k for k, v in enumerate(res_ids)}
    data = {"num_timesteps": num_frames, "num_gt_ids": len(gt_ids), "num_tracker_ids": len(res_ids),
            "gt_ids": [], "tracker_ids": [], "similarity_scores": [], "num_gt_dets": 0, "num_tracker_dets": 0}
    for gid, rid, iou in _sequence(gt, results, num_frames):
        data["gt_ids"].append(np.array([gmap[i] for i in gid], dtype=int))
        data["tracker_ids"].append(np.array([rmap[i] for i in rid], dtype=int))
        data["similarity_scores"].append(iou)
        data["num_gt_dets"] += len(gid)
        data["num_tracker_dets"] += len(rid)
    config = {"THRESHOLD": iou_thr, "PRINT_CONFIG": False}
    hota = HOTA().eval_sequence(data)
    clear = CLEAR(config).eval_sequence(data)
    ident = Identity(config).eval_sequence(data)
    return {"HOTA": float(np.mean(hota["HOTA"])), "DetA": float(np.mean(hota["DetA"])),
            "AssA": float(np.mean(hota["AssA"])), "trackeval_IDF1": float(ident["IDF1"]),
            "trackeval_MOTA": float(clear["MOTA"]), "trackeval_IDSW": float(clear["IDSW"])}


def evaluate_tracking(gt: Frames, results: Frames, num_frames: Optional[int] = None,
                      iou_thr: float = 0.5) -> Dict[str, float]:
    """Tracking metrics of ``results`` against ``gt`` (both ``{frame: {id: box xyxy}}``, frames 0-based):
    motmetrics' IDF1, IDP, IDR, MOTA, MOTP (IoU), IDSW, Frag, MT, GT_IDs, FP, FN, and with trackeval installed
    HOTA, DetA, AssA plus trackeval's IDF1/MOTA/IDSW (``trackeval_*``) as a cross-check."""
    n = num_frames if num_frames is not None else 1 + max(list(gt) + list(results) + [-1])
    out = _motmetrics(gt, results, n, iou_thr)
    if trackeval_available():
        out.update(_trackeval(gt, results, n, iou_thr))
    return out


def keypoint_jitter(keypoints: np.ndarray, truth: np.ndarray) -> float:
    """RMS distance (pixels) of keypoint tracks [T, K, 2+] to the true ones (same shape, or [K, 2+] for a still
    person)."""
    k = np.asarray(keypoints, dtype=np.float64)[..., :2]
    t = np.broadcast_to(np.asarray(truth, dtype=np.float64)[..., :2], k.shape)
    return float(np.sqrt(((k - t) ** 2).sum(-1).mean()))


def keypoint_lag(keypoints: np.ndarray, truth: np.ndarray, max_lag: int = 10) -> float:
    """The delay (frames, fractional: a parabola through the best integer shift and its neighbours) that best
    aligns keypoint tracks [T, K, 2+] with the true ones [T, K, 2+]: argmin over s of the RMS distance between
    ``keypoints[t]`` and ``truth[t - s]``."""
    k = np.asarray(keypoints, dtype=np.float64)[..., :2]
    t = np.asarray(truth, dtype=np.float64)[..., :2]
    if len(k) <= 2 * max_lag + 2:
        raise ValueError(f"need more than {2 * max_lag + 2} frames to measure a lag of up to {max_lag} frames")
    lags = np.arange(-max_lag, max_lag + 1)
    err = np.array([np.sqrt(((k[max_lag + s:len(k) - max_lag + s] - t[max_lag:len(t) - max_lag]) ** 2)
                            .sum(-1).mean()) for s in lags])
    # err[s] compares keypoints shifted by +s: a filter delayed by d frames matches best at s = +d.
    i = int(np.argmin(err))
    if 0 < i < len(lags) - 1:
        a, b, c = err[i - 1], err[i], err[i + 1]
        denom = a - 2 * b + c
        return float(lags[i] + (0.5 * (a - c) / denom if denom > 0 else 0.0))
    return float(lags[i])
