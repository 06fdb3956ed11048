"""Keypoint smoothing over time: the One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) per track and keypoint.

A low-pass filter whose cutoff frequency rises with speed: a still keypoint is filtered hard (its jitter goes),
a moving one lightly (little lag). Per coordinate, with ``dt`` the time since the previous frame::

    alpha(fc)  = 1 / (1 + 1 / (2 pi fc dt))
    dx         = lerp(dx_prev, (x - x_prev) / dt, alpha(d_cutoff))     # smoothed speed
    fc         = min_cutoff + beta * |dx| / h                           # |dx|: the keypoint's 2-D speed
    x_hat      = lerp(x_hat_prev, x, alpha(fc))

Parameters (:class:`OneEuroConfig`):

- ``min_cutoff`` (Hz, default 1.0): the cutoff of a still keypoint. Lower: less jitter, more lag when motion
  starts.
- ``beta`` (default 10, per body height per second): how fast the cutoff rises with speed. Speed is divided by
  the person's box height ``h`` so that one setting fits near and far people: a keypoint moving one body height
  per second has a cutoff of ``min_cutoff + beta`` = 11 Hz. Higher: less lag, more jitter (noise is speed too).
- ``d_cutoff`` (Hz, default 1.0): the cutoff of the speed estimate itself.

Time comes from the frames' timestamps (``frame / fps`` for files), so the filter behaves the same at any frame
rate; frames where a track was not seen simply make a longer ``dt``. Keypoint scores are not filtered. A track's
filter is created at its first frame (output = input) and dropped with the track.

Defaults chosen on the synthetic tracking video (``benchmarks/bench_tracking.py``, 25 fps, Gaussian keypoint
noise of 1.5 % of the box height, about 2.0 px RMS): the still person's RMS error drops from 2.0 to 1.0 px, the
walkers' smoothed keypoints lag theirs by 0.6 frame (26 ms) and their RMS error drops from 2.4 to 2.0 px.
(``beta=1``: 0.7 px still, but a 1.9-frame lag and 3.6 px on the walkers; ``beta=40``: 1.4 px still, 0.2 frame.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import numpy as np

__all__ = ["OneEuroConfig", "OneEuroFilter", "KeypointSmoother", "SMOOTHERS"]

SMOOTHERS = ("none", "one_euro")


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro parameters (see the module docstring)."""

    min_cutoff: float = 1.0
    beta: float = 10.0
    d_cutoff: float = 1.0

    def __post_init__(self):
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(f"One-Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got {self}")


def _alpha(cutoff: np.ndarray, dt: float) -> np.ndarray:
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


class OneEuroFilter:
    """One-Euro filter of points [K, 2] (K keypoints filtered independently, their 2-D speed shared by x and y)."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.config = config
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    def __call__(self, points: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filter ``points`` [K, 2] observed at time ``t`` (seconds); ``scale``: the length speed is divided by
        (the person's box height)."""
        x = np.asarray(points, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if dt <= 0:  # same or earlier timestamp (a stream's clock): nothing to filter against
            return self._x.copy()
        cfg = self.config
        dx = self._dx + _alpha(np.asarray(cfg.d_cutoff), dt) * ((x - self._x) / dt - self._dx)
        speed = np.linalg.norm(dx, axis=-1, keepdims=True) / max(scale, 1e-6)
        a = _alpha(cfg.min_cutoff + cfg.beta * speed, dt)
        self._x = self._x + a * (x - self._x)
        self._dx, self._t = dx, float(t)
        return self._x.copy()


class KeypointSmoother:
    """One :class:`OneEuroFilter` per track id, over the keypoints' x and y."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.config = config
        self._filters: Dict[int, OneEuroFilter] = {}

    def __call__(self, track_id: int, keypoints: np.ndarray, t: float, box: Optional[np.ndarray] = None) -> np.ndarray:
        """Smoothed copy of ``keypoints`` [K, 3] (x, y, score) of track ``track_id`` at time ``t``; ``box``
        (xyxy) gives the height speed is measured in (default: the keypoints' own extent)."""
        kp = np.asarray(keypoints, dtype=np.float64)
        if box is not None:
            scale = float(box[3] - box[1])
        else:
            scale = float(np.ptp(kp[:, 1])) if len(kp) else 1.0
        f = self._filters.setdefault(int(track_id), OneEuroFilter(self.config))
        out = kp.copy()
        out[:, :2] = f(kp[:, :2], t, max(scale, 1.0))
        return out.astype(np.asarray(keypoints).dtype, copy=False)

    def keep_only(self, track_ids: Iterable[int]) -> None:
        """Forget the filters of tracks not in ``track_ids`` (the tracker dropped them)."""
        live = set(int(i) for i in track_ids)
        self._filters = {k: v for k, v in self._filters.items() if k in live}
