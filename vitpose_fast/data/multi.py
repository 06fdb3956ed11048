"""Multi-dataset top-down training data (ViTPose+ and the paper's multi-task setting): several COCO-format keypoint
sets with different keypoint definitions behind one dataset, a ratio sampler and a per-dataset collate.

- :class:`MultiDataset` concatenates :class:`~vitpose_fast.data.coco.CocoKeypoints` sets, one per
  :class:`DatasetSource`, each built with its own :class:`~vitpose_fast.data.datasets.DatasetInfo` (keypoint count,
  flip pairs, UDP or MSRA encoding as the official ViTPose+ config: COCO/MPII UDP, the others MSRA; MPII without
  the half-body transform). Every sample carries ``dataset_index``, its ViTPose+ index (coco 0, aic 1, mpii 2,
  ap10k 3, apt36k 4, wholebody 5: the expert and head it trains), and its target at ITS OWN keypoint count.
- :class:`RatioSampler`: each position of a global batch draws its dataset with probability ``ratios``
  (the expected share per batch; default proportional to the set sizes, i.e. the official ``ConcatDataset``
  with uniform shuffling), then the next sample of that dataset's own shuffled stream. Deterministic in
  (seed, epoch), resumable mid-epoch and sharded over ranks exactly as
  :class:`~vitpose_fast.training.core.ShardedSampler` (one process with batch ``world * b`` sees the global batches
  of ``world`` processes with batch ``b``).
- :func:`collate_multi` stacks the images and groups the targets per dataset (``[n_d, K_d, h, w]`` each), which
  is what the per-head loss consumes; nothing is padded to a common K (the official code pads to 133 channels
  and its ``JointsMSELoss`` then fails on every head with fewer keypoints).

:func:`remap_coco_keypoints` rewrites a COCO-format annotation file for another keypoint definition by joint name
(e.g. a COCO-style set as a 14-keypoint AIC-style one); ``python -m vitpose_fast.data.multi --src DIR --dst DIR2
--as aic`` does it for a COCO-layout folder (images are linked, not copied).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vitpose_fast.data.datasets import VITPOSE_PLUS_DATASETS, DatasetInfo, get_dataset
from vitpose_fast.data.coco import CocoKeypoints, collate, upper_body_ids
from vitpose_fast.data.transforms import AugmentConfig

__all__ = ["DatasetSource", "vitpose_plus_index", "MultiDataset", "RatioSampler", "collate_multi",
           "remap_coco_keypoints"]

MultiKey = Union[int, Tuple[int, int], Tuple[int, int, int]]


def vitpose_plus_index(info: DatasetInfo) -> int:
    """The ViTPose+ dataset index (expert / head) of a dataset: coco 0, aic 1, mpii 2, ap10k 3, apt36k 4,
    coco_wholebody 5."""
    names = [d.name for d in VITPOSE_PLUS_DATASETS]
    if info.name not in names:
        raise ValueError(f"{info.name!r} is not a ViTPose+ dataset; expected one of {names}")
    return names.index(info.name)


@dataclass(frozen=True)
class DatasetSource:
    """One training set: its keypoint metadata and COCO-format annotation file + image folder. Validation files
    are optional (the set is then not evaluated)."""

    info: DatasetInfo
    train_ann: Path
    train_images: Path
    val_ann: Optional[Path] = None
    val_images: Optional[Path] = None
    det_file: Optional[Path] = None  # person detections for evaluation; None: ground-truth boxes

    @property
    def index(self) -> int:
        return vitpose_plus_index(self.info)


def augment_for(info: DatasetInfo, base: AugmentConfig = AugmentConfig()) -> AugmentConfig:
    """The ViTPose+ train augmentation of a dataset: MPII's pipeline has no half-body transform."""
    return replace(base, prob_half_body=0.0) if info.name == "mpii" else base


