"""Time batched torch heatmap decoding (``vitpose_fast.inference.decode.decode_heatmaps``) per method.

    python benchmarks/bench_decode.py [--n 64] [--k 17] [--h 64] [--w 48] [--out results.json]

Per row: median / p20 / p80 milliseconds (``triton.testing.do_bench`` on CUDA), the heatmap read rate and that
rate over the bandwidth (``roofline``, :data:`common.PEAK_BYTES_S`). With ``--out`` the JSON file is rewritten
after every row. On CPU it runs with the given (small by default) shapes; GPU figures need a CUDA device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

from vitpose_fast.benchmarking.common import ResultFile, do_bench, environment, roofline, text_table

from vitpose_fast.inference.decode import DECODE_METHODS, decode_heatmaps

COLUMNS = ["method", "ms", "p20", "p80", "gbs", "roofline"]
TINY = dict(n=2, k=5, h=16, w=12)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=64, help="persons per batch")
    parser.add_argument("--k", type=int, default=17, help="keypoints")
    parser.add_argument("--h", type=int, default=64)
    parser.add_argument("--w", type=int, default=48)
    parser.add_argument("--tiny", action="store_true", help=f"a tiny shape {tuple(TINY.values())} (smoke runs)")
    parser.add_argument("--rep-ms", type=float, default=100.0)
    parser.add_argument("--out", default=None, help="write JSON results to this path")
    args = parser.parse_args(argv)
    if args.tiny:
        vars(args).update(TINY)

    device = torch.device(args.device)
    heatmaps = torch.rand(args.n, args.k, args.h, args.w, device=device)
    centers = torch.rand(args.n, 2, device=device) * 500
    scales = torch.rand(args.n, 2, device=device) + 0.5
    result = ResultFile(Path(args.out) if args.out else None,
                        {"benchmark": "decode", "shape": [args.n, args.k, args.h, args.w], "env": environment(device),
                         "columns": COLUMNS})
    for method in DECODE_METHODS:
        ms, p20, p80 = do_bench(lambda: decode_heatmaps(heatmaps, centers, scales, method), device,
                                rep_ms=args.rep_ms)
        result.add({"method": method, "ms": ms, "p20": p20, "p80": p80,
                    **roofline(ms, nbytes=heatmaps.numel() * heatmaps.element_size())})
    print(text_table(result.rows, COLUMNS))
    if device.type != "cuda":
        print("CPU timings; GPU figures need a CUDA device.")
    result.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
