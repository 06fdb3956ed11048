"""The precision vocabulary: defaults by hardware (both branches, with fakes), resolution, ``optimize`` /
``predict`` / ``Model.load`` with ``precision=``, the deprecated ``dtype=``, and one FP8 check per path."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vitpose_fast import Model
from vitpose_fast.model import fp8, precision as P

from helpers import randomize_weights

TINY = dict(res=(64, 48), embed_dim=32, depth=1, num_heads=2, num_keypoints=17)


def _tiny():
    torch.manual_seed(0)  # the same weights in every call: predictions are compared across models
    return randomize_weights(Model.from_config("vitpose_s", backend="torch", **TINY)).eval()


@pytest.fixture
def cpu_flags(monkeypatch):
    def set_flags(*flags, capability="AVX512"):
        monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    return set_flags


@pytest.mark.parametrize("flags,want", [
    (("avx512f", "avx512_bf16"), "bf16"),
    (("avx512f", "amx_bf16", "amx_tile"), "bf16"),
    (("avx2", "avx512f"), "fp32"),  # AVX-512 without its bf16 instructions: emulated bf16 is slower
    ((), "fp32"),
])
def test_cpu_default_follows_native_bf16(cpu_flags, flags, want):
    cpu_flags(*flags)
    assert P.default_precision("cpu") == want
    assert P.resolve_precision(None, torch.device("cpu")) == want
    assert P.resolve_precision("auto", "cpu") == want


def test_cpu_bf16_flags_without_vector_dispatch_are_fp32(cpu_flags):
    cpu_flags("avx512_bf16", capability="DEFAULT")  # ATEN_CPU_CAPABILITY=default: no vector kernels
    assert P.default_precision("cpu") == "fp32"


@pytest.mark.parametrize("cap,want", [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"), ((8, 6), "bf16"),
                                      ((9, 0), "bf16")])
def test_cuda_default_follows_bf16_tensor_cores(monkeypatch, cap, want):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Test")
    chosen, why = P.choose_precision(None, torch.device("cuda"))
    assert chosen == want and f"sm_{cap[0]}{cap[1]}" in why


def test_other_devices_default_to_fp32_and_explicit_choices_win(cpu_flags):
    assert P.default_precision(torch.device("meta")) == "fp32"
    cpu_flags("avx512_bf16")
    for name in P.PRECISIONS:
        assert P.choose_precision(name, "cpu") == (name, "asked for")
    assert P.resolve_precision(" FP32 ", "cpu") == "fp32"


@pytest.mark.parametrize("bad", ["fp16", "int8", "", 32, torch.bfloat16])
def test_unknown_precision_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match=r"unknown precision .*expected one of fp32, bf16, fp8, 'auto' or None"):
        P.resolve_precision(bad, "cpu")


def test_this_machines_flags_are_read():
    # The reader must find the flags line where /proc/cpuinfo has one (Linux x86); elsewhere it is empty.
    flags = P.cpu_flags()
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        assert flags == frozenset()
        return
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    assert flags == (frozenset(line.split(":", 1)[1].split()) if line else frozenset())


# ------------------------------------------------------------------------------------------------------ optimize
@pytest.mark.parametrize("flags,dtype", [(("amx_bf16",), torch.bfloat16), ((), torch.float32)])
def test_optimize_default_is_the_hardware_default_and_is_logged(cpu_flags, caplog, flags, dtype):
    cpu_flags(*flags)
    model = _tiny()
    with caplog.at_level(logging.INFO, logger="vitpose_fast"):
        model.optimize(2)
    assert model.backbone.pos_embed.dtype == dtype and model.precision == P.PRECISIONS[dtype == torch.bfloat16]
    record = next(r for r in caplog.records if r.name == "vitpose_fast" and "precision" in r.getMessage())
    msg = record.getMessage()
    assert f"precision {model.precision} on cpu" in msg and "the default on cpu" in msg
    assert ("natively (amx_bf16)" in msg) == bool(flags)


def test_optimize_explicit_and_kept_precision(cpu_flags, caplog):
    cpu_flags("avx512_bf16")
    model = _tiny()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
    model.optimize(2, precision="fp32")
    out = model(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    with caplog.at_level(logging.INFO, logger="vitpose_fast"):
        model.optimize(4)  # None keeps what the model was given
    assert model.precision == "fp32" and "given before" in caplog.text


@pytest.mark.parametrize("dtype,want", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                        (torch.float64, torch.float64)])
def test_optimize_dtype_is_deprecated_but_works(dtype, want):
    model = _tiny()
    with pytest.warns(DeprecationWarning, match="precision="):
        model.optimize(2, dtype=dtype)
    assert model.backbone.pos_embed.dtype == want
    with pytest.warns(DeprecationWarning):
        model.optimize(2, torch.float32)  # the old positional form
    assert model.backbone.pos_embed.dtype == torch.float32
    with pytest.warns(DeprecationWarning):
        model.optimize(2, dtype=None)  # None kept the weights' dtype
    assert model.backbone.pos_embed.dtype == torch.float32


# ------------------------------------------------------------------------------------------------------ predict
def test_predict_default_precision_and_explicit_fp32(cpu_flags):
    cpu_flags("amx_bf16")
    img = (np.random.default_rng(0).random((80, 60, 3)) * 255).astype(np.uint8)
    box = [[5, 5, 50, 70]]
    model = _tiny()
    fast = model.predict(img, box)[0]["keypoints"]
    assert model.precision == "bf16" and model.backbone.pos_embed.dtype == torch.bfloat16
    exact = _tiny().predict(img, box, precision="fp32")[0]["keypoints"]
    again = model.predict(img, box, precision="fp32")[0]["keypoints"]  # another precision re-optimizes
    assert model.precision == "fp32" and model.backbone.pos_embed.dtype == torch.float32
    # (its weights went through bf16: compare with a model rounded the same way)
    rounded = _tiny().to(torch.bfloat16).predict(img, box, precision="fp32")[0]["keypoints"]
    np.testing.assert_allclose(again, rounded, rtol=0, atol=1e-3)
    assert fast.shape == exact.shape == (17, 3)
    results = list(_tiny().predict_iter([(img, box)], precision="fp32"))
    np.testing.assert_allclose(results[0].persons[0]["keypoints"], exact, rtol=0, atol=1e-3)


# ------------------------------------------------------------------------------------------------------ FP8 paths
@pytest.fixture
def count_fp8_checks(monkeypatch):
    calls = []
    real = fp8.check_fp8_support
    monkeypatch.setattr(fp8, "check_fp8_support", lambda device: calls.append(device) or real(device))
    return calls


def test_fp8_is_checked_once_per_path(count_fp8_checks, tmp_path):
    weights = tmp_path / "w.pth"
    _tiny().save(weights)
    model = Model.load(weights, device="cpu", precision="fp8")
    assert model.is_fp8 and model.precision == "fp8" and len(count_fp8_checks) == 1
    img = np.zeros((64, 48, 3), np.uint8)
    model.predict(img, [[0, 0, 40, 60]])  # None keeps fp8: nothing checked again
    assert len(count_fp8_checks) == 1
    _tiny().optimize(2, precision="fp8")
    assert len(count_fp8_checks) == 2
    _tiny().predict(img, [[0, 0, 40, 60]], precision="fp8")
    assert len(count_fp8_checks) == 3


def test_load_refuses_fp8_before_reading_the_weights(monkeypatch, tmp_path):
    monkeypatch.delattr(torch, "_scaled_mm")
    with pytest.raises(fp8.Fp8UnavailableError, match="_scaled_mm"):
        Model.load(tmp_path / "missing.pth", precision="fp8")  # the FP8 error, not a missing-file one
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        Model.load(tmp_path / "missing.pth", precision="fp16")


def test_load_with_a_preset_and_the_default(cpu_flags, tmp_path):
    cpu_flags()
    src = _tiny()
    weights = tmp_path / "w.pth"
    src.save(weights)
    model = Model.load(weights, "vitpose_s", **TINY)
    assert type(model) is Model and not model.training and model.precision == "fp32"
    torch.testing.assert_close(model.state_dict(), src.state_dict())


def test_optimize_keeps_a_cast_the_user_made(cpu_flags):
    cpu_flags()  # an fp32-default CPU: a bf16 or fp16 cast is still kept
    model = _tiny().to(torch.float16)
    model.optimize(2)
    assert model.backbone.pos_embed.dtype == torch.float16 and model.precision is None
    model = _tiny().to(torch.bfloat16)
    model.optimize(2)
    assert model.backbone.pos_embed.dtype == torch.bfloat16 and model.precision == "bf16"


def test_predict_never_casts_a_model_in_training(cpu_flags):
    cpu_flags("amx_bf16")
    model = _tiny().train()
    model.predict(np.zeros((64, 48, 3), np.uint8), [[0, 0, 40, 60]])
    assert model.training and model.backbone.pos_embed.dtype == torch.float32
