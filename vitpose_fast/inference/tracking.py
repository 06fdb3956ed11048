"""Pose tracking: a stable integer ``track_id`` per person through a video.

Per frame, after the pose model: every track's box is predicted by a constant-velocity Kalman filter (state
centre, width, height and their velocities; noise proportional to the box height, as SORT and ByteTrack), then
tracks and the frame's persons are matched by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
on a similarity that mixes

- box IoU between the track's predicted box and the person's box, and
- OKS between the track's last keypoints, moved by the predicted displacement of its box, and the person's
  keypoints (the dataset's OKS sigmas, the person's box area as the scale; only keypoints confident in both).

Box IoU alone cannot tell apart two people whose boxes overlap as they cross; their keypoints still differ (and
move with each person), so OKS keeps them apart. A pair is matched only when its similarity reaches
``match_thr``. An unmatched person starts a new track; an unmatched track coasts on its Kalman prediction and is
dropped after ``max_age`` frames without a match.

Ids: every person of every frame gets an id; two persons of one frame never share one; ids count up from 1 and
are never reused. A person hidden or undetected for up to ``max_age`` frames (default 30: about 1 s at 30 fps)
keeps their id if they reappear where their motion predicts. A person who leaves the frame and comes back later
(or far from where they left) gets a NEW id: there is no appearance re-identification.

Why our own ~150 lines and not a tracking library. ``supervision``'s ``ByteTrack`` is well kept, but its matching
is box IoU only, with no hook for a keypoint cost (what separates crossing people), and it pulls PyAV, requests,
PyYAML, matplotlib and more for a tracker. BoxMOT is AGPL-3.0 (this project is Apache-2.0) and brings ReID
networks and their downloads. The parts worth a library are the assignment (SciPy's Hungarian solver) and the
evaluation (:mod:`vitpose_fast.inference.track_eval`: ``motmetrics``/``trackeval``); the Kalman filter is
ByteTrack's model in a dozen lines of NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["TrackerConfig", "PoseTracker", "box_iou", "keypoint_oks", "boxes_from_keypoints"]


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of :class:`PoseTracker`.

    iou_weight: similarity = ``iou_weight * IoU + (1 - iou_weight) * OKS`` (IoU alone when either side has no
        confident keypoints). match_thr: the least similarity of a match. max_age: frames a track survives
        without a match. kpt_thr: keypoint score from which a keypoint counts for OKS and for boxes made from
        keypoints (``detect_every``). box_margin: boxes made from keypoints extend the keypoints' extent by this
        fraction of their width/height on every side (the head, hands and feet reach past their keypoints).
    """

    iou_weight: float = 0.5
    match_thr: float = 0.2
    max_age: int = 30
    kpt_thr: float = 0.3
    box_margin: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.iou_weight <= 1.0:
            raise ValueError(f"iou_weight must be in [0, 1], got {self.iou_weight}")
        if not 0.0 < self.match_thr <= 1.0:
            raise ValueError(f"match_thr must be in (0, 1], got {self.match_thr}")
        if self.max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {self.max_age}")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a`` [N, 4] and ``b`` [M, 4] -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def keypoint_oks(a: np.ndarray, b: np.ndarray, areas: np.ndarray, sigmas: np.ndarray, kpt_thr: float) -> np.ndarray:
    """OKS of poses ``a`` [N, K, 3] against ``b`` [M, K, 3] with ``b``'s scales ``areas`` [M] -> [N, M].

    Averaged over keypoints whose score reaches ``kpt_thr`` in both poses; NaN where there is none."""
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)
    e = d2 / (2.0 * var * np.maximum(np.asarray(areas, dtype=np.float64), 1.0)[None, :, None])
    ok = (a[:, None, :, 2] >= kpt_thr) & (b[None, :, :, 2] >= kpt_thr)
    count = ok.sum(-1)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, np.where(ok, np.exp(-e), 0.0).sum(-1) / count, np.nan)


