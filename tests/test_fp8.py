"""FP8 inference: the GEMM (``torch._scaled_mm`` against the dequantized reference), ``Fp8Linear``,
``Model.quantize_fp8`` on plain and ViTPose+ models across backends, dtype moves, the errors, and a cheap
accuracy bar (the trained-model bars are ``tests/test_fp8_accuracy.py``, slow)."""

import copy

import pytest
import torch
import torch.nn as nn

from vitpose_fast import Model, ops
from vitpose_fast.model import fp8 as fp8_mod
from vitpose_fast.model.fp8 import Fp8Linear, Fp8UnavailableError, check_fp8_support
from vitpose_fast.model.precision import PRECISIONS, apply_precision
from vitpose_fast.reference.fp8 import fp8_linear_ref, fp8_linear_torch, quantize_rows_ref, quantize_weight

FP8 = torch.float8_e4m3fn


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _tiny(**overrides) -> Model:
    kw = dict(depth=2, embed_dim=64, num_heads=2, res=(64, 48), deconv_channels=(16, 16))
    kw.update(overrides)
    return Model.from_config("vitpose_s", **kw).eval()


# ------------------------------------------------------------------------------------------------------ GEMM
@pytest.mark.parametrize("m,k,n", [(1, 16, 16), (37, 64, 48), (130, 192, 576)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_scaled_mm_matches_dequantized_reference(m, k, n, with_bias):
    qx, sx = quantize_rows_ref(torch.randn(m, k) * 3)
    qw, sw = quantize_weight(torch.randn(n, k) * 0.02)
    bias = torch.randn(n) if with_bias else None
    out = fp8_linear_torch(qx, sx, qw, sw, bias)
    ref = fp8_linear_ref(qx, sx, qw, sw, bias)
    assert out.dtype == ref.dtype == torch.bfloat16 and out.shape == (m, n)
    # Same fp32 products up to the accumulation order; both round once to bf16 (2^-8 relative).
    torch.testing.assert_close(out.float(), ref.float(), rtol=2**-7, atol=1e-5 * ref.float().abs().max().item())


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_ops_fp8_linear_backends_and_prequantized_input(backend):
    x = torch.randn(9, 48)
    qw, sw = quantize_weight(torch.randn(40, 48))  # N = 40: not 16-aligned, takes the oracle on every backend
    bias = torch.randn(40)
    out = ops.fp8_linear(x, qw, sw, bias, backend)
    qx, sx = quantize_rows_ref(x)
    assert torch.equal(out, fp8_linear_ref(qx, sx, qw, sw, bias))
    assert torch.equal(ops.fp8_linear((qx, sx), qw, sw, bias, backend), out)
    qw, sw = quantize_weight(torch.randn(32, 48))
    out = ops.fp8_linear(x, qw, sw, None, backend)
    torch.testing.assert_close(out.float(), fp8_linear_ref(qx, sx, qw, sw, None).float(), rtol=2**-7, atol=1e-4)


def test_fp8_linear_module_error_and_dtype_moves():
    lin = nn.Linear(64, 96)
    layer = Fp8Linear.from_linear(lin).eval()
    x = torch.randn(2, 5, 64)
    out = layer(x)
    assert out.shape == (2, 5, 96) and out.dtype == torch.float32
    assert _rel(out, lin(x).detach()) < 0.06  # e4m3 operands: ~2-4% relative on random data
    codes, scale = layer.weight.clone(), layer.weight_scale.clone()
    layer.to(torch.bfloat16)
    assert layer.weight.dtype == FP8 and layer.weight_scale.dtype == torch.float32
    assert torch.equal(layer.weight.view(torch.uint8), codes.view(torch.uint8)) and torch.equal(layer.weight_scale, scale)
    assert layer.bias.dtype == torch.bfloat16
    assert layer(x.bfloat16()).dtype == torch.bfloat16
    layer.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        layer(x)
    with pytest.raises(TypeError, match="float8_e4m3fn"):
        Fp8Linear(torch.zeros(4, 4), torch.ones(1, 4), None)


def test_fp8_layers_take_the_backend_from_their_caller(monkeypatch):
    seen = []
    real = ops.fp8_linear
    monkeypatch.setattr(ops, "fp8_linear", lambda *a, **k: seen.append(a[-1]) or real(*a, **k))
    model = _tiny(depth=1).quantize_fp8()
    assert not hasattr(model.backbone.blocks[0].attn.qkv, "backend")  # no copy to go stale
    with torch.no_grad():
        model.set_backend("reference")(torch.randn(1, 3, 64, 48))
        assert set(seen) == {"reference"}
        seen.clear()
        model.set_backend("torch")(torch.randn(1, 3, 64, 48))
    assert set(seen) == {"torch"} and len(seen) == 4  # qkv, proj, fc1, fc2


# ------------------------------------------------------------------------------------------------------ model
def test_quantize_fp8_replaces_the_four_gemms_only_and_stays_close():
    model = _tiny()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
        q = copy.deepcopy(model).quantize_fp8()
        out = q(x)
    names = {n for n, m in q.named_modules() if isinstance(m, Fp8Linear)}
    assert names == {f"backbone.blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert q.backbone.patch_embed.proj.weight.dtype == torch.float32  # the rest keeps the model's dtype
    assert q.is_fp8 and not model.is_fp8
    assert _rel(out, ref) < 0.1


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_quantized_model_backends_agree(backend):
    # fp32 activations: the interpreter has no bf16 maths for the other kernels; the FP8 GEMMs are the same.
    q = _tiny().quantize_fp8()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        base = q.set_backend("torch")(x)
        out = q.set_backend(backend)(x)
    # reference: fp32 dequantized GEMMs vs _scaled_mm (accumulation order, then bf16 rounding of each GEMM).
    assert _rel(out, base) < (1e-5 if backend == "triton" else 2e-2)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_block_producers_write_the_fp8_inputs(backend, monkeypatch):
    """residual+LayerNorm writes qkv's and fc1's FP8 input, bias+GELU fc2's (where the backend fuses biases);
    only proj quantizes its own input (the attention output)."""
    depth = 3
    model = _tiny(depth=depth).quantize_fp8().set_backend(backend)
    calls = {"residual_layer_norm_fp8": 0, "bias_gelu_fp8": 0, "quantize_fp8": 0}
    for name in calls:
        original = getattr(ops, name)

        def counted(*args, _name=name, _f=original, **kwargs):
            calls[_name] += 1
            return _f(*args, **kwargs)

        monkeypatch.setattr(ops, name, counted)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 48))
    assert calls["residual_layer_norm_fp8"] == 2 * depth  # first norm1, every norm2, the next norm1s
    if backend == "triton":
        assert calls == {"residual_layer_norm_fp8": 2 * depth, "bias_gelu_fp8": depth, "quantize_fp8": depth}
    else:  # biases stay in the GEMMs: fc2 quantizes the GELU output itself
        assert calls["bias_gelu_fp8"] == 0 and calls["quantize_fp8"] == 2 * depth


def test_vitpose_plus_experts_quantized_single_and_mixed_batches():
    model = _tiny(num_experts=3, part_features=16).quantize_fp8()
    assert isinstance(model.backbone.blocks[0].mlp.experts[2], Fp8Linear)
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        one = model(x, dataset_index=1)  # fp8 concat of fc2 and the expert: one GEMM
        mixed = model(x, dataset_index=torch.tensor([1, 1, 1]))  # the per-expert path, one expert
        per_expert = model(x, dataset_index=torch.tensor([1, 2, 1]))  # each expert on its own samples
        oracle = model.set_backend("reference")(x, dataset_index=torch.tensor([1, 2, 1]))
    torch.testing.assert_close(one, mixed)
    # Samples 0 and 2 use expert 1 on both paths; bf16-rounded GEMM outputs may differ by accumulation order.
    assert _rel(per_expert[[0, 2]], one[[0, 2]]) < 1e-2
    assert _rel(per_expert, oracle) < 2e-2


def test_apply_precision_and_guards(tmp_path):
    model = apply_precision(_tiny(), "fp8")
    assert model.backbone.pos_embed.dtype == torch.bfloat16 and model.is_fp8 and not model.training
    with pytest.raises(ValueError, match="FP8 already"):
        apply_precision(model, "bf16")
    with pytest.raises(ValueError, match="save the model before quantizing"):
        model.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="unknown precision"):
        apply_precision(_tiny(), "int8")
    with pytest.raises(RuntimeError, match="model.eval"):
        _tiny().train().quantize_fp8()


