"""End-to-end ViTPose benchmark: every implementation, one table.

    python benchmarks/run.py --model vitpose_h --res 576x432              # inference, all backends
    python benchmarks/run.py --model vitpose_b --res 256x192 --train      # + a training step (fwd+bwd+AdamW)
    python benchmarks/run.py --model vitpose_b --res 256x192 --attention  # Table 5 attention presets, 1/8 features
    python benchmarks/run.py --model vitpose_h --res 256x192 --e2e        # + Model.predict on images and boxes
    python benchmarks/run.py --model sapiens_1b --res 1024x768            # Sapiens: 3,072 tokens, same peers

Backends (a backend that cannot run here is skipped with a one-line reason):

- ``reference``: our model, backend "reference", fp32 eager: the parity oracle every other row is compared to;
- ``hf`` / ``hf-bf16``: transformers' ``VitPoseForPoseEstimation`` loaded from our ``save_pretrained_hf`` folder,
  its default attention (stride 16, global attention only);
- ``sdpa-bf16``: our model, backend "torch" (SDPA), ``--dtype``;
- ``compile``: ``torch.compile`` of the backend-"torch" model (``--compile-mode``, default max-autotune, in
  ``--dtype`` on GPU; default mode in fp32 on CPU, skipped there when it would not fit the time budget);
- ``xformers`` / ``flash-attn``: backend "torch" with global attention routed to those libraries;
- ``vitpose_fast``: backend "auto" (our Triton kernels on CUDA), set up by ``Model.optimize(batch, precision)``
  (``--dtype``) for inference (weights cast, folded classic head, CUDA graphs on CUDA: the call users make); training runs the
  same fused kernels (fp32 weights under autocast, their backward);
- ``vitpose_fast+compile``: the same optimized model (without CUDA graphs) under ``torch.compile`` (``--compile-mode``;
  our ops are opaque custom ops, so Inductor fuses around them);
- ``vitpose_fast-fp8``: the same in bf16 with the backbone's GEMMs in FP8, set up by
  ``Model.optimize(batch, precision="fp8")`` (inference only; sm_89+ GPUs and CPU). Its MFU is against
  the measured bf16 matmul rate (FP8 tensor cores peak at about twice that), as the row's note says.

Every backend gets the same random weights (one model built with ``--seed``, its state dict copied) and the same
inputs. On CPU the defaults shrink to what fits ``--budget-s`` (batch 1 (and 2), one or two iterations, the
reference once): CPU figures only show that everything runs; throughput figures need a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitpose_fast.benchmarking.common import (
    RESULTS_DIR,
    PeakMemory,
    environment,
    markdown_table,
    matmul_tflops,
    model_flops,
    percentile,
    result_stem,
    synchronize,
    text_table,
    time_iterations,
    write_json,
)
from vitpose_fast import Model, ops
from vitpose_fast.config import GLOBAL, TABLE5_ROWS, ModelConfig, attention_preset, parse_res, preset, with_overrides
from vitpose_fast.inference.decode import decode_heatmaps
from vitpose_fast.model.fp8 import fp8_unavailable_reason

BACKENDS = ("reference", "hf", "hf-bf16", "sdpa-bf16", "compile", "xformers", "flash-attn", "vitpose_fast",
            "vitpose_fast+compile", "vitpose_fast-fp8")
COMPILED = ("compile", "vitpose_fast+compile")
FP8_BACKEND = "vitpose_fast-fp8"
ATTENTION_BACKENDS = ("sdpa-bf16", "vitpose_fast")
GPU_BATCHES = (1, 8, 32, 64)
CPU_COMPILE_S = 45.0  # rough cost of one CPU torch.compile (one per batch size), for the CPU plan
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}
# Model.optimize's precision for a --dtype; fp16 has no name: "auto" keeps the fp16 weights _our_model cast.
PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}

# Targets of the vitpose_fast row (GPU, bf16, the largest batch): MFU, and speed-up over other rows.
TARGET_MFU = 0.75
TARGETS_INFER = {"sdpa-bf16": 1.15, "compile": 1.05}
TARGETS_TRAIN = {"sdpa-bf16": 1.2}
TARGETS_FP8 = {"sdpa-bf16": 1.7}  # ViTPose-H 576x432, batch 32, H200
FP8_NOTE = "MFU vs the bf16 matmul rate"
TARGET_E2E = 0.9  # end to end within 10 % of model-only

COLUMNS = ["mode", "attention", "backend", "dtype", "batch", "images_s", "ms_image", "p50_ms", "p90_ms",
           "peak_mib", "mfu", "hm_diff", "kp_diff", "vs_sdpa", "vs_compile", "vs_hf", "note"]


class Skip(Exception):
    """A backend that cannot run here; the message is the one-line reason."""


# --------------------------------------------------------------------------------------------------- options
def parse_ints(text: str) -> Tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of ints (e.g. 1,8,32), got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return values


def parse_backends(text: str) -> Tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {unknown}; expected some of {', '.join(BACKENDS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="vitpose_h", help="preset: vitpose_s|b|l|h|g or sapiens_0.3b|0.6b|1b|2b (default vitpose_h)")
    p.add_argument("--res", type=parse_res, default=(576, 432), help="input HxW (default 576x432)")
    p.add_argument("--batch", type=parse_ints, default=None,
                   help="batch sizes (default GPU 1,8,32,64 up to the largest that fits; CPU 1[,2] by budget)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="dtype of the fast backends")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--backends", type=parse_backends, default=None, help=f"comma list of {','.join(BACKENDS)}")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per batch (default GPU 20, CPU by budget)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default GPU 5, CPU by budget)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default runs/benchmarks; committed results live in benchmarks/results)")
    p.add_argument("--no-save", action="store_true", help="print only; write no files")
    p.add_argument("--depth", type=int, default=None, help="override the number of blocks (quick runs)")
    p.add_argument("--decoder", choices=("classic", "simple"), default=None, help="head (default: the preset's)")
    p.add_argument("--flip", action="store_true", help="flip test in --e2e (off by default)")
    p.add_argument("--train", action="store_true", help="also time a training step (fwd + bwd + AdamW)")
    p.add_argument("--e2e", action="store_true", help="also time Model.predict on synthetic images and boxes")
    p.add_argument("--attention", action="store_true",
                   help="the paper's Table 5 attention presets at 1/8 features, training step and memory")
    p.add_argument("--only-extra", action="store_true",
                   help="with --train/--attention/--e2e: skip the plain inference table")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode (default: max-autotune on GPU, the default mode on CPU)")
    p.add_argument("--budget-s", type=float, default=240.0,
                   help="CPU only: seconds of timed work the default plan may use (default 240)")
    p.add_argument("--seed", type=int, default=0)
    return p


@dataclass
class Plan:
    """What to run, resolved from the flags and the device."""

    device: torch.device
    dtype: torch.dtype
    batches: Tuple[int, ...]
    iters: int
    warmup: int
    backends: Tuple[str, ...]
    compile_mode: Optional[str]
    skip_compile: Optional[str] = None  # a reason, when the plan leaves compile out
    notes: List[str] = field(default_factory=list)

    def runs(self, backend: str) -> Tuple[Tuple[int, ...], int, int]:
        """(batches, iters, warmup) of one backend: on CPU the reference runs once, at the first batch."""
        if backend == "reference" and self.device.type == "cpu":
            return self.batches[:1], 1, 0
        return self.batches, self.iters, self.warmup


def make_plan(args: argparse.Namespace, config: ModelConfig, rates: Dict[str, float]) -> Plan:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    backends = args.backends or BACKENDS
    if device.type == "cuda":
        return Plan(device, dtype, args.batch or GPU_BATCHES, args.iters or 20,
                    5 if args.warmup is None else args.warmup, backends, args.compile_mode or "max-autotune")
    # CPU: estimate each backend's seconds per image from the model FLOPs and the measured matmul rate (at
    # half that rate: LayerNorm, softmax and copies cost too), then take the largest plan that fits the budget.
    flops = model_flops(config).total * (3 if args.train else 1)
    fp32_s = flops / (0.5 * rates["fp32"] * 1e12)
    low_s = flops / (0.5 * rates[args.dtype if args.dtype in rates else "fp32"] * 1e12)
    per_image = {b: fp32_s if b in ("reference", "hf", "compile") else low_s for b in backends}
    plan = Plan(device, dtype, (1,), 1, 0, backends, args.compile_mode)
    compiled = [b for b in COMPILED if b in backends]
    if compiled and fp32_s > 5.0:
        plan.skip_compile = (f"CPU torch.compile of this model would take minutes (one fp32 forward is ~{fp32_s:.0f} s "
                             "here); run it on a GPU or with a smaller --depth")
        for b in compiled:
            per_image.pop(b)

    def cost(with_compile: bool) -> float:
        total = 0.0
        for b, sec in per_image.items():
            if b in COMPILED and not with_compile:
                continue
            bs, it, wu = plan.runs(b)
            total += sec * sum(bs) * (it + wu) + (CPU_COMPILE_S * len(bs) if b in COMPILED else 0.0)
        return total

    for batches, iters, warmup in (((1, 2), 3, 1), ((1, 2), 2, 1), ((1, 2), 2, 0), ((1,), 2, 0), ((1,), 1, 0)):
        plan.batches, plan.iters, plan.warmup = batches, iters, warmup
        if cost(any(b in per_image for b in COMPILED)) <= args.budget_s:
            break
    else:
        if any(b in per_image for b in COMPILED) and args.batch is None:
            plan.skip_compile = (f"CPU torch.compile (~{CPU_COMPILE_S:.0f} s per batch size) does not fit "
                                 f"--budget-s {args.budget_s:.0f} here; run it on a GPU or raise the budget")
        for batches, iters, warmup in (((1, 2), 2, 0), ((1,), 2, 0), ((1,), 1, 0)):
            plan.batches, plan.iters, plan.warmup = batches, iters, warmup
            if cost(False) <= args.budget_s:
                break
    plan.batches = args.batch or plan.batches
    plan.iters = args.iters or plan.iters
    plan.warmup = plan.warmup if args.warmup is None else args.warmup
    plan.notes.append(
        f"CPU run (batches {','.join(map(str, plan.batches))}, {plan.iters} timed iteration(s), {plan.warmup} "
        "warm-up): these numbers only show that every path runs; GPU figures need a GPU."
    )
    return plan


# -------------------------------------------------------------------------------------------------- backends
@dataclass
class Candidate:
    """One implementation under test. ``forward(x) -> heatmaps``; ``module`` holds the trained parameters;
    ``autocast``: training runs fp32 parameters under autocast to ``dtype`` (inference casts the weights)."""

    name: str
    module: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype
    autocast: bool = False
    context: Callable[[], ContextManager] = contextlib.nullcontext


@dataclass
class Shared:
    """State shared by all backends of one run."""

    plan: Plan
    config: ModelConfig
    state_dict: Dict[str, torch.Tensor]
    hf_folder: Optional[Path] = None  # the weights as a Hugging Face folder, when the port can hold the model
    hf_skip: str = "not written (no hf backend requested)"


def _our_model(shared: Shared, backend: str, dtype: torch.dtype, config: Optional[ModelConfig] = None) -> Model:
    """A copy of the benchmark weights (allocated directly on the device, in ``dtype``)."""
    with torch.device("meta"):
        model = Model(config or shared.config, backend=backend)
    model = model.to_empty(device=shared.plan.device).to(dtype)
    model.load_state_dict(shared.state_dict)
    return model


def _repo_relative(path: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _bind(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: model(x)


@contextlib.contextmanager
def forced_global_attention(impl: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], name: str):
    """Route global attention without relative position through ``impl(q, k, v)`` ([B, N, heads, hd] in and out)
    by replacing ``vitpose_fast.ops.attention`` (which every block looks up at call time) for the ``with`` body."""
    original = ops.attention

    def patched(q, k, v, spec, grid, rel_pos_h=None, rel_pos_w=None, backend="torch", **extra):
        plain = all(t is None for t in extra.values())  # extra key/value tokens need our implementations
        if spec.kind == "global" and not spec.rel_pos and backend != "reference" and plain:
            return impl(q, k, v)
        return original(q, k, v, spec, grid, rel_pos_h, rel_pos_w, backend=backend, **extra)

    patched.__name__ = f"attention_via_{name}"
    ops.attention = patched
    try:
        yield
    finally:
        ops.attention = original


def _xformers_impl():
    try:
        import xformers.ops as xops
    except ImportError as e:
        raise Skip(f"xformers is not installed ({e})") from None
    return lambda q, k, v: xops.memory_efficient_attention(q, k, v)


def _flash_attn_impl():
    try:
        from flash_attn import flash_attn_func
    except ImportError as e:
        raise Skip(f"flash-attn is not installed ({e})") from None
    return lambda q, k, v: flash_attn_func(q, k, v)


def build(name: str, shared: Shared, train: bool, config: Optional[ModelConfig] = None) -> Candidate:
    """The candidate ``name`` on the plan's device, or :class:`Skip` with the reason it cannot run."""
    plan = shared.plan
    cuda = plan.device.type == "cuda"
    low = plan.dtype
    # Inference casts the weights; training keeps fp32 weights and autocasts (the usual mixed precision).
    weights = torch.float32 if train else low
    autocast = train and low != torch.float32
    if name == "reference":
        model = _our_model(shared, "reference", torch.float32, config)
        return Candidate(name, model, _bind(model), torch.float32)
    if name in ("hf", "hf-bf16"):
        try:
            from transformers import VitPoseForPoseEstimation
            from transformers.utils import logging as hf_logging
        except ImportError as e:
            raise Skip(f"transformers has no VitPoseForPoseEstimation ({e})") from None
        hf_logging.disable_progress_bar()  # keeps the table readable
        if shared.hf_folder is None:
            raise Skip(f"the Hugging Face port cannot hold this model: {shared.hf_skip}")
        dtype = torch.float32 if name == "hf" else low
        model = VitPoseForPoseEstimation.from_pretrained(
            str(shared.hf_folder), dtype=torch.float32 if train else dtype
        ).to(plan.device)
        return Candidate(name, model, lambda x: model(pixel_values=x).heatmaps, dtype,
                         autocast=train and dtype != torch.float32)
    if name == "sdpa-bf16":
        model = _our_model(shared, "torch", weights, config)
        return Candidate(name, model, _bind(model), low, autocast=autocast)
    if name == "compile":
        if plan.skip_compile:
            raise Skip(plan.skip_compile)
        dtype = low if cuda else torch.float32
        model = _our_model(shared, "torch", torch.float32 if train else dtype, config)
        compiled = torch.compile(model, mode=plan.compile_mode, dynamic=False)
        return Candidate(name, model, compiled, dtype, autocast=train and dtype != torch.float32)
    if name in ("xformers", "flash-attn"):
        impl = _xformers_impl() if name == "xformers" else _flash_attn_impl()
        if not cuda:
            raise Skip(f"{name} kernels need a CUDA device")
        if name == "flash-attn" and low not in (torch.float16, torch.bfloat16):
            raise Skip("flash-attn runs in fp16/bf16 only (--dtype)")
        model = _our_model(shared, "torch", weights, config)
        return Candidate(name, model, _bind(model), low, autocast=autocast,
                         context=lambda: forced_global_attention(impl, name))
    if name in ("vitpose_fast", "vitpose_fast+compile"):
        model = _our_model(shared, "auto", weights, config)
        if name == "vitpose_fast+compile" and plan.skip_compile:
            raise Skip(plan.skip_compile)
        if not train:  # the user's inference call: weights in --dtype, folded head, CUDA graphs on CUDA
            model.optimize(max(plan.batches), precision=PRECISION_NAMES.get(low, "auto"),
                           cuda_graphs=name == "vitpose_fast")
        if name == "vitpose_fast":
            return Candidate(name, model, _bind(model), low, autocast=autocast)
        compiled = torch.compile(model, mode=plan.compile_mode, dynamic=False)
        return Candidate(name, model, compiled, low, autocast=autocast)
    if name == FP8_BACKEND:
        if train:
            raise Skip("FP8 is inference-only (the quantized GEMMs have no backward)")
        reason = fp8_unavailable_reason(plan.device)
        if reason:
            raise Skip(reason)
        model = _our_model(shared, "auto", torch.bfloat16, config).optimize(
            max(plan.batches), precision="fp8", cuda_graphs=True)
        return Candidate(name, model, _bind(model), torch.bfloat16)
    raise ValueError(f"unknown backend {name!r}")


