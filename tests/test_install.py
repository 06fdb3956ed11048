"""A fresh install as a user runs it, from the repository root: nothing of the repository shadows an installed
package. The top-level ``kernels/`` folder has the name of the PyPI package ``kernels``, which transformers
imports for VitPose; started from the root (where ``python -m`` and ``python -c`` put the working directory on
``sys.path``), Python must still find the installed one."""

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO

# The interpreter as a user starts it: none of this session's test settings.
_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VITPOSE_FAST_", "TRITON_"))}


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def pypi_kernels():
    """The real ``kernels`` package (a transformers dependency, installed by the dev extras)."""
    spec = pytest.importorskip("kernels")
    assert "CUDAProperties" in dir(spec), "the installed `kernels` is not the PyPI package"
    return spec


def test_import_kernels_from_repo_root_is_the_installed_package(pypi_kernels):
    proc = _run("-c", "import kernels, transformers.models.vitpose as v; from transformers import "
                      "VitPoseForPoseEstimation; print(kernels.__file__)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = os.path.realpath(proc.stdout.strip().splitlines()[-1])
    ours = os.path.realpath(REPO / "kernels")
    assert not found.startswith(ours + os.sep), f"`import kernels` from the repository root found {found}"
    assert found == os.path.realpath(pypi_kernels.__file__)


def test_pytest_collects_from_repo_root_without_errors(pypi_kernels):
    proc = _run("-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    tail = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert "error" not in proc.stdout.splitlines()[-1].lower(), tail
    assert "tests/test_model_parity.py::" in proc.stdout and "tests/test_pipeline.py::" in proc.stdout


def test_main_job_has_its_hf_row(pypi_kernels, tmp_path):
    """The README's main job (`benchmarks/run.py --model vitpose_h --res 576x432`), one block at 64x48: the
    transformers rows run, not skipped."""
    proc = _run("benchmarks/run.py", "--model", "vitpose_h", "--depth", "1", "--res", "64x48", "--batch", "1",
                "--iters", "1", "--warmup", "0", "--backends", "hf", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    payload = json.loads(path.read_text())
    assert not payload["skipped"], payload["skipped"]
    rows = [r for r in payload["rows"] if r["backend"] == "hf"]
    assert rows and all(r.get("images_s") for r in rows), rows
