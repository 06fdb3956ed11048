"""Tracking benchmark with ground truth: HOTA / IDF1 / MOTA / id switches, smoothing jitter and lag, frames/s.

    python benchmarks/bench_tracking.py                         # synthetic video, tiny random-weight model, CPU
    python benchmarks/bench_tracking.py --weights model.pth --device cuda --frames 500

The video (:mod:`vitpose_fast.data.synthetic_video`): two people crossing with a 3-frame detection gap at the
crossing, a still person, a person who leaves and comes back, MOTChallenge ground truth. Rows:

- ``tracker, IoU only`` / ``tracker, IoU + OKS``: the tracker alone (:mod:`vitpose_fast.inference.tracking`)
  on the given boxes (ground truth jittered by 2 %, with the gaps), in shuffled order, with the true keypoints
  plus Gaussian noise (``--kpt-noise`` of the box height) as the pose model's output: what association does with
  a good pose model, independently of the model's weights;
- ``predict_video ...``: the whole pipeline (decode, pose model, tracking, smoothing, JSON and annotated video)
  on the rendered video with the given boxes, every frame and ``--detect-every`` N; the model is ``--weights``
  or, by default, a tiny random-weight one, whose keypoints are noise (its rows measure throughput; their
  tracking metrics rest on IoU and motion). ``model-only persons/s`` is the forward pass alone on as many crops
  in batches of ``--batch-size`` (flip test included), the ceiling of the pipeline's persons/s.

Metrics from ``motmetrics`` (IDF1, MOTA, IDSW) and ``trackeval`` (HOTA; absent unless installed, see
:mod:`vitpose_fast.inference.track_eval`). The person who comes back gets a new id (no re-identification), which
is one id switch and the rest of that person's frames as IDF1 misses in every row.

Smoothing (tracker rows, One-Euro with the documented defaults): jitter = RMS keypoint error of the still person,
raw and smoothed; lag = the delay (frames) that best aligns the walkers' smoothed keypoints with the true ones,
and their RMS error raw and smoothed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from vitpose_fast import Model
from vitpose_fast.benchmarking.common import RESULTS_DIR, environment, markdown_table, text_table, write_json
from vitpose_fast.data.datasets import COCO
from vitpose_fast.data.synthetic_video import VideoGroundTruth, make_synthetic_video, synthetic_video_ground_truth
from vitpose_fast.inference.smoothing import KeypointSmoother, OneEuroConfig
from vitpose_fast.inference.track_eval import evaluate_tracking, keypoint_jitter, keypoint_lag
from vitpose_fast.inference.tracking import PoseTracker, TrackerConfig, box_iou
from vitpose_fast.inference.video import load_frame_boxes

COLUMNS = ("row", "HOTA", "IDF1", "MOTA", "IDSW", "frames/s", "persons/s", "model-only persons/s")
SMOOTH_COLUMNS = ("still jitter raw px", "still jitter smoothed px", "walkers lag frames", "walkers RMS raw px",
                  "walkers RMS smoothed px")


def ground_truth_boxes(truth: VideoGroundTruth) -> Dict[int, Dict[int, np.ndarray]]:
    return {f: {pid: box for pid, (box, _) in people.items()} for f, people in enumerate(truth.frames)}


def simulated_poses(truth: VideoGroundTruth, noise: float, seed: int = 0):
    """Per frame: the given boxes [N, 5] in a random order, "predicted" keypoints [N, 17, 3] (true keypoints of
    the person the box belongs to, plus Gaussian noise of ``noise`` x box height; score 0.9 inside the frame,
    0.05 outside) and the true id of each box."""
    rng = np.random.default_rng(seed)
    out = []
    for f, people in enumerate(truth.frames):
        det = truth.detections[f]
        gid = sorted(people)
        iou = box_iou(det[:, :4], np.array([people[i][0] for i in gid]).reshape(-1, 4))
        owners = [gid[int(j)] for j in iou.argmax(1)] if len(det) else []
        kps = np.zeros((len(det), 17, 3))
        for j, pid in enumerate(owners):
            k = people[pid][1]
            kps[j, :, :2] = k[:, :2] + rng.normal(0, noise * (det[j, 3] - det[j, 1]), (17, 2))
            kps[j, :, 2] = np.where(k[:, 2] > 0, 0.9, 0.05)
        order = rng.permutation(len(det))
        out.append((det[order], kps[order], [owners[j] for j in order]))
    return out


def run_tracker(truth: VideoGroundTruth, poses, config: TrackerConfig, smoothing: Optional[OneEuroConfig] = None):
    """The tracker (and smoother) over :func:`simulated_poses` -> ({frame: {track id: box}}, {true id: [(frame,
    raw keypoints, smoothed keypoints)]})."""
    tracker = PoseTracker(config, COCO.sigmas)
    smoother = KeypointSmoother(smoothing) if smoothing is not None else None
    results: Dict[int, Dict[int, np.ndarray]] = {}
    series: Dict[int, List] = {}
    for f, (det, kps, owners) in enumerate(poses):
        ids = tracker.update(det, kps)
        results[f] = {int(i): det[j, :4] for j, i in enumerate(ids)}
        if smoother is not None:
            t = f / truth.fps
            for j, i in enumerate(ids):
                smoothed = smoother(int(i), kps[j], t, det[j, :4])
                series.setdefault(owners[j], []).append((f, kps[j], smoothed))
            smoother.keep_only(tr.id for tr in tracker.tracks)
    return results, series


def smoothing_metrics(truth: VideoGroundTruth, series) -> Dict[str, float]:
    still = series[truth.still_id]
    true_still = truth.frames[0][truth.still_id][1]
    out = {"still jitter raw px": keypoint_jitter(np.array([r for _, r, _ in still]), true_still),
           "still jitter smoothed px": keypoint_jitter(np.array([s for _, _, s in still[10:]]), true_still)}
    lags, raw, smooth = [], [], []
    for pid in (1, 2):  # the walkers, present in every frame (their detection gaps filled by the last value)
        frames = {f: (r, s) for f, r, s in series[pid]}
        seq = [frames.get(f) for f in range(len(truth.frames))]
        last = None
        for f, v in enumerate(seq):
            seq[f] = last = v if v is not None else last
        r = np.array([v[0] for v in seq])[10:]
        s = np.array([v[1] for v in seq])[10:]
        gt = np.array([truth.frames[f][pid][1] for f in range(len(truth.frames))])[10:]
        lags.append(keypoint_lag(s, gt))
        raw.append(keypoint_jitter(r, gt))
        smooth.append(keypoint_jitter(s, gt))
    out.update({"walkers lag frames": float(np.mean(lags)), "walkers RMS raw px": float(np.mean(raw)),
                "walkers RMS smoothed px": float(np.mean(smooth))})
    return out


def tracker_rows(truth: VideoGroundTruth, noise: float, smoothing: OneEuroConfig) -> List[Dict[str, object]]:
    poses = simulated_poses(truth, noise)
    gt = ground_truth_boxes(truth)
    rows = []
    run_tracker(truth, poses[:5], TrackerConfig())  # warm-up: SciPy's import is not the tracker's time
    for name, weight in (("tracker, IoU only", 1.0), ("tracker, IoU + OKS", TrackerConfig().iou_weight)):
        start = time.perf_counter()
        results, series = run_tracker(truth, poses, TrackerConfig(iou_weight=weight), smoothing)
        seconds = time.perf_counter() - start
        row = {"row": name, **evaluate_tracking(gt, results, len(truth.frames)),
               "frames/s": len(truth.frames) / seconds}
        row.update(smoothing_metrics(truth, series))
        rows.append(row)
    return rows


def jsonl_tracks(path: Path) -> Dict[int, Dict[int, np.ndarray]]:
    out = {}
    for line in path.read_text().splitlines():
        d = json.loads(line)
        out[d["frame"]] = {p["track_id"]: np.array(p["box"]) for p in d["persons"]}
    return out


def model_only_rate(model, crops: int, batch_size: int, flip: bool) -> float:
    """Persons/s of the forward pass alone on ``crops`` random crops (twice as many images with the flip test)."""
    h, w = model.config.backbone.img_size
    per = max(1, batch_size // 2) if flip else batch_size
    x = torch.randn(per * (2 if flip else 1), 3, h, w, dtype=next(model.parameters()).dtype,
                    device=next(model.parameters()).device)
    with torch.inference_mode():
        model(x)  # warm-up
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        done = 0
        while done < crops:
            model(x)
            done += per
        if x.is_cuda:
            torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def pipeline_rows(truth_dir: Path, model, detect_every: Sequence[int], batch_size: int, flip: bool,
                  frames: int) -> List[Dict[str, object]]:
    data = make_synthetic_video(truth_dir, num_frames=frames)
    gt = ground_truth_boxes(data.truth)
    boxes = load_frame_boxes(data.boxes_file)
    rows = []
    for n in detect_every:
        out = truth_dir / f"poses_every{n}.jsonl"
        stats = model.predict_video(data.video, out, vis=truth_dir / f"vis_every{n}.mp4", boxes=boxes, track=True,
                                    smooth="one_euro", detect_every=n, progress=False, batch_size=batch_size,
                                    flip_test=flip)
        row = {"row": f"predict_video, detect every {n}", **evaluate_tracking(gt, jsonl_tracks(out), frames),
               "frames/s": stats["fps"], "persons/s": stats["persons_per_s"]}
        rows.append(row)
    rate = model_only_rate(model, sum(len(b) for b in boxes.values()), batch_size, flip)
    for row in rows:
        row["model-only persons/s"] = rate
    return rows


def tiny_model() -> Model:
    torch.manual_seed(0)
    return Model.from_config("vitpose_s", depth=2, embed_dim=64, num_heads=2, res=(128, 96),
                             deconv_channels=(32, 32)).eval()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=250, help="length of the synthetic video (25 fps)")
    parser.add_argument("--weights", help="checkpoint for the pipeline rows (default: a tiny random-weight model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--detect-every", type=int, nargs="*", default=(1, 4))
    parser.add_argument("--kpt-noise", type=float, default=0.015, help="simulated keypoint noise, x box height")
    parser.add_argument("--tracker-only", action="store_true", help="skip the pipeline rows")
    parser.add_argument("--out", help="result JSON (default: runs/benchmarks/tracking_<device>_<date>.json)")
    args = parser.parse_args(argv)

    smoothing = OneEuroConfig()
    truth = synthetic_video_ground_truth(args.frames)
    rows = tracker_rows(truth, args.kpt_noise, smoothing)
    if not args.tracker_only:
        model = (Model.from_pretrained(args.weights) if args.weights else tiny_model()).to(args.device).eval()
        with tempfile.TemporaryDirectory() as tmp:
            rows += pipeline_rows(Path(tmp), model, args.detect_every, args.batch_size, not args.no_flip,
                                  args.frames)
    print(text_table(rows, COLUMNS))
    print()
    print(text_table([r for r in rows if "still jitter raw px" in r], ("row",) + SMOOTH_COLUMNS))
    payload = {"environment": environment(torch.device(args.device)), "frames": args.frames,
               "kpt_noise": args.kpt_noise, "smoothing": vars(smoothing), "tracker": vars(TrackerConfig()),
               "rows": rows, "markdown": markdown_table(rows, COLUMNS)}
    import datetime

    path = Path(args.out) if args.out else RESULTS_DIR / f"tracking_{args.device}_{datetime.date.today()}.json"
    write_json(path, payload)
    smooth_rows = [r for r in rows if "still jitter raw px" in r]
    path.with_suffix(".md").write_text(
        f"# Tracking benchmark ({args.frames}-frame synthetic video, {args.device})\n\n"
        + markdown_table(rows, COLUMNS) + "\n\n" + markdown_table(smooth_rows, ("row",) + SMOOTH_COLUMNS) + "\n")
    print(f"\nwrote {path} and {path.with_suffix('.md')}")
    return payload


if __name__ == "__main__":
    main()