# ------------------------------------------------------------------------------------------------- measuring
def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def keypoints(heatmaps: torch.Tensor, res: Tuple[int, int]) -> torch.Tensor:
    """UDP-decoded keypoints [N, K, 2] in input pixels (the crop is the whole input)."""
    n = heatmaps.shape[0]
    h, w = res
    centers = torch.tensor([[w / 2.0, h / 2.0]], dtype=torch.float64).expand(n, 2)
    scales = torch.tensor([[w / 200.0, h / 200.0]], dtype=torch.float64).expand(n, 2)
    return decode_heatmaps(heatmaps.float().cpu(), centers, scales, method="udp")[..., :2]


def differences(out: torch.Tensor, ref: Optional[torch.Tensor], res: Tuple[int, int]) -> Tuple[Optional[float], ...]:
    """(max |heatmap - reference|, max keypoint distance in input pixels) or (None, None) without a reference."""
    if ref is None:
        return None, None
    out = out.detach().float().cpu()
    hm = (out - ref).abs().max().item()
    kp = (keypoints(out, res) - keypoints(ref, res)).norm(dim=-1).max().item()
    return hm, kp


def _inputs(plan: Plan, res: Tuple[int, int], seed: int) -> Dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1)
    return {b: torch.randn(b, 3, *res, generator=gen).to(plan.device) for b in plan.batches}


