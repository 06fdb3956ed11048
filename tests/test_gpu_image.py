"""The GPU machine's image mirrored in CI (vitpose_fast.benchmarking.gpu_image): the packages it lacks are
blocked, and nothing a GPU test or the campaign imports at module level needs one of them. (The campaign's dry
run, `pytest -m gpu --collect-only` included, runs under the same blocker: tests/test_gpu_campaign.py.)"""

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List

import pytest

from helpers import REPO

from vitpose_fast.benchmarking import gpu_image

TESTS = REPO / "tests"
# Everything the campaign runs besides the tests: the library, the kernels, the benchmark scripts.
LIBRARY = [*sorted((REPO / "vitpose_fast").rglob("*.py")), *sorted((REPO / "kernels").glob("*.py")),
           *sorted((REPO / "benchmarks").glob("*.py"))]


def _has_gpu_tests(tree: ast.Module) -> bool:
    """A `pytest.mark.gpu` (decorator, pytestmark or parametrize mark) anywhere in the module."""
    return any(isinstance(node, ast.Attribute) and node.attr == "gpu" and isinstance(node.value, ast.Attribute)
               and node.value.attr == "mark" for node in ast.walk(tree))


def _module_level(tree: ast.Module) -> Iterable[ast.AST]:
    """The statements that run at import: the module's body and the blocks of its top-level if/try/with, not
    function or class bodies."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody"):
                stack += getattr(node, field, [])
            stack += [s for h in getattr(node, "handlers", []) for s in h.body]


def absent_imports(path: Path, absent=gpu_image.ABSENT_PACKAGES, local: Path = TESTS) -> List[str]:
    """``path``'s module-level imports of absent packages (``import x``, ``from x import y``, and
    ``pytest.importorskip("x")``, which skips the whole module there), following the local helper modules it
    imports (``from helpers import ...``) in ``local``."""
    found, seen, todo = [], set(), [path]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for node in _module_level(ast.parse(p.read_text(), str(p))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for call in ast.walk(node):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "importorskip" and call.args
                        and isinstance(call.args[0], ast.Constant)):
                    names.append(call.args[0].value)
            for name in names:
                top = name.partition(".")[0]
                if top in absent:
                    found.append(f"{p.name}:{node.lineno}: {name}")
                elif (local / f"{top}.py").exists():
                    todo.append(local / f"{top}.py")
    return found


def test_gpu_test_modules_import_nothing_the_image_lacks():
    modules = [p for p in sorted(TESTS.glob("test_*.py")) if _has_gpu_tests(ast.parse(p.read_text()))]
    assert len(modules) >= 8, modules  # the scan sees the gpu tests (attention, decoders, fused ops, fp8, ...)
    bad = [hit for p in modules for hit in absent_imports(p)]
    assert not bad, f"gpu-marked tests in modules that import, at module level, what the GPU image lacks: {bad}"


def test_library_and_benchmarks_import_nothing_the_image_lacks_at_module_level():
    assert len(LIBRARY) > 40
    bad = [hit for p in LIBRARY for hit in absent_imports(p, local=p.parent)]
    assert not bad, f"import these where they are used, not at module level: {bad}"


def test_scan_finds_a_module_level_import_in_a_gpu_test_module(tmp_path):
    (tmp_path / "helper_mod.py").write_text("try:\n    import pycocotools.coco\nexcept OSError:\n    pass\n")
    path = tmp_path / "test_x.py"
    path.write_text("import pytest\nimport helper_mod\nfrom xformers.ops import f\nav = pytest.importorskip('av')\n"
                    "def test_a():\n    import flash_attn\n\n@pytest.mark.gpu\ndef test_b():\n    pass\n")
    assert _has_gpu_tests(ast.parse(path.read_text()))
    assert sorted(absent_imports(path, local=tmp_path)) == [
        "helper_mod.py:2: pycocotools.coco", "test_x.py:3: xformers.ops", "test_x.py:4: av"]


def test_blocker_hides_the_absent_packages_only(tmp_path):
    folder = tmp_path / "image"
    gpu_image.write_sitecustomize(folder, absent=("pycocotools", "json"))
    code = ("import importlib.util, sys\n"
            "assert importlib.util.find_spec('pycocotools') is None and importlib.util.find_spec('json') is None\n"
            "for name in ('pycocotools.coco', 'json'):\n"
            "    try:\n        __import__(name)\n"
            "    except ModuleNotFoundError as e:\n        print('blocked', e.name)\n"
            "import numpy, csv\nprint('ok')\n")
    env = dict(os.environ, PYTHONPATH=str(folder))
    env.pop(gpu_image.COMPILE_LOG_ENV, None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["blocked", "pycocotools", "blocked", "json", "ok"]


def test_compile_recorder_counts_distinct_specialisations(tmp_path):
    log = tmp_path / "compiles.jsonl"
    code = """
import torch, triton, triton.language as tl

@triton.jit
def k(x, n, B: tl.constexpr):
    i = tl.arange(0, B)
    tl.store(x + i, i.to(tl.float32), mask=i < n)

x = torch.zeros(64)
k[(1,)](x, 5, B=32)
k[(1,)](x, 7, B=32)                 # same specialisation
k[(1,)](x, 32, B=32)                # n divisible by 16
k[(1,)](x, 5, B=32, num_warps=2)    # launch option
k[(1,)](x, 1, B=16)                 # constexpr, n == 1
k[(1,)](x[1:], 5, B=32)             # unaligned pointer
k[(1,)](x.double(), 5, B=32)        # dtype
print(x[:6].tolist())
"""
    folder = tmp_path / "image"
    gpu_image.write_sitecustomize(folder)
    env = dict(os.environ, PYTHONPATH=str(folder), TRITON_INTERPRET="1", **{gpu_image.COMPILE_LOG_ENV: str(log)})
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[0] == "[0.0, 0.0, 1.0, 2.0, 3.0, 4.0]"  # the kernels ran (x[1:] last wrote)
    assert gpu_image.count_compiles(log) == 6
    assert {r["kernel"] for r in gpu_image.read_compiles(log)} == {"__main__.k"}


def test_coco_without_pycocotools_names_the_install(monkeypatch, tmp_path):
    from vitpose_fast.data.coco import load_coco
    from vitpose_fast.inference.evaluation import evaluate_coco

    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # as absent: importing it raises ImportError
    with pytest.raises(ImportError, match=r"pip install pycocotools"):
        load_coco(tmp_path / "ann.json")
    with pytest.raises(ImportError, match=r"pip install pycocotools"):
        evaluate_coco([{"image_id": 1}], str(tmp_path / "ann.json"))
