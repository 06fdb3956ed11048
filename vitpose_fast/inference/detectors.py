"""Person detectors in front of the top-down model: ``Model.predict(images, detector=fn)``,
``Model.predict_iter(items, detector=fn)``.

A detector is any callable ``fn(image) -> (boxes_xyxy [N, 4], scores [N])`` or ``(boxes, scores, labels [N])``
taking one HxWx3 uint8 RGB numpy image; numpy arrays, torch tensors and lists are accepted as outputs. A
callable with ``batched = True`` instead takes a list of images and returns one such tuple per image.
Detections with ``score < score_thr`` are dropped; ``classes`` keeps only the given labels (it needs a detector
that returns labels). The survivors become the images' ``[N, 5]`` xyxy + score boxes.

``load_detector("module:callable")`` imports a user detector; ``load_detector("yolo:PATH.pt")`` wraps an
Ultralytics YOLO model (``ultralytics`` is imported only then, and must be installed by the user).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["run_detector", "detect_image", "check_detector", "load_detector", "YoloDetector", "COCO_PERSON"]

COCO_PERSON = 0  # the person label of COCO-trained detectors (Ultralytics' class ids start at 0)


def _numpy(x: Any, where: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: not a numeric array ({e})") from e


def _as_boxes(out: Any, score_thr: float, classes: Optional[Sequence[int]], where: str) -> np.ndarray:
    """One image's detector output -> [N, 5] xyxy + score after the threshold and class filter."""
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise ValueError(
            f"{where}: a detector must return (boxes_xyxy [N, 4], scores [N]) or (boxes, scores, labels), "
            f"got {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        )
    boxes = _numpy(out[0], f"{where}: detector boxes").reshape(-1, 4) if np.size(out[0]) else np.zeros((0, 4))
    scores = _numpy(out[1], f"{where}: detector scores").reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{where}: the detector returned {len(boxes)} boxes but {len(scores)} scores")
    keep = scores >= score_thr
    if classes is not None:
        if len(out) < 3:
            raise ValueError(
                f"{where}: a class filter needs a detector that returns (boxes, scores, labels); this one returns "
                "(boxes, scores) only (pass classes=None)"
            )
        labels = _numpy(out[2], f"{where}: detector labels").reshape(-1)
        if len(labels) != len(boxes):
            raise ValueError(f"{where}: the detector returned {len(boxes)} boxes but {len(labels)} labels")
        keep &= np.isin(labels, np.asarray(list(classes), dtype=np.float64))
    return np.concatenate([boxes[keep], scores[keep, None]], axis=1)


def run_detector(
    detector: Callable, images: Sequence[np.ndarray], score_thr: float = 0.0,
    classes: Optional[Sequence[int]] = None,
) -> List[np.ndarray]:
    """Run ``detector`` on HxWx3 uint8 RGB images -> per image [N, 5] xyxy + score boxes (see module doc)."""
    if getattr(detector, "batched", False):
        outs = list(detector(list(images)))
        if len(outs) != len(images):
            raise ValueError(f"a batched detector returned {len(outs)} results for {len(images)} images")
    else:
        outs = [detector(image) for image in images]
    return [_as_boxes(out, score_thr, classes, f"image {i}") for i, out in enumerate(outs)]


def check_detector(detector: Any, boxes: Any = None) -> None:
    """The entry check of ``predict(detector=...)``: a callable, and no boxes besides it."""
    if boxes is not None:
        raise ValueError("pass either boxes or a detector, not both")
    if not callable(detector):
        raise TypeError(f"detector must be a callable image -> (boxes, scores), got {type(detector).__name__}")


def detect_image(detector: Callable, image: Any, score_thr: float, classes: Optional[Sequence[int]],
                 where: str) -> np.ndarray:
    """One decoded HxWx3 uint8 image (numpy or a torch tensor on any device) -> its [N, 5] xyxy + score boxes;
    :func:`vitpose_fast.inference.pipeline.predict_iter` calls this per image on its decoding thread."""
    arr = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.ascontiguousarray(image)
    out = detector([arr])[0] if getattr(detector, "batched", False) else detector(arr)
    return _as_boxes(out, score_thr, classes, where)


class YoloDetector:
    """An Ultralytics YOLO model (``yolov8n.pt``, ``yolo11s.pt``, ...) as a batched detector returning
    (boxes xyxy, scores, labels) of the ``classes`` labels only (default: COCO persons; None keeps all).
    Ultralytics takes numpy images as BGR, so RGB frames are flipped here."""

    batched = True

    def __init__(self, weights: str, device: Optional[str] = None, imgsz: int = 640,
                 classes: Optional[Sequence[int]] = (COCO_PERSON,)):
        try:
            from ultralytics import YOLO
        except ImportError:
            raise ImportError(
                "the YOLO detector needs the ultralytics package, which vitpose_fast does not install "
                "(pip install ultralytics); any other detector works as --detector module:callable"
            ) from None
        self.model = YOLO(weights)
        self.device, self.imgsz, self.classes = device, imgsz, classes

    def __call__(self, images: Sequence[np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
        kwargs = dict(verbose=False, imgsz=self.imgsz)
        if self.device is not None:
            kwargs["device"] = self.device
        out = []
        for r in self.model(bgr, **kwargs):
            b = r.boxes
            boxes, scores, labels = (_numpy(v, "yolo " + n) for v, n in ((b.xyxy, "boxes"), (b.conf, "scores"),
                                                                       (b.cls, "labels")))
            keep = np.isin(labels, list(self.classes)) if self.classes is not None else slice(None)
            out.append((boxes.reshape(-1, 4)[keep], scores[keep], labels[keep]))
        return out


def _import_here_first(name: str):
    """Import ``name`` finding its top-level module or package in the working directory first (as ``python -m``
    does; a console script's ``sys.path`` starts with its own folder instead), else on ``sys.path``."""
    import importlib.util
    import sys
    from importlib.machinery import PathFinder

    top = name.split(".")[0]
    if top not in sys.modules:
        spec = PathFinder.find_spec(top, [os.getcwd()])
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules[top] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[top]
                raise
    return importlib.import_module(name)


def load_detector(spec: str, device: Optional[str] = None) -> Callable:
    """``"yolo:PATH.pt"`` -> :class:`YoloDetector`; ``"package.module:callable"`` -> that callable (the same
    ``module:attr`` form as console-script entry points; the module is imported as ``python -m`` would: from
    the working directory first, then ``sys.path``)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not kind or not rest:
        raise ValueError(f"detector {spec!r}: expected 'module:callable' (a Python import path) or 'yolo:PATH.pt'")
    if kind == "yolo":
        return YoloDetector(rest, device=device)
    try:
        module = _import_here_first(kind)
    except ImportError as e:
        raise ValueError(f"detector {spec!r}: cannot import module {kind!r} ({e})") from e
    obj: Any = module
    for attr in rest.split("."):
        if not hasattr(obj, attr):
            raise ValueError(f"detector {spec!r}: module {kind!r} has no attribute {rest!r}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise ValueError(f"detector {spec!r}: {rest!r} is a {type(obj).__name__}, not a callable")
    return obj