def _targets(plan: Plan, res: Tuple[int, int], k: int, hw: Tuple[int, int], seed: int) -> Dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 2)
    return {b: torch.rand(b, k, *hw, generator=gen).to(plan.device) for b in plan.batches}


def measure_backend(cand: Candidate, plan: Plan, batches: Sequence[int], iters: int, warmup: int,
                    inputs: Dict[int, torch.Tensor], targets: Optional[Dict[int, torch.Tensor]],
                    flops_per_image: float, peak_tflops: float) -> Tuple[List[dict], Optional[torch.Tensor]]:
    """Rows for one backend (one per batch, stopping at the first OOM) and its heatmaps on the first batch's
    input (inference: the last timed call's output; training: a forward before the first step)."""
    rows: List[dict] = []
    check: Optional[torch.Tensor] = None
    train = targets is not None
    model = cand.module
    model.train(train)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
    for batch in batches:
        x = inputs[batch].to(cand.dtype if not cand.autocast else torch.float32)
        row = {"batch": batch}
        last: List[torch.Tensor] = []
        try:
            with PeakMemory(plan.device) as mem:
                if train:
                    if check is None:
                        with torch.no_grad(), _autocast(cand, plan.device):
                            check = cand.forward(x).float().cpu()
                    target = targets[batch]

                    def step() -> None:
                        opt.zero_grad(set_to_none=True)
                        with _autocast(cand, plan.device):
                            out = cand.forward(x)
                        F.mse_loss(out.float(), target).backward()
                        opt.step()

                    times = time_iterations(step, plan.device, warmup, iters)
                else:
                    with torch.inference_mode():
                        def call() -> None:
                            last[:] = [cand.forward(x)]  # keep only the newest output alive

                        times = time_iterations(call, plan.device, warmup, iters)
                        if check is None:
                            check = last[-1].float().cpu()
                        last.clear()
        except Exception as e:  # an OOM ends this backend's batch sweep; anything else is reported as the reason
            last.clear()
            if plan.device.type == "cuda":
                torch.cuda.empty_cache()
            row["note"] = "OOM" if _is_oom(e) else f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            rows.append(row)
            break
        median = percentile(times, 50)
        ips = batch / (median * 1e-3)
        row.update(images_s=ips, ms_image=median / batch, p50_ms=median, p90_ms=percentile(times, 90),
                   peak_mib=mem.mib, mfu=ips * flops_per_image / (peak_tflops * 1e12))
        rows.append(row)
    return rows, check


