"""``vitpose-fast eval --weights W --ann ANN.json --images DIR [--dets DETS.json] [--no-flip]``

The official COCO top-down evaluation (:mod:`vitpose_fast.inference.evaluation`, the same as training's): GT
boxes (official clean-up: clipped, ``w - 1``) or detections, flip test, rescoring, OKS-NMS, ``COCOeval``; prints
the AP table (fractions, as training logs them). ``--precision fp8`` measures FP8's AP on your data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from vitpose_fast.cli import common
from vitpose_fast.cli.common import CliError, warn
from vitpose_fast.data.datasets import DATASETS


def add_parser(sub) -> None:
    e = sub.add_parser("eval", parents=[common.inference_options()], help="COCO keypoint AP on an annotated image set")
    e.add_argument("--ann", required=True, help="COCO person_keypoints json")
    e.add_argument("--images", required=True, help="image folder")
    e.add_argument("--dets", help="COCO detection results json (default: GT boxes)")
    e.add_argument("--det-thr", type=float, default=0.0, help="minimum detection score (official: 0.0)")
    e.add_argument("--allow-unmatched-dets", action="store_true",
                   help="warn about (instead of refusing) detections of images not in --ann")
    e.add_argument("--out", help="also write the final (rescored, NMS'd) results json")
    e.set_defaults(func=run)


def run(args) -> int:
    from vitpose_fast.cli.common import stream
    from vitpose_fast.cli.predict import report_matching
    from vitpose_fast.data.coco import load_coco
    from vitpose_fast.data.detections import read_detections
    from vitpose_fast.inference.evaluation import EvalPersons, eval_boxes, format_ap_table, score_persons

    if args.out:
        common.check_output_file(args.out, "--out")
    if not Path(args.images).is_dir():
        raise CliError(f"--images {args.images}: no such folder")
    try:
        coco = load_coco(args.ann)
    except (AssertionError, KeyError, TypeError, ValueError) as e:  # pycocotools asserts the layout
        raise CliError(f"--ann {args.ann}: not a COCO keypoints annotation file ({type(e).__name__}: {e})") from None
    except ImportError as e:  # no pycocotools here
        raise CliError(str(e)) from None
    image_ids = sorted(coco.getImgIds())
    names = [coco.loadImgs(i)[0]["file_name"] for i in image_ids]
    dets = None
    if args.dets:
        found = read_detections(args.dets, args.det_thr)
        if found.skipped_note():
            warn(found.skipped_note())
        dets = found.kept
    boxes, unmatched = eval_boxes(coco, image_ids, dets)
    if dets is not None:
        if unmatched:
            examples = sorted({str(d.get("file_name") or d["image_id"]) for d in unmatched})[:5]
            msg = (f"{len(unmatched)} of {len(dets)} detections in {args.dets} name images that are not in "
                   f"{args.ann} (e.g. {', '.join(examples)})")
            if not args.allow_unmatched_dets:
                raise CliError(msg + "; wrong detection file? (--allow-unmatched-dets ignores them)")
            warn(msg + "; ignored")
        report_matching(dets, [], len(image_ids), sum(not len(b) for b in boxes), args.dets)
    paths = [Path(args.images) / n for n in names]
    model = common.inference_model(args, "eval")
    info, k = common.resolve_dataset(model, args)
    if info is None or info.sigmas is None:
        raise CliError(f"COCOeval needs OKS sigmas for the head's {k} keypoints: pass --dataset NAME "
                       f"({', '.join(sorted(n for n, d in DATASETS.items() if d.sigmas))})")
    in_h, in_w = model.config.backbone.img_size
    persons = EvalPersons()
    failed: List[str] = []
    items = ((str(paths[i]), boxes[i], i) for i in range(len(image_ids)) if len(boxes[i]))
    for r in stream(model, items, args, info, sum(len(b) for b in boxes), "eval"):
        if r.error is not None:
            failed.append(str(paths[r.meta]))
            continue
        persons.add(image_ids[r.meta], r.persons, boxes[r.meta], in_w / in_h)
    if not len(persons):
        raise CliError("no persons to evaluate (no boxes in the annotation or detection file, or no readable image)")
    results, stats = score_persons(persons, coco, sigmas=info.sigmas)
    if args.out:
        name_of = dict(zip(image_ids, names))
        for r in results:
            r["file_name"] = name_of[r["image_id"]]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results))
    source = f"detections {args.dets}" if args.dets else "GT boxes"
    print(f"{info.name} keypoints, {len(image_ids)} images, {source}, flip test {'off' if args.no_flip else 'on'}:")
    print(format_ap_table(stats))
    if failed:
        warn(f"{len(failed)} images could not be read and were skipped (their people count as missed): "
             f"{', '.join(failed[:10])}{', ...' if len(failed) > 10 else ''}")
        return 1
    return 0
