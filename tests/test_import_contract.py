"""The layering of docs/DESIGN.md, enforced: every import of every module of the package (module level and inside
functions, parsed with ``ast``, nothing imported) points down, and no modules import each other in a cycle.

Layers, bottom to top (a module imports only from lower layers and from its own package):

    config < reference < kernels < ops < model < data < inference < training < cli
                                                                     ray        benchmarking
                                                                    the ``vitpose_fast`` facade (its __init__)

``reference`` is below ``kernels``: the kernels reuse its geometry and FP8 helpers and are checked against it.
``benchmarking`` (helpers of ``benchmarks/*.py``) sits beside ``cli`` at the top: scripts and tests import it,
the library never does. ``ray`` (Ray Data inference) sits beside ``training``: the CLI imports it, neither imports
the other. The facade (``from vitpose_fast import Model``) is for users, scripts and tests; inside
the package a module names the module it needs.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Dict, List, Set, Tuple

import vitpose_fast

ROOT = Path(vitpose_fast.__file__).resolve().parent
PACKAGE = "vitpose_fast"
RANKS = {
    "config": 0,
    "reference": 1,
    "kernels": 2,
    "ops": 3,
    "model": 4,
    "data": 5,
    "inference": 6,
    "training": 7,
    "ray": 7,
    "cli": 8,
    "benchmarking": 8,
    "": 9,  # the facade: vitpose_fast/__init__.py
}
# (importer, imported) pairs allowed against the layers, each with its reason. Keep it empty.
EXCEPTIONS: Dict[Tuple[str, str], str] = {}


def _modules() -> Dict[str, Path]:
    """Every module of the package (the kernels too, through the vitpose_fast/kernels link) by dotted name."""
    out = {}
    for folder, _, files in os.walk(ROOT, followlinks=True):
        for f in files:
            if f.endswith(".py"):
                rel = (Path(folder) / f).relative_to(ROOT).with_suffix("")
                parts = [p for p in rel.parts if p != "__init__"]
                out[".".join([PACKAGE, *parts])] = Path(folder) / f
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return (ROOT.joinpath(*name.split(".")[1:]) / "__init__.py").exists() or name == PACKAGE


def _resolve(name: str) -> str:
    """The package module an imported name lives in (``vitpose_fast.model.fp8.Fp8Linear`` -> the fp8 module)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, path: Path, source: str = None) -> List[Tuple[str, int]]:
    """(imported package module, line) for every import in ``path`` (or ``source``), at any depth of the syntax
    tree."""
    found = []
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # "from pkg import sub" names a submodule when there is one, else an attribute of pkg.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _resolve(name)
                if target != module:
                    found.append((target, node.lineno))
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> Dict[str, Set[str]]:
    return {m: {t for t, _ in imports_of(m, p)} for m, p in MODULES.items()}


def test_the_walk_sees_every_layer_and_the_kernels():
    assert {layer(m) for m in MODULES} == set(RANKS)
    assert "vitpose_fast.kernels.attention" in MODULES and "vitpose_fast.kernels.runtime" in MODULES


def test_imports_point_down():
    bad = []
    for module, path in sorted(MODULES.items()):
        for target, line in imports_of(module, path):
            src, dst = layer(module), layer(target)
            same_package = src == dst and src != ""
            if same_package or RANKS[dst] < RANKS[src] or (module, target) in EXCEPTIONS:
                continue
            bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {module} ({src or 'facade'}) imports {target} "
                       f"({dst or 'facade'})")
    assert not bad, "imports against the layering (config < reference < kernels < ops < model < data < " \
                    "inference < training | ray < cli | benchmarking < facade):\n" + "\n".join(bad)


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    # A package's __init__ importing its own modules is no cycle of design: leave those edges out.
    graph = {m: {t for t in ts if not (_is_package(m) and t.startswith(m + "."))} for m, ts in _graph().items()}
    assert not _cycles(graph), f"modules that import each other: {_cycles(graph)}"


def test_the_checker_catches_what_it_should():
    # The walk sees function-level imports and relative imports, and the cycle finder finds a two-module cycle.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = ("import torch\nfrom vitpose_fast import ops\n\n\ndef f():\n    from vitpose_fast.cli import predict\n"
              "    from ..inference import model\n    import vitpose_fast.model.fp8\n")
    got = imports_of("vitpose_fast.model.probe", ROOT / "model" / "probe.py", source)
    assert got == [("vitpose_fast.ops", 2), ("vitpose_fast.cli.predict", 6), ("vitpose_fast.inference.model", 7),
                   ("vitpose_fast.model.fp8", 8)]
