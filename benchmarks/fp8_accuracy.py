"""What FP8 inference costs in accuracy: fp32 vs bf16 vs fp8 (bf16 with the backbone GEMMs in FP8).

    python benchmarks/fp8_accuracy.py                       # train the tiny model (minutes on CPU), then measure
    python benchmarks/fp8_accuracy.py --weights runs/tiny/final.pth --data-root data/synth   # reuse a trained one
    python benchmarks/fp8_accuracy.py --skip-trained --models vitpose_b,vitpose_h            # random weights only

1. The tiny model trained on the synthetic set exactly as the slow learning test trains it (``tiny_synthetic``,
   300 train / 40 val images, seed 0, 12 epochs): COCO AP on the synthetic val set (detection boxes, flip test,
   rescoring, OKS-NMS: the training script's evaluation) per precision, and the displacement of every labelled
   keypoint of every GT-box person (``Model.predict``, flip test, UDP decoding) against fp32, in heatmap pixels.
   Bars (issue): |AP(fp8) - AP(fp32)| <= 0.01 and median displacement fp8 vs fp32 <= 0.1 heatmap px.
2. Random-weight ViTPose-B 256x192 and ViTPose-H 576x432 on random inputs: heatmap relative error
   ||hm - hm_fp32|| / ||hm_fp32|| and keypoint agreement (share of argmax+UDP keypoints within 1 heatmap pixel of
   fp32's; their median displacement). Random weights give near-flat heatmaps whose argmax a tiny difference can
   move far, so agreement there is a harsh, pessimistic figure; the relative error is the robust one.

On CPU ``torch._scaled_mm`` computes the same products (exact fp8 x fp8 products, fp32 accumulation); on a GPU
only the accumulation order differs. Writes ``benchmarks/results/<device>_fp8_accuracy_<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from vitpose_fast.benchmarking.common import RESULTS_DIR, environment, markdown_table, write_json
from vitpose_fast import Model
from vitpose_fast.data.crop import box_to_center_scale
from vitpose_fast.inference.decode import decode_heatmaps
from vitpose_fast.model.precision import PRECISIONS, PRECISION_DTYPES, apply_precision

TRAIN_IMAGES, VAL_IMAGES, EPOCHS, SEED = 300, 40, 12, 0  # as tests/test_train_ddp.py's learning test
AP_BAR, MEDIAN_PX_BAR = 0.01, 0.1


# ------------------------------------------------------------------------------------------- trained tiny model
def train_tiny(work: Path, epochs: int = EPOCHS) -> Dict[str, Path]:
    """The learning test's data and training run; returns {"weights", "data_root"}."""
    from vitpose_fast.training import train as train_script
    from vitpose_fast.data.synthetic import make_synthetic_coco

    data = make_synthetic_coco(work / "synth", {"train2017": TRAIN_IMAGES, "val2017": VAL_IMAGES}, seed=SEED)
    torch.set_num_threads(2)
    argv = ["--preset", "tiny_synthetic", "--data-root", str(data.root), "--device", "cpu", "--workers", "1",
            "--out", str(work / "run"), "--no-progress", "--seed", str(SEED), "--epochs", str(epochs),
            "--eval-interval", str(epochs)]
    started = time.perf_counter()
    summary = train_script.main(argv)
    print(f"trained the tiny model in {(time.perf_counter() - started) / 60:.1f} min, val AP (fp32) "
          f"{summary['last_eval'].get('AP', float('nan')):.4f}", flush=True)
    return {"weights": work / "run" / "final.pth", "data_root": data.root}


def _as_precision(model: Model, precision: str) -> Model:
    return apply_precision(copy.deepcopy(model), precision)


def _val_persons(coco, image_ids: List[int]):
    """Per image: GT boxes [N, 4] xywh of persons with labelled keypoints and their labels [N, K] (v > 0)."""
    boxes, labelled = [], []
    for img_id in image_ids:
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False))
                if a.get("num_keypoints", 0) > 0 and a["bbox"][2] > 1 and a["bbox"][3] > 1]
        boxes.append(np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4))
        labelled.append(np.array([np.array(a["keypoints"]).reshape(-1, 3)[:, 2] > 0 for a in anns]).reshape(len(anns), -1))
    return boxes, labelled