def _autocast(cand: Candidate, device: torch.device) -> ContextManager:
    if not cand.autocast:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=cand.dtype)


def run_mode(mode: str, shared: Shared, backends: Sequence[str], attention: str, res: Tuple[int, int],
             seed: int, peak_tflops: float, skipped: Dict[str, str],
             config: Optional[ModelConfig] = None) -> List[dict]:
    """All ``backends`` for one mode (``infer`` or ``train``) and one model config."""
    plan = shared.plan
    config = config or shared.config
    train = mode == "train"
    flops = model_flops(config).total * (3 if train else 1)
    inputs = _inputs(plan, res, seed)
    targets = _targets(plan, res, config.head.num_keypoints, config.heatmap_size, seed) if train else None
    rows: List[dict] = []
    ref: Optional[torch.Tensor] = None
    for name in backends:
        key = f"{mode}/{attention}/{name}"
        try:
            cand = build(name, shared, train, config)
        except Skip as s:
            skipped[key] = str(s)
            continue
        except NotImplementedError as e:
            skipped[key] = f"not implemented: {e}"
            continue
        batches, iters, warmup = plan.runs(name)
        started = time.perf_counter()
        with cand.context():
            brows, check = measure_backend(cand, plan, batches, iters, warmup, inputs, targets, flops, peak_tflops)
        if name == "reference":
            ref = check
        hm, kp = differences(check, ref, res) if check is not None else (None, None)
        for r in brows:
            r.update(mode=mode, attention=attention, backend=name, dtype=str(cand.dtype).replace("torch.", ""),
                     hm_diff=hm, kp_diff=kp)
            if name == FP8_BACKEND:
                r.update(dtype="fp8+bf16", note=r.get("note") or FP8_NOTE)
            if r.get("note", "").startswith("error: NotImplementedError"):
                skipped[key] = r["note"]
        rows += [r for r in brows if key not in skipped]
        print(f"  {mode:5s} {attention:24s} {name:12s} done in {time.perf_counter() - started:6.1f} s", flush=True)
        del cand
        gc.collect()
        if plan.device.type == "cuda":
            torch.cuda.empty_cache()
    add_ratios(rows, plan.device.type == "cuda")
    return rows


