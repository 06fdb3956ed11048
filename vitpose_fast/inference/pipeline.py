"""Top-down inference: images + person boxes -> keypoints in image coordinates (official ViTPose test pipeline).

Streaming (:func:`predict_iter`): images (any iterable: a folder listing, a video's frames, a generator) are
decoded on a background thread, a few ahead of the model; their boxes are cut into chunks of ``batch_size``
crops (flipped copies included), each chunk running crop -> forward -> flip-average -> decode on the model's
device before the next starts, so peak memory is set by ``batch_size`` and the image sizes, never by the number
of boxes or images. Results come out per image, in input order, as soon as its last chunk is decoded.
:func:`predict` collects them into lists.

Per chunk: one host -> device copy per image (kept while the image has boxes left), box -> (center, scale)
(official ``_box2cs``: aspect ratio of the model input, padding 1.25), crop + normalise
(:func:`vitpose_fast.data.crop.crop_and_normalize`: UDP warp for ``decode="udp"``, the standard affine otherwise,
as the official ``TopDownAffine(use_udp=...)``), the forward with the horizontally flipped crops in the same
batch, ``flip_back`` + average (no heatmap shift, as official UDP), decode
(:func:`vitpose_fast.ops.decode_heatmaps`: the fused Triton decoder on CUDA) and one device -> host copy of the
chunk's keypoints. Every step is per crop, so chunking gives the same numbers as one big batch.

The person score is the box score (official inference; rescoring by keypoint confidence is an evaluation step,
see :mod:`vitpose_fast.inference.evaluation`).
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from vitpose_fast.data.crop import box_to_center_scale, box_xywh_to_xyxy, box_xyxy_to_xywh, crop_and_normalize
from vitpose_fast import ops
from vitpose_fast.inference.decode import DECODE_METHODS, flip_back

ImageInput = Union[np.ndarray, torch.Tensor, "PIL.Image.Image", str, os.PathLike]  # noqa: F821
PersonResult = Dict[str, Any]
MAX_BOX_TO_IMAGE = 8  # prepare_boxes refuses boxes wider or taller than this many times the image

__all__ = ["predict", "predict_iter", "ImageResult", "load_image", "decode_image", "prepare_boxes", "head_dataset"]


def _is_single_image(images: Any) -> bool:
    if isinstance(images, (str, os.PathLike)):
        return True
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return images.ndim in (2, 3)
    return type(images).__module__.startswith("PIL.")


def _to_rgb_array(image: Any, where: str) -> Union[np.ndarray, torch.Tensor]:
    """One image -> HxWx3 uint8 (numpy for host inputs; a torch tensor stays on its device)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if type(image).__module__.startswith("PIL."):
        return _pil_to_rgb(image)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        if image.dtype not in (np.uint8, torch.uint8):
            raise TypeError(f"{where}: image arrays must be uint8 (0..255), got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"{where}: image arrays must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA), got shape {tuple(image.shape)}"
            )
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"{where}: empty image of shape {tuple(image.shape)}")
        if image.shape[-1] == 1:
            image = image.repeat(3, -1) if isinstance(image, np.ndarray) else image.expand(-1, -1, 3)
        return image[..., :3]  # drops alpha
    raise TypeError(
        f"{where}: unsupported image type {type(image).__name__}; expected a file path, PIL image, or HxWx3 uint8 "
        "numpy array / torch tensor"
    )


def _as_tensor(image: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    if not isinstance(image, np.ndarray):
        return image
    # torch cannot wrap negative strides (e.g. a BGR -> RGB view made with [..., ::-1]) and warns on read-only
    # arrays (np.asarray of a PIL image): both are copied.
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, order="C")
    return torch.from_numpy(image)


