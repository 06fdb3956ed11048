"""The kernels' shared runtime helpers: the interpreter switch, the one autotune approach and the row tiles."""

from __future__ import annotations

import pytest
import torch

from vitpose_fast.kernels import bias_gelu, fp8_quant, residual_layer_norm, runtime


@pytest.fixture
def fake_bench(monkeypatch):
    """do_bench timed by a table (CPU has no CUDA events): config -> ms, counting the runs."""
    import triton.testing

    runs = []

    def set_costs(costs):
        monkeypatch.setattr(triton.testing, "do_bench", lambda fn: fn() or costs[runs[-1]])
    runtime._TUNED.clear()
    yield runs, set_costs
    runtime._TUNED.clear()


def test_autotune_only_when_switched_on_and_compiled(monkeypatch, fake_bench):
    runs, set_costs = fake_bench
    set_costs({"a": 3.0, "b": 1.0, "c": 2.0})
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(runtime.AUTOTUNE_ENV, "1")
    assert runtime.interpreting() and not runtime.autotune_enabled()
    assert runtime.tuned("k", "a", ("a", "b", "c"), runs.append) == "a" and not runs  # never in the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv(runtime.AUTOTUNE_ENV)
    assert runtime.tuned("k", "a", ("a", "b", "c"), runs.append) == "a" and not runs  # off by default
    monkeypatch.setenv(runtime.AUTOTUNE_ENV, "1")
    assert runtime.tuned("k", "a", ("a", "b", "c"), runs.append) == "b" and runs == ["a", "b", "c"]
    assert runtime.tuned("k", "a", ("a", "b", "c"), runs.append) == "b" and len(runs) == 3  # cached per key


def test_configs_that_do_not_fit_are_skipped(monkeypatch, fake_bench):
    import triton

    runs, set_costs = fake_bench
    set_costs({"a": 3.0, "b": 1.0})
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv(runtime.AUTOTUNE_ENV, "1")

    def run(c):
        runs.append(c)
        if c == "b":
            raise triton.runtime.errors.OutOfResources(1, 0, "shared memory")

    assert runtime.tuned("k2", "a", ("a", "b"), run) == "a"


def test_row_settings_keep_their_shapes(monkeypatch):
    # The GPU settings the kernel report checked (no spills) are unchanged by the move to one helper.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert residual_layer_norm.settings(1280) == (2, 2048, 8)
    assert residual_layer_norm.settings(384) == (8, 512, 8)
    assert bias_gelu.settings(5120) == (8, 256, 4)
    assert fp8_quant.tile_settings(1280) == (2, 2048, 16)
    assert fp8_quant.tile_settings(5120) == (1, 8192, 16)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # bigger tiles: fewer numpy steps
    assert residual_layer_norm.settings(1280) == (8, 2048, 16)
    assert bias_gelu.settings(5120) == (16, 1024, 4)
    assert fp8_quant.tile_settings(1280) == (8, 2048, 4)
    assert runtime.persistent_programs(0, 2) == 4


def test_on_device_follows_the_interpreter(monkeypatch):
    x = torch.zeros(2)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert runtime.on_device(x)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not runtime.on_device(x)
