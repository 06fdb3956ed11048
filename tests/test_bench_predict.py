"""``benchmarks/bench_predict.py`` runs end to end (one block, one timed run; its figures are not checked here:
speed claims live in benchmark results, not in tests)."""

from __future__ import annotations

import json

import pytest

from helpers import load_script


@pytest.mark.slow  # ViTPose-B width, an ONNX export and the transformers pipeline: ~30 s on two cores
def test_bench_predict_writes_both_cases(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    script = load_script("benchmarks/bench_predict.py")
    payload = script.main(["--depth", "1", "--repeats", "1", "--out", str(tmp_path)])
    rows = {r["case"]: r for r in payload["rows"]}
    assert set(rows) == {"predict", "optimize, batch 8"}
    for r in rows.values():
        assert r["ours_ms"] > 0 and r["baseline_ms"] > 0
        assert r["speedup"] == pytest.approx(r["baseline_ms"] / r["ours_ms"])
    # Same weights, same boxes: most keypoints agree to within 2 px with the transformers pipeline.
    assert rows["predict"]["kpt_within_2px"] > 0.5
    written = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert written["default_precision"] in ("fp32", "bf16") and len(written["rows"]) == 2
    assert next(tmp_path.glob("*.md")).read_text().count("\n| ") == 3  # header + two rows
