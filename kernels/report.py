"""Kernel resource report: every Triton kernel compiled ahead of time for Hopper (sm_90a), no GPU needed.

``python -m vitpose_fast.kernels.report [--json PATH] [--jobs N] [--filter TEXT]`` prints one row per compiled
kernel: kernel, spec, head dim, config, registers per thread, spill bytes (stores / loads), shared memory and
the tensor-core path (``wgmma`` = Hopper's asynchronous MMA, ``mma.sync`` = the Ampere path at about half the
rate, ``-`` = no MMA).

How. Each kernel module declares its cases in one place, a ``report_cases()`` function returning
:class:`Case` objects; :data:`MODULES` lists the modules collected. A case runs the module's real launcher on
``meta`` tensors (shapes and strides, no data) with the jit kernel swapped for a recorder, so the arguments,
constexprs, ``num_warps`` and ``num_stages`` are exactly what a launch would pass. The recorded call is turned
into Triton's own specialisation (pointers and integers divisible by 16 carry the divisibility-16 hint,
integers equal to 1 become constexprs), compiled with ``triton.compile`` for ``GPUTarget("cuda", 90, 32)``,
and the PTX goes through the ptxas that Triton itself uses for sm_90 (shipped in the wheel), with ``-v``.

Results are cached per case under ``$VITPOSE_FAST_REPORT_CACHE`` (default ``~/.cache/vitpose_fast/
kernel_report``), keyed by the kernel's source hash (Triton's, which covers the jit functions it calls), the
specialisation, the options and the Triton version; compiles run in ``--jobs`` processes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import torch

from vitpose_fast.kernels.report_case import Case, meta_tensor  # noqa: F401  (the kernel modules' report_cases use them)

# Modules whose report_cases() make up the report (a new kernel module adds itself here).
MODULES = ("vitpose_fast.kernels.attention", "vitpose_fast.kernels.simple_decoder",
           "vitpose_fast.kernels.heatmap_decode", "vitpose_fast.kernels.residual_layer_norm",
           "vitpose_fast.kernels.bias_gelu", "vitpose_fast.kernels.fp8_quant")
ARCH = 90
_PTR_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float64: "*fp64",
              torch.int32: "*i32", torch.int64: "*i64", torch.int8: "*i8", torch.uint8: "*u8", torch.bool: "*i1",
              torch.float8_e4m3fn: "*fp8e4nv"}


@dataclass
class Row:
    kernel: str
    spec: str
    head_dim: int
    config: str
    default: bool
    rel_pos: bool
    tensor_core: bool
    registers: int = -1
    spill_stores: int = -1
    spill_loads: int = -1
    stack: int = -1
    shared: int = -1
    mma: str = "?"
    error: str = ""
    tags: List[str] = field(default_factory=list)

    @property
    def spill(self) -> int:
        return max(self.spill_stores, self.spill_loads)


# --------------------------------------------------------------------------------------------------------------
# recording launches
@dataclass
class _Call:
    fn: object  # the JITFunction
    args: tuple
    kwargs: dict


class _Recorder:
    def __init__(self, fn, calls: List[_Call]):
        self.fn, self.calls = fn, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append(_Call(self.fn, args, kwargs))


def _jit_fn(obj):
    """The JITFunction behind a kernel attribute (unwraps triton.autotune / heuristics, whose ``fn`` is another
    kernel; a JITFunction's, or the interpreter's InterpretedFunction's, is the Python function)."""
    while hasattr(getattr(obj, "fn", None), "arg_names"):
        obj = obj.fn
    return obj


@contextlib.contextmanager
def _recording(module, names: Sequence[str]) -> Iterator[Dict[str, List[_Call]]]:
    saved = {n: getattr(module, n) for n in names}
    calls = {n: [] for n in names}
    try:
        for n in names:
            setattr(module, n, _Recorder(_jit_fn(saved[n]), calls[n]))
        yield calls
    finally:
        for n, v in saved.items():
            setattr(module, n, v)


# --------------------------------------------------------------------------------------------------------------
# specialisation (Triton's rules at launch) and compilation
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


def _aligned(t: torch.Tensor) -> bool:
    # torch allocations are 256-byte aligned; a view is 16-byte aligned when its byte offset is.
    return (t.storage_offset() * t.element_size()) % 16 == 0


def specialise(call: _Call):
    """(signature, constexprs, attrs, options) for triton.compile from a recorded launch."""
    fn = call.fn
    names = list(fn.arg_names)
    values = dict(zip(names, call.args))
    options = {k: v for k, v in call.kwargs.items() if k in _LAUNCH_OPTIONS}
    values.update({k: v for k, v in call.kwargs.items() if k not in _LAUNCH_OPTIONS})
    const_params = {p.name for p in fn.params if p.is_constexpr}
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(names):
        v = values[name]
        if name in const_params:
            signature[name] = "constexpr"
            constexprs[name] = v
        elif isinstance(v, torch.Tensor):
            signature[name] = _PTR_TYPES[v.dtype]
            if _aligned(v):
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, bool):
            signature[name] = "i1"
        elif isinstance(v, int):
            if v == 1:
                signature[name] = "constexpr"
                constexprs[name] = 1
                continue
            signature[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, float):
            signature[name] = "fp32"
        elif v is None:
            signature[name] = "constexpr"
            constexprs[name] = None
        else:
            raise TypeError(f"{fn.__name__}: cannot specialise argument {name}={v!r}")
    options.setdefault("num_warps", 4)
    options.setdefault("num_stages", 3)
    return signature, constexprs, attrs, options


