"""Micro-benchmark of grid attention (global / window / shift / pool / shift+pool, with and without rel-pos),
forward and forward+backward.

    python benchmarks/bench_attention.py                      # GPU: bf16, ViTPose-B and -H at 1/8 features
    python benchmarks/bench_attention.py --cases b --out      # + JSON under benchmarks/results/

Cases (q, k, v in the model's [B, N, heads, d] layout, strided views of one qkv tensor):

- ``vitpose_b_1_8``: ViTPose-B at 256x192 with 1/8 features: 32x24 grid, batch 64, 12 heads, d64, window (8, 8);
- ``vitpose_h_576x432_1_8``: ViTPose-H at 576x432, 1/8: 72x54 grid, batch 64, 16 heads, d80, window (8, 8);
- ``sapiens_{0.3b,0.6b,2b}_1024x768`` (``--cases s03 s06 s2 --specs global``): Sapiens at 1024x768, a 64x48 grid
  (3,072 tokens), batch 8, 16 heads d64 / 16 heads d80 / 32 heads d60 (Sapiens-1B is d64 too, with 24 heads).
  Sapiens uses global attention only; its d60 runs in our kernel as one 64-wide part with the last 4 columns
  masked (:func:`vitpose_fast.kernels.attention.head_dim_parts`).

Implementations:

- ``triton``: our fused kernel (:mod:`vitpose_fast.kernels.attention`);
- ``torch``: the PyTorch composition (pad + roll + partition, one SDPA call with the mask / ViTDet rel-pos bias,
  reverse): :func:`vitpose_fast.reference.attention.attention_torch`;
- ``flex``: FlexAttention on the row-major tokens (pooled tokens appended to the keys) with the equivalent
  block mask built by ``create_block_mask``; rows without rel-pos only (skipped when unavailable);
- global attention also: ``sdpa`` / ``flash`` / ``xformers`` (each when installed) through
  :func:`vitpose_fast.ops.global_attention`.

Per row: median / p20 / p80 ms (``triton.testing.do_bench``), speedup over ``torch``, useful TFLOP/s
(4 * B * heads * d * visible query-key pairs per forward, x3.5 for fwd+bwd, FA2's convention; masked and padded
pairs are not counted), that rate over the bf16 peak (``roofline``, :data:`common.PEAK_FLOPS`) and the peak
memory of one call above what the inputs already hold. Before a row runs, the memory it needs
(:func:`bytes_needed`: the torch baseline with rel-pos materialises a bias over every query-key pair, about 31 GB
for ViTPose-H's global attention at batch 64) is checked against the device's free memory: a row that cannot fit
is skipped with the reason in its ``skipped`` column, an out-of-memory error skips the row too, any other error
is an ``error`` row, and the benchmark goes on with the next one. With ``--out`` the JSON file is rewritten
after every row, so a run stopped by a time limit keeps what it finished. On CPU (or with ``--tiny``) the shapes shrink to a tiny
case and, on CPU, the kernel runs in the Triton interpreter: that only shows the script runs; the figures need a
GPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from vitpose_fast.benchmarking.common import (
    RESULTS_DIR, PeakMemory, ResultFile, device_slug, do_bench, environment, fits, interpreter_on_cpu, is_oom,
    roofline, text_table,
)

# name -> (batch, (Hp, Wp), heads, head_dim, window)
CASES: Dict[str, Tuple[int, Tuple[int, int], int, int, Tuple[int, int]]] = {
    "b": (64, (32, 24), 12, 64, (8, 8)),
    "h": (64, (72, 54), 16, 80, (8, 8)),
    # Sapiens at 1024x768 (1/16 features, 3,072 tokens, global attention), batch 8: head dims 64, 80 and 60.
    "s03": (8, (64, 48), 16, 64, (8, 8)),
    "s06": (8, (64, 48), 16, 80, (8, 8)),
    "s2": (8, (64, 48), 32, 60, (8, 8)),
}
CASE_NAMES = {"b": "vitpose_b_1_8", "h": "vitpose_h_576x432_1_8", "s03": "sapiens_0.3b_1024x768",
              "s06": "sapiens_0.6b_1024x768", "s2": "sapiens_2b_1024x768"}
CPU_CASE = ("tiny_cpu", (1, (8, 6), 2, 16, (4, 4)))
MODES = ("global", "window", "shift", "pool", "shift_pool")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
IMPLS = ("torch", "triton", "flex", "sdpa", "flash", "xformers")
COLUMNS = ["case", "spec", "rel_pos", "mode", "impl", "ms", "p20", "p80", "speedup", "tflops", "roofline",
           "extra_mib", "skipped", "error"]


def _spec(mode: str, window: Tuple[int, int], rel_pos: bool):
    from vitpose_fast.config import AttentionSpec

    if mode == "global":
        return AttentionSpec(rel_pos=rel_pos)
    return AttentionSpec("window", window, shift="shift" in mode, pool="pool" in mode, rel_pos=rel_pos)


def visible_pairs(spec, grid: Tuple[int, int]) -> int:
    """Query-key pairs the attention computes: sum over (window, region) groups of size^2, plus N * P pooled."""
    from vitpose_fast.reference.attention import geometry, token_layout

    win, reg, _, _ = token_layout(spec, grid)
    pairs = int(torch.bincount(win * 9 + reg).square().sum())
    n = grid[0] * grid[1]
    return pairs + (n * geometry(spec, grid).num_windows if spec.pool else 0)


def bytes_needed(impl: str, spec, grid: Tuple[int, int], batch: int, heads: int, d: int, dtype: torch.dtype,
                 mode: str) -> int:
    """Device memory one call of ``impl`` needs, estimated: q, k, v, the output and, with the backward, their
    gradients; the torch composition with rel-pos also materialises the bias over every query-key pair of a
    window (global: [B, heads, N, N]), in ``dtype``: twice in the forward (the bias, and the copy SDPA's
    mem-efficient kernel aligns or the mask fills), four times with the backward (the bias saved, its gradient
    and their copies). The fused kernels keep no such matrix."""
    from vitpose_fast.reference.attention import geometry

    size = torch.empty((), dtype=dtype).element_size()
    n = grid[0] * grid[1]
    tokens = batch * n * heads * d * size
    total = tokens * (5 if mode == "fwd" else 9)  # qkv + grad_out (given) + out; + dqkv + dout
    if impl == "torch" and spec.rel_pos:
        g = geometry(spec, grid)
        keys = g.window_tokens + (g.num_windows if spec.pool else 0)
        pairs = batch * heads * g.num_windows * g.window_tokens * keys
        total += pairs * size * (2 if mode == "fwd" else 4)
    return total


def _flex(spec, grid: Tuple[int, int], device: torch.device) -> Optional[Callable]:
    """FlexAttention with the spec's mask on row-major tokens (+ pooled keys after them); None if unavailable."""
    if spec.rel_pos or device.type != "cuda":
        return None
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    from vitpose_fast.reference.attention import geometry, pool_windows, token_layout

    win, reg, _, _ = token_layout(spec, grid, device)
    group = win * 9 + reg
    n = grid[0] * grid[1]
    p = geometry(spec, grid).num_windows if spec.pool else 0

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx >= n) | (group[q_idx] == group[torch.clamp(kv_idx, max=n - 1)])

    block_mask = create_block_mask(mask_mod, None, None, n, n + p, device=device)
    compiled = torch.compile(flex_attention)

    def fn(q, k, v, spec, grid, rel_pos_h=None, rel_pos_w=None):
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        if spec.pool:
            kt = torch.cat([kt, pool_windows(k, spec, grid).transpose(1, 2)], dim=2)
            vt = torch.cat([vt, pool_windows(v, spec, grid).transpose(1, 2)], dim=2)
        return compiled(qt, kt, vt, block_mask=block_mask).transpose(1, 2)

    return fn