def test_optimize_precision_fp8():
    model = _tiny()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = apply_precision(copy.deepcopy(model), "fp8")(x.bfloat16())
        opt = copy.deepcopy(model).optimize(2, precision="fp8")
        out = opt(x)
    assert opt.is_fp8 and out.dtype == torch.bfloat16
    # optimize also folds the head's BatchNorm (exact up to bf16 rounding of the folded weights).
    assert _rel(out, expected) < 2e-2
    with pytest.raises(ValueError, match=r"unknown precision 'int8'; expected one of fp32, bf16, fp8"):
        _tiny().optimize(2, precision="int8")
    assert not _tiny().optimize(2).is_fp8  # FP8 is never the default


# ------------------------------------------------------------------------------------------------------ errors
def test_old_gpu_is_refused_with_the_fallback(monkeypatch):
    # The capability rules alone: no GPU here to run the probe's GEMM on.
    monkeypatch.setattr(fp8_mod, "_PROBED", {})
    monkeypatch.setattr(fp8_mod, "_probe_scaled_mm", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A10")
    with pytest.raises(Fp8UnavailableError, match=r"A10 is sm_86.*sm_89.*precision 'bf16'"):
        check_fp8_support(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_fp8_support(torch.device("cuda"))  # Hopper: fine
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    check_fp8_support(torch.device("cuda"))  # Ada: fine
    with pytest.raises(Fp8UnavailableError, match="not on mps"):
        check_fp8_support(torch.device("mps"))


def test_torch_without_scaled_mm_is_refused(monkeypatch):
    monkeypatch.delattr(torch, "_scaled_mm")
    with pytest.raises(Fp8UnavailableError, match=r"no torch._scaled_mm.*torch >= 2.4.*'bf16'"):
        _tiny().quantize_fp8()
    with pytest.raises(Fp8UnavailableError, match="_scaled_mm"):
        apply_precision(_tiny(), "fp8")
    model = _tiny()
    with pytest.raises(Fp8UnavailableError, match="_scaled_mm"):
        model.optimize(2, precision="fp8")
    assert model.backbone.pos_embed.dtype == torch.float32  # refused before anything changed


def _counting_scaled_mm(monkeypatch, impl):
    """torch._scaled_mm replaced by ``impl``, with a fresh probe cache; returns the list of calls."""
    calls = []

    def scaled_mm(*args, **kwargs):
        calls.append(kwargs)
        return impl(*args, **kwargs)

    monkeypatch.setattr(fp8_mod, "_PROBED", {})
    monkeypatch.setattr(torch, "_scaled_mm", scaled_mm)
    return calls


def test_scaled_mm_without_row_wise_scales_is_refused_once_probed(monkeypatch):
    """As torch 2.11's CPU build: _scaled_mm exists but only takes tensor-wise scales. The row-wise call is tried
    once per device; every later check answers from the cache, and nothing is quantized."""
    def tensor_wise_only(a, b, scale_a, scale_b, **kwargs):
        if scale_a.numel() != 1:
            raise RuntimeError("Only tensor-wise scaling is supported on this device\nmore detail")
        raise AssertionError("the probe must use row-wise scales")

    calls = _counting_scaled_mm(monkeypatch, tensor_wise_only)
    cpu = torch.device("cpu")
    with pytest.raises(Fp8UnavailableError, match=r"row-wise scales on cpu.*RuntimeError: Only tensor-wise "
                                                  r"scaling is supported on this device\); use precision 'bf16'"):
        check_fp8_support(cpu)
    assert len(calls) == 1 and calls[0]["scale_a"].shape == (16, 1) and calls[0]["scale_b"].shape == (1, 16)
    model = _tiny()
    with pytest.raises(Fp8UnavailableError, match="tensor-wise"):
        model.quantize_fp8()
    with pytest.raises(Fp8UnavailableError, match="tensor-wise"):
        apply_precision(model, "fp8")
    assert len(calls) == 1 and not fp8_mod.is_quantized(model)


def test_working_scaled_mm_is_probed_once_and_checked(monkeypatch):
    real = torch._scaled_mm
    calls = _counting_scaled_mm(monkeypatch, real)
    check_fp8_support(torch.device("cpu"))
    check_fp8_support("cpu")
    assert len(calls) == 1
    # A build that runs the call but gets the product wrong is refused too.
    calls = _counting_scaled_mm(monkeypatch, lambda *a, **k: torch.zeros_like(real(*a, **k)))
    with pytest.raises(Fp8UnavailableError, match="wrong values"):
        check_fp8_support(torch.device("cpu"))


# ------------------------------------------------------------------------------------------------------ accuracy
def test_fp8_error_is_a_few_times_bf16_error_on_a_random_model():
    """Cheap accuracy bar in the default run: heatmap error of FP8 vs fp32 within 4x bf16's (both are rounding
    noise of the operands: e4m3 keeps 3 mantissa bits, bf16 7) on a random model with peaked inputs."""
    torch.manual_seed(0)  # a fixed model: the bound is on one measured distribution, not on a lucky draw
    model = _tiny(depth=4, embed_dim=128, num_heads=2)
    x = torch.randn(4, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
        bf16 = apply_precision(copy.deepcopy(model), "bf16")(x.bfloat16())
        f8 = apply_precision(copy.deepcopy(model), "fp8")(x.bfloat16())
    e_bf16, e_fp8 = _rel(bf16, ref), _rel(f8, ref)
    assert e_fp8 < 0.05 and e_fp8 < 4 * e_bf16, (e_fp8, e_bf16)  # measured: 0.012-0.014 vs 0.007-0.008


def test_precisions_list_is_what_the_cli_offers():
    from vitpose_fast.cli import build_parser

    args = build_parser().parse_args(["eval", "--weights", "w", "--ann", "a", "--images", "i", "--precision", "fp8"])
    assert args.precision == "fp8" and PRECISIONS == ("fp32", "bf16", "fp8")


# ------------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_cuda_fp8_path_matches_the_oracle():
    if fp8_mod.fp8_unavailable_reason(torch.device("cuda")):
        pytest.skip("this GPU has no FP8 tensor cores")
    from vitpose_fast.kernels import fp8_quant

    x = torch.randn(300, 1280, device="cuda", dtype=torch.bfloat16)
    q, s = fp8_quant.quantize_rows(x)
    qr, sr = quantize_rows_ref(x)
    assert torch.equal(q.view(torch.uint8), qr.view(torch.uint8)) and torch.equal(s, sr)
    qw, sw = quantize_weight(torch.randn(5120, 1280, device="cuda") * 0.02)
    bias = torch.randn(5120, device="cuda")
    out = ops.fp8_linear(x, qw, sw, bias, "triton")
    ref = fp8_linear_ref(q, s, qw, sw, bias)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2**-7, atol=1e-3)
    model = _tiny(embed_dim=128).cuda()
    xin = torch.randn(4, 3, 64, 48, device="cuda")
    with torch.no_grad():
        base = model(xin)
        f8 = apply_precision(model, "fp8")(xin.bfloat16())
    assert _rel(f8, base) < 0.05
