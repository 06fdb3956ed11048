"""Parity of the simple decoder ``conv3x3(bilinear_x4(relu(x)))``: the exact reorder (pure torch) and the Triton
kernel against the official order (``simple_decoder_ref``), outputs and the gradients of x, weight and bias.

On CPU the kernel runs in the Triton interpreter (tiny shapes; fp32 and fp16: the interpreter truncates instead of
rounding when it converts to bf16, so bf16 is GPU-only).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from vitpose_fast import ops
from vitpose_fast.kernels import simple_decoder as kernel
from vitpose_fast.reference.simple_decoder import (
    simple_decoder_ref,
    simple_decoder_torch,
    upsample_x4_matrix,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (B, C, K, h, w): 1-pixel maps, odd sizes, several channel blocks (K=40), several column blocks (w=33).
SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 5, 3, 3, 2),
    (1, 32, 17, 4, 3),
    (1, 5, 3, 5, 7),
    (2, 3, 40, 1, 9),
    (1, 2, 2, 1, 33),
]

Impl = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def _inputs(b: int, c: int, k: int, h: int, w: int, with_bias: bool = True):
    x = torch.randn(b, c, h, w, device=DEVICE)
    weight = torch.randn(k, c, 3, 3, device=DEVICE) / (9 * c) ** 0.5
    bias = torch.randn(k, device=DEVICE) if with_bias else None
    grad_out = torch.randn(b, k, 4 * h, 4 * w, device=DEVICE)
    return x, weight, bias, grad_out


def _run(fn: Impl, x, weight, bias, grad_out, dtype: torch.dtype) -> List[torch.Tensor]:
    """Output and grads (x, weight[, bias]) of fn in `dtype`, returned in float64 for comparison."""
    xs = x.to(dtype).requires_grad_()
    ws = weight.to(dtype).requires_grad_()
    bs = bias.to(dtype).requires_grad_() if bias is not None else None
    out = fn(xs, ws, bs)
    assert out.dtype == dtype and out.shape == grad_out.shape
    # Our implementations promise a contiguous output; conv2d follows a strided input's memory format.
    assert out.is_contiguous() or fn is simple_decoder_ref
    leaves = [xs, ws] + ([bs] if bs is not None else [])
    grads = torch.autograd.grad(out, leaves, grad_out.to(dtype))
    return [t.double() for t in (out, *grads)]


def _assert_close(got: List[torch.Tensor], want: List[torch.Tensor], rtol: float) -> None:
    for name, a, b in zip(("out", "grad_x", "grad_weight", "grad_bias"), got, want):
        scale = b.abs().max().item() + 1e-12
        err = (a - b).abs().max().item()
        assert err <= rtol * scale, f"{name}: max error {err:.3e} > {rtol:.0e} x max |ref| {scale:.3e}"


def _assert_within_2x_torch(got, torch_lp, ref, eps: float) -> None:
    """flash-attn's rule: the error vs an fp64 reference is at most 2x PyTorch's own error in that dtype (plus one
    unit of rounding at the largest magnitude, so exactly-representable tiny cases cannot fail on a tie)."""
    for name, a, p, r in zip(("out", "grad_x", "grad_weight", "grad_bias"), got, torch_lp, ref):
        err, err_pt = (a - r).abs().max().item(), (p - r).abs().max().item()
        slack = eps * r.abs().max().item()
        assert err <= 2 * err_pt + slack, f"{name}: error {err:.3e} > 2 x PyTorch's {err_pt:.3e} + {slack:.1e}"


# ---------------------------------------------------------------------------------------------------------------
# the algebra: PyTorch's bilinear rule and the reorder in pure torch
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_upsample_matrix_is_pytorch_bilinear(n: int):
    v = torch.randn(2, 3, n, 5, dtype=torch.float64)
    want = F.interpolate(v, scale_factor=4, mode="bilinear", align_corners=False)
    m_h, m_w = upsample_x4_matrix(n, v.device, v.dtype), upsample_x4_matrix(5, v.device, v.dtype)
    got = torch.einsum("ui,bcij,vj->bcuv", m_h, v, m_w)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_torch_reorder_matches_ref_fp32(shape, with_bias: bool):
    x, weight, bias, grad_out = _inputs(*shape, with_bias=with_bias)
    got = _run(simple_decoder_torch, x, weight, bias, grad_out, torch.float32)
    want = _run(simple_decoder_ref, x, weight, bias, grad_out, torch.float64)
    _assert_close(got, want, rtol=1e-5)


def test_torch_reorder_gradcheck_fp64():
    x, weight, bias, _ = _inputs(1, 3, 2, 2, 3)
    inputs = tuple(t.double().requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(simple_decoder_torch, inputs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_reorder_within_2x_torch_error(dtype: torch.dtype):
    x, weight, bias, grad_out = _inputs(2, 48, 17, 6, 5)
    ref = _run(simple_decoder_ref, x, weight, bias, grad_out, torch.float64)
    torch_lp = _run(simple_decoder_ref, x, weight, bias, grad_out, dtype)
    got = _run(simple_decoder_torch, x, weight, bias, grad_out, dtype)
    _assert_within_2x_torch(got, torch_lp, ref, torch.finfo(dtype).eps)


# ---------------------------------------------------------------------------------------------------------------
# the Triton kernel
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_ref_fp32(shape):
    x, weight, bias, grad_out = _inputs(*shape)
    got = _run(kernel.simple_decoder, x, weight, bias, grad_out, torch.float32)
    want = _run(simple_decoder_ref, x, weight, bias, grad_out, torch.float64)
    _assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 32, 17, 4, 3), (2, 5, 3, 3, 2)])
def test_kernel_fp16_within_2x_torch_error(shape):
    x, weight, bias, grad_out = _inputs(*shape)
    ref = _run(simple_decoder_ref, x, weight, bias, grad_out, torch.float64)
    torch_lp = _run(simple_decoder_ref, x, weight, bias, grad_out, torch.float16)
    got = _run(kernel.simple_decoder, x, weight, bias, grad_out, torch.float16)
    _assert_within_2x_torch(got, torch_lp, ref, torch.finfo(torch.float16).eps)


def test_kernel_token_view_strided_input_no_bias_deterministic():
    b, c, k, h, w = 1, 6, 3, 2, 3
    tokens = torch.randn(b, h * w, c, device=DEVICE)
    x_tokens = tokens.transpose(1, 2).reshape(b, c, h, w)  # the backbone's NCHW view, no copy
    x_strided = torch.randn(b, c, h, 2 * w, device=DEVICE)[..., ::2]
    weight = torch.randn(k, c, 3, 3, device=DEVICE)
    grad_out = torch.randn(b, k, 4 * h, 4 * w, device=DEVICE)
    for x in (x_tokens, x_strided):
        assert not x.is_contiguous()
        got = _run(kernel.simple_decoder, x, weight, None, grad_out, torch.float32)
        want = _run(simple_decoder_ref, x, weight, None, grad_out, torch.float64)
        _assert_close(got, want, rtol=1e-5)
    # No atomics: the backward gather gives bit-identical gradients run to run.
    again = _run(kernel.simple_decoder, x_strided, weight, None, grad_out, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(got, again))


def test_ops_dispatch_backends_agree():
    x, weight, bias, _ = _inputs(1, 4, 3, 1, 2)
    want = simple_decoder_ref(x, weight, bias)
    for backend in ("reference", "torch", "triton"):
        torch.testing.assert_close(ops.simple_decoder(x, weight, bias, backend=backend), want, rtol=1e-5, atol=1e-5)


class _ShapeLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.numels: List[Tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numels.append((str(func), t.numel()))
        return out


@pytest.mark.parametrize("impl", [simple_decoder_torch, kernel.simple_decoder], ids=["torch", "triton"])
def test_reorder_never_builds_a_C_channel_highres_tensor(impl: Impl):
    # A map large enough that the padded [C, 9 * 8] weight matrix (taps padded to 8 channels) stays below it.
    b, c, k, h, w = 1, 64, 2, 4, 2
    x, weight, bias, grad_out = _inputs(b, c, k, h, w)
    x.requires_grad_()
    weight.requires_grad_()
    with _ShapeLog() as log:
        out = impl(x, weight, bias)
        out.backward(grad_out)
    highres_c = b * c * 16 * h * w
    big = [(f, n) for f, n in log.numels if n >= highres_c]
    assert not big, f"tensors with >= B*C*4h*4w = {highres_c} elements: {big}"


def test_supports():
    x = torch.randn(1, 4, 2, 2, device=DEVICE)
    assert kernel.supports(x, torch.randn(3, 4, 3, 3, device=DEVICE))
    assert not kernel.supports(x, torch.randn(3, 4, 1, 1, device=DEVICE))
    assert not kernel.supports(x, torch.randn(3, 5, 3, 3, device=DEVICE))
    assert not kernel.supports(x.double(), torch.randn(3, 4, 3, 3, device=DEVICE))
    with pytest.raises(ValueError, match="weight \\[K, C, 3, 3\\]"):
        kernel.simple_decoder(x, torch.randn(3, 4, 1, 1, device=DEVICE), None)


def test_torch_compile_traces_kernel_module():
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, x):
            return kernel.simple_decoder(x, self.conv.weight, self.conv.bias)

    head = Head().to(DEVICE)
    x = torch.randn(1, 4, 1, 2, device=DEVICE, requires_grad=True)
    compiled = torch.compile(head, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.sum().backward()
    grads = (x.grad.clone(), head.conv.weight.grad.clone(), head.conv.bias.grad.clone())
    x.grad = None
    head.zero_grad()
    want = simple_decoder_ref(x, head.conv.weight, head.conv.bias)
    want.sum().backward()
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    for g, w_ in zip(grads, (x.grad, head.conv.weight.grad, head.conv.bias.grad)):
        torch.testing.assert_close(g, w_, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# GPU: ViTPose-H channels, COCO (17) and whole-body (133) keypoints, 256x192 and 576x432 feature maps
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [17, 133])
@pytest.mark.parametrize("hw", [(16, 12), (36, 27)])
def test_kernel_gpu_within_2x_torch_error(dtype: torch.dtype, k: int, hw: Tuple[int, int]):
    x, weight, bias, grad_out = _inputs(2, 1280, k, *hw)
    ref = _run(simple_decoder_ref, x, weight, bias, grad_out, torch.float64)
    torch_lp = _run(simple_decoder_ref, x, weight, bias, grad_out, dtype)
    got = _run(kernel.simple_decoder, x, weight, bias, grad_out, dtype)
    _assert_within_2x_torch(got, torch_lp, ref, torch.finfo(dtype).eps)
    got_reorder = _run(simple_decoder_torch, x, weight, bias, grad_out, dtype)
    _assert_within_2x_torch(got_reorder, torch_lp, ref, torch.finfo(dtype).eps)
