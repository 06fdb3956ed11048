"""Fused bias + exact GELU on the fc1 output: the Triton kernel (the interpreter on CPU) against the plain-PyTorch
reference ``gelu(a + bias)``, output and the gradients of a and bias."""

from __future__ import annotations

import pytest
import torch

from vitpose_fast import ops
from vitpose_fast.kernels import bias_gelu as kernel
from vitpose_fast.reference.bias_gelu import bias_gelu_ref

from helpers import assert_close_scaled, assert_kernel_within_twice_torch, max_errors

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# fc1 widths are 4C for C in 384, 768, 1024, 1280, 1408; the interpreter sees a few rows of each.
WIDTHS = [4 * c for c in (384, 768, 1024, 1280, 1408)]


def _inputs(shape):
    return torch.randn(shape, device=DEVICE), torch.randn(shape[-1], device=DEVICE), torch.randn(shape, device=DEVICE)


def _run(fn, a, bias, dy, dtype):
    a_ = a.to(dtype).requires_grad_()
    b_ = bias.to(dtype).requires_grad_()
    y = fn(a_, b_)
    assert y.dtype == dtype and y.shape == a.shape
    return [t.double() for t in (y, *torch.autograd.grad(y, [a_, b_], dy.to(dtype)))]


@pytest.mark.parametrize("width", WIDTHS)
def test_kernel_matches_reference_fp32(width):
    args = _inputs((3, 7, width))  # 21 rows: not a multiple of the row block
    assert_close_scaled(_run(kernel.bias_gelu, *args, torch.float32), _run(bias_gelu_ref, *args, torch.float32),
                        rtol=1e-5, atol=1e-5, names=["y", "da", "dbias"])


@pytest.mark.parametrize("shape", [(1, 1), (1, 13), (5, 3, 33), (70, 20)])
def test_kernel_odd_shapes_fp32(shape):
    args = _inputs(shape)
    assert_close_scaled(_run(kernel.bias_gelu, *args, torch.float32), _run(bias_gelu_ref, *args, torch.float32),
                        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [1536, 5120])
def test_kernel_fp16_error_within_twice_torch(width):
    assert_kernel_within_twice_torch(_run, kernel.bias_gelu, bias_gelu_ref, _inputs((2, 5, width)), torch.float16,
                                     rel=1e-3)


def test_torch_path_bf16_error():
    # No bf16 arithmetic in the interpreter: on CPU, bf16 is checked on the torch backend's composition.
    args = _inputs((2, 5, 3072))
    oracle = _run(bias_gelu_ref, *args, torch.float32)
    fn = lambda a, b: ops.bias_gelu(a, b, backend="torch")  # noqa: E731
    for e, o in zip(max_errors(_run(fn, *args, torch.bfloat16), oracle), oracle):
        assert e <= 0.02 * o.abs().max().item() + 0.02


@pytest.mark.gpu
@pytest.mark.parametrize("width", WIDTHS)
def test_kernel_bf16_error_within_twice_torch_gpu(width):
    assert_kernel_within_twice_torch(_run, kernel.bias_gelu, bias_gelu_ref, _inputs((8, 97, width)),
                                     torch.bfloat16, rel=1e-2)


def test_backward_is_deterministic():
    args = _inputs((9, 700))
    first = _run(kernel.bias_gelu, *args, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(first, _run(kernel.bias_gelu, *args, torch.float32)))


def test_bad_bias_is_named():
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        kernel.bias_gelu(torch.randn(2, 8, device=DEVICE), torch.randn(7, device=DEVICE))


def test_custom_op_registration():
    a = torch.randn(3, 40, device=DEVICE, requires_grad=True)
    b = torch.randn(40, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.vitpose_fast.bias_gelu_fwd, (a, b),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_report_cases_launch_their_kernels():
    # The kernel report (vitpose_fast.kernels.report) compiles what each case's launcher call launches.
    from vitpose_fast.kernels import report

    cases = kernel.report_cases()
    labels = [label for case in cases for label, _ in report.record(case)]
    assert len(labels) == len(cases) and sorted(set(labels)) == ["bias_gelu_bwd", "bias_gelu_fp8", "bias_gelu_fwd"]
    assert labels.count("bias_gelu_fp8") == 1  # at ViT-H's 4C only