class MultiDataset(Dataset):
    """Concatenated COCO-format keypoint sets (see the module doc).

    image_size, heatmap_size: (W, H), shared by every set. Keys are a flat index into the concatenation
    (set 0's records first), ``(index, epoch)`` or ``(index, epoch, repeat)`` (what :class:`RatioSampler`
    yields; ``repeat`` > 0 marks a sample drawn again within an epoch and gets a fresh augmentation). Samples are
    those of :class:`~vitpose_fast.data.coco.CocoKeypoints` (target ``[K_d, h, w]``) plus ``dataset_index``
    (int64 scalar, the ViTPose+ index). Each set's augmentation stream is seeded by (seed, its ViTPose+ index),
    so sets never share augmentations.
    """

    def __init__(self, sources: Sequence[DatasetSource], image_size: Tuple[int, int],
                 heatmap_size: Tuple[int, int], train: bool = True, sigma: float = 2.0,
                 augment: AugmentConfig = AugmentConfig(), seed: int = 0, host_crop: bool = True):
        if not sources:
            raise ValueError("MultiDataset needs at least one DatasetSource")
        indices = [s.index for s in sources]
        if len(set(indices)) != len(indices):
            raise ValueError(f"each dataset may appear once, got {[s.info.name for s in sources]}")
        self.sources = tuple(sources)
        self.parts: List[CocoKeypoints] = []
        for src in sources:
            part_seed = int(np.random.SeedSequence([seed, src.index]).generate_state(1)[0])
            self.parts.append(CocoKeypoints(
                src.train_ann, src.train_images, image_size, heatmap_size, src.info.flip_pairs,
                upper_body_ids(src.info.keypoint_names), train=train, udp=src.info.encoding == "udp", sigma=sigma,
                augment=augment_for(src.info, augment), seed=part_seed, host_crop=host_crop,
                num_joints=src.info.num_keypoints,
            ))
        self.sizes = [len(p) for p in self.parts]
        self.offsets = [0] + list(np.cumsum(self.sizes)[:-1].tolist())

    def __len__(self) -> int:
        return sum(self.sizes)

    def locate(self, flat_index: int) -> Tuple[int, int]:
        """(part, index within the part) of a flat index."""
        if not 0 <= flat_index < len(self):
            raise IndexError(f"index {flat_index} out of range for {len(self)} samples")
        part = bisect.bisect_right(self.offsets, flat_index) - 1
        return part, flat_index - self.offsets[part]

    def __getitem__(self, key: MultiKey) -> Dict[str, torch.Tensor]:
        flat, rest = (key, ()) if isinstance(key, (int, np.integer)) else (key[0], tuple(key[1:]))
        part, local = self.locate(int(flat))
        sample = self.parts[part][(local, *rest) if rest else local]
        sample["dataset_index"] = torch.tensor(self.sources[part].index, dtype=torch.int64)
        return sample


