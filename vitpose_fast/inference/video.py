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
``frames_per_batch`` frames per call; drawing and writing run on a third thread. Per frame one JSON line is
written::

    {"frame": 0, "time": 0.0, "keypoint_set": "coco",
     "persons": [{"track_id": 1, "box": [x1, y1, x2, y2], "score": 0.93, "keypoints": [[x, y, s], ...]}]}

``time`` is ``frame / fps`` when the source reports a frame rate (files and most cameras), else seconds since
the stream was opened. ``keypoint_set`` names the head's keypoints (``coco``, ``coco_wholebody`` for 133
keypoints, ``aic``, ...; ``<K>_keypoints`` for a head of unknown layout). ``track_id`` is there with tracking
(:mod:`vitpose_fast.inference.tracking`; ids, gaps and people who come back are described there), and the
keypoints are smoothed with ``smooth="one_euro"`` (:mod:`vitpose_fast.inference.smoothing`). Person boxes come
from a detector (:mod:`vitpose_fast.inference.detectors`), from a per-frame boxes file
(:func:`load_frame_boxes`), or are the whole frame; with ``detect_every=N`` from the detector on every N-th frame
and from the tracks' keypoints in between.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    from vitpose_fast.inference.smoothing import OneEuroConfig
    from vitpose_fast.inference.tracking import TrackerConfig

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


def _check_video_name(path: Union[str, os.PathLike]) -> None:
    if Path(path).suffix.lower() not in (".mp4", ".m4v", ".mov", ".mkv", ".avi"):
        raise ValueError(f"annotated video {os.fspath(path)!r}: expected a .mp4, .mov, .mkv or .avi file name")


class VideoWriter:
    """Write HxWx3 uint8 RGB frames to a video file (``mp4v`` for .mp4/.mov/.mkv, ``MJPG`` for .avi)."""

    def __init__(self, path: Union[str, os.PathLike], fps: float, size: Tuple[int, int]):
        cv2 = _cv2()
        path = os.fspath(path)
        _check_video_name(path)
        suffix = Path(path).suffix.lower()
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
    out = {"track_id": int(p["track_id"])} if "track_id" in p else {}
    out.update({"box": [round(float(v), 3) for v in p["box"]], "score": float(p["score"]),
                "keypoints": np.round(p["keypoints"].astype(np.float64), 3).tolist()})
    return out


