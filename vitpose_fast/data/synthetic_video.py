"""A synthetic video with known identities, boxes and keypoints: the ground truth of the tracking benchmark.

The stick figures of :mod:`vitpose_fast.data.synthetic` (same skeleton, drawing and background) move through a
scripted scene; each walker's limbs swing between two random poses. By default 250 frames of 320x240 at 25 fps:

- id 1 walks left to right and id 2 right to left on nearly the same line: they cross in the middle of the clip,
  id 1 in front (``crossing_frame``), and id 2 is not detected for 3 frames there (``gap_frames``);
- id 3 stands still (jitter of the smoothing is measured on it), with a 2-frame detection gap;
- id 4 walks out through the left edge, stays away for longer than the tracker keeps lost tracks, and comes
  back through the same edge near the end (``reentry_frame``).

Files written by :func:`make_synthetic_video` under ``OUT``::

    OUT/video.mp4          the frames (mp4v; ``.avi`` MJPEG when asked)
    OUT/gt/gt.txt          MOTChallenge ground truth: frame (1-based), id, left, top, width, height, 1, 1, visibility
    OUT/seqinfo.ini        MOTChallenge sequence info (name, frame rate, length, size)
    OUT/boxes.json         the "detections": ground-truth boxes jittered by ~2 %, score 0.9, minus the gaps
                           ({frame (0-based): [[x1, y1, x2, y2, score], ...]}: ``load_frame_boxes``' format)
    OUT/keypoints.json     {frame: {id: [[x, y, v], ...]}}, COCO's 17 keypoints (v: 2 inside the frame, 0 outside)

A person is in the ground truth on frames where at least half of their keypoints are inside the image; their box
is the figure's extent (with the line width) clipped to the image. Deterministic for a seed. Run as
``python -m vitpose_fast.data.synthetic_video --out DIR [--frames N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import configparser
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from vitpose_fast.data.synthetic import _background, _draw_person, _pose

__all__ = ["VideoGroundTruth", "SyntheticVideo", "synthetic_video_ground_truth", "make_synthetic_video",
           "write_mot"]


@dataclass
class VideoGroundTruth:
    """Per frame ``{id: (box xyxy [4], keypoints [17, 3])}``, the detections (``{frame: [N, 5]}``), and the
    scene's landmarks."""

    frames: List[Dict[int, Tuple[np.ndarray, np.ndarray]]]
    detections: Dict[int, np.ndarray]
    fps: float
    size: Tuple[int, int]
    still_id: int = 3
    crossing_frame: int = 0
    gap_frames: Tuple[int, ...] = ()
    reentry_frame: int = 0
    line_widths: Dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SyntheticVideo:
    root: Path
    video: Path
    gt_file: Path
    boxes_file: Path
    keypoints_file: Path
    truth: VideoGroundTruth


def _walker_pose(a: np.ndarray, b: np.ndarray, phase: float) -> np.ndarray:
    return a + (b - a) * (0.5 - 0.5 * math.cos(phase))


