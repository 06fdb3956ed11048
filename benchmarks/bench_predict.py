"""What a user gets with the defaults, against what they would use otherwise (ratios in one run, one machine).

    python benchmarks/bench_predict.py                 # writes runs/bench_predict/<device>_<date>.{json,md}
    python benchmarks/bench_predict.py --repeats 3 --out runs/mine

1. ``predict``: ``Model.predict(image, boxes)`` with its defaults (precision by hardware, flip test, UDP) on one
   1280x720 image with 16 persons, end to end (image in, keypoints out), against transformers'
   ``VitPoseImageProcessor`` + ``VitPoseForPoseEstimation`` in fp32 on the same weights (loaded from
   ``Model.save_pretrained_hf``) doing the same work: crops, forward, flipped forward with ``flip_pairs``,
   averaged heatmaps, ``post_process_pose_estimation``. Target (CPU): >= 1.5x.
2. ``optimize``: a forward of ``Model.optimize(batch)`` with its defaults against ONNX Runtime (CPU, fp32) on the
   model's own ONNX export (``Model.export_onnx``), batch 8 crops. Target (CPU): >= 1.5x.

ViTPose-B 256x192 (classic head), random weights drawn wider than the official init (which gives nearly flat
heatmaps whose argmax is arbitrary). Each side is warmed up once, then timed ``--repeats`` times; the median is
reported. The keypoints of both sides of (1) are compared too (median pixel distance and the share within 2 px;
the two decoders differ on degenerate maps), so a fast wrong answer shows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from vitpose_fast import Model
from vitpose_fast.benchmarking.common import device_slug, environment, markdown_table
from vitpose_fast.data.datasets import COCO
from vitpose_fast.model.precision import choose_precision

TARGET = 1.5
IMAGE_HW = (720, 1280)
PERSONS = 16


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: thread pools, allocator, oneDNN primitives
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _scene(seed: int):
    rng = np.random.default_rng(seed)
    h, w = IMAGE_HW
    small = rng.uniform(0, 255, (h // 20, w // 20, 3)).astype(np.uint8)
    image = np.kron(small, np.ones((20, 20, 1), np.uint8))  # blocky but not flat: crops differ
    xy = np.stack([rng.uniform(0, w - 200, PERSONS), rng.uniform(0, h - 300, PERSONS)], 1)
    wh = np.stack([rng.uniform(60, 200, PERSONS), rng.uniform(120, 300, PERSONS)], 1)
    return image, np.concatenate([xy, xy + wh], 1).astype(np.float32)  # xyxy


def bench_predict(folder: Path, repeats: int) -> Dict[str, object]:
    from transformers import VitPoseForPoseEstimation
    from transformers.models.vitpose.image_processing_pil_vitpose import VitPoseImageProcessorPil

    image, xyxy = _scene(0)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
    ours = Model.from_pretrained(folder)
    hf = VitPoseForPoseEstimation.from_pretrained(str(folder)).eval()
    proc = VitPoseImageProcessorPil(size={"height": 256, "width": 192})
    pairs = torch.tensor(COCO.flip_pairs)

    def run_ours():
        return ours.predict(image, xyxy)

    def run_hf():
        with torch.inference_mode():
            pv = proc(images=[image], boxes=[xywh], return_tensors="pt").pixel_values
            out = hf(pixel_values=pv)
            flipped = hf(pixel_values=pv.flip(3), flip_pairs=pairs)
            out.heatmaps = (out.heatmaps + flipped.heatmaps) * 0.5
            return proc.post_process_pose_estimation(out, boxes=[xywh])

    ours_ms = _median_ms(run_ours, repeats)
    hf_ms = _median_ms(run_hf, repeats)
    a = np.stack([p["keypoints"][:, :2] for p in run_ours()])
    b = np.stack([p["keypoints"].numpy() for p in run_hf()[0]])
    dist = np.linalg.norm(a - b, axis=-1)  # the baseline's DARK blur differs from the official one we follow
    return {"case": "predict", "baseline": "transformers VitPoseImageProcessor(PIL) + VitPoseForPoseEstimation fp32",
            "ours": f"Model.predict defaults ({ours.precision})", "ours_ms": ours_ms, "baseline_ms": hf_ms,
            "speedup": hf_ms / ours_ms, "target": TARGET, "kpt_median_px": float(np.median(dist)),
            "kpt_within_2px": float((dist <= 2).mean())}


def bench_optimize(folder: Path, repeats: int, batch: int) -> Dict[str, object]:
    import onnxruntime as ort

    x = torch.randn(batch, 3, 256, 192)
    onnx_path = folder / "model.onnx"
    Model.from_pretrained(folder).export_onnx(onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: x.numpy()}
    model = Model.from_pretrained(folder).optimize(batch)

    def run_ours():
        with torch.inference_mode():
            return model(x)

    ours_ms = _median_ms(run_ours, repeats)
    ort_ms = _median_ms(lambda: session.run(None, feed), repeats)
    return {"case": f"optimize, batch {batch}", "baseline": "ONNX Runtime fp32 (CPU) on Model.export_onnx",
            "ours": f"Model.optimize defaults ({model.precision})", "ours_ms": ours_ms, "baseline_ms": ort_ms,
            "speedup": ort_ms / ours_ms, "target": TARGET}


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per side (the median is reported)")
    p.add_argument("--batch", type=int, default=8, help="crops per forward in the optimize case")
    p.add_argument("--only", choices=("predict", "optimize"), help="run one case")
    p.add_argument("--depth", type=int, default=None, help="fewer blocks (a quick check; figures then say so)")
    p.add_argument("--out", default="runs/bench_predict", help="output folder (JSON + Markdown)")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    device = torch.device("cpu")
    torch.manual_seed(0)
    chosen, why = choose_precision(None, device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        folder = Path(tmp)
        overrides = {} if args.depth is None else {"depth": args.depth}
        model = Model.from_config("vitpose_b", **overrides).eval()
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0, 0.05)
        model.save_pretrained_hf(folder)
        if args.only in (None, "predict"):
            rows.append(bench_predict(folder, args.repeats))
        if args.only in (None, "optimize"):
            rows.append(bench_optimize(folder, args.repeats, args.batch))
    model_name = "vitpose_b 256x192" + ("" if args.depth is None else f", depth {args.depth}")
    payload = {"benchmark": "bench_predict", "model": model_name, "default_precision": chosen,
               "why": why, "repeats": args.repeats, "rows": rows, "environment": environment(device),
               "threads": torch.get_num_threads()}
    cols = ["case", "ours", "baseline", "ours_ms", "baseline_ms", "speedup", "target", "kpt_median_px",
            "kpt_within_2px"]
    table = markdown_table(rows, cols)
    print(f"default precision: {chosen} ({why}); {torch.get_num_threads()} threads")
    print(table)
    if not args.no_save:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{device_slug(device)}_{dt.date.today().isoformat()}"
        stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        stem.with_suffix(".md").write_text(f"# bench_predict ({payload['model']})\n\n{table}\n")
        print(f"wrote {stem}.json and .md")
    return payload


if __name__ == "__main__":
    main()