def _global_choice(choice: str) -> Callable:
    from vitpose_fast import ops

    def fn(q, k, v, spec, grid, rel_pos_h=None, rel_pos_w=None):
        os.environ[ops.GLOBAL_ENV] = choice
        try:
            return ops.global_attention(q, k, v)
        finally:
            os.environ.pop(ops.GLOBAL_ENV, None)

    return fn


def _impls(spec, grid, device: torch.device, dtype: torch.dtype, wanted=IMPLS) -> Dict[str, Callable]:
    return {k: v for k, v in _all_impls(spec, grid, device, dtype, "flex" in wanted).items() if k in wanted}


def _all_impls(spec, grid, device: torch.device, dtype: torch.dtype, with_flex: bool) -> Dict[str, Callable]:
    from vitpose_fast.reference.attention import attention_torch

    impls: Dict[str, Callable] = {"torch": attention_torch}
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        from vitpose_fast import ops
        from vitpose_fast.kernels import attention as kernel

        impls["triton"] = kernel.attention
        if device.type == "cuda" and spec.kind == "global" and not spec.rel_pos:
            impls["sdpa"] = _global_choice("sdpa")
            if ops._flash_attn_func() is not None and dtype != torch.float32:
                impls["flash"] = _global_choice("flash")
            if ops._xformers_attention() is not None:
                impls["xformers"] = _global_choice("xformers")
    try:
        flex = _flex(spec, grid, device) if with_flex else None
    except Exception as exc:  # noqa: BLE001 - an unsupported Flex configuration is a skipped row, not a failure
        print(f"flex unavailable for {spec}: {type(exc).__name__}: {exc}")
        flex = None
    if flex is not None:
        impls["flex"] = flex
    return impls