class RatioSampler(Sampler):
    """Mixed-dataset batches with given expected shares (see the module doc); yields ``(flat_index, epoch,
    repeat)`` keys for :class:`MultiDataset`.

    sizes: samples per set (in :class:`MultiDataset` order); ratios: relative share of each set per batch
    (normalised; default proportional to ``sizes``). An epoch is ``sum(sizes) // (batch_size * world_size)``
    global batches (as many samples as the concatenation, as the official ``ConcatDataset``). Epoch ``e``:
    ``np.random.default_rng([seed, e])`` draws every position's set; set d's positions take, in order, the
    concatenation of fresh permutations of its records (``default_rng([seed, e, d, cycle])``); ``repeat`` is the
    cycle (a set with a share above its size share is cycled, one below it is subsampled). Rank r takes
    positions r, r + world, ... of the epoch's sequence; ``set_epoch(epoch, start_batch)`` skips that many
    batches (resuming).
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, ratios: Optional[Sequence[float]] = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every dataset needs at least one sample, got sizes {list(sizes)}")
        weights = np.asarray(sizes if ratios is None else ratios, dtype=np.float64)
        if weights.shape != (len(sizes),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"ratios must be {len(sizes)} non-negative numbers, not all 0; got {ratios}")
        self.sizes = [int(s) for s in sizes]
        self.probs = weights / weights.sum()
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world_size, seed
        self.epoch, self.start_batch = 0, 0
        self.num_batches = sum(self.sizes) // (batch_size * world_size)
        if self.num_batches == 0:
            raise ValueError(f"{sum(self.sizes)} samples over {world_size} ranks make no full batch of "
                             f"{batch_size}")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_keys(self, epoch: int) -> List[Tuple[int, int, int]]:
        """The whole epoch's global sequence of ``(flat_index, epoch, repeat)`` keys (all ranks)."""
        total = self.num_batches * self.batch_size * self.world
        choice = np.random.default_rng([self.seed, epoch]).choice(len(self.sizes), size=total, p=self.probs)
        flat = np.empty(total, np.int64)
        repeat = np.empty(total, np.int64)
        for d, size in enumerate(self.sizes):
            where = np.flatnonzero(choice == d)
            cycles = math.ceil(len(where) / size)
            stream = [np.random.default_rng([self.seed, epoch, d, c]).permutation(size) for c in range(cycles)]
            if stream:
                flat[where] = self.offsets[d] + np.concatenate(stream)[: len(where)]
                repeat[where] = np.arange(len(where)) // size
        return [(int(i), epoch, int(r)) for i, r in zip(flat, repeat)]

    def __iter__(self) -> Iterator[Tuple[int, int, int]]:
        shard = self.epoch_keys(self.epoch)[self.rank::self.world]
        return iter(shard[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return max(self.num_batches - self.start_batch, 0) * self.batch_size


def collate_multi(batch: List[Dict[str, torch.Tensor]]) -> Dict:
    """Stack images (a list for ``host_crop=False`` samples, with their ``matrix``) and ``dataset_index`` [B];
    group targets by dataset: ``targets = {dataset_index: {"index": int64 [n_d] positions in the batch,
    "target": [n_d, K_d, h, w], "target_weight": [n_d, K_d, 1]}}`` in ascending dataset index."""
    shared = collate([{k: v for k, v in b.items() if k not in ("target", "target_weight")} for b in batch])
    index = shared["dataset_index"]
    targets = {}
    for d in sorted(set(index.tolist())):
        pos = torch.nonzero(index == d).flatten()
        targets[d] = {
            "index": pos,
            "target": torch.stack([batch[i]["target"] for i in pos.tolist()]),
            "target_weight": torch.stack([batch[i]["target_weight"] for i in pos.tolist()]),
        }
    shared["targets"] = targets
    return shared


# ----------------------------------------------------------------------------------------- keypoint remapping
# Joints of a target definition that are the midpoint of two source joints (used when the source lacks them).
MIDPOINTS: Mapping[str, Tuple[str, str]] = {"neck": ("left_shoulder", "right_shoulder")}


def remap_coco_keypoints(src_ann: Union[str, os.PathLike], dst_ann: Union[str, os.PathLike], src: DatasetInfo,
                         dst: DatasetInfo, midpoints: Mapping[str, Tuple[str, str]] = MIDPOINTS) -> int:
    """Rewrite a COCO-format keypoint file from ``src``'s keypoint definition to ``dst``'s, by joint name.

    A destination joint takes the source joint of the same name; failing that, the midpoint of the two
    ``midpoints`` joints when both are labelled (visibility the smaller of the two); else it is unlabelled
    (0, 0, 0). ``num_keypoints`` and the category's ``keypoints``/``skeleton`` follow ``dst``; persons left
    without a labelled joint keep their box but have ``num_keypoints`` 0 (the loader skips them, as COCO's).
    Returns the number of annotations written.
    """
    data = json.loads(Path(src_ann).read_text())
    index = {n: i for i, n in enumerate(src.keypoint_names)}
    for ann in data["annotations"]:
        kpts = np.asarray(ann.get("keypoints", [0] * 3 * src.num_keypoints), np.float64).reshape(-1, 3)
        if len(kpts) != src.num_keypoints:
            raise ValueError(f"annotation {ann.get('id')} has {len(kpts)} keypoints, {src.name} has "
                             f"{src.num_keypoints}")
        out = np.zeros((dst.num_keypoints, 3))
        for j, name in enumerate(dst.keypoint_names):
            if name in index:
                out[j] = kpts[index[name]]
            elif name in midpoints:
                a, b = (kpts[index[n]] for n in midpoints[name])
                if a[2] > 0 and b[2] > 0:
                    out[j] = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, min(a[2], b[2])]
        ann["keypoints"] = [round(float(v), 2) if k % 3 != 2 else int(v) for k, v in enumerate(out.reshape(-1))]
        ann["num_keypoints"] = int((out[:, 2] > 0).sum())
    for cat in data.get("categories", []):
        cat["keypoints"] = list(dst.keypoint_names)
        cat["skeleton"] = [[a + 1, b + 1] for a, b in dst.skeleton]
    Path(dst_ann).parent.mkdir(parents=True, exist_ok=True)
    Path(dst_ann).write_text(json.dumps(data))
    return len(data["annotations"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description="Copy a COCO-layout keypoint folder under another keypoint "
                                            "definition (annotations rewritten by joint name, images linked).")
    p.add_argument("--src", type=Path, required=True, help="COCO-layout folder (annotations/, train2017/, ...)")
    p.add_argument("--dst", type=Path, required=True)
    p.add_argument("--as", dest="target", default="aic", help="destination dataset definition (default aic)")
    p.add_argument("--from", dest="source", default="coco", help="source dataset definition (default coco)")
    args = p.parse_args(argv)
    src, dst = get_dataset(args.source), get_dataset(args.target)
    anns = sorted((args.src / "annotations").glob("person_keypoints_*.json"))
    if not anns:
        raise FileNotFoundError(f"no annotations/person_keypoints_*.json under {args.src}")
    for ann in anns:
        split = ann.stem[len("person_keypoints_"):]
        n = remap_coco_keypoints(ann, args.dst / "annotations" / ann.name, src, dst)
        link = args.dst / split
        if not link.exists() and (args.src / split).is_dir():
            link.symlink_to(os.path.relpath((args.src / split).resolve(), args.dst.resolve()),
                            target_is_directory=True)
        print(f"{split}: {n} annotations as {dst.name} -> {args.dst / 'annotations' / ann.name}")


if __name__ == "__main__":
    main()
