"""Fused residual add + LayerNorm (``s = x + branch + bias; h = layer_norm(s)``): the Triton kernel (the
interpreter on CPU) against the plain-PyTorch reference, outputs and every gradient, and the fused backbone
against the reference backend (training step with stochastic depth, knowledge tokens, checkpointing, freezing).
"""

from __future__ import annotations

import pytest
import torch

from vitpose_fast import Model, ops
from vitpose_fast.kernels import residual_layer_norm as kernel
from vitpose_fast.reference.residual_layer_norm import residual_layer_norm_ref

from helpers import assert_close_scaled, assert_kernel_within_twice_torch, max_errors

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
WIDTHS = [384, 768, 1024, 1280, 1408]


def _inputs(shape, broadcast=False, bias=True, dtype=torch.float32):
    c = shape[-1]
    x = torch.randn(shape, device=DEVICE)
    branch = torch.randn((1,) + tuple(shape[1:]) if broadcast else shape, device=DEVICE)
    params = [torch.randn(c, device=DEVICE) if bias else None, 1 + 0.5 * torch.randn(c, device=DEVICE),
              torch.randn(c, device=DEVICE)]
    ds, dh = torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE)
    return x, branch, params, ds, dh


def _run(fn, x, branch, params, ds, dh, dtype, branch_dtype=None, use_s=True):
    """(s, h, dx, dbranch, dbias?, dweight, dln_bias) in float64, computed in `dtype`."""
    xs = x.to(dtype).requires_grad_()
    bs = branch.to(branch_dtype or dtype).requires_grad_()
    ps = [p.to(dtype).requires_grad_() if p is not None else None for p in params]
    s, h = fn(xs, bs, ps[0], ps[1], ps[2], 1e-6)
    assert s.shape == x.shape and h.shape == x.shape and h.dtype == s.dtype
    leaves = [xs, bs] + [p for p in ps if p is not None]
    outs, grads = ([s, h], [ds.to(s.dtype), dh.to(s.dtype)]) if use_s else ([h], [dh.to(s.dtype)])
    g = torch.autograd.grad(outs, leaves, grads)
    return [t.double() for t in (s, h, *g)]


@pytest.mark.parametrize("width", WIDTHS)
def test_kernel_matches_reference_fp32(width):
    # 3 x 13 = 39 rows: not a multiple of the row block, several reduction programs with a ragged last one.
    args = _inputs((3, 13, width))
    got = _run(kernel.residual_layer_norm, *args, torch.float32)
    want = _run(residual_layer_norm_ref, *args, torch.float32)
    names = ["s", "h", "dx", "dbranch", "dbias", "dweight", "dln_bias"]
    assert_close_scaled(got, want, rtol=1e-5, atol=2e-5, names=names)