def _pil_to_rgb(im: "PIL.Image.Image") -> np.ndarray:  # noqa: F821
    """PIL image -> HxWx3 uint8 RGB. PIL's own ``convert("RGB")`` clips 16/32-bit integer and float modes to
    255 (a white image); those are rescaled from their full range instead (16-bit: /257, float: 0..1)."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(im).astype(np.float64)
        if mode == "F":
            arr = arr * 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else arr
        else:  # I;16* are 16-bit; mode "I" is how PIL opens 16-bit grayscale PNGs (0..65535)
            arr = arr / 257.0
        gray = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))  # palette (with transparency), L, LA, RGBA, CMYK, YCbCr ...


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, upright as its EXIF orientation says (grayscale, 16-bit, palette,
    RGBA and CMYK files are converted). Raises FileNotFoundError, or ValueError naming the file when it cannot
    be decoded (including truncated files)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {os.fspath(path)!r}")
    return _decode(path, os.fspath(path))


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """:func:`load_image` of a file's bytes (e.g. read by Ray Data); ``name`` names it in the error."""
    import io

    return _decode(io.BytesIO(data), name)


def _decode(source: Any, name: str) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(source) as im:
            im.load()  # decode fully here: a truncated file fails now, not half-way through a conversion
            return _pil_to_rgb(ImageOps.exif_transpose(im))
    except Exception as exc:  # PIL raises several unrelated types for unreadable files
        raise ValueError(f"cannot read image file {name!r}: {exc}") from exc


def prepare_boxes(
    boxes: Any, width: int, height: int, box_format: str = "xyxy", where: str = "image 0"
) -> Tuple[np.ndarray, np.ndarray]:
    """Check one image's boxes and return (xyxy [N, 4] float64, scores [N] float64).

    boxes: [N, 4] or [N, 5] (last column: score, default 1) in ``box_format`` (``xyxy``: inclusive corners,
    ``xywh``: COCO), or None for one box covering the whole image. Boxes are used as given (the official
    pipeline does not clip them; the crop pads with zeros). Rejected with ValueError: a wrong shape, non-finite
    values, an empty or inverted box (xyxy: x2 < x1 or y2 < y1; xywh: w <= 0 or h <= 0), a box more than
    ``MAX_BOX_TO_IMAGE`` times the image's width or height and a box entirely outside the image.
    """
    if box_format not in ("xyxy", "xywh"):
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    if boxes is None:
        return np.array([[0.0, 0.0, width - 1.0, height - 1.0]]), np.ones(1)
    try:
        arr = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # ragged lists, non-numbers
        raise ValueError(f"{where}: boxes must be a numeric [N, 4] or [N, 5] array ({exc})") from exc
    arr = arr.astype(np.float64)
    if arr.size == 0:
        return np.zeros((0, 4)), np.zeros(0)
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise ValueError(f"{where}: boxes must have shape [N, 4] or [N, 5] (with scores), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: boxes contain NaN or infinite values")
    scores = arr[:, 4].copy() if arr.shape[1] == 5 else np.ones(len(arr))
    xyxy = box_xywh_to_xyxy(torch.from_numpy(arr[:, :4])).numpy() if box_format == "xywh" else arr[:, :4]
    if box_format == "xywh":
        bad = (arr[:, 2] <= 0) | (arr[:, 3] <= 0)
        reason = "has zero or negative width/height"
    else:
        bad = (xyxy[:, 2] < xyxy[:, 0]) | (xyxy[:, 3] < xyxy[:, 1])
        reason = "is inverted (x2 < x1 or y2 < y1)"
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: box {i} {arr[i, :4].tolist()} ({box_format}) {reason}")
    # A person box many times the image is a unit or format mistake (normalised vs pixel boxes, 1e9
    # placeholders): its keypoints would land far outside the image.
    huge = (xyxy[:, 2] - xyxy[:, 0] > MAX_BOX_TO_IMAGE * width) | (xyxy[:, 3] - xyxy[:, 1] > MAX_BOX_TO_IMAGE * height)
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise ValueError(f"{where}: box {i} {arr[i, :4].tolist()} ({box_format}) is more than {MAX_BOX_TO_IMAGE}x "
                         f"the {width}x{height} image; are the boxes in another unit or format?")
    outside = (xyxy[:, 2] < 0) | (xyxy[:, 3] < 0) | (xyxy[:, 0] > width - 1) | (xyxy[:, 1] > height - 1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{where}: box {i} {arr[i, :4].tolist()} ({box_format}) lies entirely outside the {width}x{height} image"
        )
    return np.ascontiguousarray(xyxy), scores


