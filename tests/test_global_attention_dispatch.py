"""Plain global attention: our kernel or the vendor kernel, chosen by ``ops`` (the one dispatch place) from a
table of measured speeds (``ops.GLOBAL_TIMINGS``) by device, dtype, head dim and nearest shape."""

from __future__ import annotations

import pytest
import torch

from vitpose_fast import ops
from vitpose_fast.kernels import attention as kernel


def _timing(device="cpu", dtype=torch.float32, batch=32, tokens=972, heads=16, d=80, triton_ms=1.0, vendor_ms=2.0):
    return ops.GlobalTiming(device, dtype, batch, tokens, heads, d, "sdpa", triton_ms, vendor_ms)


def test_no_measurement_means_vendor():
    q = torch.randn(2, 7, 2, 80)
    assert ops.choose_global(q, ()) == "vendor"
    # A measurement for another device, dtype or head dim does not apply.
    for t in (_timing(device="NVIDIA H200"), _timing(dtype=torch.bfloat16), _timing(d=64)):
        assert ops.choose_global(q, (t,)) == "vendor"
    assert ops.choose_global(q, (_timing(),)) == "triton"


def test_nearest_measured_shape_decides():
    table = (_timing(tokens=192, triton_ms=1.0, vendor_ms=0.5), _timing(tokens=972, triton_ms=1.0, vendor_ms=1.5))
    assert ops.choose_global(torch.randn(1, 180, 2, 80), table) == "vendor"
    assert ops.choose_global(torch.randn(1, 900, 2, 80), table) == "triton"
    # Same tokens: the nearer batch * heads wins.
    table = (_timing(batch=1, heads=16, triton_ms=1.0, vendor_ms=0.5), _timing(batch=64, heads=16))
    assert ops.choose_global(torch.randn(1, 972, 16, 80), table) == "vendor"
    assert ops.choose_global(torch.randn(48, 972, 16, 80), table) == "triton"


def test_global_attention_follows_the_table(monkeypatch):
    monkeypatch.delenv(ops.GLOBAL_ENV, raising=False)
    q, k, v = (torch.randn(1, 6, 2, 80) for _ in range(3))
    calls = []
    real = kernel.attention
    monkeypatch.setattr(kernel, "attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    want = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    monkeypatch.setattr(ops, "GLOBAL_TIMINGS", ())
    torch.testing.assert_close(ops.global_attention(q, k, v), want)
    assert not calls
    monkeypatch.setattr(ops, "GLOBAL_TIMINGS", (_timing(),))
    torch.testing.assert_close(ops.global_attention(q, k, v), want, rtol=1e-5, atol=1e-5)
    assert calls == [1]


def test_shipped_table_is_well_formed():
    for t in ops.GLOBAL_TIMINGS:
        assert t.vendor in ("flash", "xformers", "sdpa") and t.triton_ms > 0 and t.vendor_ms > 0
        assert min(t.batch, t.tokens, t.heads, t.head_dim) >= 1


@pytest.mark.parametrize("bad", ["fastest", "cudnn"])
def test_bad_env_choice_is_named(monkeypatch, bad):
    monkeypatch.setenv(ops.GLOBAL_ENV, bad)
    q = torch.randn(1, 2, 1, 8)
    with pytest.raises(ValueError, match="expected one of"):
        ops.global_attention(q, q, q)


def test_routing_lives_in_ops_only():
    for name in ("GLOBAL_ENV", "GLOBAL_TIMINGS", "choose_global", "global_attention", "GlobalTiming"):
        assert not hasattr(kernel, name), name
