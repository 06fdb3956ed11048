"""Images/s of ``vitpose-fast predict`` in one process, on Ray workers and on torchrun ranks (same images, same run).

    python benchmarks/bench_scale_out.py [--images 96] [--workers 2] [--depth 4] [--device cpu] [--out results.json]

Writes ``--images`` synthetic images (whole-image persons, flip test on) and a random-weight ViTPose-S (``--depth``
blocks, 256x192) into a temporary folder, then times each command end to end, start-up included (Python, model
load, and for Ray the local cluster): ``predict --out FILE``; ``predict --engine ray --workers N --out DIR``;
``torchrun --nproc-per-node N -m vitpose_fast.cli predict --out DIR``. Each run's results are checked against
the one-process file (torchrun: identical; Ray: the same keypoint locations, as Ray runs ``Model.predict_iter``,
whose optimized head may differ from the command's in the last bits of a score). Ray needs
``pip install "vitpose-fast[ray]"``; without it its row is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from vitpose_fast.benchmarking.common import environment, text_table


def _write_inputs(root: Path, n: int, depth: int) -> Path:
    from PIL import Image

    from vitpose_fast import Model

    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):  # a few sizes, as a real folder has
        h, w = (240, 320) if i % 3 else (480, 360)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i + 1:06d}.jpg", quality=90)
    torch.manual_seed(0)
    Model.from_config("vitpose_s", depth=depth).save(root / "weights.pth")
    return folder


def _keypoints(path: Path) -> np.ndarray:
    return np.array([r["keypoints"] for r in json.loads(path.read_text())]).reshape(-1, 17, 3)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers and torchrun ranks")
    parser.add_argument("--depth", type=int, default=4, help="ViTPose-S blocks (12: the full model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each engine, interleaved (one, Ray, torchrun, one, ...); the table has each run")
    parser.add_argument("--out", default=None, help="write JSON results to this path")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = _write_inputs(root, args.images, args.depth)
        predict = [sys.executable, "-m", "vitpose_fast.cli", "predict", "--weights", str(root / "weights.pth"),
                   "--device", args.device, "--quiet", "--batch-size", str(args.batch_size), str(folder)]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                    str(args.workers), *predict[1:]]
        runs = [("one process", predict + ["--out", str(root / "one.json")], root / "one.json"),
                (f"Ray, {args.workers} workers", predict + ["--engine", "ray", "--workers", str(args.workers),
                                                            "--out", str(root / "ray")], root / "ray" / "results.json"),
                (f"torchrun, {args.workers} ranks", torchrun + ["--out", str(root / "torchrun")],
                 root / "torchrun" / "results.json")]
        reference = None
        for name, cmd, result in [r for _ in range(args.repeat) for r in runs]:
            if "ray" in cmd:
                try:
                    import ray.data  # noqa: F401
                except ImportError:
                    print(f"{name}: skipped (pip install 'vitpose-fast[ray]')", file=sys.stderr)
                    continue
            if result.parent != root:  # a fresh folder: a rerun would resume, skipping every image
                shutil.rmtree(result.parent, ignore_errors=True)
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            got = _keypoints(result)
            reference = got if reference is None else reference
            exact = got.shape == reference.shape and np.array_equal(got, reference)
            same_xy = got.shape == reference.shape and np.array_equal(got[..., :2], reference[..., :2])
            rows.append({"engine": name, "seconds": round(seconds, 2), "images_per_s": round(args.images / seconds, 2),
                         "vs one process": "identical" if exact else ("same x, y" if same_xy else "DIFFERENT")})
    base = float(np.median([r["images_per_s"] for r in rows if r["engine"] == "one process"]))
    for row in rows:
        row["vs median one process"] = round(row["images_per_s"] / base, 2)
    print(f"{args.images} images, ViTPose-S depth {args.depth} 256x192, flip test, {args.device}, "
          f"{os.cpu_count()} CPUs; end to end, start-up included")
    print(text_table(rows, list(rows[0])))
    if args.out:
        env = environment(torch.device(args.device))
        Path(args.out).write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    return 0 if all(r["vs one process"] != "DIFFERENT" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
