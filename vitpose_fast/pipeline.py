"""Top-down inference: images + person boxes -> keypoints in image coordinates (official ViTPose test pipeline).

Per call: decode the images on the host (files, PIL, numpy, torch), check the boxes, then everything runs
batched on the model's device: one host -> device copy per image (plus one for all boxes), box -> (center,
scale) (official ``_box2cs``: aspect ratio of the model input, padding 1.25), crop + normalise
(:func:`vitpose_fast.crop.crop_and_normalize`: UDP warp for ``decode="udp"``, the standard affine otherwise,
as the official ``TopDownAffine(use_udp=...)``), forward in chunks with the horizontally flipped crops in the
same batch, ``flip_back`` + average (no heatmap shift, as official UDP), decode
(:func:`vitpose_fast.ops.decode_heatmaps`: the fused Triton decoder on CUDA) and a single device -> host copy of the keypoints.

The person score is the box score (official inference; rescoring by keypoint confidence is an evaluation step,
see :mod:`vitpose_fast.evaluation`).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .crop import box_to_center_scale, box_xywh_to_xyxy, box_xyxy_to_xywh, crop_and_normalize
from . import ops
from .decode import DECODE_METHODS, flip_back

ImageInput = Union[np.ndarray, torch.Tensor, "PIL.Image.Image", str, os.PathLike]  # noqa: F821
PersonResult = Dict[str, Any]

__all__ = ["predict", "load_image", "prepare_boxes"]


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
        return np.array(image.convert("RGB"))
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
    # torch cannot wrap negative strides (e.g. a BGR -> RGB view made with [..., ::-1]).
    return torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grayscale, palette and RGBA files are converted)."""
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {os.fspath(path)!r}")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except Exception as exc:  # PIL raises several unrelated types for unreadable files
        raise ValueError(f"cannot read image file {os.fspath(path)!r}: {exc}") from exc