def verdict(value: float, target: float, on_gpu: bool) -> str:
    """``ok`` / ``MISS`` against a target on a GPU; the targets are GPU targets, so elsewhere only that."""
    return ("ok" if value >= target else "MISS") if on_gpu else "GPU target"


def targets_note() -> str:
    """The targets as the table checks them (one source: the TARGET* constants)."""
    infer = ", ".join(f">= {v}x {k}" for k, v in TARGETS_INFER.items())
    train = ", ".join(f">= {v}x {k}" for k, v in TARGETS_TRAIN.items())
    fp8 = ", ".join(f">= {v}x {k}" for k, v in TARGETS_FP8.items())
    return (f"targets (vitpose_fast, GPU, bf16; checked on GPU runs only): MFU >= {TARGET_MFU:.0%}, {infer}, "
            f"e2e >= {TARGET_E2E}x model-only; training step {train}; vitpose_fast-fp8 {fp8} "
            "(H 576x432, batch 32).")


def add_ratios(rows: List[dict], on_gpu: bool = True) -> None:
    """Speed-up of each row over sdpa-bf16, compile and hf (fp32) at the same mode, attention and batch, with
    the issue's target next to the vitpose_fast rows (global attention: the targets name no Table 5 preset);
    off a GPU the target is shown but not judged."""
    speed = {(r["mode"], r["attention"], r["backend"], r["batch"]): r.get("images_s") for r in rows}
    for r in rows:
        targets = TARGETS_TRAIN if r["mode"] == "train" else TARGETS_FP8 if r["backend"] == FP8_BACKEND else TARGETS_INFER
        for other, col in (("sdpa-bf16", "vs_sdpa"), ("compile", "vs_compile"), ("hf", "vs_hf")):
            base = speed.get((r["mode"], r["attention"], other, r["batch"]))
            if not base or not r.get("images_s") or r["backend"] == other:
                continue
            ratio = r["images_s"] / base
            cell = f"{ratio:.2f}x"
            if r["backend"] in ("vitpose_fast", FP8_BACKEND) and other in targets and r["attention"] == "global":
                cell += f" [>={targets[other]} {verdict(ratio, targets[other], on_gpu)}]"
            r[col] = cell
        if r["backend"] == "vitpose_fast" and r.get("mfu") is not None and r["attention"] == "global":
            r["mfu_target"] = f">={TARGET_MFU:.0%} {verdict(r['mfu'], TARGET_MFU, on_gpu)}"