def tiny_accuracy(weights: Path, data_root: Path, precisions: Sequence[str] = PRECISIONS) -> Dict[str, dict]:
    """AP and keypoint displacement vs fp32 (heatmap pixels) per precision."""
    from vitpose_fast.training import train as train_script
    from vitpose_fast.training.presets import get_preset
    from vitpose_fast.data.coco import load_coco
    from vitpose_fast.inference.pipeline import predict

    pre = get_preset("tiny_synthetic")
    args = train_script.parse_args(["--preset", "tiny_synthetic", "--data-root", str(data_root)])
    paths = train_script.data_paths(args, need_train=False)
    coco = load_coco(paths["val_ann"])
    image_ids = sorted(coco.getImgIds())
    files = [str(paths["val_images"] / coco.loadImgs(i)[0]["file_name"]) for i in image_ids]
    boxes, labelled = _val_persons(coco, image_ids)
    base = Model.from_pretrained(weights).eval()
    in_h, in_w = base.config.backbone.img_size
    hm_h, hm_w = base.config.heatmap_size
    all_boxes = torch.from_numpy(np.concatenate(boxes))
    _, scales = box_to_center_scale(all_boxes, in_w / in_h)
    # UDP maps heatmap [0, size - 1] onto the box's scale * 200 pixels.
    px_per_hm = (scales * 200.0 / torch.tensor([hm_w - 1.0, hm_h - 1.0], dtype=torch.float64)).numpy()
    mask = np.concatenate(labelled).astype(bool)
    out: Dict[str, dict] = {}
    keypoints: Dict[str, np.ndarray] = {}
    for precision in precisions:
        model = _as_precision(base, precision)
        stats = train_script.evaluate(model, pre, paths, 0, 1)
        results = predict(model, files, boxes, box_format="xywh", flip_test=True, decode="udp", batch_size=32)
        keypoints[precision] = np.concatenate(
            [np.stack([p["keypoints"] for p in people]) for people in results if people])
        out[precision] = {"AP": stats["AP"], "AP50": stats.get("AP .5", stats.get("AP50"))}
        print(f"tiny {precision}: AP {stats['AP']:.4f}", flush=True)
    ref = keypoints["fp32"]
    for precision in precisions:
        d = (keypoints[precision][..., :2] - ref[..., :2]) / px_per_hm[:, None, :]
        dist = np.sqrt((d**2).sum(-1))[mask]
        out[precision].update(dAP=out[precision]["AP"] - out["fp32"]["AP"], mean_px=float(dist.mean()),
                              median_px=float(np.median(dist)), p95_px=float(np.percentile(dist, 95)),
                              keypoints=int(mask.sum()))
    return out


# ------------------------------------------------------------------------------------------- random weights
def random_weight_accuracy(name: str, res: Sequence[int], batch: int, depth: Optional[int] = None,
                           seed: int = 0) -> Dict[str, dict]:
    """Heatmap relative error and keypoint agreement vs fp32 for a random-weight model on random inputs."""
    torch.manual_seed(seed)
    overrides = {"res": tuple(res)} | ({"depth": depth} if depth else {})
    base = Model.from_config(name, **overrides).eval()
    x = torch.randn(batch, 3, *res, generator=torch.Generator().manual_seed(seed + 1))
    h, w = res
    centers = torch.tensor([[w / 2.0, h / 2.0]], dtype=torch.float64).expand(batch, 2)
    scales = torch.tensor([[w / 200.0, h / 200.0]], dtype=torch.float64).expand(batch, 2)
    hm_h, hm_w = base.config.heatmap_size
    px_per_hm = torch.tensor([w / (hm_w - 1.0), h / (hm_h - 1.0)], dtype=torch.float64)
    out: Dict[str, dict] = {}
    ref = kp_ref = None
    for precision in PRECISIONS:
        model = base if precision == "fp32" else _as_precision(base, precision)
        started = time.perf_counter()
        with torch.inference_mode():
            hm = model(x.to(PRECISION_DTYPES[precision])).float()
        seconds = time.perf_counter() - started
        kp = decode_heatmaps(hm, centers, scales, method="udp")[..., :2].double() / px_per_hm
        if ref is None:
            ref, kp_ref = hm, kp
        dist = (kp - kp_ref).norm(dim=-1).flatten()
        out[precision] = {"hm_rel_err": ((hm - ref).norm() / ref.norm()).item(),
                          "kp_within_1px": (dist <= 1.0).double().mean().item(),
                          "median_px": dist.median().item(), "forward_s": seconds}
        print(f"{name} {h}x{w} {precision}: {out[precision]}", flush=True)
        if precision != "fp32":
            del model
    return out


