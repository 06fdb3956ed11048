"""Test setup: the Triton interpreter on machines without CUDA, seeded RNGs, the gpu/slow markers, NaN-filled
allocations in gpu tests, and the ``one_thread`` fixture.

TRITON_INTERPRET must be set before any module that defines a @triton.jit kernel is imported, so it is set
here, at collection time, before the tests import vitpose_fast.

In tests marked ``gpu`` (and ``nan_outputs``), ``torch.empty``, ``torch.empty_like``, ``torch.empty_strided`` and
``Tensor.new_empty`` fill floating-point results with NaN: a kernel output is allocated that way, so an element
the kernel never writes stays NaN and fails the comparison with the reference (fresh device memory is often zero,
which can hide it). ``VITPOSE_FAST_TEST_NAN_OUTPUTS=1`` does the same in every test.
"""

import functools
import os
import random

import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped elsewhere)")
    config.addinivalue_line("markers", "slow: long-running; excluded by default, run with -m slow")
    config.addinivalue_line("markers", "nan_outputs: fill floating torch.empty* results with NaN (as gpu tests do)")


# Counting the Triton compilations of `pytest -m gpu` on a CPU (vitpose_fast.benchmarking.gpu_image, with
# VITPOSE_FAST_COMPILE_LOG_ONLY=1: kernel launches are recorded, not run): the gpu tests run with "cuda" mapped to
# the CPU (tests/fake_cuda.py); their results mean nothing, only the launches they make are kept.
COUNT_GPU_COMPILES = os.environ.get("VITPOSE_FAST_COMPILE_LOG_ONLY") == "1" and not _HAS_CUDA


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not _HAS_CUDA and not COUNT_GPU_COMPILES:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _gpu_as_cpu(request, monkeypatch):
    if not (COUNT_GPU_COMPILES and request.node.get_closest_marker("gpu")):
        yield
        return
    import fake_cuda

    fake_cuda.install(monkeypatch)
    with fake_cuda._CudaAsCpu():
        yield


@pytest.fixture(autouse=True)
def _seed(request):
    # Fresh random inputs each run (the seed is printed on failure), but reproducible within one run.
    seed = int(os.environ.get("VITPOSE_FAST_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: several threads make some CPU reductions run-to-run nondeterministic
    (noise that many optimizer steps amplify past a parity tolerance) and oversubscribe small shared machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NAN_OUTPUT_MARKERS = ("gpu", "nan_outputs")


def _nan_filled(alloc):
    @functools.wraps(alloc)
    def wrapper(*args, **kwargs):
        out = alloc(*args, **kwargs)
        if out.is_floating_point() or out.is_complex():
            with torch.no_grad():  # also for requires_grad=True allocations
                out.fill_(float("nan"))
        return out

    return wrapper


@pytest.fixture(autouse=True)
def _nan_outputs(request, monkeypatch):
    every = os.environ.get("VITPOSE_FAST_TEST_NAN_OUTPUTS") == "1"  # e.g. the CPU kernel tests in the interpreter
    if every or any(request.node.get_closest_marker(m) for m in NAN_OUTPUT_MARKERS):
        for name in ("empty", "empty_like", "empty_strided"):
            monkeypatch.setattr(torch, name, _nan_filled(getattr(torch, name)))
        monkeypatch.setattr(torch.Tensor, "new_empty", _nan_filled(torch.Tensor.new_empty))
    yield


def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            print(f"\n[seed] rerun with VITPOSE_FAST_TEST_SEED={seeds[0]}")


requires_cuda = pytest.mark.skipif(not _HAS_CUDA, reason="needs a CUDA device")
