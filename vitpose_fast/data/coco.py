"""COCO-format top-down keypoint dataset with the official ViTPose training pipeline.

Records (one per annotated person) are built as the official ``TopDownCocoDataset``
(``mmpose/datasets/datasets/top_down/topdown_coco_dataset.py``): crowd annotations and boxes that clean to
nothing are dropped (:func:`~vitpose_fast.data.transforms.clean_bbox`), as are persons without a labelled
keypoint; visibility is ``min(1, v)``; (center, scale) come from ``_xywh2cs`` with padding 1.25 and, for
training, the 0.3-probability centre jitter applied ONCE here, when the db is built (an official quirk: the
jitter is fixed for the whole run). The jitter draws from ``np.random.default_rng(seed)`` instead of the global
numpy state, so every rank builds the same db.

``__getitem__`` runs the official train pipeline (flip, half body, scale/rotation, UDP affine, normalise, UDP
Gaussian targets with sigma 2; MSRA targets for non-UDP sets). Keys are an index, an ``(index, epoch)`` pair
(what :class:`~vitpose_fast.training.core.ShardedSampler` yields) or an ``(index, epoch, repeat)`` triple (what the
multi-dataset :class:`~vitpose_fast.data.multi.RatioSampler` yields when it draws a record again within an
epoch): the augmentation of a sample is seeded by (seed, epoch, index[, repeat if > 0]), which makes it
independent of worker count, rank count and resumption.

With ``host_crop=False`` the sample carries the decoded image and the full crop matrix instead of the crop, and
the crop runs batched on the accelerator (:func:`gpu_crop_batch`); the flip is then composed into the matrix.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from vitpose_fast.data import transforms as T
from vitpose_fast.data.targets import msra_gaussian_target, udp_gaussian_target

Key = Union[int, Tuple[int, int], Tuple[int, int, int]]


@dataclass
class PersonRecord:
    image_file: str
    image_id: int
    center: np.ndarray  # [2] float32
    scale: np.ndarray  # [2] float32, units of 200 px
    joints: np.ndarray  # [K, 3] float32 (x, y, 0)
    visible: np.ndarray  # [K, 3] float32 (v, v, 0), v in {0, 1}


def pycocotools():
    """(``COCO``, ``COCOeval``) from pycocotools, imported when COCO data is used (some machines, such as GPU
    images, lack it)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("COCO annotations and evaluation need pycocotools (pip install pycocotools)") from e
    return COCO, COCOeval


def load_coco(ann_file: Union[str, os.PathLike]):
    """pycocotools ``COCO`` without its progress prints."""
    COCO, _ = pycocotools()

    if not Path(ann_file).exists():
        raise FileNotFoundError(f"annotation file {str(ann_file)!r} does not exist (expected COCO keypoints json)")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


