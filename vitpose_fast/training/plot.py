"""Draw the loss/lr and val AP curves of a training run (``metrics.jsonl`` from ``train/train.py``) to a PNG.

    python train/plot.py runs/tiny/metrics.jsonl --out runs/tiny/curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence


def read_metrics(path: Path) -> Dict[str, List[dict]]:
    """Split the records into training steps (with ``loss``) and evaluations (with ``val/AP``)."""
    steps, evals = [], []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "loss" in rec:
            steps.append(rec)
        elif "val/AP" in rec:
            evals.append(rec)
    return {"steps": steps, "evals": evals}


def plot(metrics_file: Path, out: Path, title: Optional[str] = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = read_metrics(metrics_file)
    if not m["steps"] and not m["evals"]:
        raise ValueError(f"{metrics_file} has no training or evaluation records")
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    if m["steps"]:
        x = [r["step"] for r in m["steps"]]
        ax_loss.plot(x, [r["loss"] for r in m["steps"]], lw=1, label="loss")
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("JointsMSE loss")
        ax_lr = ax_loss.twinx()
        ax_lr.plot(x, [r["lr"] for r in m["steps"]], lw=1, color="tab:orange", label="lr")
        ax_lr.set_ylabel("lr (scale-1 group)")
    if m["evals"]:
        x = [r["epoch"] for r in m["evals"]]
        for key in ("val/AP", "val/AP .5", "val/AR"):
            if key in m["evals"][0]:
                ax_ap.plot(x, [r[key] for r in m["evals"]], marker="o", label=key[4:])
        ax_ap.set_xlabel("epoch")
        ax_ap.set_ylabel("COCO keypoint metric")
        ax_ap.legend()
    fig.suptitle(title or str(metrics_file))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description="Plot loss and AP curves of a train/train.py run.")
    p.add_argument("metrics", type=Path, help="metrics.jsonl")
    p.add_argument("--out", type=Path, help="PNG path (default: curves.png next to the metrics)")
    p.add_argument("--title")
    args = p.parse_args(argv)
    print(plot(args.metrics, args.out or args.metrics.with_name("curves.png"), args.title))


def run() -> None:
    main()


if __name__ == "__main__":
    run()
