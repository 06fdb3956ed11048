"""Shared benchmark helpers: environment report, timing, peak memory, matmul rate, model FLOPs, result files.

Used by ``benchmarks/run.py`` and the ``benchmarks/bench_<op>.py`` micro-benchmarks. Nothing here imports
Triton at module level, so every helper works on a CPU-only machine.

Model FLOP convention (:func:`model_flops`): one multiply-add = 2 FLOPs; only GEMMs, convolutions and the two
attention matmuls are counted (LayerNorm, GELU, softmax, bias, upsampling and BatchNorm are left out, as
``torch.utils.flop_counter`` does). A training step counts 3x the forward.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from vitpose_fast.config import ModelConfig
from vitpose_fast.reference.attention import geometry

from vitpose_fast.benchmarking.tables import format_cell, markdown_table, text_table  # noqa: F401 (re-exported)

# Runs write under the working directory's runs/ (ignored by git); committed results live in benchmarks/results/.
RESULTS_DIR = Path("runs") / "benchmarks"


# ------------------------------------------------------------------------------------------------- environment
def git_commit(repo: Optional[Path] = None) -> str:
    """HEAD's commit (with ``-dirty`` when the tree has changes), or ``unknown`` outside a git checkout."""
    cwd = str(repo or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def device_slug(device: torch.device) -> str:
    """A file-name-safe device tag: ``cpu``, ``nvidia-h100-80gb-hbm3``, ..."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def _version(module: str) -> Optional[str]:
    # The installed distribution's version: importing transformers only to read it costs seconds.
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        mod = __import__(module)
    except Exception:  # a broken optional install must not stop a benchmark
        return None
    return getattr(mod, "__version__", "unknown")


def environment(device: torch.device) -> Dict[str, object]:
    """Versions, device and commit: what a result needs to be reproduced."""
    env: Dict[str, object] = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["sm_count"] = props.multi_processor_count
    return env


# ------------------------------------------------------------------------------------------------------ timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_iterations(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> List[float]:
    """Milliseconds of each of ``iters`` calls of ``fn`` after ``warmup`` untimed calls.

    CUDA: one pair of events per call (device time, no host sync inside the loop); CPU: ``perf_counter``.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of an empty list")
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def do_bench(fn: Callable[[], object], device: torch.device, warmup_ms: float = 25, rep_ms: float = 100,
             quantiles: Sequence[float] = (0.5, 0.2, 0.8)) -> List[float]:
    """Median / p20 / p80 milliseconds of ``fn``: ``triton.testing.do_bench`` on CUDA (it flushes L2 between
    calls), a short ``perf_counter`` loop on CPU (at least 3 calls, the first untimed)."""
    if device.type == "cuda":
        from triton.testing import do_bench as _triton_do_bench

        # One quantile comes back as a plain float, several as a list (triton 3.x).
        got = _triton_do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(quantiles))
        return [float(v) for v in (got if isinstance(got, (list, tuple)) else [got])]
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6) * 1e3
    # A call slower than rep_ms (the Triton interpreter) is timed once more at most: CPU figures only show that
    # the script runs.
    times = [once] + time_iterations(fn, device, 0, max(1, min(int(rep_ms / once), 1000)))
    return [percentile(times, 100 * q) for q in quantiles]


# ------------------------------------------------------------------------------------------------------ memory
def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _trim_heap() -> None:
    """Return the C heap's free memory to the system (glibc only; elsewhere nothing happens)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): no malloc_trim
        pass


def free_device_bytes(device: torch.device) -> Optional[int]:
    """Free memory of a CUDA device in bytes (``torch.cuda.mem_get_info``); None elsewhere (no limit known)."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[0])


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (torch's, or a backend's message saying so)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


def fits(need_bytes: int, device: torch.device, headroom: float = 0.9) -> Tuple[bool, str]:
    """(whether ``need_bytes`` fits in ``headroom`` of the device's free memory, the reason when it does not)."""
    free = free_device_bytes(device)
    if free is None or need_bytes <= headroom * free:
        return True, ""
    return False, f"needs about {need_bytes / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on the device"