def ptxas_path() -> Optional[str]:
    """The ptxas Triton uses for sm_90 (shipped in the wheel), or None if absent."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        path = get_ptxas(ARCH).path
        if path and os.path.exists(path):
            return path
    except Exception:  # noqa: BLE001 - an older layout: fall back to the bin folder
        pass
    import triton

    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name in ("ptxas", "ptxas-blackwell"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


_PTXAS_RE = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
}


def ptxas_usage(ptx: str, ptxas: str) -> Dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        res = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{ARCH}a", src, "-o", os.path.join(tmp, "k.o")],
                             capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ptxas failed: {res.stderr.strip()[-2000:]}")
    return _parse_ptxas(res.stderr)


def _parse_ptxas(log: str) -> Dict[str, int]:
    out = {}
    for key, rx in _PTXAS_RE.items():
        m = rx.search(log)
        out[key] = int(m.group(1)) if m else 0
    return out


def mma_kind(ptx: str) -> str:
    if "wgmma.mma_async" in ptx:
        return "wgmma+mma.sync" if re.search(r"\bmma\.sync", ptx) else "wgmma"
    return "mma.sync" if re.search(r"\bmma\.sync", ptx) else "-"


def _cache_key(call: _Call, spec) -> str:
    import triton

    signature, constexprs, attrs, options = spec
    text = repr((call.fn.cache_key, sorted(signature.items()), sorted((k, repr(v)) for k, v in constexprs.items()),
                 sorted(attrs.items()), sorted(options.items()), triton.__version__, ARCH, _CACHE_VERSION))
    return hashlib.sha256(text.encode()).hexdigest()


_CACHE_VERSION = 2  # bump when the way figures are obtained changes


def _cache_dir() -> str:
    return os.environ.get("VITPOSE_FAST_REPORT_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "vitpose_fast", "kernel_report"))


def compile_call(call: _Call, ptxas: str, use_cache: bool = True) -> Dict[str, object]:
    """Compile one recorded launch for sm_90a -> registers, spills, stack, shared memory, MMA kind."""
    import triton
    from triton.backends.compiler import GPUTarget

    spec = specialise(call)
    path = os.path.join(_cache_dir(), _cache_key(call, spec) + ".json")
    if use_cache and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    signature, constexprs, attrs, options = spec
    src = triton.compiler.ASTSource(fn=call.fn, signature=signature, constexprs=constexprs, attrs=attrs)
    # Triton runs ptxas -v itself, with its own flags (they move the figures by tens of bytes of spill), while
    # building the cubin: compile afresh (a cubin from Triton's cache has no log) and read that log back. Without
    # the knobs (an older Triton), ptxas runs here on the PTX.
    log = io.StringIO()
    knobs = getattr(triton, "knobs", None)
    saved = (knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile) if knobs is not None else None
    try:
        if knobs is not None:
            knobs.nvidia.dump_ptxas_log = True
            knobs.compilation.always_compile = True
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=GPUTarget("cuda", ARCH, 32), options=options)
    finally:
        if knobs is not None:
            knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = saved
    ptx = compiled.asm["ptx"]
    usage = _parse_ptxas(log.getvalue()) if "Used" in log.getvalue() else ptxas_usage(ptx, ptxas)
    out = dict(usage, shared=int(compiled.metadata.shared), mma=mma_kind(ptx))
    if use_cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, path)
    return out


# --------------------------------------------------------------------------------------------------------------
# collecting and running
def collect(modules: Sequence[str] = MODULES) -> List[Case]:
    cases: List[Case] = []
    for name in modules:
        cases.extend(importlib.import_module(name).report_cases())
    return cases


def ci_cases() -> List[Case]:
    """The subset tests/test_kernel_report.py checks (``--ci``): attention's default config without rel-pos at
    d64 and d80 in global and shift+pool attention (window, shift and pool differ from these only in runtime
    integers), its rel-pos backward (global, shift+pool), the split head dim 104 (three parts), every autotune
    config on global attention at d80 (window tiles shrink to the window), the simple decoder, dark / udp
    decoding at blur 17 (the largest patches), the fused residual + LayerNorm and bias + GELU at ViT-H's
    widths, and the FP8 quantization kernels."""
    from vitpose_fast.kernels import attention, bias_gelu, fp8_quant, heatmap_decode, residual_layer_norm, simple_decoder

    default = (attention.DEFAULT_CONFIG,)
    tuned = tuple(c for c in attention.AUTOTUNE_CONFIGS if c != attention.DEFAULT_CONFIG)
    cases = attention.report_cases(head_dims=(64, 80), modes=("global", "shift_pool"), rel_pos=(False,),
                                   configs=default)
    cases += [c for c in attention.report_cases(head_dims=(80,), modes=("global", "shift_pool"), rel_pos=(True,),
                                                configs=default) if "attn_fwd" not in c.kernels.values()]
    cases += attention.report_cases(head_dims=(104,), modes=("window",), rel_pos=(False,), configs=default)
    cases += attention.report_cases(head_dims=(80,), modes=("global",), rel_pos=(False,), configs=tuned)
    cases += simple_decoder.report_cases()
    cases += [c for c in heatmap_decode.report_cases() if "blur 17" in c.spec]
    cases += residual_layer_norm.report_cases(widths=(1280,)) + bias_gelu.report_cases(widths=(5120,))
    cases += fp8_quant.report_cases()
    return cases


def record(case: Case) -> List[tuple]:
    """[(row label, _Call)] for the kernels the case's launch reaches, in launch order."""
    module = importlib.import_module(case.module)
    with _recording(module, list(case.kernels)) as calls, torch.no_grad():
        case.launch()
    out = []
    for n in case.kernels:
        for i, c in enumerate(calls[n]):
            label = case.kernels[n]
            out.append((label(c.kwargs) if callable(label) else label, c))
    return out


