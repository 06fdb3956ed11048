"""benchmarks/gpu_campaign.sh: its dry run (every step's Python code path on CPU with tiny shapes) and its budget
logic, checked through the files it hands back."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["setup", "pytest_gpu", "main_h_576x432", "train_b_256x192", "bench_attention", "bench_simple_decoder",
         "bench_heatmap_decode", "bench_decode", "compile_h_576x432"]
OUTPUT_FILES = ["logs.tar.gz", "results.json", "summary.md"]


def _campaign(tmp_path, *args, **env):
    out = tmp_path / "out"
    environ = {k: v for k, v in os.environ.items() if k not in ("OUT", "CAMPAIGN_BUDGET_S", "CAMPAIGN_TIME_SCALE")}
    environ.update(PYTHON=sys.executable, TMPDIR=str(tmp_path), **env)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_campaign.sh"), "--dry-run", "--out", str(out),
                           *args], env=environ, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # At most 8 files, directly under the output folder (what the GPU machine hands back).
    assert sorted(p.name for p in out.iterdir()) == OUTPUT_FILES and all(p.is_file() for p in out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("vitpose_campaign.")]  # work folder removed
    return out, json.loads((out / "results.json").read_text()), proc.stdout


def test_dry_run_runs_every_step(tmp_path):
    out, data, stdout = _campaign(tmp_path)
    steps = data["campaign"]["steps"]
    assert [s["step"] for s in steps] == STEPS
    assert all(s["status"] == "ok" for s in steps), [(s["step"], s["status"]) for s in steps]
    assert data["campaign"]["dry_run"] is True

    runs = {r["step"]: r for r in data["runs"]}
    assert set(runs) == {"main_h_576x432", "train_b_256x192", "compile_h_576x432"}
    main = {(r["backend"], r["batch"]) for r in runs["main_h_576x432"]["rows"] if r.get("images_s")}
    assert main == {(b, n) for b in ("sdpa-bf16", "vitpose_fast", "vitpose_fast-fp8", "hf", "hf-bf16") for n in (1, 2)}
    assert {r["backend"] for r in runs["train_b_256x192"]["rows"] if r["mode"] == "train"} == {"sdpa-bf16",
                                                                                               "vitpose_fast"}
    assert any(r["backend"] == "compile" and r.get("images_s") for r in runs["compile_h_576x432"]["rows"])

    micro = data["micro_benchmarks"]
    assert set(micro) == {"bench_attention", "bench_simple_decoder", "bench_heatmap_decode", "bench_decode"}
    for name, payload in micro.items():
        assert payload["complete"] and payload["rows"], name
        assert all(r["ms"] > 0 and r["roofline"] > 0 for r in payload["rows"]), name
    assert {r["impl"] for r in micro["bench_attention"]["rows"]} == {"torch", "triton"}

    summary = (out / "summary.md").read_text()
    assert "dry run" in summary and "--collect-only" in summary
    assert all(f"| {s} | ok |" in summary for s in STEPS)
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"logs/{s}.log" for s in STEPS} | {"environment.txt", "steps.tsv", "pytest_gpu.xml"} <= names


def test_steps_past_the_budget_are_skipped_and_logged(tmp_path):
    out, data, stdout = _campaign(tmp_path, CAMPAIGN_BUDGET_S="0")
    steps = data["campaign"]["steps"]
    assert [s["step"] for s in steps] == STEPS
    assert all(s["status"].startswith("SKIPPED") for s in steps)
    assert sum(line.startswith("SKIPPED ") for line in stdout.splitlines()) == len(STEPS)
    assert "SKIPPED (budget spent)" in (out / "summary.md").read_text()
