"""FP8 outputs of the fused block epilogues (inference): the residual+LayerNorm and bias+GELU kernels writing
their output as float8_e4m3fn codes + per-row scales, against the unquantized reference quantized per row
(``vitpose_fast.reference.fp8``). fp32 under the interpreter (no bf16 maths there); bf16 on a GPU."""

import pytest
import torch

from vitpose_fast import ops
from vitpose_fast.kernels import bias_gelu as bg
from vitpose_fast.kernels import residual_layer_norm as rln
from vitpose_fast.reference.fp8 import bias_gelu_fp8_ref, residual_layer_norm_fp8_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32] + ([torch.bfloat16] if DEVICE == "cuda" else [])


def _codes_close(q, s, qr, sr, exact: bool):
    if exact:
        assert torch.equal(s, sr) and torch.equal(q.view(torch.uint8), qr.view(torch.uint8))
        return
    # The LayerNorm / erf maths differ from torch's in the last fp32 bits, which can move a value across an e4m3
    # rounding boundary: codes within one step, scales within fp32 noise.
    torch.testing.assert_close(s, sr, rtol=1e-5, atol=0)
    step = (q.float() - qr.float()).abs() / torch.maximum(q.float().abs(), qr.float().abs()).clamp_min(2.0**-6)
    assert (step <= 2.0**-3 + 1e-6).all()
    # Rare: at most 1% of the codes (and one, in a 40-element row).
    assert (q.view(torch.uint8) != qr.view(torch.uint8)).sum().item() <= max(1, 0.01 * q.numel())


@pytest.mark.parametrize("shape,broadcast", [((2, 5, 192), False), ((1, 1, 80), False), ((3, 7, 96), True)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_residual_layer_norm_fp8_output(shape, broadcast, dtype, with_bias):
    c = shape[-1]
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    branch = torch.randn((1,) + shape[1:] if broadcast else shape, device=DEVICE, dtype=dtype)
    bias = torch.randn(c, device=DEVICE) if with_bias else None
    w, lb = 1 + 0.1 * torch.randn(c, device=DEVICE), 0.1 * torch.randn(c, device=DEVICE)
    s, q, scale = rln.residual_layer_norm_fp8(x, branch, bias, w, lb, 1e-6)
    sr, qr, scr = residual_layer_norm_fp8_ref(x, branch, bias, w, lb, 1e-6)
    torch.testing.assert_close(s, sr, rtol=0, atol=0)
    assert q.shape == shape and scale.shape == shape[:-1] + (1,)
    _codes_close(q, scale, qr, scr, exact=False)
    # The unquantized kernel's s is the same; its h quantized gives the same codes.
    s2, h2 = rln.residual_layer_norm(x, branch, bias, w, lb, 1e-6)
    assert torch.equal(s2, s)


@pytest.mark.parametrize("shape", [(2, 5, 768), (1, 1, 40), (33, 160)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_gelu_fp8_output(shape, dtype):
    a = 2 * torch.randn(shape, device=DEVICE, dtype=dtype)
    bias = torch.randn(shape[-1], device=DEVICE)
    q, scale = bg.bias_gelu_fp8(a, bias)
    qr, scr = bias_gelu_fp8_ref(a, bias)
    assert q.shape == shape and scale.shape == shape[:-1] + (1,)
    _codes_close(q, scale, qr, scr, exact=False)


def test_ops_dispatch_and_fakes():
    x = torch.randn(2, 3, 64)
    w, lb = torch.ones(64), torch.zeros(64)
    for backend in ("torch", "triton"):
        s, (q, scale) = ops.residual_layer_norm_fp8(x, x, None, w, lb, 1e-6, backend)
        assert q.dtype == torch.float8_e4m3fn and scale.shape == (2, 3, 1) and torch.equal(s, x + x)
        q2, s2 = ops.bias_gelu_fp8(x, w, backend)
        assert q2.dtype == torch.float8_e4m3fn and s2.shape == (2, 3, 1)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # the fake impls torch.compile traces with
        x = torch.empty(2, 3, 64, dtype=torch.bfloat16)
        w = torch.empty(64)
        s, q, scale = torch.ops.vitpose_fast.residual_layer_norm_fp8(x, x, None, w, w, 1e-6)
        q2, s2 = torch.ops.vitpose_fast.bias_gelu_fp8(x, w)
    assert s.dtype == torch.bfloat16 and q.dtype == q2.dtype == torch.float8_e4m3fn
    assert scale.shape == s2.shape == (2, 3, 1) and scale.dtype == torch.float32


@pytest.mark.gpu
def test_fp8_epilogues_at_vitpose_h_widths_on_gpu():
    test_residual_layer_norm_fp8_output((2, 1296, 1280), False, torch.bfloat16, True)
    test_residual_layer_norm_fp8_output((2, 1296, 1280), True, torch.bfloat16, False)  # the position embedding
    test_bias_gelu_fp8_output((2, 1296, 5120), torch.bfloat16)