# ------------------------------------------------------------------------------------------------------ e2e
def run_e2e(shared: Shared, batches: Sequence[int], iters: int, warmup: int, flip: bool,
            model_rows: List[dict], skipped: Dict[str, str]) -> List[dict]:
    """``Model.predict`` (host images -> crop + forward + decode -> host keypoints) on synthetic 640x480 uint8
    images with 4 boxes each, in persons/s, against vitpose_fast's model-only images/s at the same batch (the
    eager model: ``predict`` replays no CUDA graph)."""
    plan = shared.plan
    try:
        import vitpose_fast.inference.pipeline  # noqa: F401
    except ImportError as e:
        skipped["e2e"] = f"vitpose_fast.inference.pipeline is not available ({e})"
        return []
    name = "vitpose_fast"
    model = _our_model(shared, "auto", plan.dtype).eval()
    gen = torch.Generator().manual_seed(7)
    rows = []
    model_only = {r["batch"]: r.get("images_s") for r in model_rows if r["backend"] == name and r["mode"] == "infer"}
    for batch in batches:
        per_image = 4
        n_images = max(1, math.ceil(batch / per_image))
        # Host images, as a decoder hands them over: the host -> device copy is part of end to end.
        images = [torch.randint(0, 256, (480, 640, 3), dtype=torch.uint8, generator=gen).numpy()
                  for _ in range(n_images)]
        counts = [min(per_image, batch - i * per_image) for i in range(n_images)]
        boxes = []
        for c in counts:
            xy = torch.rand(c, 2, generator=gen) * torch.tensor([400.0, 200.0])
            wh = 80 + torch.rand(c, 2, generator=gen) * torch.tensor([200.0, 250.0])
            boxes.append(torch.cat([xy, xy + wh], dim=1))
        row = {"mode": "e2e", "attention": "global", "backend": name, "dtype": str(plan.dtype).replace("torch.", ""),
               "batch": batch}
        try:
            with PeakMemory(plan.device) as mem, torch.inference_mode():
                times = time_iterations(
                    lambda: model.predict(images, boxes=boxes, flip_test=flip, batch_size=batch),
                    plan.device, warmup, iters)
        except Exception as e:
            skipped["e2e"] = f"Model.predict failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            break
        median = percentile(times, 50)
        ips = batch / (median * 1e-3)
        row.update(images_s=ips, ms_image=median / batch, p50_ms=median, p90_ms=percentile(times, 90),
                   peak_mib=mem.mib, note=f"persons/s; {n_images} image(s), flip {'on' if flip else 'off'}")
        base = model_only.get(batch)
        if base:
            ratio = ips / base
            row["vs_model"] = f"{ratio:.2f}x [>={TARGET_E2E} {verdict(ratio, TARGET_E2E, plan.device.type == 'cuda')}]"
        rows.append(row)
    del model
    return rows