def boxes_from_keypoints(keypoints: np.ndarray, kpt_thr: float = 0.3, margin: float = 0.1) -> np.ndarray:
    """xyxy boxes [N, 4] around each pose's keypoints with score >= ``kpt_thr`` ([N, K, 3]), extended by
    ``margin`` of their width/height on every side; NaN rows for poses with fewer than 2 such keypoints."""
    kp = np.asarray(keypoints, dtype=np.float64)
    out = np.full((len(kp), 4), np.nan)
    for i, k in enumerate(kp):
        ok = k[:, 2] >= kpt_thr
        if ok.sum() < 2:
            continue
        lo, hi = k[ok, :2].min(0), k[ok, :2].max(0)
        pad = (hi - lo) * margin + 1.0
        out[i] = np.concatenate([lo - pad, hi + pad])
    return out


class _KalmanBox:
    """Constant-velocity Kalman filter of a box: state (cx, cy, w, h) and their velocities per frame.

    Noise as ByteTrack's ``KalmanFilter`` (standard deviations 1/20 of the height for positions, 1/160 for
    velocities), with width and height filtered directly instead of aspect ratio and height."""

    _POS, _VEL = 1.0 / 20, 1.0 / 160

    def __init__(self, box: np.ndarray):
        cx, cy, w, h = _xyxy_to_cxcywh(box)
        self.x = np.array([cx, cy, w, h, 0.0, 0.0, 0.0, 0.0])
        s = np.array([2 * self._POS * h] * 4 + [10 * self._VEL * h] * 4)
        self.P = np.diag(s ** 2)
        self._F = np.eye(8)
        self._F[:4, 4:] = np.eye(4)

    def predict(self) -> None:
        h = max(self.x[3], 1.0)
        q = np.array([self._POS * h] * 4 + [self._VEL * h] * 4) ** 2
        self.x = self._F @ self.x
        self.P = self._F @ self.P @ self._F.T + np.diag(q)

    def update(self, box: np.ndarray) -> None:
        z = np.array(_xyxy_to_cxcywh(box))
        r = np.full(4, (self._POS * max(self.x[3], 1.0)) ** 2)
        S = self.P[:4, :4] + np.diag(r)
        K = np.linalg.solve(S, self.P[:4, :]).T  # P H^T S^-1 (S symmetric)
        self.x = self.x + K @ (z - self.x[:4])
        self.P = self.P - K @ self.P[:4, :]

    @property
    def box(self) -> np.ndarray:
        cx, cy, w, h = self.x[:4]
        w, h = max(w, 1.0), max(h, 1.0)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _xyxy_to_cxcywh(box: np.ndarray):
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1.0), max(y2 - y1, 1.0)


class _Track:
    def __init__(self, track_id: int, box: np.ndarray, keypoints: Optional[np.ndarray], score: float):
        self.id = track_id
        self.kf = _KalmanBox(box)
        self.keypoints = keypoints  # last matched keypoints [K, 3]
        self.anchor = np.array(box[:4], dtype=np.float64)  # the box the keypoints were seen in
        self.misses = 0
        self.score = score

    def moved_keypoints(self) -> Optional[np.ndarray]:
        """The last keypoints shifted by how far the predicted box centre has moved since they were seen."""
        if self.keypoints is None:
            return None
        shift = (self.kf.box[:2] + self.kf.box[2:]) / 2 - (self.anchor[:2] + self.anchor[2:]) / 2
        out = self.keypoints.copy()
        out[:, :2] += shift
        return out