def head_num_keypoints(model: torch.nn.Module, dataset_index: Optional[int] = None) -> int:
    """Keypoints of the head that ``dataset_index`` selects (indices without a head of their own use the
    first, as :meth:`vitpose_fast.Model.head_for`)."""
    extra = model.config.extra_heads
    if dataset_index and extra and dataset_index <= len(extra):
        return extra[dataset_index - 1]
    return model.config.head.num_keypoints


def head_dataset(model: torch.nn.Module, dataset_index: Optional[int] = None):
    """The :class:`~vitpose_fast.data.datasets.DatasetInfo` whose keypoints the selected head predicts: the ViTPose+
    dataset of ``dataset_index`` when the keypoint counts agree, else by keypoint count COCO (17),
    COCO-WholeBody (133) or Goliath (308, Sapiens); None when unknown."""
    from vitpose_fast.data.datasets import COCO, COCO_WHOLEBODY, GOLIATH, VITPOSE_PLUS_DATASETS

    k = head_num_keypoints(model, dataset_index)
    if dataset_index and dataset_index < len(VITPOSE_PLUS_DATASETS):
        if VITPOSE_PLUS_DATASETS[dataset_index].num_keypoints == k:
            return VITPOSE_PLUS_DATASETS[dataset_index]
    return {d.num_keypoints: d for d in (COCO, COCO_WHOLEBODY, GOLIATH)}.get(k)


def _flip_pairs(model: torch.nn.Module, dataset: Any, dataset_index: Optional[int]) -> Sequence[Tuple[int, int]]:
    """Flip pairs of ``dataset`` (a name or anything with ``flip_pairs``), or by default of
    :func:`head_dataset`."""
    from vitpose_fast.data.datasets import get_dataset

    if isinstance(dataset, str):
        return get_dataset(dataset).flip_pairs
    if dataset is not None:
        return dataset.flip_pairs
    info = head_dataset(model, dataset_index)
    if info is not None:
        return info.flip_pairs
    raise ValueError(
        f"flip test needs the keypoints' left/right pairs: pass dataset= (a name or DatasetInfo) for this "
        f"{head_num_keypoints(model, dataset_index)}-keypoint head, or flip_test=False"
    )


# ------------------------------------------------------------------------------------------------ streaming
@dataclass
class ImageResult:
    """One image's output of :func:`predict_iter`.

    ``persons``: per box, in box order, ``{"keypoints": float32 [K, 3] (x, y, score) in image pixels, "box":
    float32 [4] xyxy, "score": float}``. ``image``: the decoded HxWx3 uint8 RGB image (None for a failed one).
    ``error``: the exception that made this image fail (only with ``on_error="skip"``; ``persons`` is then
    empty). ``index`` counts the inputs from 0; ``meta`` is the item's third element, passed through.
    """

    index: int
    meta: Any
    persons: List[PersonResult]
    image: Any = None
    error: Optional[BaseException] = None


@dataclass
class _Entry:
    index: int
    meta: Any
    image: Any = None
    xyxy: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None
    error: Optional[BaseException] = None
    scheduled: int = 0  # boxes handed to chunks
    done: int = 0  # boxes decoded
    keypoints: Optional[np.ndarray] = None  # [N, K, 3], filled chunk by chunk
    device_image: Optional[torch.Tensor] = None
    centers: Optional[torch.Tensor] = None
    scales: Optional[torch.Tensor] = None

    @property
    def count(self) -> int:
        return 0 if self.xyxy is None else len(self.xyxy)

    def result(self) -> ImageResult:
        persons = [
            {"keypoints": self.keypoints[j], "box": self.xyxy[j].astype(np.float32), "score": float(self.scores[j])}
            for j in range(self.count)
        ]
        return ImageResult(self.index, self.meta, persons, self.image, self.error)