def read_rgb(path: str) -> np.ndarray:
    """HxWx3 uint8 RGB (official ``LoadImageFromFile`` with ``channel_order='rgb'``)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path!r}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def build_records(
    coco, image_dir: Union[str, os.PathLike], num_joints: int, aspect_ratio: float,
    jitter_rng: Optional[np.random.Generator] = None,
) -> List[PersonRecord]:
    """One record per usable person annotation, in image-id order (see the module doc)."""
    records = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        width, height = info["width"], info["height"]
        for obj in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)):
            if "bbox" not in obj or ("area" in obj and obj["area"] <= 0):
                continue
            box = T.clean_bbox(obj["bbox"], width, height)
            if box is None or "keypoints" not in obj or max(obj["keypoints"]) == 0:
                continue
            if obj.get("num_keypoints", 1) == 0:
                continue
            kpts = np.asarray(obj["keypoints"], dtype=np.float32).reshape(-1, 3)
            if len(kpts) != num_joints:
                raise ValueError(f"annotation {obj.get('id')} has {len(kpts)} keypoints, expected {num_joints}")
            joints = np.zeros((num_joints, 3), np.float32)
            visible = np.zeros((num_joints, 3), np.float32)
            joints[:, :2] = kpts[:, :2]
            visible[:, :2] = np.minimum(1, kpts[:, 2:3])
            center, scale = T.xywh_to_center_scale(*box, aspect_ratio=aspect_ratio, rng=jitter_rng)
            records.append(PersonRecord(str(Path(image_dir) / info["file_name"]), img_id, center, scale, joints,
                                        visible))
    return records


class CocoKeypoints(Dataset):
    """Top-down person samples from a COCO keypoints json (see the module doc).

    image_size, heatmap_size: (W, H). flip_pairs: (left, right) joint index pairs; upper_body_ids: joints of the
    upper body (half-body transform). ``train=False`` disables every random step (and the db jitter).
    Samples: ``{"image": [3, H, W] float32, "target": [K, h, w] float32, "target_weight": [K, 1] float32}``;
    with ``host_crop=False`` ``image`` is the decoded HxWx3 uint8 image and ``matrix`` [2, 3] float64 its crop.
    """

    def __init__(
        self,
        ann_file: Union[str, os.PathLike],
        image_dir: Union[str, os.PathLike],
        image_size: Tuple[int, int],
        heatmap_size: Tuple[int, int],
        flip_pairs: Sequence[Tuple[int, int]],
        upper_body_ids: Sequence[int],
        train: bool = True,
        udp: bool = True,
        sigma: float = 2.0,
        augment: T.AugmentConfig = T.AugmentConfig(),
        seed: int = 0,
        host_crop: bool = True,
        num_joints: int = 17,
    ):
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.flip_pairs = [tuple(p) for p in flip_pairs]
        self.upper_body_ids = tuple(upper_body_ids)
        self.train, self.udp, self.sigma, self.augment = train, udp, sigma, augment
        self.seed, self.host_crop = seed, host_crop
        self.coco = load_coco(ann_file)
        aspect = self.image_size[0] / self.image_size[1]
        jitter = np.random.default_rng([seed, 0x5EED]) if train else None
        self.records = build_records(self.coco, image_dir, num_joints, aspect, jitter)
        if not self.records:
            raise ValueError(f"{str(ann_file)!r} has no person with labelled keypoints")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: Key) -> Dict[str, torch.Tensor]:
        index, epoch, repeat = (key, 0, 0) if isinstance(key, (int, np.integer)) else (*key, 0)[:3]
        rec = self.records[int(index)]
        # repeat 0 keeps the (seed, epoch, index) stream of the single-dataset sampler's keys.
        rng = np.random.default_rng([self.seed, int(epoch), int(index)] + ([int(repeat)] if repeat else []))
        img = read_rgb(rec.image_file)
        joints, visible, center, scale, rot = rec.joints, rec.visible, rec.center.copy(), rec.scale.copy(), 0.0
        flipped = False
        aspect = self.image_size[0] / self.image_size[1]
        if self.train:
            aug = self.augment
            flipped, joints, visible, center = T.random_flip(
                rng, joints, visible, center, img.shape[1], self.flip_pairs, aug.flip_prob)
            hb = T.half_body(rng, joints, visible, self.upper_body_ids, aspect, aug)
            if hb is not None:
                center, scale = hb
            scale, rot = T.random_scale_rotation(rng, scale, aug)
        matrix = T.affine_matrix(center, scale, rot, self.image_size, self.udp)
        joints = T.transform_joints(joints, visible, matrix, self.udp)
        make_target = udp_gaussian_target if self.udp else msra_gaussian_target
        target, weight = make_target(joints, visible, self.image_size, self.heatmap_size, self.sigma)
        sample = {"target": torch.from_numpy(target), "target_weight": torch.from_numpy(weight)}
        if self.host_crop:
            if flipped:
                img = img[:, ::-1]
            sample["image"] = T.to_normalized_tensor(T.warp(np.ascontiguousarray(img), matrix, self.image_size))
        else:
            full = matrix.astype(np.float64)
            if flipped:  # sample the unflipped image: crop(flip(img)) == crop_with(M @ F)(img)
                full = full @ T.flip_matrix(img.shape[1])
            sample["image"] = torch.from_numpy(img)
            sample["matrix"] = torch.from_numpy(full)
        return sample


_LOWER_BODY_PARTS = ("hip", "knee", "ankle", "pelvis", "b_paw")  # b_paw: AP-10K hind paws


def upper_body_ids(keypoint_names: Sequence[str]) -> Tuple[int, ...]:
    """Joints the half-body transform counts as upper body: every joint that is not a hip, knee, ankle, pelvis or hind paw
    (for COCO the official ``upper_body_ids`` 0..10)."""
    return tuple(i for i, n in enumerate(keypoint_names) if not any(p in n.lower() for p in _LOWER_BODY_PARTS))


def collate(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, Union[torch.Tensor, List[torch.Tensor]]]:
    """Stack every field, except the whole images of ``host_crop=False`` samples (sizes differ): a list."""
    whole_images = "matrix" in batch[0]
    return {
        name: [b[name] for b in batch] if whole_images and name == "image" else torch.stack([b[name] for b in batch])
        for name in batch[0]
    }


def gpu_crop_batch(batch: Dict, image_size: Tuple[int, int], device: torch.device) -> torch.Tensor:
    """Crops [B, 3, H, W] of a ``host_crop=False`` batch on ``device`` with
    :func:`vitpose_fast.data.crop.crop_and_normalize` (bilinear, zero border: the cv2.warpAffine of the host path)."""
    from vitpose_fast.data.crop import crop_and_normalize

    images = [im.to(device, non_blocking=True) for im in batch["image"]]
    n = len(images)
    zeros = torch.zeros(n, 2, dtype=torch.float64)
    return crop_and_normalize(images, torch.arange(n), zeros, zeros, image_size, matrices=batch["matrix"])