_WORK: List[tuple] = []  # (Row, _Call), set before the worker processes fork


def _work(i: int) -> Row:
    row, call = _WORK[i]
    row = dataclasses.replace(row)
    try:
        for k, v in compile_call(call, ptxas_path()).items():
            setattr(row, k, v)
    except Exception as e:  # noqa: BLE001 - one failing kernel is a row, not the end of the report
        row.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
    return row


def run(cases: Sequence[Case], jobs: int = 2) -> List[Row]:
    if ptxas_path() is None:
        raise FileNotFoundError("ptxas not found in the triton wheel (triton/backends/nvidia/bin)")
    work = []
    for case in cases:
        for label, call in record(case):
            work.append((Row(label, case.spec, case.head_dim, case.config, case.default, case.rel_pos,
                             case.tensor_core, tags=list(case.tags)), call))
    _WORK[:] = work
    if jobs > 1 and len(work) > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as pool:
            rows = pool.map(_work, range(len(work)), chunksize=1)
    else:
        rows = [_work(i) for i in range(len(work))]
    _WORK.clear()
    return rows


COLUMNS = ("kernel", "spec", "d", "config", "regs", "spill st/ld", "stack", "smem", "mma")


def format_table(rows: Sequence[Row]) -> str:
    lines = [list(COLUMNS)]
    for r in rows:
        cfg = r.config + ("" if r.default or r.config != "default" else "")
        lines.append([r.kernel, r.spec, str(r.head_dim or "-"), cfg,
                      "ERR" if r.error else str(r.registers), "" if r.error else f"{r.spill_stores}/{r.spill_loads}",
                      "" if r.error else str(r.stack), "" if r.error else str(r.shared),
                      r.error if r.error else r.mma])
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import warnings

    import triton

    warnings.filterwarnings("ignore", message=".*FP_FUSION.*")

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="also write the rows as JSON to this path")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compile processes")
    ap.add_argument("--filter", default="", help="only cases whose kernel/spec/config contain this text")
    ap.add_argument("--no-cache", action="store_true", help="recompile even when a cached result exists")
    ap.add_argument("--ci", action="store_true", help="only the cases tests/test_kernel_report.py checks")
    a = ap.parse_args(argv)
    if os.environ.pop("TRITON_INTERPRET", None) == "1" and any(m in sys.modules for m in MODULES):
        raise RuntimeError("the kernel modules were imported under TRITON_INTERPRET=1: run the report in a fresh "
                           "process without it")
    if a.no_cache:
        os.environ["VITPOSE_FAST_REPORT_CACHE"] = tempfile.mkdtemp()
    cases = ci_cases() if a.ci else collect()
    cases = [c for c in cases if a.filter in " ".join([*map(str, c.kernels.values()), c.spec, c.config])]
    rows = run(cases, a.jobs)
    print(f"# triton {triton.__version__}, sm_{ARCH}a, ptxas {os.path.basename(ptxas_path() or '?')}; "
          f"{len(rows)} kernels; spill = bytes per thread (stores/loads)")
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"triton": triton.__version__, "arch": f"sm_{ARCH}a",
                       "rows": [dict(dataclasses.asdict(r)) for r in rows]}, f, indent=1)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