_END = object()


class _Prefetcher:
    """Runs ``fn`` over ``items`` on a daemon thread, at most ``depth`` results ahead of the consumer; yields
    ``(result, exception)`` pairs in order. Closing the iterator stops the thread at its next item."""

    def __init__(self, items: Iterable[Any], fn: Callable[[int, Any], Any], depth: int):
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items, fn), daemon=True)
        self._thread.start()

    def _put(self, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterable[Any], fn: Callable[[int, Any], Any]) -> None:
        try:
            for i, item in enumerate(items):
                try:
                    out = (fn(i, item), None)
                except Exception as exc:  # handed to the consumer, which decides
                    out = (None, exc)
                if not self._put(out):
                    return
        except BaseException as exc:  # the input iterator itself failed: the run cannot go on
            self._put((_END, exc))
            return
        self._put((_END, None))

    def __iter__(self) -> Iterator[Tuple[Any, Optional[BaseException]]]:
        try:
            while True:
                value, exc = self._queue.get()
                if value is _END:
                    if exc is not None:
                        raise exc
                    return
                yield value, exc
        finally:
            self._stop.set()


def _split_item(item: Any) -> Tuple[Any, Any, Any]:
    if isinstance(item, tuple):
        if not 1 <= len(item) <= 3:
            raise ValueError(f"predict_iter items are image, (image, boxes) or (image, boxes, meta); got a "
                             f"{len(item)}-tuple")
        item = item + (None,) * (3 - len(item))
        return item
    return item, None, None


