"""``vitpose-fast merge DIR [--ann ANN.json]``: the ``parts/`` of a sharded or Ray ``predict`` folder ->
``DIR/results.json`` again (:mod:`vitpose_fast.inference.sharding`)."""

from __future__ import annotations

from pathlib import Path

from vitpose_fast.cli.common import CliError, warn
from vitpose_fast.cli.sharded import ids_for, merge_summary


def add_parser(sub) -> None:
    m = sub.add_parser("merge", help="merge the parts of a sharded or Ray predict folder into FOLDER/results.json")
    m.add_argument("folder", help="the --out folder of `predict --engine ray` or of a torchrun predict")
    m.add_argument("--ann", help="COCO json whose images give the image ids (by file name); default: the "
                                 "number in each file name")
    m.set_defaults(func=run, batch_size=1)


def run(args) -> int:
    from vitpose_fast.inference.sharding import PARTS, merge

    if not (Path(args.folder) / PARTS).is_dir():
        raise CliError(f"{args.folder} has no {PARTS}/ folder: expected the --out folder of a sharded or Ray predict")
    summary = merge(args.folder, ids_for(args.ann), warn)
    for path, error in sorted(summary["failed"].items()):
        warn(f"no results for an image: {error}")
    return merge_summary(args.folder, summary, len(summary["failed"]), summary["images"] + len(summary["failed"]))
