"""Small helpers shared by several test modules (import them: ``from helpers import ...``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """A script of the repository (``benchmarks/run.py``) imported from its file, once per session.

    Scripts import only the installed ``vitpose_fast``, so nothing of the repository goes on ``sys.path``: its
    root holds ``kernels/``, the name of a PyPI package that transformers imports."""
    path = REPO / relpath
    name = "script_" + "_".join(Path(relpath).with_suffix("").parts)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def randomize_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Larger-than-init parameters and non-trivial BatchNorm statistics, so that every layer matters for the
    output; in place, returns ``model``."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
    return model


def max_errors(values: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> list:
    return [(a - b).abs().max().item() for a, b in zip(values, refs)]


def assert_close_scaled(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor], rtol: float, atol: float,
                        names: Optional[Sequence[str]] = None) -> None:
    """Each pair close within ``rtol`` and ``atol`` times the reference's scale (at least 1)."""
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()),
                                   msg=names[i] if names else None)


def assert_kernel_within_twice_torch(run: Callable, kernel_fn: Callable, ref_fn: Callable, args: Sequence,
                                     dtype: torch.dtype, rel: float) -> None:
    """The kernel's error in ``dtype`` against the fp32 reference (``run(fn, *args, dtype)`` gives the outputs
    and gradients) is at most twice PyTorch's own in that dtype, plus ``rel`` of each output's scale."""
    oracle = run(ref_fn, *args, torch.float32)
    kern = max_errors(run(kernel_fn, *args, dtype), oracle)
    pt = max_errors(run(ref_fn, *args, dtype), oracle)
    for i, (k, p) in enumerate(zip(kern, pt)):
        assert k <= 2 * p + rel * oracle[i].abs().max().item(), (i, k, p)