# ------------------------------------------------------------------------------------------------------ main
def benchmark_config(args: argparse.Namespace) -> ModelConfig:
    overrides = {"res": tuple(args.res)}
    if args.depth:
        overrides["depth"] = args.depth
    if args.decoder:
        overrides["decoder"] = args.decoder
    if args.train or args.attention:
        # Stochastic depth off: every backend then does the same computation, so the rows compare.
        overrides["drop_path_rate"] = 0.0
    return preset(args.model, **overrides)


def matmul_rates(device: torch.device, dtype_name: str) -> Dict[str, float]:
    """Measured matmul TFLOP/s: bf16 (the MFU base) on CUDA; fp32 and ``--dtype`` on CPU."""
    if device.type == "cuda":
        return {"bf16": matmul_tflops(device, torch.bfloat16)}
    rates = {"fp32": matmul_tflops(device, torch.float32)}
    if DTYPES[dtype_name] != torch.float32:
        rates[dtype_name] = matmul_tflops(device, DTYPES[dtype_name])
    return rates


def save_results(out: Path, stem: str, payload: dict, rows: List[dict], columns: Sequence[str]) -> List[Path]:
    paths = [write_json(out / f"{stem}.json", payload)]
    env = payload["environment"]
    md = [f"# {payload['title']}", "",
          f"- device: {env['device']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}",
          f"- commit: {env['commit']}", f"- command: `{env['command']}`",
          f"- matmul TFLOP/s (MFU base): {payload['mfu_base_tflops']:.3g} ({payload['mfu_base']})",
          f"- model GFLOP per image (forward): {payload['gflops_per_image']:.1f}", ""]
    md += [f"- {n}" for n in payload["notes"]] + [""]
    md += [markdown_table(rows, columns), ""]
    if payload["skipped"]:
        md += ["Skipped:", ""] + [f"- {k}: {v}" for k, v in payload["skipped"].items()] + [""]
    path = out / f"{stem}.md"
    path.write_text("\n".join(md))
    paths.append(path)
    chart = bar_chart(out / f"{stem}.png", payload["title"], rows)
    if chart:
        paths.append(chart)
    return paths