@pytest.mark.parametrize("shape,broadcast,bias,use_s", [
    ((1, 1, 13), False, True, True),  # one row, odd width
    ((4, 7, 96), True, False, True),  # the position embedding: branch broadcast over the batch, no Linear bias
    ((2, 5, 40), False, True, False),  # s unused after the op (no residual gradient)
])
def test_kernel_edge_cases_fp32(shape, broadcast, bias, use_s):
    args = _inputs(shape, broadcast, bias)
    got = _run(kernel.residual_layer_norm, *args, torch.float32, use_s=use_s)
    want = _run(residual_layer_norm_ref, *args, torch.float32, use_s=use_s)
    assert_close_scaled(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("width", [384, 1280])
def test_kernel_fp16_error_within_twice_torch(width):
    assert_kernel_within_twice_torch(_run, kernel.residual_layer_norm, residual_layer_norm_ref,
                                     _inputs((2, 9, width)), torch.float16, rel=1e-3)


@pytest.mark.parametrize("width", [768, 1408])
def test_torch_path_bf16_error(width):
    # The interpreter has no bf16 arithmetic: on CPU the bf16 check is the torch backend's composition (what the
    # model runs there) against its fp32 oracle; the kernel's bf16 run is the GPU test below.
    args = _inputs((2, 9, width))
    oracle = _run(residual_layer_norm_ref, *args, torch.float32)
    fn = lambda *a: ops.residual_layer_norm(*a, backend="torch")  # noqa: E731
    got = max_errors(_run(fn, *args, torch.bfloat16), oracle)
    for e, o in zip(got, oracle):
        assert e <= 0.05 * o.abs().max().item() + 0.05


@pytest.mark.gpu
@pytest.mark.parametrize("width", WIDTHS)
def test_kernel_bf16_error_within_twice_torch_gpu(width):
    assert_kernel_within_twice_torch(_run, kernel.residual_layer_norm, residual_layer_norm_ref,
                                     _inputs((4, 97, width)), torch.bfloat16, rel=1e-2)


def test_kernel_mixed_dtypes_fp32_residual_half_branch():
    # Autocast training: fp32 residual stream, half-precision branch (fp16: the interpreter's half type). No
    # Linear bias here: the reference rounds branch + bias to fp16, the kernel adds the bias in fp32.
    args = _inputs((2, 5, 64), bias=False)
    got = _run(kernel.residual_layer_norm, *args, torch.float32, branch_dtype=torch.float16)
    want = _run(residual_layer_norm_ref, *args, torch.float32, branch_dtype=torch.float16)
    for i, (a, b) in enumerate(zip(got, want)):
        rtol = 1e-3 if i == 3 else 1e-5  # the branch gradient comes back in fp16
        torch.testing.assert_close(a, b, rtol=rtol, atol=2 * rtol * max(1.0, b.abs().max().item()))


def test_backward_is_deterministic():
    args = _inputs((5, 11, 200))
    first = _run(kernel.residual_layer_norm, *args, torch.float32)
    second = _run(kernel.residual_layer_norm, *args, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_bad_inputs_are_named():
    x = torch.randn(2, 3, 8, device=DEVICE)
    w = torch.ones(8, device=DEVICE)
    with pytest.raises(ValueError, match="branch must have"):
        kernel.residual_layer_norm(x, torch.randn(2, 8, device=DEVICE), None, w, w, 1e-6)
    with pytest.raises(ValueError, match="weight must have shape"):
        kernel.residual_layer_norm(x, x, None, torch.ones(7, device=DEVICE), w, 1e-6)


def test_custom_op_registration():
    x = torch.randn(2, 3, 16, device=DEVICE, requires_grad=True)
    br = torch.randn(2, 3, 16, device=DEVICE, requires_grad=True)
    p = [torch.randn(16, device=DEVICE, requires_grad=True) for _ in range(3)]
    torch.library.opcheck(torch.ops.vitpose_fast.residual_layer_norm_fwd, (x, br, p[0], p[1], p[2], 1e-6),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_report_cases_launch_their_kernels():
    # The kernel report (vitpose_fast.kernels.report) compiles what each case's launcher call launches.
    from vitpose_fast.kernels import report

    cases = kernel.report_cases()
    labels = [label for case in cases for label, _ in report.record(case)]
    assert len(labels) == len(cases)
    assert sorted(set(labels)) == ["residual_ln_bwd", "residual_ln_fp8", "residual_ln_fwd"]
    assert labels.count("residual_ln_fp8") == 1  # at ViT-H's C only


# --------------------------------------------------------------------------------------------------------------
# the fused backbone vs the reference backend
TINY = dict(res=(64, 48), embed_dim=32, depth=2, num_heads=2, num_keypoints=5)


def _train_step(model, x, seed):
    torch.manual_seed(seed)  # the same stochastic-depth masks on both sides
    out = model(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backend,variants", [
    ("torch", {"drop_path"}), ("torch", {"knowledge_tokens"}), ("torch", {"checkpointing"}),
    ("torch", {"freeze_attn"}),
    # The interpreter is slow: one triton case with every feature at once.
    ("triton", {"drop_path", "knowledge_tokens", "checkpointing", "freeze_attn"}),
], ids=["torch-drop_path", "torch-knowledge_tokens", "torch-checkpointing", "torch-freeze_attn", "triton-all"])
def test_fused_backbone_training_matches_reference(backend, variants):
    kw = dict(TINY, decoder="simple")
    if "knowledge_tokens" in variants:
        kw["num_knowledge_tokens"] = 2
    ref = Model.from_config("vitpose_s", backend="reference", **kw).train()
    with torch.no_grad():
        for p in ref.parameters():  # non-trivial LayerNorm and bias values
            p.add_(0.05 * torch.randn_like(p))
    for blk in ref.backbone.blocks:
        blk.drop_path.p = 0.3 if "drop_path" in variants else 0.0
    fast = Model.from_config("vitpose_s", backend=backend, **kw).train()
    fast.load_state_dict(ref.state_dict())
    for a, b in zip(fast.backbone.blocks, ref.backbone.blocks):
        a.drop_path.p = b.drop_path.p
    if "checkpointing" in variants:
        fast.set_grad_checkpointing(True)
    if "freeze_attn" in variants:
        ref.freeze("attn")
        fast.freeze("attn")
    assert fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 64, 48)
    out_ref, g_ref = _train_step(ref, x, 3)
    out, g = _train_step(fast, x, 3)
    scale = out_ref.abs().max().item()
    assert (out - out_ref).abs().max().item() <= 1e-5 * scale
    assert g.keys() == g_ref.keys()
    for name, want in g_ref.items():
        err = (g[name] - want).abs().max().item()
        assert err <= 1e-4 * want.abs().max().item() + 1e-9, f"{name}: {err:.3g}"
