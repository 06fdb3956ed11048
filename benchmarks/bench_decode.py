"""Time batched torch heatmap decoding (``vitpose_fast.decode.decode_heatmaps``) per method.

Usage: python benchmarks/bench_decode.py [--n 64] [--k 17] [--h 64] [--w 48] [--out results.json]
On CPU it runs with the given (small by default) shapes; GPU figures need a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from vitpose_fast.decode import DECODE_METHODS, decode_heatmaps


def _time_ms(fn, device: torch.device, reps: int) -> float:
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, return_mode="median"))
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="persons per batch")
    parser.add_argument("--k", type=int, default=17, help="keypoints")
    parser.add_argument("--h", type=int, default=64)
    parser.add_argument("--w", type=int, default=48)
    parser.add_argument("--reps", type=int, default=20, help="CPU repetitions (median reported)")
    parser.add_argument("--out", default=None, help="write JSON results to this path")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    heatmaps = torch.rand(args.n, args.k, args.h, args.w, device=device)
    centers = torch.rand(args.n, 2, device=device) * 500
    scales = torch.rand(args.n, 2, device=device) + 0.5
    rows = []
    for method in DECODE_METHODS:
        ms = _time_ms(lambda: decode_heatmaps(heatmaps, centers, scales, method), device, args.reps)
        gbs = heatmaps.numel() * 4 / (ms * 1e-3) / 1e9
        rows.append({"method": method, "ms": ms, "heatmap_read_GB_s": gbs})
        print(f"{method:8s} {ms:9.3f} ms  ({gbs:6.2f} GB/s of heatmap read)")
    if device.type != "cuda":
        print("CPU timings; GPU figures need a CUDA device.")
    if args.out:
        meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "torch": torch.__version__, "shape": [args.n, args.k, args.h, args.w],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
