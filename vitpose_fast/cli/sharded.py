"""``predict`` past one process: ``--engine ray`` (Ray Data actors, :mod:`vitpose_fast.ray`) or this torchrun
rank's share of the sorted paths (:mod:`vitpose_fast.inference.sharding`). Both write per-image rows into
``--out``'s ``parts/``, merged into ``--out/results.json`` (the COCO results ``predict`` writes); a rerun skips
the images already written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from vitpose_fast.cli import common
from vitpose_fast.cli.common import CliError, warn


def add_options(p) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (under torchrun: this rank's share, --out is then a folder); "
                        "ray: Ray Data workers, --out is a folder")
    p.add_argument("--address", default=None, help="--engine ray: the cluster (auto: the running one; default: "
                                                    "a local one)")
    p.add_argument("--workers", type=common.positive_int, default=1, help="--engine ray: model actors (one per GPU)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="--engine ray: GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="--engine ray: CPUs per actor (default: 1 with GPUs; else the cluster's CPUs less one, shared)")
    p.add_argument("--format", choices=("parquet", "json"), default="parquet", help="--engine ray: Ray's writer")


def is_sharded(args) -> bool:
    """Whether ``--out`` is a results folder of parts (``--engine ray``, or started by torchrun); checks it."""
    from vitpose_fast.inference.sharding import torchrun_rank

    if args.engine == "local" and torchrun_rank() is None:
        return False
    where = "with --engine ray" if args.engine == "ray" else "under torchrun"
    if Path(args.out).suffix == ".json" and not Path(args.out).is_dir():
        raise CliError(f"--out {args.out}: {where} --out is a folder (parts/ and results.json go in it)")
    common.check_output_dir(args.out, "--out")
    if args.engine == "local" and args.device == "cuda":  # one GPU per rank of the node
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if args.vis:
        raise CliError(f"--vis is for one process, not {where}")
    if args.strict and args.engine == "ray":
        raise CliError("--strict is not for --engine ray: its bad images are reported once the run ends")
    return True


def merge_summary(out: str, summary: dict, failed: int, total: int) -> int:
    from vitpose_fast.inference.sharding import RESULTS

    print(f"wrote {summary['persons']} persons from {summary['images']} images to {Path(out) / RESULTS}")
    if failed:
        warn(f"{failed} of {total} images could not be read and were skipped (a rerun retries them)")
        return 1
    return 0


def ids_for(ann: Optional[str]):
    from vitpose_fast.data.detections import image_ids_of, read_annotation_images

    ann_images = read_annotation_images(ann) if ann else None
    return lambda paths: image_ids_of([Path(p) for p in paths], ann_images)


def predict_shard(args, model, info, k, paths, per_image, detector) -> int:
    """This torchrun rank's share into ``--out``'s parts; rank 0 merges them at the end."""
    from vitpose_fast.inference.sharding import TorchrunShard

    shard = TorchrunShard(args.out, [str(p) for p in paths], k, warn)
    args.quiet = args.quiet or shard.rank != 0
    if shard.skipped:
        warn(f"rank {shard.rank}: {shard.skipped} images already have results in {args.out}; skipped")
    items = ((str(paths[i]), per_image[i], i) for i in shard.todo)
    total = None if detector is not None else sum(1 if per_image[i] is None else len(per_image[i])
                                                  for i in shard.todo)
    failed = 0
    for r in common.stream(model, items, args, info, total, f"predict (rank {shard.rank})", detector):
        if r.error is not None:
            failed += 1
        else:
            shard.writer.add(shard.paths[r.meta], r.persons)
    failed, summary = shard.finish(failed, ids_for(args.ann), warn)
    if summary is None:
        return 1 if failed else 0
    return merge_summary(args.out, summary, failed, len(set(shard.paths)))


def predict_ray(args, paths, per_image) -> int:
    """``--engine ray``: Ray Data writes the parts (:func:`vitpose_fast.ray.predict_folder`); then they are merged."""
    from vitpose_fast.inference.sharding import merge
    from vitpose_fast.ray import predict_folder

    boxes = None if args.boxes is None else {str(p): b for p, b in zip(paths, per_image)}
    predict_folder([str(p) for p in paths], args.out, weights=args.weights, workers=args.workers,
                   gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker, boxes=boxes,
                   output_format=args.format, address=args.address, model=args.model,
                   batch_size=args.batch_size, precision=args.precision, flip_test=not args.no_flip,
                   decode=args.decode, dataset_index=args.dataset_index, dataset=args.dataset, box_format="xywh",
                   detector=args.detector, det_thr=args.det_thr, det_classes=args.det_classes)
    summary = merge(args.out, ids_for(args.ann), warn)
    for path, error in sorted(summary["failed"].items()):
        warn(f"skipped an image: {error}")
    return merge_summary(args.out, summary, len(summary["failed"]), len(set(map(os.path.abspath, paths))))