def synthetic_video_ground_truth(num_frames: int = 250, size: Tuple[int, int] = (320, 240), fps: float = 25.0,
                                 seed: int = 0, box_jitter: float = 0.02) -> VideoGroundTruth:
    """The scripted scene (no rendering): see the module docstring."""
    width, height = size
    if num_frames < 40:
        raise ValueError(f"the scripted scene needs at least 40 frames, got {num_frames}")
    rng = np.random.default_rng(seed)
    n = num_frames
    cross = n // 2
    leave_end, back = int(n * 0.24), int(n * 0.9)
    # (id, person height px, first pose, second pose, path: frame -> hip position or None, gait period frames)
    poses = {i: (_pose(rng), _pose(rng)) for i in range(1, 5)}

    def lerp(f, f0, f1, p0, p1):
        s = (f - f0) / max(f1 - f0, 1)
        return np.array(p0) + (np.array(p1) - np.array(p0)) * s

    paths = {
        1: lambda f: lerp(f, 0, n - 1, (0.12 * width, 0.72 * height), (0.88 * width, 0.72 * height)),
        2: lambda f: lerp(f, 0, n - 1, (0.88 * width, 0.70 * height), (0.12 * width, 0.70 * height)),
        3: lambda f: np.array((0.84 * width, 0.25 * height)),
        4: lambda f: (lerp(f, 0, leave_end, (0.50 * width, 0.25 * height), (-0.15 * width, 0.25 * height))
                      if f <= leave_end else
                      lerp(f, back, n - 1, (-0.12 * width, 0.27 * height), (0.22 * width, 0.27 * height))
                      if f >= back else None),
    }
    heights = {1: 0.46 * height, 2: 0.44 * height, 3: 0.36 * height, 4: 0.36 * height}
    periods = {1: 22.0, 2: 26.0, 3: None, 4: 18.0}
    draw_order = (3, 4, 2, 1)  # back to front: id 1 passes in front of id 2
    frames: List[Dict[int, Tuple[np.ndarray, np.ndarray]]] = []
    lines = {pid: max(2.0, h * 0.035) for pid, h in heights.items()}
    for f in range(n):
        people = {}
        for pid in draw_order:
            hip = paths[pid](f)
            if hip is None:
                continue
            a, b = poses[pid]
            pose = a if periods[pid] is None else _walker_pose(a, b, 2 * math.pi * f / periods[pid])
            joints = pose * heights[pid] + hip
            inside = ((joints[:, 0] >= 0) & (joints[:, 0] <= width - 1) & (joints[:, 1] >= 0)
                      & (joints[:, 1] <= height - 1))
            if inside.mean() < 0.5:
                continue
            pad = lines[pid] * 1.2 + float(np.linalg.norm(joints[3] - joints[4])) * 0.25
            lo = np.clip(joints.min(0) - pad, 0, [width - 1, height - 1])
            hi = np.clip(joints.max(0) + pad, 0, [width - 1, height - 1])
            kps = np.concatenate([joints, np.where(inside, 2.0, 0.0)[:, None]], axis=1)
            people[pid] = (np.concatenate([lo, hi]), kps)
        frames.append(people)
    gaps = {2: tuple(range(cross - 1, cross + 2)), 3: (n // 4, n // 4 + 1)}
    dets = {}
    for f, people in enumerate(frames):
        rows = []
        for pid, (box, _) in people.items():
            if f in gaps.get(pid, ()):
                continue
            w, h = box[2] - box[0], box[3] - box[1]
            d = rng.normal(0, box_jitter, 4) * np.array([w, h, w, h])
            rows.append(np.concatenate([box + d, [0.9]]))
        dets[f] = np.array(rows).reshape(-1, 5)
    return VideoGroundTruth(frames, dets, fps, (width, height), 3, cross, gaps[2], back, lines)


def _render_frame(background: Image.Image, people, truth: VideoGroundTruth) -> Image.Image:
    img = background.copy()
    draw = ImageDraw.Draw(img)
    for pid, (_, kps) in people.items():  # dicts keep the scripted back-to-front order
        _draw_person(draw, kps[:, :2], truth.line_widths[pid])
    return img


def write_mot(path: Union[str, os.PathLike], rows: Dict[int, Dict[int, np.ndarray]],
              visibility: Optional[Dict[int, Dict[int, float]]] = None) -> None:
    """MOTChallenge text file from ``{frame (0-based): {id: box xyxy}}``: ``frame+1, id, left, top, width,
    height, conf, class, visibility`` (conf 1 and class 1 for ground truth, as MOT17's pedestrians)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for frame in sorted(rows):
            for pid, box in sorted(rows[frame].items()):
                x1, y1, x2, y2 = (float(v) for v in box[:4])
                vis = 1.0 if visibility is None else visibility[frame][pid]
                f.write(f"{frame + 1},{pid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,1,{vis:.3f}\n")


def make_synthetic_video(out_dir: Union[str, os.PathLike], num_frames: int = 250,
                         size: Tuple[int, int] = (320, 240), fps: float = 25.0, seed: int = 0,
                         video_name: str = "video.mp4") -> SyntheticVideo:
    """Render the scene of :func:`synthetic_video_ground_truth` and write it with its ground truth (module
    docstring); needs OpenCV for the video file."""
    try:
        import cv2
    except ImportError:
        raise ImportError("writing the synthetic video needs OpenCV (pip install opencv-python-headless)") from None

    truth = synthetic_video_ground_truth(num_frames, size, fps, seed)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    background = _background(np.random.default_rng([seed, 1]), *size)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if video_name.lower().endswith(".avi") else "mp4v"))
    writer = cv2.VideoWriter(str(root / video_name), fourcc, float(fps), tuple(size))
    if not writer.isOpened():
        raise ValueError(f"cannot write {root / video_name} with OpenCV")
    try:
        for people in truth.frames:
            writer.write(cv2.cvtColor(np.asarray(_render_frame(background, people, truth)), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    gt_file = root / "gt" / "gt.txt"
    write_mot(gt_file, {f: {pid: b for pid, (b, _) in p.items()} for f, p in enumerate(truth.frames)},
              {f: {pid: float((k[:, 2] > 0).mean()) for pid, (_, k) in p.items()} for f, p in enumerate(truth.frames)})
    info = configparser.ConfigParser()
    info.optionxform = str  # MOTChallenge's keys are camel case
    info["Sequence"] = {"name": root.name or "synthetic", "imDir": "img1", "frameRate": str(int(fps)),
                        "seqLength": str(num_frames), "imWidth": str(size[0]), "imHeight": str(size[1]),
                        "imExt": ".jpg"}
    with open(root / "seqinfo.ini", "w") as f:
        info.write(f, space_around_delimiters=False)
    boxes_file = root / "boxes.json"
    boxes_file.write_text(json.dumps({str(f): np.round(d, 2).tolist() for f, d in truth.detections.items()}))
    kp_file = root / "keypoints.json"
    kp_file.write_text(json.dumps({str(f): {str(pid): np.round(k, 2).tolist() for pid, (_, k) in p.items()}
                                   for f, p in enumerate(truth.frames)}))
    return SyntheticVideo(root, root / video_name, gt_file, boxes_file, kp_file, truth)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic tracking video and its ground truth.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    video = make_synthetic_video(args.out, args.frames, tuple(args.size), args.fps, args.seed)
    print(f"video: {video.video}\nground truth: {video.gt_file}\nboxes: {video.boxes_file}")


if __name__ == "__main__":
    main()
