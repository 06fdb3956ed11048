"""The GPU campaign's result files, from its working folder: ``summary.md``, ``results.json``, ``logs.tar.gz``.

    python3 benchmarks/campaign_report.py --work WORK --out OUT

``gpu_campaign.sh`` calls it after every step, so whatever stops the campaign, the output folder holds the latest
state. ``WORK`` holds ``steps.tsv`` (one line per step: name, status, seconds, limit, command, expected Triton
compilations), ``campaign.json`` (dry run or not, budget, start time), ``environment.txt``, ``logs/<step>.log``,
``compiles/<step>.jsonl`` (dry run: the kernel specialisations each step launched), ``pytest_gpu.xml`` (JUnit),
``run/<step>/*.json`` (``benchmarks/run.py`` payloads) and ``bench_*.json`` (the micro-benchmarks' result
files). A step whose command succeeded but one of whose rows errored (a ``run.py`` row noted ``error: ...``, a
micro-benchmark row with ``error``) is FAILED, and ``summary.md`` names those rows. Plain Python: no torch
import, so a call costs well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

from vitpose_fast.benchmarking.tables import markdown_table

STEP_COLUMNS = ["step", "status", "seconds", "limit_s", "compiles", "recorded_compiles", "command"]
RUN_COLUMNS = ["mode", "attention", "backend", "dtype", "batch", "images_s", "ms_image", "p50_ms", "p90_ms",
               "peak_mib", "mfu", "hm_diff", "vs_sdpa", "vs_compile", "vs_hf", "mfu_target", "note"]


def read_steps(work: Path) -> List[Dict[str, object]]:
    steps = []
    path = work / "steps.tsv"
    if path.exists():
        for line in path.read_text().splitlines():
            name, status, seconds, limit, command, compiles = (line.split("\t") + [""] * 6)[:6]
            step = {"step": name, "status": status, "seconds": int(seconds or 0), "limit_s": int(limit or 0),
                    "compiles": int(compiles or 0), "command": command}
            log = work / "compiles" / f"{name}.jsonl"
            if log.exists():  # a dry run: the distinct kernel specialisations its interpreter launched
                step["recorded_compiles"] = len({line for line in log.read_text().splitlines() if line.strip()})
            steps.append(step)
    return steps


def read_pytest(work: Path) -> Optional[Dict[str, object]]:
    path = work / "pytest_gpu.xml"
    log = work / "logs" / "pytest_gpu.log"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    last = lines[-1].strip("= ") if lines else None  # "N passed, M failed in Xs", or "N/M tests collected ..."
    if not path.exists():
        return {"error": "no JUnit file (pytest did not finish)", "last_line": last} if lines else None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:  # a run cut off while writing
        return {"error": f"unreadable JUnit file: {e}", "last_line": last}
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    for suite in root.iter("testsuite"):
        for k in counts:
            counts[k] += int(suite.get(k, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return dict(counts, failed=failed, last_line=last)


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def failed_rows(step: str, rows: List[dict]) -> List[str]:
    """The rows of ``step`` that errored, named (an error is a failure; a skip with its reason, or an
    out-of-memory row ending a batch sweep, is not)."""
    out = []
    for r in rows:
        note = str(r.get("note") or "")
        error = r.get("error") or (note if note.startswith("error") else None)
        if error:
            name = " ".join(str(r[k]) for k in ("case", "spec", "rel_pos", "mode", "attention", "backend",
                                                "batch", "impl") if r.get(k) is not None)
            out.append(f"{step}: {name}: {error}")
    return out


def _mark_failed(steps: List[Dict[str, object]], failures: Dict[str, List[str]]) -> None:
    for s in steps:
        rows = failures.get(s["step"])
        if rows and s["status"] == "ok":
            s["status"] = f"FAILED ({len(rows)} error row{'s' if len(rows) > 1 else ''})"
        if rows:
            s["failed_rows"] = rows


def collect(work: Path) -> Dict[str, object]:
    campaign = read_json(work / "campaign.json") or {}
    steps = read_steps(work)
    failures: Dict[str, List[str]] = {}
    runs = []
    order = {s["step"]: i for i, s in enumerate(steps)}
    for path in sorted((work / "run").glob("*/*.json"), key=lambda p: (order.get(p.parent.name, len(order)), p)):
        payload = read_json(path)
        if payload and "rows" in payload:
            failures.setdefault(path.parent.name, []).extend(failed_rows(path.parent.name, payload["rows"]))
            runs.append({"step": path.parent.name, "file": path.name, **{k: payload.get(k) for k in (
                "title", "environment", "plan", "matmul_tflops", "mfu_base_tflops", "gflops_per_image", "rows",
                "skipped", "notes", "wall_s")}})
    micro = {}
    for path in sorted(work.glob("bench_*.json")):
        payload = read_json(path)
        if payload is not None:
            micro[path.stem] = payload
            failures.setdefault(path.stem, []).extend(failed_rows(path.stem, payload.get("rows", [])))
    _mark_failed(steps, failures)
    env_txt = work / "environment.txt"
    return {
        "campaign": dict(campaign, steps=steps, elapsed_s=int(time.time() - campaign.get("start", time.time()))),
        "environment": env_txt.read_text() if env_txt.exists() else "",
        "pytest_gpu": read_pytest(work),
        "runs": runs,
        "micro_benchmarks": micro,
    }


def _micro_columns(payload: dict) -> List[str]:
    columns = payload.get("columns") or sorted({k for r in payload.get("rows", []) for k in r})
    return [c for c in columns if any(r.get(c) is not None for r in payload.get("rows", []))]


def summary(data: Dict[str, object]) -> str:
    c = data["campaign"]
    dry = c.get("dry_run")
    md = [f"# GPU campaign{' (dry run on CPU)' if dry else ''}", ""]
    md += [f"- started {c.get('started', '?')}, commit {c.get('commit', '?')}; budget {c.get('budget_s', '?')} s, "
           f"{c.get('elapsed_s', '?')} s so far"]
    if dry:
        md += ["- dry run: every step's Python code path on CPU with tiny shapes and iteration counts (kernels in "
               "the Triton interpreter); `pytest -m gpu` is collection only (`--collect-only`): no GPU here. "
               "The figures only show that the steps run."]
    md += [f"- roofline: achieved rate over the H200 ceilings of `benchmarks/common.py` (PEAK_FLOPS, "
           "PEAK_BYTES_S); 1.0 is the floor", ""]
    steps = c.get("steps", [])
    md += ["## Steps", "", markdown_table(steps, [k for k in STEP_COLUMNS if any(k in s for s in steps)]), ""]
    md += ["`compiles`: the distinct Triton compilations the step needs on a fresh GPU machine (its limit allows "
           "for them)" + ("; `recorded_compiles`: those this dry run's tiny shapes launched" if dry else ""), ""]
    failed = [row for s in c.get("steps", []) for row in s.get("failed_rows", [])]
    if failed:
        md += ["Failed rows:", ""] + [f"- {row}" for row in failed] + [""]
    env = str(data.get("environment", "")).strip()
    if env:
        md += ["## Environment", "", "```", env, "```", ""]
    pt = data.get("pytest_gpu")
    if pt:
        md += ["## pytest -m gpu", ""]
        if "error" in pt:
            md += [f"- {pt['error']}"]
        else:
            md += [f"- {pt['passed']} passed, {pt['failures']} failed, {pt['errors']} errors, {pt['skipped']} skipped"]
            md += [f"- FAILED {name}" for name in pt["failed"]]
        md += [f"- pytest: {pt['last_line']}" if pt.get("last_line") else "", ""]
    for run in data["runs"]:
        rows = run.get("rows") or []
        columns = [col for col in RUN_COLUMNS if any(r.get(col) is not None for r in rows)]
        md += [f"## {run['step']}: {run.get('title')}", ""]
        rate = run.get("mfu_base_tflops")
        if rate:
            md += [f"- matmul {rate:.4g} TFLOP/s (MFU base); {run.get('gflops_per_image', 0):.1f} GFLOP per image",
                   ""]
        md += [markdown_table(rows, columns) if rows else "(no rows)", ""]
        md += [f"- skipped {k}: {v}" for k, v in (run.get("skipped") or {}).items()]
        md += [""]
    for name, payload in data["micro_benchmarks"].items():
        rows = payload.get("rows", [])
        state = "complete" if payload.get("complete") else "INCOMPLETE (stopped by its time limit or an error)"
        md += [f"## {name} ({len(rows)} rows, {state})", ""]
        md += [markdown_table(rows, _micro_columns(payload)) if rows else "(no rows)", ""]
    return "\n".join(md) + "\n"


def archive(work: Path, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for f in sorted(work.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(work)))
    os.replace(tmp, path)


def write(work: Path, out: Path) -> List[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = collect(work)
    paths = []
    for name, text in (("results.json", json.dumps(data, indent=1, default=str) + "\n"),
                       ("summary.md", summary(data))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
        paths.append(out / name)
    archive(work, out / "logs.tar.gz")
    paths.append(out / "logs.tar.gz")
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--status-of", metavar="STEP", help="then print that step's status (FAILED when a row of "
                        "it errored, even though its command succeeded)")
    args = parser.parse_args(argv)
    write(args.work, args.out)
    if args.status_of:
        steps = {s["step"]: s for s in collect(args.work)["campaign"]["steps"]}
        print(steps[args.status_of]["status"] if args.status_of in steps else "unknown")
    return 0


if __name__ == "__main__":
    sys.exit(main())