def bar_chart(path: Path, title: str, rows: List[dict]) -> Optional[Path]:
    """Images/s per row, grouped by batch (skipped quietly without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in rows if r.get("images_s")]
    if not rows:
        return None
    labels = [f"{r['mode']} {r['backend']}" + (f" [{r['attention']}]" if r["attention"] != "global" else "")
              for r in rows]
    series = list(dict.fromkeys(labels))
    batches = sorted({r["batch"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(batches) * len(series) * 0.35 + 3), 4.5))
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        values = {r["batch"]: r["images_s"] for r, lab in zip(rows, labels) if lab == s}
        ax.bar([j + i * width for j in range(len(batches))], [values.get(b, 0.0) for b in batches], width, label=s)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [f"batch {b}" for b in batches])
    ax.set_ylabel("images/s")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    config = benchmark_config(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rates = matmul_rates(device, args.dtype)
    plan = make_plan(args, config, rates)
    mfu_base = "bf16" if device.type == "cuda" else max(rates, key=rates.get)
    peak = rates[mfu_base]
    flops = model_flops(config)
    print(f"{args.model} {args.res[0]}x{args.res[1]} ({config.backbone.depth} blocks, {config.head.kind} head) on "
          f"{device}: {flops.total / 1e9:.1f} GFLOP/image forward; matmul {peak:.3g} TFLOP/s ({mfu_base}, the MFU base)",
          flush=True)

    base = Model(config, backend="reference").eval()  # seeded random weights, shared by every backend
    state_dict = {k: v.detach() for k, v in base.state_dict().items()}
    del base
    skipped: Dict[str, str] = {}
    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="vitpose_hf_") as tmp:
        shared = Shared(plan, config, state_dict)
        if any(b.startswith("hf") for b in plan.backends):
            shared.hf_folder, shared.hf_skip = _save_hf(config, state_dict, Path(tmp) / "hf")
        if not args.only_extra or not (args.train or args.attention or args.e2e):
            rows += run_mode("infer", shared, plan.backends, "global", args.res, args.seed, peak, skipped)
        if args.train:
            rows += run_mode("train", shared, plan.backends, "global", args.res, args.seed, peak, skipped)
        if args.attention:
            rows += run_attention(shared, args, peak, skipped)
        if args.e2e:
            batches, iters, warmup = plan.runs("vitpose_fast")
            rows += run_e2e(shared, batches, iters, warmup, args.flip, rows, skipped)
    elapsed = time.perf_counter() - started
    notes = list(plan.notes) + [
        targets_note(),
        "MFU = model FLOPs (benchmarks/README.md) x images/s / the matmul rate measured in this run; the "
        "vitpose_fast-fp8 row too is measured against that (bf16 or fp32) rate, not an FP8 one.",
        "keypoint diff: max distance in input pixels after UDP decoding; with random weights the heatmaps are "
        "near-flat, so a tiny heatmap difference can move an argmax far.",
        f"total wall time {elapsed:.0f} s",
    ]
    columns = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)] + [
        c for c in ("mfu_target", "vs_model") if any(c in r for r in rows)]
    if "note" in columns:  # keep the free-text column last
        columns.remove("note")
        columns.append("note")
    print()
    print(text_table(rows, columns) if rows else "(no rows)")
    for key, reason in skipped.items():
        print(f"skipped {key}: {reason}")
    for n in notes:
        print(f"note: {n}")
    title = f"{args.model} {args.res[0]}x{args.res[1]} on {device.type}"
    payload = {
        "title": title,
        "environment": environment(device),
        "config": config.to_dict(),
        # Paths relative to the repository, so that result files name no machine's folders.
        "args": {k: (_repo_relative(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "plan": {"batches": plan.batches, "iters": plan.iters, "warmup": plan.warmup, "backends": plan.backends,
                 "compile_mode": plan.compile_mode},
        "gflops_per_image": flops.total / 1e9,
        "flops_per_image": dataclasses.asdict(flops),
        "matmul_tflops": rates,
        "mfu_base": mfu_base,
        "mfu_base_tflops": peak,
        "columns": columns,
        "rows": rows,
        "skipped": skipped,
        "notes": notes,
        "wall_s": elapsed,
    }
    if not args.no_save:
        suffix = "_".join([s for s, on in (("train", args.train), ("attention", args.attention), ("e2e", args.e2e))
                           if on] + ([f"d{args.depth}"] if args.depth else []))
        paths = save_results(args.out, result_stem(device, args.model, args.res, suffix), payload, rows, columns)
        for p in paths:
            print(f"wrote {p}")
    print(f"total {elapsed:.0f} s", flush=True)
    return payload


def _save_hf(config: ModelConfig, state_dict: Dict[str, torch.Tensor], folder: Path) -> Tuple[Optional[Path], str]:
    """Write the weights as a Hugging Face folder: (folder, "") or (None, why the port cannot hold the model)."""
    if any(config.backbone.block_attention(i) != GLOBAL for i in range(config.backbone.depth)):
        return None, "it has global attention without relative position only"
    with torch.device("meta"):
        model = Model(config, backend="reference")
    model.load_state_dict(state_dict, assign=True)
    try:
        model.save_pretrained_hf(folder)
    except ValueError as e:  # CheckpointError: stride 8, x2 heads
        return None, str(e)
    return folder, ""


def run_attention(shared: Shared, args: argparse.Namespace, peak: float, skipped: Dict[str, str]) -> List[dict]:
    """Training step and memory for each Table 5 preset at 1/8 features (patch stride 8)."""
    backends = [b for b in shared.plan.backends if b in ATTENTION_BACKENDS] or list(ATTENTION_BACKENDS)
    rows: List[dict] = []
    for label, spec in TABLE5_ROWS.items():
        try:
            specs = attention_preset(depth=shared.config.backbone.depth, **spec)
            config = with_overrides(shared.config, patch_stride=8, attention=specs)
        except (ValueError, NotImplementedError) as e:
            skipped[f"attention/{label}"] = str(e)
            continue
        # The run's weights where the shapes agree; N(0, 0.02) where 1/8 features change a shape (pos_embed) or
        # add a tensor (rel-pos tables). The classic head loses its second deconv (one x2 step to 1/4 heatmaps).
        with torch.device("meta"):
            layout = Model(config, backend="reference")
        own = shared.state_dict
        state = {k: own[k] if k in own and own[k].shape == v.shape else torch.randn(v.shape) * 0.02
                 for k, v in layout.state_dict().items()}
        sub = Shared(shared.plan, config, state)
        rows += run_mode("train", sub, backends, label, args.res, args.seed, peak, skipped, config)
    return rows


if __name__ == "__main__":
    main()