def _usable_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes made from keypoints, clipped to the image; those left with under 4 pixels a side dropped."""
    b = boxes.copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width - 1)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height - 1)
    ok = np.isfinite(b).all(1) & (b[:, 2] - b[:, 0] >= 4) & (b[:, 3] - b[:, 1] >= 4)
    return b[ok]


class _FrameWriter:
    """JSON lines and the annotated video, written on their own thread so that drawing and encoding overlap the
    model. A bounded queue keeps memory flat; an error on the thread is raised by the next :meth:`put` or
    :meth:`close`."""

    def __init__(self, f, vis, fps: float, kpt_thr: float, keypoint_set: str, dataset, depth: int = 8):
        import queue
        import threading

        self._f, self._vis, self._fps, self._kpt_thr = f, vis, fps, kpt_thr
        self._set, self._dataset = keypoint_set, dataset
        self._video: Optional[VideoWriter] = None
        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from vitpose_fast.inference.visualize import draw_poses

        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain: the producer learns of the error at its next put
            try:
                i, t, image, persons = item
                self._f.write(json.dumps({"frame": i, "time": round(t, 6), "keypoint_set": self._set,
                                          "persons": [_person_json(p) for p in persons]}) + "\n")
                if self._vis is not None:
                    if self._video is None:
                        self._video = VideoWriter(self._vis, self._fps, (image.shape[1], image.shape[0]))
                    self._video.write(np.asarray(draw_poses(image, persons, kpt_thr=self._kpt_thr,
                                                            dataset=self._dataset)))
            except BaseException as exc:  # handed to the producer thread
                self._error = exc

    def put(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._video is not None:
            self._video.close()
        if self._error is not None:
            raise self._error


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
    track: bool = False,
    smooth: Optional[str] = None,
    detect_every: int = 1,
    tracker_config: Optional["TrackerConfig"] = None,
    smoothing_config: Optional["OneEuroConfig"] = None,
    **predict_kwargs: Any,
) -> Dict[str, float]:
    """Keypoints for every frame of ``source`` as JSON lines in ``out`` (and with ``vis`` an annotated video).

    ``detector`` or ``boxes`` ({frame: [N, 5] xyxy + score}, see :func:`load_frame_boxes`; scores below
    ``box_thr`` dropped) give the persons; neither means one whole-frame box. ``predict_kwargs`` go to
    :meth:`Model.predict_iter` (``flip_test``, ``decode``, ``batch_size``, ``dataset_index``, ...); every line
    names the head's keypoint set (``"keypoint_set": "coco"``, ``"coco_wholebody"``, ...).

    ``track``: every person gets a ``track_id`` (:class:`~vitpose_fast.inference.tracking.PoseTracker`, settings
    ``tracker_config``). ``smooth="one_euro"``: keypoints are smoothed per track and keypoint
    (:mod:`vitpose_fast.inference.smoothing`, settings ``smoothing_config``). ``detect_every=N``: the detector
    (or the boxes file) is used on frames 0, N, 2N, ...; on the others each person tracked in the previous frame
    gets the box around their last keypoints, moved by their velocity (people who enter are found at the next
    detection). Smoothing and ``detect_every > 1`` run the tracker even without ``track``.

    Decoding (and detection) run on a background thread, drawing and writing on another, the model on the
    caller's. With ``detect_every == 1`` crops of consecutive frames share forward batches; with ``N > 1`` each
    frame's boxes depend on the previous frame's keypoints, so frames go through the model one at a time (and a
    batched detector gets one frame per call: ``frames_per_batch`` applies to ``detect_every == 1``).

    Returns ``{"frames", "persons", "seconds", "fps", "persons_per_s"}`` (wall time of the whole loop).
    """
    from tqdm import tqdm

    from vitpose_fast.inference.detectors import run_detector
    from vitpose_fast.inference.pipeline import _Prefetcher, head_dataset, head_num_keypoints

    if detector is not None and boxes is not None:
        raise ValueError("pass either per-frame boxes or a detector, not both")
    if frames_per_batch < 1:
        raise ValueError(f"frames_per_batch must be >= 1, got {frames_per_batch}")
    if vis is not None:
        _check_video_name(vis)  # before any frame is decoded, not on the writer thread at the first frame
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    if detect_every > 1 and detector is None and boxes is None:
        raise ValueError("detect_every > 1 needs a detector or per-frame boxes (without them every frame is one "
                         "whole-frame box)")
    smoother = None
    if smooth not in (None, "none"):
        from vitpose_fast.inference.smoothing import SMOOTHERS, KeypointSmoother, OneEuroConfig

        if smooth not in SMOOTHERS:
            raise ValueError(f"smooth must be one of {SMOOTHERS}, got {smooth!r}")
        smoother = KeypointSmoother(smoothing_config or OneEuroConfig())
    dataset_index = predict_kwargs.get("dataset_index")
    info = predict_kwargs.get("dataset")
    if isinstance(info, str):
        from vitpose_fast.data.datasets import get_dataset

        info = get_dataset(info)
    info = info if info is not None else head_dataset(model, dataset_index)
    keypoint_set = info.name if info is not None else f"{head_num_keypoints(model, dataset_index)}_keypoints"
    tracker = None
    if track or smoother is not None or detect_every > 1:
        from vitpose_fast.inference.tracking import PoseTracker, TrackerConfig

        tracker = PoseTracker(tracker_config or TrackerConfig(), None if info is None else info.sigmas)

    reader = VideoReader(source)
    frames = persons_total = 0
    start = time.perf_counter()
    total = reader.num_frames if max_frames is None else min(max_frames, reader.num_frames or max_frames)
    Path(out).parent.mkdir(parents=True, exist_ok=True)

    def frames_of(group_size):
        group = []
        for item in reader:
            if max_frames is not None and item[0] >= max_frames:
                break
            group.append(item)
            if len(group) == group_size:
                yield group
                group = []
        if group:
            yield group

    def detect(group):
        """Per frame of ``group`` its boxes (None: the whole frame)."""
        images = [g[2] for g in group]
        if detector is not None:
            return run_detector(detector, images, det_thr, det_classes)
        if boxes is not None:
            per = [boxes.get(i, np.zeros((0, 5))) for i, _, _ in group]
            return [b[b[:, 4] >= box_thr] for b in per]
        return [None] * len(group)

    def finish(i, t, image, persons):
        if tracker is not None:
            kps = np.stack([p["keypoints"] for p in persons]) if persons else np.zeros((0, 0, 3))
            b = np.array([np.append(p["box"], p["score"]) for p in persons]).reshape(-1, 5)
            ids = tracker.update(b, kps if persons else None)
            for p, tid in zip(persons, ids):
                if smoother is not None:
                    p["keypoints"] = smoother(int(tid), p["keypoints"], t, p["box"])
                if track:
                    p["track_id"] = int(tid)
            if smoother is not None:
                smoother.keep_only(tr.id for tr in tracker.tracks)
        writer.put((i, t, image, persons))

    try:
        with open(out, "w") as f, tqdm(total=total, unit="frame", desc="video", file=sys.stderr,
                                       disable=not progress) as bar:
            writer = _FrameWriter(f, vis, reader.fps or 25.0, kpt_thr, keypoint_set, info)
            try:
                if detect_every == 1:
                    def items():
                        """(frame, boxes, (index, time)) for predict_iter; runs on its decoding thread, so the
                        detector sees ``frames_per_batch`` frames per call while the model works on earlier ones."""
                        for group in frames_of(frames_per_batch):
                            for (i, t, image), b in zip(group, detect(group)):
                                yield image, b, (i, t)

                    for r in model.predict_iter(items(), **predict_kwargs):
                        i, t = r.meta
                        finish(i, t, r.image, r.persons)
                        frames += 1
                        persons_total += len(r.persons)
                        bar.update(1)
                else:
                    def decoded(_, group):  # on the decoding thread: detection frames get their boxes there
                        i, t, image = group[0]
                        return i, t, image, detect(group)[0] if i % detect_every == 0 else None

                    stream = iter(_Prefetcher(frames_of(1), decoded, depth=4))
                    try:
                        for value, exc in stream:
                            if exc is not None:  # the detector failed on this frame
                                raise exc
                            i, t, image, found = value
                            if found is None:
                                found = _usable_boxes(tracker.propagated_boxes(), image.shape[1], image.shape[0])
                            (r,) = list(model.predict_iter([(image, found, (i, t))], **predict_kwargs))
                            finish(i, t, r.image, r.persons)
                            frames += 1
                            persons_total += len(r.persons)
                            bar.update(1)
                    finally:
                        stream.close()  # stops the decoding thread when the model or the writer failed
            finally:
                writer.close()
    finally:
        reader.close()
    seconds = time.perf_counter() - start
    rate = (lambda n: n / seconds) if seconds > 0 else (lambda n: float("nan"))
    return {"frames": frames, "persons": persons_total, "seconds": seconds, "fps": rate(frames),
            "persons_per_s": rate(persons_total)}
