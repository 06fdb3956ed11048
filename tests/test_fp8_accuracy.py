"""``benchmarks/fp8_accuracy.py``: the random-weight measurement (default run) and, slow, the issue's FP8
accuracy bars on the tiny model trained on the synthetic set as the learning test trains it: |AP(fp8) -
AP(fp32)| <= 0.01 on synthetic val and a median keypoint displacement fp8 vs fp32 <= 0.1 heatmap pixels (about
as long as the learning test: minutes)."""


import pytest
import torch

from helpers import load_script

fp8_accuracy = load_script("benchmarks/fp8_accuracy.py")


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_fp8_keeps_the_trained_tiny_models_accuracy(tmp_path):
    trained = fp8_accuracy.train_tiny(tmp_path)
    acc = fp8_accuracy.tiny_accuracy(trained["weights"], trained["data_root"])
    print("\n" + fp8_accuracy.tables({"tiny": acc}))
    assert acc["fp32"]["AP"] >= 0.5  # the model learned (the learning test's bar), so the comparison means something
    assert abs(acc["fp8"]["AP"] - acc["fp32"]["AP"]) <= fp8_accuracy.AP_BAR
    assert acc["fp8"]["median_px"] <= fp8_accuracy.MEDIAN_PX_BAR
    # bf16 is the floor FP8 builds on: its GEMM operands only add to bf16's error.
    assert acc["bf16"]["mean_px"] <= acc["fp8"]["mean_px"] + 0.05


def test_random_weight_measurement_runs_and_ranks_precisions():
    res = fp8_accuracy.random_weight_accuracy("vitpose_s", (64, 48), 1, depth=1)
    assert res["fp32"]["hm_rel_err"] == 0 and res["fp32"]["kp_within_1px"] == 1
    assert 0 < res["bf16"]["hm_rel_err"] < res["fp8"]["hm_rel_err"] < 0.2
    assert "| fp8 |" in fp8_accuracy.tables({"random": {"s": res}})