def prepare_boxes(
    boxes: Any, width: int, height: int, box_format: str = "xyxy", where: str = "image 0"
) -> Tuple[np.ndarray, np.ndarray]:
    """Check one image's boxes and return (xyxy [N, 4] float64, scores [N] float64).

    boxes: [N, 4] or [N, 5] (last column: score, default 1) in ``box_format`` (``xyxy``: inclusive corners,
    ``xywh``: COCO), or None for one box covering the whole image. Boxes are used as given (the official
    pipeline does not clip them; the crop pads with zeros). Rejected with ValueError: a wrong shape, non-finite
    values, an empty or inverted box (xyxy: x2 < x1 or y2 < y1; xywh: w <= 0 or h <= 0) and a box entirely
    outside the image.
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
    outside = (xyxy[:, 2] < 0) | (xyxy[:, 3] < 0) | (xyxy[:, 0] > width - 1) | (xyxy[:, 1] > height - 1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{where}: box {i} {arr[i, :4].tolist()} ({box_format}) lies entirely outside the {width}x{height} image"
        )
    return np.ascontiguousarray(xyxy), scores


def _flip_pairs(model: torch.nn.Module, dataset: Any, dataset_index: Optional[int]) -> Sequence[Tuple[int, int]]:
    """Flip pairs of ``dataset`` (a name or anything with ``flip_pairs``), or by default of the dataset whose
    keypoints the selected head predicts: the ViTPose+ dataset of ``dataset_index`` when the keypoint counts
    agree, else COCO for 17 keypoints."""
    from .datasets import COCO, VITPOSE_PLUS_DATASETS, get_dataset

    if isinstance(dataset, str):
        return get_dataset(dataset).flip_pairs
    if dataset is not None:
        return dataset.flip_pairs
    k = model.config.head.num_keypoints
    if dataset_index and model.config.extra_heads:
        k = model.config.extra_heads[dataset_index - 1]
    if dataset_index and dataset_index < len(VITPOSE_PLUS_DATASETS):
        if VITPOSE_PLUS_DATASETS[dataset_index].num_keypoints == k:
            return VITPOSE_PLUS_DATASETS[dataset_index].flip_pairs
    if k == COCO.num_keypoints:
        return COCO.flip_pairs
    raise ValueError(
        f"flip test needs the keypoints' left/right pairs: pass dataset= (a name or DatasetInfo) for this "
        f"{k}-keypoint head, or flip_test=False"
    )


@torch.inference_mode()
def _run_model(
    model: torch.nn.Module,
    crops: torch.Tensor,
    flip_pairs: Optional[Sequence[Tuple[int, int]]],
    batch_size: int,
    dataset_index: Optional[int],
) -> torch.Tensor:
    """[N, 3, H, W] crops -> [N, K, h, w] float32 heatmaps (flip-averaged when ``flip_pairs`` is given)."""
    dtype = next(model.parameters()).dtype
    per_chunk = max(1, batch_size // 2) if flip_pairs is not None else batch_size
    out = []
    for start in range(0, crops.shape[0], per_chunk):
        x = crops[start : start + per_chunk].to(dtype)
        n = x.shape[0]
        if flip_pairs is not None:
            x = torch.cat([x, x.flip(3)])
        hm = model(x, dataset_index).float()
        if flip_pairs is not None:
            hm = (hm[:n] + flip_back(hm[n:], flip_pairs)) * 0.5
        out.append(hm)
    return torch.cat(out)


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
) -> Union[List[PersonResult], List[List[PersonResult]]]:
    """Top-down pose estimation.

    Args:
        model: a :class:`vitpose_fast.Model` (any module with ``.config`` and ``forward(pixels, dataset_index)``);
            its device and dtype are used. It runs in eval mode (its mode is restored afterwards).
        images: one image or a list: HxWx3 uint8 RGB numpy arrays or torch tensors (HxW / HxWx4 are converted),
            PIL images or file paths.
        boxes: per image, [N, 4] or [N, 5] (score) in ``box_format`` (``xyxy`` inclusive corners or ``xywh``);
            for a single image the array itself, for a list a list of arrays. None (or a None entry) means
            one box covering the image; an empty array gives no persons. See :func:`prepare_boxes`.
        flip_test: average with the horizontally flipped crops (run in the same forward batch).
        decode: a :data:`vitpose_fast.decode.DECODE_METHODS` name; ``udp`` (official ViTPose) also selects the
            UDP crop warp, the others the standard affine crop.
        batch_size: crops per forward call (flipped copies included).
        dataset_index: ViTPose+ expert / head index (0 = COCO), required by multi-expert models.
        dataset: dataset name or ``DatasetInfo`` whose flip pairs the flip test uses (default: COCO for
            17-keypoint heads).

    Returns:
        For a list of images, a list (per image) of lists (per person, in box order); for a single image, its
        list of persons. Each person is ``{"keypoints": float32 [K, 3] (x, y, score) in image pixels,
        "box": float32 [4] xyxy, "score": float}``.
    """
    if decode not in DECODE_METHODS:
        raise ValueError(f"decode must be one of {DECODE_METHODS}, got {decode!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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

    arrays, xyxy, scores = [], [], []
    for i, (image, image_boxes) in enumerate(zip(image_list, box_list)):
        where = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {i}"
        arr = _to_rgb_array(image, where)
        b, s = prepare_boxes(image_boxes, arr.shape[1], arr.shape[0], box_format, where)
        arrays.append(arr)
        xyxy.append(b)
        scores.append(s)
    counts = [len(b) for b in xyxy]
    total = sum(counts)
    results: List[List[PersonResult]] = [[] for _ in image_list]
    if total:
        param = next(model.parameters())
        device = param.device
        cfg = model.config
        in_h, in_w = cfg.backbone.img_size
        flip_pairs = _flip_pairs(model, dataset, dataset_index) if flip_test else None
        boxes_dev = torch.from_numpy(np.concatenate(xyxy)).to(device)
        centers, scales = box_to_center_scale(box_xyxy_to_xywh(boxes_dev), in_w / in_h)
        used = [b for b, c in enumerate(counts) if c]  # images without persons are never copied
        images_dev = [_as_tensor(arrays[b]).to(device) for b in used]
        image_index = np.repeat(np.arange(len(used)), [counts[b] for b in used])
        crops = crop_and_normalize(images_dev, image_index, centers, scales, (in_w, in_h), udp=decode == "udp")
        was_training = model.training
        model.eval()
        try:
            heatmaps = _run_model(model, crops, flip_pairs, batch_size, dataset_index)
        finally:
            model.train(was_training)
        # Any module with our forward signature works; only vitpose_fast.Model carries a backend choice.
        backend = model.resolved_backend(device) if hasattr(model, "resolved_backend") else "torch"
        keypoints = ops.decode_heatmaps(heatmaps, centers, scales, method=decode, backend=backend).cpu().numpy()
        start = 0
        for b, count in enumerate(counts):
            for j in range(count):
                results[b].append(
                    {
                        "keypoints": keypoints[start + j],
                        "box": xyxy[b][j].astype(np.float32),
                        "score": float(scores[b][j]),
                    }
                )
            start += count
    return results[0] if single else results
