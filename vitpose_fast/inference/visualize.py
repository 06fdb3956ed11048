"""Draw predicted poses (boxes, skeleton, joints) on an image with PIL and save it as PNG.

A 133-keypoint pose (COCO-WholeBody: ViTPose+ ``dataset_index=5`` or any whole-body model) is drawn with its
whole-body skeleton: body and feet in the person's colour, the face's contours and both hands (wrist to
fingertips) in their own colours with smaller joints. A person with a ``track_id`` keeps one colour through a
video (the colour of its id, not of its place in the frame's list), and the id is written in its box.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from vitpose_fast.data.datasets import COCO, COCO_WHOLEBODY, GOLIATH, DatasetInfo

__all__ = ["draw_poses", "save_poses"]

_PALETTE = ((255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 220, 120), (220, 80, 255), (255, 128, 0))
# Whole-body parts other than the body: (link colour, joint radius relative to the body's).
_PART_STYLE = {"face": ((255, 255, 255), 0.35), "left_hand": ((255, 150, 60), 0.5),
               "right_hand": ((60, 200, 255), 0.5)}


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
    skeleton: Optional[Sequence[Tuple[int, int]]] = None,
    kpt_thr: float = 0.3,
    draw_boxes: bool = True,
    dataset: Optional[DatasetInfo] = None,
) -> Image.Image:
    """A copy of ``image`` (path, PIL, or HxWx3 uint8 array/tensor) with each person's box, skeleton links and
    joints drawn. ``persons`` are :func:`vitpose_fast.inference.pipeline.predict` results (``keypoints`` [K, 3],
    optional ``box`` xyxy, optional ``track_id``); joints with score below ``kpt_thr`` and links touching them
    are skipped (the official demo's ``kpt_thr=0.3``). Line widths scale with the image size.

    The links: ``skeleton`` when given, else those of ``dataset``, else of the keypoint count: COCO's for 17,
    COCO-WholeBody's (with face and hands) for 133, Goliath's (Sapiens) for 308."""
    img = _as_pil(image).copy()
    draw = ImageDraw.Draw(img)
    width = max(1, round(max(img.size) / 200))
    for i, person in enumerate(persons):
        colour = _PALETTE[int(person.get("track_id", i)) % len(_PALETTE)]
        kps = np.asarray(person["keypoints"], dtype=np.float64)
        info = dataset if dataset is not None and dataset.num_keypoints == len(kps) else {
            d.num_keypoints: d for d in (COCO_WHOLEBODY, GOLIATH)}.get(len(kps), COCO)
        links = tuple(skeleton) if skeleton is not None else info.skeleton + info.draw_links
        part_of = np.zeros(len(kps), dtype=object)
        part_of[:] = "body"
        for name, lo, hi in info.parts if skeleton is None else ():
            part_of[lo:hi] = name
        ok = kps[:, 2] >= kpt_thr
        if draw_boxes and person.get("box") is not None:
            draw.rectangle([float(v) for v in person["box"][:4]], outline=colour, width=width)
            if "track_id" in person:
                x1, y1 = (float(v) for v in person["box"][:2])
                draw.text((x1 + width + 1, y1 + width), str(int(person["track_id"])), fill=colour)
        for a, b in links:
            if a < len(kps) and b < len(kps) and ok[a] and ok[b]:
                style = _PART_STYLE.get(part_of[b])
                draw.line([tuple(kps[a, :2]), tuple(kps[b, :2])], fill=colour if style is None else style[0],
                          width=width * 2 if style is None else width)
        for j in np.flatnonzero(ok):
            x, y = kps[j, :2]
            style = _PART_STYLE.get(part_of[j])
            r = width * 1.5 * (1.0 if style is None else style[1])
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=colour)
    return img


def save_poses(
    image: Any, persons: Sequence[Mapping[str, Any]], path: Union[str, os.PathLike], **kwargs: Any
) -> None:
    """:func:`draw_poses` and save as PNG to ``path`` (parent folders are created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    draw_poses(image, persons, **kwargs).save(path, format="PNG")
