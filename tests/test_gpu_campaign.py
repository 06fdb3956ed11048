"""benchmarks/gpu_campaign.sh: its dry run (every step's Python code path on CPU with tiny shapes, in a Python
where the packages the GPU image lacks cannot be imported: the GPU-image mirror) and its budget logic, checked
through the files it hands back; campaign_report.py's step status."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["setup", "pytest_gpu", "main_h_576x432", "train_b_256x192", "main_sapiens_0.3b_1024x768", "bench_attention",
         "bench_simple_decoder", "bench_heatmap_decode", "bench_decode", "compile_h_576x432"]
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
    """The dry run runs under the GPU-image mirror: `pytest -m gpu --collect-only` must collect every gpu test
    with no collection error there, and every other step must still run."""
    out, data, stdout = _campaign(tmp_path)
    steps = data["campaign"]["steps"]
    assert [s["step"] for s in steps] == STEPS
    assert all(s["status"] == "ok" for s in steps), [(s["step"], s["status"]) for s in steps]
    assert data["campaign"]["dry_run"] is True
    assert "packages the GPU image lacks, importable here: none" in data["environment"]

    pytest_log = data["pytest_gpu"]
    assert pytest_log and "error" not in pytest_log and pytest_log["errors"] == 0, pytest_log
    collected = re.match(r"(\d+)/\d+ tests collected", pytest_log["last_line"])  # "48/663 tests collected (...)"
    assert collected and int(collected.group(1)) >= 30 and "error" not in pytest_log["last_line"], pytest_log

    # Every step's expected compilations are printed; the dry run records what its tiny shapes launch.
    compiles = {s["step"]: s for s in steps}
    assert compiles["pytest_gpu"]["compiles"] > 30 and compiles["main_h_576x432"]["compiles"] > 0
    for name in ("main_h_576x432", "train_b_256x192", "bench_attention", "bench_heatmap_decode"):
        assert compiles[name]["recorded_compiles"] > 0, name
        assert f"{name} (" in stdout and f"compiles: {compiles[name]['compiles']} on the GPU" in stdout

    runs = {r["step"]: r for r in data["runs"]}
    assert set(runs) == {"main_h_576x432", "train_b_256x192", "main_sapiens_0.3b_1024x768", "compile_h_576x432"}
    assert {r["backend"] for r in runs["main_sapiens_0.3b_1024x768"]["rows"] if r.get("images_s")} == {
        "sdpa-bf16", "vitpose_fast", "vitpose_fast-fp8"}
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


def test_a_failed_row_fails_its_step(tmp_path, capsys):
    """A step whose command succeeded but one of whose rows errored (a run.py row noted `error: ...`, a
    micro-benchmark row with `error`) is FAILED, and summary.md names those rows; skipped and OOM rows are not
    failures."""
    report = load_script("benchmarks/campaign_report.py")
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "run" / "main_h_576x432").mkdir(parents=True)
    steps = [("main_h_576x432", "ok"), ("bench_attention", "ok"), ("bench_decode", "ok"), ("train_b_256x192", "ok")]
    (work / "steps.tsv").write_text("".join(f"{n}\t{s}\t3\t60\tcmd\t4\n" for n, s in steps))
    rows = [{"mode": "infer", "attention": "global", "backend": "sdpa-bf16", "batch": 32, "images_s": 10.0},
            {"mode": "infer", "attention": "global", "backend": "vitpose_fast-fp8", "batch": 32,
             "note": "error: RuntimeError: row-wise scaling needs sm_89"},
            {"mode": "infer", "attention": "global", "backend": "hf", "batch": 32, "note": "OOM"}]
    (work / "run" / "main_h_576x432" / "x.json").write_text(json.dumps({"rows": rows}))
    (work / "bench_attention.json").write_text(json.dumps({"complete": True, "rows": [
        {"case": "h", "spec": "global", "rel_pos": True, "mode": "fwd+bwd", "impl": "torch",
         "skipped": "needs about 120.0 GiB, 70.0 GiB free on the device"},
        {"case": "h", "spec": "window", "rel_pos": False, "mode": "fwd", "impl": "triton",
         "error": "CompilationError: out of resources"}]}))
    (work / "bench_decode.json").write_text(json.dumps({"complete": True, "rows": [{"case": "c", "ms": 1.0}]}))

    for name, want in (("main_h_576x432", "FAILED (1 error row)"), ("bench_attention", "FAILED (1 error row)"),
                       ("bench_decode", "ok"), ("train_b_256x192", "ok")):
        assert report.main(["--work", str(work), "--out", str(out), "--status-of", name]) == 0
        assert capsys.readouterr().out.strip() == want, name
    summary = (out / "summary.md").read_text()
    assert "| main_h_576x432 | FAILED (1 error row) |" in summary and "| bench_decode | ok |" in summary
    failed = summary.split("Failed rows:")[1].split("##")[0]
    assert "main_h_576x432: infer global vitpose_fast-fp8 32: error: RuntimeError: row-wise scaling" in failed
    assert "bench_attention: h window False fwd triton: CompilationError: out of resources" in failed
    assert "sdpa-bf16" not in failed and "OOM" not in failed and "GiB free" not in failed
    saved = {s["step"]: s for s in json.loads((out / "results.json").read_text())["campaign"]["steps"]}
    assert saved["main_h_576x432"]["compiles"] == 4 and len(saved["bench_attention"]["failed_rows"]) == 1