class PoseTracker:
    """Assigns track ids to each frame's persons (see the module docstring). ``sigmas``: the keypoints' OKS
    sigmas (:class:`~vitpose_fast.data.datasets.DatasetInfo.sigmas`); None (or a keypoint count they do not fit)
    falls back to 0.05 for every keypoint."""

    def __init__(self, config: TrackerConfig = TrackerConfig(), sigmas: Optional[Sequence[float]] = None):
        self.config = config
        self.sigmas = None if sigmas is None else np.asarray(sigmas, dtype=np.float64)
        self.tracks: List[_Track] = []
        self._next_id = 1

    def _sigmas(self, k: int) -> np.ndarray:
        return self.sigmas if self.sigmas is not None and len(self.sigmas) == k else np.full(k, 0.05)

    def similarity(self, boxes: np.ndarray, keypoints: Optional[np.ndarray]) -> np.ndarray:
        """[tracks, persons] similarity of the (already predicted) tracks and a frame's persons."""
        cfg = self.config
        pred = np.array([t.kf.box for t in self.tracks]).reshape(-1, 4)
        sim = box_iou(pred, boxes)
        moved = [t.moved_keypoints() for t in self.tracks]
        if keypoints is None or cfg.iou_weight == 1.0 or not len(boxes):
            return sim
        areas = np.clip(boxes[:, 2] - boxes[:, 0], 1, None) * np.clip(boxes[:, 3] - boxes[:, 1], 1, None)
        sig = self._sigmas(keypoints.shape[1])
        for i, kp in enumerate(moved):
            if kp is None or kp.shape != keypoints.shape[1:]:
                continue
            oks = keypoint_oks(kp[None], keypoints, areas, sig, cfg.kpt_thr)[0]
            mixed = cfg.iou_weight * sim[i] + (1 - cfg.iou_weight) * oks
            sim[i] = np.where(np.isnan(oks), sim[i], mixed)
        return sim

    def update(self, boxes: np.ndarray, keypoints: Optional[np.ndarray] = None) -> np.ndarray:
        """One frame: ``boxes`` [N, 4] xyxy or [N, 5] with scores, ``keypoints`` [N, K, 3] or None -> track ids
        [N] int64 (in the persons' order, whatever that order is)."""
        try:
            from scipy.optimize import linear_sum_assignment
        except ImportError:
            raise ImportError("tracking needs SciPy (pip install scipy, or pip install 'vitpose-fast[video]')") from None

        boxes = np.asarray(boxes, dtype=np.float64)
        if not boxes.size:
            boxes = np.zeros((0, 4))
        if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
            raise ValueError(f"boxes must be [N, 4] or [N, 5] (with scores), got shape {boxes.shape}")
        scores = boxes[:, 4] if boxes.shape[1] == 5 else np.ones(len(boxes))
        boxes = boxes[:, :4]
        if keypoints is not None:
            keypoints = np.asarray(keypoints, dtype=np.float64)
            if keypoints.ndim != 3 or len(keypoints) != len(boxes):
                raise ValueError(f"keypoints must be [N, K, 3] for the {len(boxes)} boxes, got {keypoints.shape}")
        for t in self.tracks:
            if t.misses:  # a lost track keeps moving but stops growing or shrinking (as ByteTrack)
                t.kf.x[6:] = 0.0
            t.kf.predict()
        ids = np.zeros(len(boxes), dtype=np.int64)
        matched_t, matched_p = [], []
        if self.tracks and len(boxes):
            sim = self.similarity(boxes, keypoints)
            rows, cols = linear_sum_assignment(-sim)
            keep = sim[rows, cols] >= self.config.match_thr
            matched_t, matched_p = rows[keep].tolist(), cols[keep].tolist()
        for ti, pi in zip(matched_t, matched_p):
            t = self.tracks[ti]
            t.kf.update(boxes[pi])
            t.keypoints = None if keypoints is None else keypoints[pi]
            t.anchor = boxes[pi].copy()
            t.misses = 0
            t.score = float(scores[pi])
            ids[pi] = t.id
        for ti in set(range(len(self.tracks))) - set(matched_t):
            self.tracks[ti].misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.config.max_age]
        for pi in sorted(set(range(len(boxes))) - set(matched_p)):
            t = _Track(self._next_id, boxes[pi], None if keypoints is None else keypoints[pi], float(scores[pi]))
            self._next_id += 1
            self.tracks.append(t)
            ids[pi] = t.id
        return ids

    def propagated_boxes(self) -> np.ndarray:
        """Boxes for the next frame without a detector: for each track matched in the latest frame, the box
        around its last confident keypoints, moved by its Kalman velocity -> [M, 5] xyxy + the score of its last
        box (tracks with too few confident keypoints move their last box instead)."""
        live = [t for t in self.tracks if t.misses == 0]
        out = np.zeros((len(live), 5))
        for i, t in enumerate(live):
            box = None
            if t.keypoints is not None:
                box = boxes_from_keypoints(t.keypoints[None], self.config.kpt_thr, self.config.box_margin)[0]
            if box is None or np.isnan(box).any():
                box = t.anchor
            v = t.kf.x[4:6]
            out[i, :4] = box + np.concatenate([v, v])
            out[i, 4] = t.score
        return out
