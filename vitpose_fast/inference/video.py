"""Video in, keypoints (JSON lines) and an annotated video out: ``vitpose-fast predict clip.mp4 --out poses.jsonl``.

Frames are decoded by OpenCV (``cv2.VideoCapture``). We chose OpenCV over PyAV because its PyPI wheels
(``opencv-python-headless``, already a dev dependency) bundle FFmpeg, so the common containers and codecs
(MP4/H.264, H.265, VP9, AV1, MJPEG, ...) decode with no system libraries, and the same ``VideoCapture`` opens
webcams (``0``, ``1``: V4L2 on Linux, DirectShow/MSMF, AVFoundation) and network streams (``rtsp://``,
``http(s)://``, ``rtmp://``) through FFmpeg; PyAV would be a new dependency without webcam capture. The
annotated video is written with ``cv2.VideoWriter`` as MPEG-4 Part 2 (``mp4v``) in ``.mp4``/``.mov``/``.mkv``
and MJPEG in ``.avi``: the OpenCV wheels have no H.264 encoder, and mp4v plays in common players (not in all
browsers; re-encode with ffmpeg for the web).

Frames stream through :meth:`vitpose_fast.Model.predict_iter` (decoded a few ahead on its background thread,
person crops of consecutive frames sharing forward batches of ``batch_size``); a detector sees
``frames_per_batch`` frames per call. Per frame one JSON line is written::

    {"frame": 0, "time": 0.0, "persons": [{"box": [x1, y1, x2, y2], "score": 0.93, "keypoints": [[x, y, s], ...]}]}

``time`` is ``frame / fps`` when the source reports a frame rate (files and most cameras), else seconds since
the stream was opened. Person boxes come from a detector (:mod:`vitpose_fast.inference.detectors`), from a per-frame
boxes file (:func:`load_frame_boxes`), or are the whole frame.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["VideoReader", "VideoWriter", "is_video_source", "load_frame_boxes", "predict_video"]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif")
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "video input and output need OpenCV (pip install opencv-python-headless, or pip install "
            "'vitpose-fast[video]')"
        ) from None
    return cv2


def is_video_source(source: Any) -> bool:
    """A video file (by suffix), a stream URL or a webcam index (``"0"``)."""
    if isinstance(source, int):
        return True
    s = os.fspath(source)
    return s.isdigit() or s.lower().startswith(STREAM_PREFIXES) or Path(s).suffix.lower() in VIDEO_SUFFIXES


class VideoReader:
    """Iterate ``(index, time_s, frame)`` over a video file, webcam index or stream URL; frames are HxWx3 uint8
    RGB. ``fps`` is None and ``num_frames`` None when the source does not report them (streams)."""

    def __init__(self, source: Union[str, int, os.PathLike]):
        cv2 = _cv2()
        if isinstance(source, os.PathLike) or (isinstance(source, str) and not source.isdigit()):
            source = os.fspath(source)
            if not source.lower().startswith(STREAM_PREFIXES) and not os.path.isfile(source):
                raise FileNotFoundError(f"video file not found: {source!r}")
        self.source = int(source) if isinstance(source, str) and source.isdigit() else source
        self._cap = cv2.VideoCapture(self.source)
        if not self._cap.isOpened():
            raise ValueError(
                f"cannot open video {source!r} with OpenCV's FFmpeg backend (unsupported container or codec, an "
                "unreachable stream, or no camera with that index)"
            )
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps: Optional[float] = float(fps) if math.isfinite(fps) and 0 < fps < 1000 else None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames: Optional[int] = count if count > 0 and isinstance(self.source, str) else None
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def __iter__(self) -> Iterator[Tuple[int, float, np.ndarray]]:
        cv2 = _cv2()
        start = time.perf_counter()
        index = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                return
            t = index / self.fps if self.fps else time.perf_counter() - start
            yield index, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Write HxWx3 uint8 RGB frames to a video file (``mp4v`` for .mp4/.mov/.mkv, ``MJPG`` for .avi)."""

    def __init__(self, path: Union[str, os.PathLike], fps: float, size: Tuple[int, int]):
        cv2 = _cv2()
        path = os.fspath(path)
        suffix = Path(path).suffix.lower()
        if suffix not in (".mp4", ".m4v", ".mov", ".mkv", ".avi"):
            raise ValueError(f"annotated video {path!r}: expected a .mp4, .mov, .mkv or .avi file name")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if suffix == ".avi" else "mp4v"))
        self.size = size
        self._w = cv2.VideoWriter(path, fourcc, float(fps), size)
        if not self._w.isOpened():
            raise ValueError(f"cannot write video {path!r} with OpenCV (codec {'MJPG' if suffix == '.avi' else 'mp4v'})")

    def write(self, rgb: np.ndarray) -> None:
        cv2 = _cv2()
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            raise ValueError(f"frame of size {rgb.shape[1]}x{rgb.shape[0]}, the video is {self.size[0]}x{self.size[1]}")
        self._w.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._w.release()