def bench_case(name: str, case, dtype: torch.dtype, device: torch.device, modes: List[str], specs: List[str],
               rel_pos: List[bool], rep_ms: float, result: ResultFile, impls=IMPLS) -> List[Dict[str, object]]:
    batch, grid, heads, d, window = case
    n = grid[0] * grid[1]
    rows: List[Dict[str, object]] = []
    for spec_name in specs:
        for rp in rel_pos:
            spec = _spec(spec_name, window, rp)
            size = window if spec.kind == "window" else grid
            qkv = torch.randn(batch, n, 3, heads, d, device=device, dtype=dtype, requires_grad=True)
            tables = [None, None]
            if rp:
                tables = [(0.02 * torch.randn(2 * s - 1, d, device=device)).requires_grad_() for s in size]
            grad_out = torch.randn(batch, n, heads, d, device=device, dtype=dtype)
            flops = 4 * batch * heads * d * visible_pairs(spec, grid)
            for mode in modes:
                base_ms: Optional[float] = None
                for impl, fn in _impls(spec, grid, device, dtype, impls).items():
                    label = {"case": name, "spec": spec_name, "rel_pos": rp, "mode": mode, "impl": impl}
                    ok, why = fits(bytes_needed(impl, spec, grid, batch, heads, d, dtype, mode), device)
                    row = dict(label, skipped=why) if not ok else _time(run=_step(fn, qkv, tables, spec, grid,
                                                                                  grad_out, mode),
                                                                        label=label, device=device, rep_ms=rep_ms)
                    if row.get("ms"):
                        base_ms = row["ms"] if impl == "torch" else base_ms
                        row.update(speedup=base_ms / row["ms"] if base_ms else None,
                                   **roofline(row["ms"], flops=flops * (1 if mode == "fwd" else 3.5), dtype=dtype))
                    else:
                        print(f"{name} {spec_name} rel_pos={rp} {mode} {impl}: "
                              f"{'skipped: ' + row['skipped'] if row.get('skipped') else row.get('error')}")
                    rows.append(row)
                    result.add(row)
            del qkv, grad_out
    return rows


def _time(run: Callable[[], None], label: Dict[str, object], device: torch.device, rep_ms: float) -> Dict[str, object]:
    """The timed row of one implementation; out of memory is a skip (the next one still runs), any other
    exception an ``error`` row."""
    try:
        ms, p20, p80 = do_bench(run, device, rep_ms=rep_ms)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        with PeakMemory(device) as peak:
            run()
    except Exception as exc:  # noqa: BLE001 - reported in the row; the benchmark goes on
        if device.type == "cuda":
            torch.cuda.empty_cache()
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        return dict(label, **({"skipped": f"out of memory ({what})"} if is_oom(exc) else {"error": what}))
    extra = None if peak.mib is None else peak.mib - before / 2**20
    return dict(label, ms=ms, p20=p20, p80=p80, extra_mib=extra)


def _step(fn: Callable, qkv, tables, spec, grid, grad_out, mode: str) -> Callable[[], None]:
    leaves = [qkv] + [t for t in tables if t is not None]

    if mode == "fwd":
        def run() -> None:
            with torch.no_grad():
                fn(*qkv.unbind(2), spec, grid, *tables)
    else:
        def run() -> None:
            for t in leaves:
                t.grad = None
            fn(*qkv.unbind(2), spec, grid, *tables).backward(grad_out)
    return run


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["b", "h"])
    parser.add_argument("--specs", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--rel-pos", nargs="+", choices=["on", "off"], default=["off", "on"])
    parser.add_argument("--modes", nargs="+", choices=["fwd", "fwd+bwd"], default=["fwd", "fwd+bwd"])
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS),
                        help="implementations to time (each only where it can run)")
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU case on any device (smoke runs)")
    parser.add_argument("--rep-ms", type=float, default=100.0)
    parser.add_argument("--out", nargs="?", const="auto", default=None,
                        help="write JSON (to this path, or with no value under benchmarks/results/)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if interpreter_on_cpu(device) or args.tiny:
        cases = [CPU_CASE]
        rep_ms = min(args.rep_ms, 20.0)
    else:
        cases = [(CASE_NAMES[c], CASES[c]) for c in args.cases]
        rep_ms = args.rep_ms
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    rel_pos = [r == "on" for r in args.rel_pos]

    path = None
    if args.out is not None:
        stem = f"{device_slug(device)}_attention_{str(dtype).split('.')[-1]}_{_dt.date.today().isoformat()}"
        path = RESULTS_DIR / f"{stem}.json" if args.out == "auto" else Path(args.out)
    case_info = {name: dict(zip(("batch", "grid", "heads", "head_dim", "window"), case)) for name, case in cases}
    result = ResultFile(path, {"benchmark": "attention", "dtype": str(dtype), "cases": case_info,
                               "env": environment(device), "columns": COLUMNS})
    for name, case in cases:
        rows = bench_case(name, case, dtype, device, args.modes, args.specs, rel_pos, rep_ms, result, args.impls)
        print(text_table(rows, COLUMNS), flush=True)
    result.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
