"""Validation during training: the COCO evaluation of :mod:`vitpose_fast.inference.evaluation` (the one
``vitpose-fast eval`` runs) with the val images shared among the processes and their persons gathered on rank 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from vitpose_fast.data.coco import load_coco
from vitpose_fast.data.datasets import DatasetInfo, get_dataset
from vitpose_fast.data.detections import read_detections
from vitpose_fast.data.multi import DatasetSource
from vitpose_fast.inference.evaluation import EvalPersons, coco_subset, eval_boxes, score_persons
from vitpose_fast.training.distributed import is_sharded, local_copy
from vitpose_fast.training.loop import all_gather, unwrap
from vitpose_fast.training.presets import TrainPreset

__all__ = ["evaluate", "evaluate_sets", "run_evaluation", "eval_note"]


@torch.no_grad()
def evaluate(model: nn.Module, pre: TrainPreset, paths: Dict[str, Optional[Path]], rank: int, world: int,
             max_images: Optional[int] = None, out_dir: Optional[Path] = None, info: Optional[DatasetInfo] = None,
             dataset_index: Optional[int] = None) -> Dict[str, float]:
    """Top-down COCO evaluation: the official test pipeline (:func:`vitpose_fast.inference.pipeline.predict_iter`:
    UDP crop, flip test, UDP decoding; the standard crop and ``default`` decoding for MSRA-trained sets) on this
    rank's share of the val images, persons gathered on rank 0, rescoring, OKS-NMS and COCOeval with the set's
    sigmas. Boxes: the GT boxes with ``use_gt_bbox`` or without a detection file, else the detections.
    ``info`` is the set's metadata (default the preset's dataset) and ``dataset_index`` the expert/head to
    predict with. Returns the COCOeval stats (AP, AP50, ...) on every rank; rank 0 writes the kept COCO-format
    results to ``out_dir/val_keypoints.json`` (``val_keypoints_NAME.json`` with a ``dataset_index``).

    The training model runs eagerly (``pipeline.predict_iter``): ``Model.predict`` would set it up for
    inference in place (folded BatchNorms, cast weights), which a model still in training must not get."""
    from vitpose_fast.inference.pipeline import predict_iter

    info = get_dataset(pre.data.dataset) if info is None else info
    udp = pre.data.udp if dataset_index is None else info.encoding == "udp"
    coco = load_coco(paths["val_ann"])
    image_ids = sorted(coco.getImgIds())[:max_images] if max_images else sorted(coco.getImgIds())
    det_file = None if pre.data.use_gt_bbox else paths["det_file"]
    dets = read_detections(det_file, pre.data.det_bbox_thr).kept if det_file is not None else None
    boxes, _ = eval_boxes(coco, image_ids, dets)
    in_h, in_w = pre.model.backbone.img_size
    mine = [k for k in range(rank, len(image_ids), world) if len(boxes[k])]
    items = ((str(paths["val_images"] / coco.loadImgs(image_ids[k])[0]["file_name"]), boxes[k], k) for k in mine)
    persons = EvalPersons()
    for r in predict_iter(model, items, box_format="xywh", flip_test=pre.data.flip_test,
                          decode="udp" if udp else "default", batch_size=pre.val_batch_size,
                          dataset_index=dataset_index, dataset=info):
        persons.add(image_ids[r.meta], r.persons, boxes[r.meta], in_w / in_h)
    gathered = all_gather(persons, world)
    stats: Dict[str, float] = {}
    if rank == 0:
        everyone = EvalPersons.merge(gathered)
        if len(everyone):
            gt = coco if not max_images else coco_subset(coco, image_ids)
            results, stats = score_persons(everyone, gt, sigmas=info.sigmas)
            if out_dir is not None:
                name = "val_keypoints.json" if dataset_index is None else f"val_keypoints_{info.name}.json"
                (out_dir / name).write_text(json.dumps(results))
        else:
            stats = {"AP": 0.0}
    return all_gather(stats, world)[0]


def evaluate_sets(model: nn.Module, pre: TrainPreset, sources: List[DatasetSource], rank: int, world: int,
                  max_images: Optional[int], out_dir: Optional[Path], log) -> Dict[str, float]:
    """:func:`evaluate` on every multi-dataset set with validation files, each with its own head, expert, flip
    pairs, decoding and OKS sigmas. Returns ``{"NAME/AP": ..., ...}`` plus ``AP``, the mean AP over the sets."""
    stats: Dict[str, float] = {}
    aps = []
    for src in sources:
        if src.val_ann is None:
            continue
        if src.info.sigmas is None:
            log(f"{src.info.name}: no OKS sigmas in its metadata, skipping COCOeval")
            continue
        paths = {"val_ann": src.val_ann, "val_images": src.val_images, "det_file": src.det_file}
        one = evaluate(model, pre, paths, rank, world, max_images, out_dir, info=src.info, dataset_index=src.index)
        stats.update({f"{src.info.name}/{k}": v for k, v in one.items()})
        aps.append(one.get("AP", 0.0))
    if aps:
        stats["AP"] = float(np.mean(aps))
    return stats


def eval_note(src: DatasetSource, use_gt_bbox: bool) -> str:
    if src.val_ann is None:
        return "not evaluated (no val files)"
    return f"evaluated on {'ground-truth boxes' if use_gt_bbox or src.det_file is None else src.det_file}"


def run_evaluation(ddp_model: nn.Module, pre: TrainPreset, paths: Dict[str, Optional[Path]], rank: int, world: int,
                   max_images: Optional[int], out_dir: Optional[Path], backend: str = "auto",
                   sources: Optional[List[DatasetSource]] = None, log=print) -> Dict[str, float]:
    """Evaluate the current weights (every ``sources`` set when given): every rank scores its share of the images,
    rank 0 gathers them and runs COCOeval once. FSDP: each rank scores with a plain copy holding the full weights
    (a sharded forward would need every rank in every call, and ranks score different numbers of boxes)."""
    if sources is not None:
        return evaluate_sets(unwrap(ddp_model), pre, sources, rank, world, max_images, out_dir, log)
    scorer = local_copy(ddp_model, backend) if is_sharded(ddp_model) else unwrap(ddp_model)
    return evaluate(scorer, pre, paths, rank, world, max_images, out_dir)