class PeakMemory:
    """Peak memory of the code inside ``with``, in MiB (``.mib``; ``None`` when it cannot be measured).

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset (everything allocated, weights included).
    CPU: the peak resident-set growth over the value at entry, sampled every 2 ms from ``/proc/self/statm``
    by a thread (Linux only; ``None`` elsewhere). A sampled peak can miss a spike shorter than 2 ms. The memory
    earlier code freed is handed back to the system first (glibc ``malloc_trim``): the allocator keeps it
    otherwise, and reusing it grows nothing (a row measured after others read 0.1 MiB).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: Optional[float] = None
        self._stop = threading.Event()
        self._peak = 0
        self._base: Optional[int] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _trim_heap()
        self._base = _rss_bytes()
        if self._base is not None:
            self._peak = self._base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            rss = _rss_bytes()
            if rss is not None and rss > self._peak:
                self._peak = rss

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            rss = _rss_bytes()
            self._peak = max(self._peak, rss or 0)
            self.mib = (self._peak - self._base) / 2**20


# ---------------------------------------------------------------------------------------------------- roofline
# The ceilings micro-benchmark rows are compared with: one H200 as measured on the GPU machines this project uses
# (a large device-to-device copy, bytes read plus written; an 8192^3 GEMM on random data). fp32 dots run on the
# tensor cores in TF32 (Triton's and cuBLAS' default here), at half the bf16 rate.
PEAK_DEVICE = "H200"
PEAK_BYTES_S = 4.3e12
PEAK_FLOPS = {torch.bfloat16: 790e12, torch.float16: 790e12, torch.float32: 395e12}


def roofline(ms: float, flops: Optional[float] = None, nbytes: Optional[float] = None,
             dtype: torch.dtype = torch.bfloat16) -> Dict[str, object]:
    """Achieved rates of one timed call beside the ceilings above: ``tflops`` and/or ``gbs`` achieved, and
    ``roofline`` = the larger of (FLOP/s over the dtype's peak, bytes/s over the bandwidth): 1.0 is the floor."""
    out: Dict[str, object] = {}
    fractions = []
    if flops is not None:
        rate = flops / (ms * 1e-3)
        out["tflops"] = rate / 1e12
        fractions.append(rate / PEAK_FLOPS[dtype])
    if nbytes is not None:
        rate = nbytes / (ms * 1e-3)
        out["gbs"] = rate / 1e9
        fractions.append(rate / PEAK_BYTES_S)
    out["roofline"] = max(fractions) if fractions else None
    return out


# ----------------------------------------------------------------------------------------------- matmul rate
def matmul_tflops(device: torch.device, dtype: torch.dtype, n: Optional[int] = None) -> float:
    """Measured dense matmul rate in TFLOP/s for an n x n x n GEMM (default 8192 on CUDA, 1024 on CPU).

    CUDA: the median call; CPU: the fastest call, as other processes sharing the cores slow most calls down."""
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = do_bench(lambda: a @ b, device, rep_ms=200 if cuda else 300, quantiles=(0.5,) if cuda else (0.0,))[0]
    return 2 * n**3 / (ms * 1e-3) / 1e12


# ------------------------------------------------------------------------------------------------------- FLOPs
@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one image's forward pass, by part."""

    patch_embed: int
    gemms: int  # qkv, proj, fc1, fc2 of every block
    attention: int  # q k^T and p v (window-aware), plus the rel-pos matmuls
    head: int

    @property
    def total(self) -> int:
        return self.patch_embed + self.gemms + self.attention + self.head


def model_flops(config: ModelConfig) -> FlopCount:
    """Analytic forward FLOPs per image (see the module docstring for what is counted).

    With D = embed_dim, N = Hp * Wp tokens, hidden = mlp_ratio * D, K keypoints:

    - patch conv: 2 * N * D * 3 * patch^2;
    - per block GEMMs: 2 * N * (3D^2 + D^2 + 2 * D * hidden) (= 24 N D^2 at mlp_ratio 4; ViTPose+ experts
      count as one dense fc2, as only the sample's expert runs);
    - per block attention, on the padded window partition (N_pad = Hpad * Wpad tokens in windows of T):
      4 * N_pad * (T + P) * D, where P = pooled tokens (``pool``) else 0; global attention: T = N, P = 0,
      i.e. 4 N^2 D. ``rel_pos`` adds 2 * N_pad * (wh + ww) * D;
    - classic head: each 4x4 stride-2 deconv 2 * Cin * Cout * 16 * (its input pixels), then the 1x1 conv
      2 * C * K * (heatmap pixels), Sapiens' 1x1 convs between them 2 * Cin * Cout * (heatmap pixels)
      (InstanceNorm and SiLU not counted); simple head: the 3x3 conv at heatmap size, 2 * 9 * D * K * (heatmap pixels)
      (the plain definition, whichever faster order an implementation uses).
    """
    b = config.backbone
    hp, wp = b.grid
    n, d = hp * wp, b.embed_dim
    patch = 2 * n * d * 3 * b.patch_size**2
    gemms = b.depth * 2 * n * (4 * d * d + 2 * d * b.mlp_hidden)
    attention = 0
    for i in range(b.depth):
        spec = b.block_attention(i)
        g = geometry(spec, (hp, wp))
        n_pad = g.hpad * g.wpad
        pooled = g.num_windows if spec.pool else 0
        attention += 4 * n_pad * (g.window_tokens + pooled) * d
        if spec.rel_pos:
            attention += 2 * n_pad * (g.wh + g.ww) * d
    hh, hw = config.heatmap_size
    k = config.head.num_keypoints
    if config.head.kind == "simple":
        head = 2 * 9 * d * k * hh * hw
    else:
        head, c, pixels = 0, d, n
        channels = config.head.deconv_channels
        if 2 ** len(channels) != config.head_upsample:
            channels = (channels[0],) * max(config.head_upsample.bit_length() - 1, 0)
        for out in channels:
            head += 2 * c * out * 16 * pixels
            c, pixels = out, pixels * 4
        for out in config.head.conv_channels:
            head += 2 * c * out * pixels
            c = out
        head += 2 * c * k * hh * hw
    return FlopCount(patch, gemms, attention, head)


# ------------------------------------------------------------------------------------------------ result files
def result_stem(device: torch.device, model: str, res: Sequence[int], suffix: str = "",
                date: Optional[str] = None) -> str:
    """``<device>_<model>_<H>x<W>[_<suffix>]_<date>``, e.g. ``cpu_vitpose_h_576x432_2026-11-24``."""
    date = date or _dt.date.today().isoformat()
    parts = [device_slug(device), model, f"{res[0]}x{res[1]}"] + ([suffix] if suffix else []) + [date]
    return "_".join(parts)


def write_json(path: Path, payload: Dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


class ResultFile:
    """A micro-benchmark's JSON result file, rewritten (atomically) after every row: a run stopped by a time limit
    keeps every finished row. ``complete`` turns true when :meth:`finish` is called. ``path=None``: no file."""

    def __init__(self, path: Optional[Path], header: Dict[str, object]):
        self.path = path
        self.payload: Dict[str, object] = dict(header, complete=False, rows=[])
        self._write()

    @property
    def rows(self) -> List[Dict[str, object]]:
        return self.payload["rows"]  # type: ignore[return-value]

    def add(self, row: Dict[str, object]) -> None:
        self.rows.append(row)
        self._write()

    def finish(self) -> None:
        self.payload["complete"] = True
        self._write()
        if self.path is not None:
            print(f"wrote {self.path}")

    def _write(self) -> None:
        if self.path is not None:
            write_json(self.path, self.payload)


def interpreter_on_cpu(device) -> bool:
    """On CPU a Triton kernel can only run in the interpreter, which is chosen when the kernel module is imported:
    call this before importing it. Returns whether the run is a CPU run (tiny shapes, figures not meaningful)."""
    if device.type != "cpu":
        return False
    os.environ.setdefault("TRITON_INTERPRET", "1")
    print("CPU: a tiny shape with the Triton interpreter; the figures only show that the script runs "
          "(GPU figures need a GPU).")
    return True


# ---------------------------------------------------------------------------------------------- micro-benchmarks
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MICRO_COLUMNS = ["case", "batch", "mode", "impl", "ms", "p20", "p80", "speedup", "gb_s"]


def micro_parser(description: str, cases: Sequence[str], batches: Sequence[int] = (1, 32)) -> argparse.ArgumentParser:
    """The flags the ``bench_<op>.py`` micro-benchmarks share; ``batches`` is the CUDA default shown in the help."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help=f"default: {' '.join(map(str, batches))} (CUDA), 1 (CPU)")
    parser.add_argument("--cases", nargs="+", choices=sorted(cases), default=sorted(cases))
    parser.add_argument("--modes", nargs="+", choices=["fwd", "fwd+bwd"], default=["fwd", "fwd+bwd"])
    parser.add_argument("--rep-ms", type=float, default=200.0)
    parser.add_argument("--out", nargs="?", const="auto", default=None,
                        help="write JSON (to this path, or with no value under benchmarks/results/)")
    return parser


def micro_settings(args: argparse.Namespace, cases: Dict[str, tuple], cpu_case: Tuple[str, tuple],
                   batches: Sequence[int] = (1, 32), tiny: bool = False) -> Tuple[torch.device, list, List[int], float,
                                                                        torch.dtype]:
    """(device, [(name, shape)], batches, rep_ms, dtype) from :func:`micro_parser`'s flags: the tiny case with
    short timing on CPU (or with ``tiny``), the chosen cases otherwise. Call it before importing a kernel module
    (see :func:`interpreter_on_cpu`)."""
    device = torch.device(args.device)
    if interpreter_on_cpu(device) or tiny:
        chosen, batch_list, rep_ms = [cpu_case], args.batches or [1], min(args.rep_ms, 50.0)
    else:
        chosen = [(name, cases[name]) for name in args.cases]
        batch_list, rep_ms = args.batches or list(batches), args.rep_ms
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    return device, chosen, batch_list, rep_ms, dtype


def result_path(out: Optional[str], device: torch.device, benchmark: str, dtype: torch.dtype) -> Optional[Path]:
    """``--out``'s file: none without the flag, a dated name under ``benchmarks/results/`` with no value."""
    if out is None:
        return None
    stem = f"{device_slug(device)}_{benchmark}_{str(dtype).split('.')[-1]}_{_dt.date.today().isoformat()}"
    return RESULTS_DIR / f"{stem}.json" if out == "auto" else Path(out)


def fused_op_impls(device: torch.device, reference: Callable, op: str) -> Dict[str, Callable]:
    """The implementations a fused-op micro-benchmark times: ``unfused`` (the plain-PyTorch ``reference``),
    ``compile`` (its ``torch.compile``, CUDA only) and ``triton`` (``vitpose_fast.kernels.<op>.<op>``, on CUDA or
    in the interpreter; imported here, after :func:`interpreter_on_cpu` chose the interpreter)."""
    impls: Dict[str, Callable] = {"unfused": reference}
    if device.type == "cuda":
        impls["compile"] = torch.compile(reference, dynamic=False)
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        impls["triton"] = getattr(importlib.import_module(f"vitpose_fast.kernels.{op}"), op)
    return impls


def time_impls(name: str, batch: int, modes: Sequence[str], impls: Dict[str, Callable],
               step: Callable[[Callable, str], Callable[[], object]], traffic: Callable[[str], int],
               device: torch.device, rep_ms: float, baseline: str = "unfused") -> List[Dict[str, object]]:
    """One :data:`MICRO_COLUMNS` row per (mode, implementation): ``step(fn, mode)`` is the call to time,
    ``traffic(mode)`` the minimum bytes it moves (for ``gb_s``); ``speedup`` is over ``baseline``."""
    rows: List[Dict[str, object]] = []
    for mode in modes:
        base: Optional[float] = None
        for impl, fn in impls.items():
            ms, p20, p80 = do_bench(step(fn, mode), device, rep_ms=rep_ms)
            base = ms if impl == baseline else base
            rows.append({"case": name, "batch": batch, "mode": mode, "impl": impl, "ms": ms, "p20": p20,
                         "p80": p80, "speedup": base / ms if base else None,
                         "gb_s": traffic(mode) / (ms * 1e-3) / 1e9})
    return rows


def run_micro(argv: Optional[List[str]], description: str, benchmark: str, cases: Dict[str, tuple],
              cpu_case: Tuple[str, tuple], bench_case: Callable[..., List[Dict[str, object]]]) -> int:
    """A whole micro-benchmark: flags, every (case, batch) through
    ``bench_case(name, shape, batch, dtype, device, modes, rep_ms)``, the table, and the JSON with ``--out``."""
    args = micro_parser(description, cases).parse_args(argv)
    device, chosen, batches, rep_ms, dtype = micro_settings(args, cases, cpu_case)
    rows: List[Dict[str, object]] = []
    for name, shape in chosen:
        for batch in batches:
            rows += bench_case(name, shape, batch, dtype, device, args.modes, rep_ms)
    print(text_table(rows, MICRO_COLUMNS))
    path = result_path(args.out, device, benchmark, dtype)
    if path is not None:
        write_json(path, {"benchmark": benchmark, "dtype": str(dtype), "env": environment(device), "rows": rows})
        print(f"wrote {path}")
    return 0