def predict_iter(
    model: torch.nn.Module,
    items: Iterable[Any],
    box_format: str = "xyxy",
    flip_test: bool = True,
    decode: str = "udp",
    batch_size: int = 64,
    dataset_index: Optional[int] = None,
    dataset: Any = None,
    on_error: str = "raise",
    prefetch: int = 4,
    progress: Optional[Callable[[int], None]] = None,
    detector: Optional[Callable] = None,
    det_thr: float = 0.3,
    det_classes: Optional[Sequence[int]] = None,
) -> Iterator[ImageResult]:
    """Streaming top-down pose estimation: yields one :class:`ImageResult` per input item, in order.

    Args:
        items: any iterable (consumed lazily) of ``image``, ``(image, boxes)`` or ``(image, boxes, meta)``:
            images as :func:`predict` takes them, boxes per image as :func:`prepare_boxes` (None: one box
            covering the image), ``meta`` anything, returned in :attr:`ImageResult.meta`. A frame iterator or
            a detector wrapped in a generator (``((im, detect(im), i) for i, im in enumerate(frames))``) plugs
            in directly; the generator runs on the decoding thread.
        on_error: ``"raise"`` (default) re-raises the first unreadable image or bad box array;
            ``"skip"`` yields it as an :class:`ImageResult` with ``error`` set and goes on.
        prefetch: images decoded ahead of the model on the background thread.
        progress: called with the number of persons finished after every chunk.
        detector: a person detector (:mod:`vitpose_fast.inference.detectors`) run on each decoded image, on the decoding
            thread, in place of the items' boxes (which must then be None); its xyxy boxes with score >=
            ``det_thr`` and, with ``det_classes``, one of those labels are the image's boxes. A detector error
            always stops the run (``on_error`` covers unreadable images and bad box arrays).
        The other arguments are :func:`predict`'s.

    Peak memory: ``batch_size`` crops, their heatmaps and decoding buffers, the images with boxes in the
    current chunk, ``prefetch`` decoded images and the keypoints of images not yet yielded.
    """
    if decode not in DECODE_METHODS:
        raise ValueError(f"decode must be one of {DECODE_METHODS}, got {decode!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if box_format not in ("xyxy", "xywh"):
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if detector is not None:
        from vitpose_fast.inference.detectors import check_detector, detect_image

        check_detector(detector)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    in_h, in_w = model.config.backbone.img_size
    flip_pairs = _flip_pairs(model, dataset, dataset_index) if flip_test else None
    per_chunk = max(1, batch_size // 2) if flip_pairs is not None else batch_size
    # Any module with our forward signature works; only vitpose_fast.Model carries a backend choice.
    backend = model.resolved_backend(device) if hasattr(model, "resolved_backend") else "torch"
    udp = decode == "udp"

    def load(i: int, item: Any) -> _Entry:
        image, boxes, meta = _split_item(item)
        where = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {i}"
        entry = _Entry(i, meta)
        try:
            arr = _to_rgb_array(image, where)
        except Exception as exc:
            entry.error = exc
            return entry
        fmt = box_format
        if detector is not None:  # outside the try: a failing detector is not a bad image
            if boxes is not None:
                raise ValueError(f"{where}: pass either boxes or a detector, not both")
            boxes, fmt = detect_image(detector, arr, det_thr, det_classes, where), "xyxy"
        try:
            entry.xyxy, entry.scores = prepare_boxes(boxes, arr.shape[1], arr.shape[0], fmt, where)
            entry.image = arr
        except Exception as exc:
            entry.error = exc
        return entry

    def run_chunk(segments: List[Tuple[_Entry, int, int]]) -> None:
        entries: List[_Entry] = []
        for e, _, _ in segments:
            if not entries or entries[-1] is not e:
                entries.append(e)
        for e in entries:
            if e.device_image is None:
                e.device_image = _as_tensor(e.image).to(device)
                boxes = torch.from_numpy(e.xyxy).to(device)
                e.centers, e.scales = box_to_center_scale(box_xyxy_to_xywh(boxes), in_w / in_h)
        slot = {id(e): k for k, e in enumerate(entries)}
        image_index = np.concatenate([np.full(hi - lo, slot[id(e)]) for e, lo, hi in segments])
        centers = torch.cat([e.centers[lo:hi] for e, lo, hi in segments])
        scales = torch.cat([e.scales[lo:hi] for e, lo, hi in segments])
        with torch.inference_mode():
            crops = crop_and_normalize([e.device_image for e in entries], image_index, centers, scales,
                                       (in_w, in_h), udp=udp).to(dtype)
            n = crops.shape[0]
            x = torch.cat([crops, crops.flip(3)]) if flip_pairs is not None else crops
            del crops
            hm = model(x, dataset_index).float()
            del x
            if flip_pairs is not None:
                hm = (hm[:n] + flip_back(hm[n:], flip_pairs)) * 0.5
            keypoints = ops.decode_heatmaps(hm, centers, scales, method=decode, backend=backend).cpu().numpy()
        start = 0
        for e, lo, hi in segments:
            if e.keypoints is None:
                e.keypoints = np.empty((e.count,) + keypoints.shape[1:], dtype=np.float32)
            e.keypoints[lo:hi] = keypoints[start : start + hi - lo]
            e.done += hi - lo
            start += hi - lo
            if e.done == e.count:  # its crops are all taken: release the device copy now
                e.device_image = e.centers = e.scales = None
        if progress is not None:
            progress(n)

    was_training = model.training
    model.eval()
    pending: List[_Entry] = []  # in input order; the front is yielded once finished
    segments: List[Tuple[_Entry, int, int]] = []
    filled = 0
    stream = iter(_Prefetcher(items, load, prefetch))
    try:
        for entry, exc in stream:
            if exc is not None:  # _split_item failed: a malformed item
                raise exc
            if entry.error is not None and on_error == "raise":
                raise entry.error
            pending.append(entry)
            while entry.error is None and entry.scheduled < entry.count:
                take = min(entry.count - entry.scheduled, per_chunk - filled)
                segments.append((entry, entry.scheduled, entry.scheduled + take))
                entry.scheduled += take
                filled += take
                if filled == per_chunk:
                    run_chunk(segments)
                    segments, filled = [], 0
                    while pending and (pending[0].error is not None or pending[0].done == pending[0].count):
                        yield pending.pop(0).result()
            while pending and (pending[0].error is not None or pending[0].done == pending[0].count):
                yield pending.pop(0).result()
        if segments:
            run_chunk(segments)
        for entry in pending:
            yield entry.result()
    finally:
        model.train(was_training)
        stream.close()  # stops the decoding thread when the caller stops early


def predict(
    model: torch.nn.Module,
    images: Union[ImageInput, Sequence[ImageInput]],
    boxes: Any = None,
    box_format: str = "xyxy",
    flip_test: bool = True,
    decode: str = "udp",
    batch_size: int = 64,
    dataset_index: Optional[int] = None,
    dataset: Any = None,
    detector: Optional[Callable] = None,
    det_thr: float = 0.3,
    det_classes: Optional[Sequence[int]] = None,
) -> Union[List[PersonResult], List[List[PersonResult]]]:
    """Top-down pose estimation (all results at once; :func:`predict_iter` streams them).

    Args:
        model: a :class:`vitpose_fast.Model` (any module with ``.config`` and ``forward(pixels, dataset_index)``);
            its device and dtype are used. It runs in eval mode (its mode is restored afterwards).
        images: one image or a list: HxWx3 uint8 RGB numpy arrays or torch tensors (HxW / HxWx4 are converted),
            PIL images or file paths.
        boxes: per image, [N, 4] or [N, 5] (score) in ``box_format`` (``xyxy`` inclusive corners or ``xywh``);
            for a single image the array itself, for a list a list of arrays. None (or a None entry) means
            one box covering the image; an empty array gives no persons. See :func:`prepare_boxes`.
        flip_test: average with the horizontally flipped crops (run in the same forward batch).
        decode: a :data:`vitpose_fast.inference.decode.DECODE_METHODS` name; ``udp`` (official ViTPose) also selects the
            UDP crop warp, the others the standard affine crop.
        batch_size: crops per forward call (flipped copies included); also bounds the memory of every other
            step, which run chunk by chunk.
        dataset_index: ViTPose+ expert / head index (0 = COCO), required by multi-expert models.
        dataset: dataset name or ``DatasetInfo`` whose flip pairs the flip test uses (default: the head's
            dataset, :func:`head_dataset`).
        detector, det_thr, det_classes: instead of ``boxes``, a person detector run on each image (see
            :func:`predict_iter`); the results equal passing its boxes.

    Returns:
        For a list of images, a list (per image) of lists (per person, in box order); for a single image, its
        list of persons. Each person is ``{"keypoints": float32 [K, 3] (x, y, score) in image pixels,
        "box": float32 [4] xyxy, "score": float}``.
    """
    if detector is not None:
        from vitpose_fast.inference.detectors import check_detector

        check_detector(detector, boxes)
    single = _is_single_image(images)
    image_list = [images] if single else list(images)
    if single:
        box_list = [boxes]
    elif boxes is None:
        box_list = [None] * len(image_list)
    else:
        box_list = list(boxes)
        if len(box_list) != len(image_list):
            raise ValueError(
                f"got {len(image_list)} images but boxes for {len(box_list)}; pass one box array per image"
            )
    results = [
        r.persons
        for r in predict_iter(model, zip(image_list, box_list), box_format=box_format, flip_test=flip_test,
                              decode=decode, batch_size=batch_size, dataset_index=dataset_index, dataset=dataset,
                              detector=detector, det_thr=det_thr, det_classes=det_classes)
    ]
    return results[0] if single else results