def load_frame_boxes(path: Union[str, os.PathLike]) -> Dict[int, np.ndarray]:
    """Per-frame person boxes -> {frame index: [N, 5] xyxy + score}. Accepted files: a JSON list with one entry
    per frame, a JSON object keyed by frame index, or JSON lines ``{"frame": i, "boxes": [...]}``; each entry is
    a list of ``[x1, y1, x2, y2]`` or ``[x1, y1, x2, y2, score]`` (inclusive corners). Frames without an entry
    have no persons."""
    text = Path(path).read_text()
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = {int(d["frame"]): d["boxes"] for d in map(json.loads, filter(str.strip, text.splitlines()))}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a JSON list/object or JSON lines with 'frame' and 'boxes' ({e})") from e
    if isinstance(data, dict) and "boxes" in data and "frame" in data:  # JSON lines of a single frame
        data = {int(data["frame"]): data["boxes"]}
    if isinstance(data, list):
        data = dict(enumerate(data))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a list (one entry per frame) or an object keyed by frame index")
    out = {}
    for key, boxes in data.items():
        try:
            frame = int(key)
        except ValueError:
            raise ValueError(f"{path}: key {key!r} is not a frame index") from None
        arr = np.asarray(boxes if boxes else np.zeros((0, 5)), dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] not in (4, 5):
            raise ValueError(f"{path}: frame {frame}: boxes must be [N, 4] or [N, 5] lists, got shape {arr.shape}")
        if arr.shape[1] == 4:
            arr = np.concatenate([arr, np.ones((len(arr), 1))], axis=1)
        out[frame] = arr
    return out


def _person_json(p: Dict[str, Any]) -> Dict[str, Any]:
    return {"box": [round(float(v), 3) for v in p["box"]], "score": float(p["score"]),
            "keypoints": np.round(p["keypoints"].astype(np.float64), 3).tolist()}


def predict_video(
    model,
    source: Union[str, int, os.PathLike],
    out: Union[str, os.PathLike],
    vis: Optional[Union[str, os.PathLike]] = None,
    detector: Optional[Callable] = None,
    boxes: Optional[Dict[int, np.ndarray]] = None,
    det_thr: float = 0.3,
    det_classes: Optional[Sequence[int]] = None,
    box_thr: float = 0.0,
    frames_per_batch: int = 8,
    max_frames: Optional[int] = None,
    kpt_thr: float = 0.3,
    progress: bool = True,
    **predict_kwargs: Any,
) -> Dict[str, float]:
    """Keypoints for every frame of ``source`` as JSON lines in ``out`` (and with ``vis`` an annotated video).

    ``detector`` or ``boxes`` ({frame: [N, 5] xyxy + score}, see :func:`load_frame_boxes`; scores below
    ``box_thr`` dropped) give the persons; neither means one whole-frame box. ``predict_kwargs`` go to
    :meth:`Model.predict_iter` (``flip_test``, ``decode``, ``batch_size``, ``dataset_index``, ...). Returns
    ``{"frames", "persons", "seconds", "fps"}`` (wall time of the whole loop: decoding, inference, writing).
    """
    from tqdm import tqdm

    from vitpose_fast.inference.detectors import run_detector
    from vitpose_fast.inference.visualize import draw_poses

    if detector is not None and boxes is not None:
        raise ValueError("pass either per-frame boxes or a detector, not both")
    if frames_per_batch < 1:
        raise ValueError(f"frames_per_batch must be >= 1, got {frames_per_batch}")
    reader = VideoReader(source)
    writer = None
    frames = persons_total = 0
    start = time.perf_counter()
    total = reader.num_frames if max_frames is None else min(max_frames, reader.num_frames or max_frames)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "w") as f, tqdm(total=total, unit="frame", desc="video", file=sys.stderr,
                                       disable=not progress) as bar:
            def items():
                """(frame, boxes, (index, time)) for predict_iter; runs on its decoding thread, so the
                detector sees ``frames_per_batch`` frames per call while the model works on earlier ones."""
                group = []
                for item in reader:
                    if max_frames is not None and item[0] >= max_frames:
                        break
                    group.append(item)
                    if len(group) == frames_per_batch:
                        yield from with_boxes(group)
                        group = []
                if group:
                    yield from with_boxes(group)

            def with_boxes(group):
                images = [g[2] for g in group]
                if detector is not None:
                    found = run_detector(detector, images, det_thr, det_classes)
                elif boxes is not None:
                    per = [boxes.get(i, np.zeros((0, 5))) for i, _, _ in group]
                    found = [b[b[:, 4] >= box_thr] for b in per]
                else:
                    found = [None] * len(group)
                for (i, t, image), b in zip(group, found):
                    yield image, b, (i, t)

            for r in model.predict_iter(items(), **predict_kwargs):
                i, t = r.meta
                f.write(json.dumps({"frame": i, "time": round(t, 6),
                                    "persons": [_person_json(p) for p in r.persons]}) + "\n")
                frames += 1
                persons_total += len(r.persons)
                if vis is not None:
                    image = r.image
                    if writer is None:
                        writer = VideoWriter(vis, reader.fps or 25.0, (image.shape[1], image.shape[0]))
                    writer.write(np.asarray(draw_poses(image, r.persons, kpt_thr=kpt_thr)))
                bar.update(1)
    finally:
        reader.close()
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    return {"frames": frames, "persons": persons_total, "seconds": seconds,
            "fps": frames / seconds if seconds > 0 else float("nan")}


def cmd_predict_video(args) -> int:
    """``vitpose-fast predict VIDEO ...`` (called by the CLI when its single input is a video or stream)."""
    from vitpose_fast.inference.detectors import load_detector
    from vitpose_fast.inference.model import Model
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
            dataset_index=args.dataset_index,
        )
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"vitpose-fast: {e}") from e
    print(f"wrote {stats['persons']} persons in {stats['frames']} frames to {args.out} "
          f"({stats['fps']:.1f} frames/s)")
    return 0