# ------------------------------------------------------------------------------------------- main
def tables(payload: dict) -> str:
    lines = []
    if payload.get("tiny"):
        rows = [{"precision": p, **v} for p, v in payload["tiny"].items()]
        lines += ["Tiny model trained on the synthetic set (synthetic val, detection boxes; displacement of "
                  "labelled keypoints vs fp32, GT boxes, flip test):", "",
                  markdown_table(rows, ["precision", "AP", "dAP", "mean_px", "median_px", "p95_px"]), ""]
    for label, res in payload.get("random", {}).items():
        rows = [{"precision": p, **v} for p, v in res.items()]
        lines += [f"{label}, random weights, random inputs (vs fp32):", "",
                  markdown_table(rows, ["precision", "hm_rel_err", "kp_within_1px", "median_px", "forward_s"]), ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, help="a trained tiny_synthetic checkpoint (default: train one)")
    p.add_argument("--data-root", type=Path, help="its synthetic set (with --weights)")
    p.add_argument("--work", type=Path, help="folder for the data and the training run (default: a temp dir)")
    p.add_argument("--skip-trained", action="store_true", help="random-weight models only")
    p.add_argument("--models", default="vitpose_b,vitpose_h", help="random-weight models (comma list; '' none)")
    p.add_argument("--h-depth", type=int, default=None, help="blocks of ViTPose-H (default all 32)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    payload: dict = {"environment": environment(torch.device("cpu")), "tiny": None, "random": {}}
    started = time.perf_counter()
    if not args.skip_trained:
        with tempfile.TemporaryDirectory(prefix="fp8_acc_") as tmp:
            work = args.work or Path(tmp)
            if args.weights is None:
                trained = train_tiny(work)
            else:
                if args.data_root is None:
                    p.error("--weights needs --data-root (the synthetic set it was trained on)")
                trained = {"weights": args.weights, "data_root": args.data_root}
            payload["tiny"] = tiny_accuracy(trained["weights"], trained["data_root"])
        t = payload["tiny"]
        payload["bars"] = {"abs_dAP_fp8": abs(t["fp8"]["dAP"]), "abs_dAP_bar": AP_BAR,
                           "median_px_fp8": t["fp8"]["median_px"], "median_px_bar": MEDIAN_PX_BAR,
                           "ok": abs(t["fp8"]["dAP"]) <= AP_BAR and t["fp8"]["median_px"] <= MEDIAN_PX_BAR}
    specs = {"vitpose_b": ((256, 192), 2, None), "vitpose_h": ((576, 432), 1, args.h_depth)}
    for name in [m for m in args.models.split(",") if m]:
        res, batch, depth = specs.get(name, ((256, 192), 1, None))
        label = f"{name} {res[0]}x{res[1]}" + (f" ({depth} blocks)" if depth else "")
        payload["random"][label] = random_weight_accuracy(name, res, batch, depth)
    payload["wall_s"] = time.perf_counter() - started
    text = tables(payload)
    print(text)
    if payload.get("bars"):
        print(f"bars: {payload['bars']}")
    if not args.no_save:
        from vitpose_fast.benchmarking.common import result_stem

        stem = result_stem(torch.device("cpu"), "fp8", (0, 0)).replace("_0x0", "_accuracy")
        write_json(args.out / f"{stem}.json", payload)
        (args.out / f"{stem}.md").write_text(f"# FP8 accuracy (CPU)\n\n- torch {payload['environment']['torch']}, "
                                             f"commit {payload['environment']['commit']}\n\n{text}\n")
        print(f"wrote {args.out / stem}.json/.md")
    return payload


if __name__ == "__main__":
    main()
