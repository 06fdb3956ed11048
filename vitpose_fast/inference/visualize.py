"""Draw predicted poses (boxes, skeleton, joints) on an image with PIL and save it as PNG."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from vitpose_fast.data.datasets import COCO

__all__ = ["draw_poses", "save_poses"]

_PALETTE = ((255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 220, 120), (220, 80, 255), (255, 128, 0))


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        from vitpose_fast.inference.pipeline import load_image  # 16-bit, CMYK and EXIF orientation as predict reads them

        return Image.fromarray(load_image(image), "RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image.cpu() if hasattr(image, "cpu") else image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got dtype {arr.dtype} and shape {arr.shape}")
    return Image.fromarray(arr, "RGB")


def draw_poses(
    image: Any,
    persons: Sequence[Mapping[str, Any]],
    skeleton: Sequence[Tuple[int, int]] = COCO.skeleton,
    kpt_thr: float = 0.3,
    draw_boxes: bool = True,
) -> Image.Image:
    """A copy of ``image`` (path, PIL, or HxWx3 uint8 array/tensor) with each person's box, skeleton links and
    joints drawn. ``persons`` are :func:`vitpose_fast.inference.pipeline.predict` results (``keypoints`` [K, 3],
    optional ``box`` xyxy); joints with score below ``kpt_thr`` and links touching them are skipped (the
    official demo's ``kpt_thr=0.3``). Line widths scale with the image size."""
    img = _as_pil(image).copy()
    draw = ImageDraw.Draw(img)
    width = max(1, round(max(img.size) / 200))
    for i, person in enumerate(persons):
        colour = _PALETTE[i % len(_PALETTE)]
        kps = np.asarray(person["keypoints"], dtype=np.float64)
        ok = kps[:, 2] >= kpt_thr
        if draw_boxes and person.get("box") is not None:
            draw.rectangle([float(v) for v in person["box"][:4]], outline=colour, width=width)
        for a, b in skeleton:
            if a < len(kps) and b < len(kps) and ok[a] and ok[b]:
                draw.line([tuple(kps[a, :2]), tuple(kps[b, :2])], fill=colour, width=width * 2)
        r = width * 1.5
        for x, y in kps[ok, :2]:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=colour)
    return img


def save_poses(
    image: Any, persons: Sequence[Mapping[str, Any]], path: Union[str, os.PathLike], **kwargs: Any
) -> None:
    """:func:`draw_poses` and save as PNG to ``path`` (parent folders are created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    draw_poses(image, persons, **kwargs).save(path, format="PNG")
