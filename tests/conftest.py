"""Test setup: the Triton interpreter on machines without CUDA, seeded RNGs, and the gpu/slow markers.

TRITON_INTERPRET must be set before any module that defines a @triton.jit kernel is imported, so it is set
here, at collection time, before the tests import vitpose_fast.
"""

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


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not _HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed(request):
    # Fresh random inputs each run (the seed is printed on failure), but reproducible within one run.
    seed = int(os.environ.get("VITPOSE_FAST_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield


def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            print(f"\n[seed] rerun with VITPOSE_FAST_TEST_SEED={seeds[0]}")


requires_cuda = pytest.mark.skipif(not _HAS_CUDA, reason="needs a CUDA device")
