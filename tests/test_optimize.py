"""``Model.optimize``: the folded classic head, the optimized forward against eager, the CUDA-graph replay logic
(run here with fakes of the CUDA graph / stream API that re-execute the recorded ops), and torch.compile with
fullgraph on every backend."""

from __future__ import annotations

import pytest
import torch

from vitpose_fast import Model
from vitpose_fast.config import HeadConfig
from vitpose_fast.model.heads import ClassicHead

from fake_cuda import fake_cuda  # noqa: F401  (a fixture: CUDA graphs and streams faked on the CPU)
from helpers import randomize_weights

TINY = dict(res=(64, 48), embed_dim=32, depth=2, num_heads=2, num_keypoints=5)


# --------------------------------------------------------------------------------------------------------------
# folded head
def test_folded_head_equals_batchnorm_eval():
    head = ClassicHead(48, HeadConfig(kind="classic", num_keypoints=7, deconv_channels=(24, 16)))
    randomize_weights(head).eval()
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
    x = torch.randn(3, 48, 5, 4)
    plain = head(x)
    head.fold_batchnorm = True
    folded = head(x)
    assert (folded - plain).abs().max().item() <= 1e-6 * max(1.0, plain.abs().max().item())
    # The fold reads the current statistics: changing them changes the folded output too.
    with torch.no_grad():
        head.deconv_layers[1].running_mean.add_(0.5)
    head.fold_batchnorm = False
    plain2 = head(x)
    head.fold_batchnorm = True
    torch.testing.assert_close(head(x), plain2, rtol=0, atol=1e-6 * max(1.0, plain2.abs().max().item()))
    assert not torch.allclose(plain, plain2)


def test_folded_head_on_cpu_folds_once_per_parameter_version(monkeypatch):
    from vitpose_fast.model import heads

    head = randomize_weights(ClassicHead(48, HeadConfig(kind="classic", num_keypoints=7, deconv_channels=(24, 16))))
    head.eval().fold_batchnorm = True
    calls = []
    real = heads.folded_deconv
    monkeypatch.setattr(heads, "folded_deconv", lambda d, b: calls.append(1) or real(d, b))
    x = torch.randn(2, 48, 5, 4)
    first = head(x)
    assert len(calls) == 2 and first.is_contiguous()
    torch.testing.assert_close(head(x), first)
    assert len(calls) == 2  # cached: nothing changed
    other = randomize_weights(ClassicHead(48, HeadConfig(kind="classic", num_keypoints=7, deconv_channels=(24, 16))))
    head.load_state_dict(other.state_dict())  # in place: a new version of every parameter
    other.eval().fold_batchnorm = False
    torch.testing.assert_close(head(x), other(x), rtol=1e-5, atol=1e-6)
    assert len(calls) == 4
    head.double()  # new tensors
    torch.testing.assert_close(head(x.double()), other.double()(x.double()), rtol=1e-6, atol=1e-9)  # fp32 fold
    assert len(calls) == 6


def test_folded_head_trains_with_batchnorm():
    head = randomize_weights(ClassicHead(16, HeadConfig(kind="classic", num_keypoints=3, deconv_channels=(8, 8))))
    head.fold_batchnorm = True
    head.train()
    x = torch.randn(4, 16, 3, 3)
    out = head(x)
    bn = head.deconv_layers[1]
    assert bn.num_batches_tracked.item() == 1  # the real BatchNorm ran (batch statistics, running update)
    head.fold_batchnorm = False
    head.deconv_layers[1].num_batches_tracked.zero_()
    torch.testing.assert_close(out, head(x))


# --------------------------------------------------------------------------------------------------------------
# optimize() on CPU
@pytest.mark.parametrize("precision,dtype,tol", [("fp32", torch.float32, 1e-5), ("bf16", torch.bfloat16, 0.05)])
def test_optimize_matches_eager(precision, dtype, tol):
    model = randomize_weights(Model.from_config("vitpose_s", decoder="classic", backend="torch", **TINY)).eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
    keys = set(model.state_dict())
    model.optimize(batch_size=2, precision=precision)
    out = model(x)
    assert out.dtype == dtype and not model.training
    assert set(model.state_dict()) == keys
    err = (out.float() - ref).abs().max().item()
    assert err <= tol * ref.abs().max().item(), err
    model.train()  # training goes back to the eager path (real BatchNorm, autograd)
    assert model(x.to(dtype)).requires_grad


# --------------------------------------------------------------------------------------------------------------
# CUDA graphs, with fakes that behave like the real API
def test_fake_graph_replays_recorded_ops(fake_cuda):
    g = torch.cuda.CUDAGraph()
    a = torch.randn(4)
    with torch.cuda.graph(g):
        b = (a * 2).relu_()
    a.copy_(torch.randn(4))
    g.replay()
    torch.testing.assert_close(b, (a * 2).relu())


@pytest.mark.parametrize("decoder", ["classic", "simple"])
def test_cuda_graph_logic_never_returns_stale_outputs(fake_cuda, decoder):
    model = randomize_weights(Model.from_config("vitpose_s", decoder=decoder, backend="torch", **TINY)).eval()
    eager = lambda x: model._forward_eager(x)  # noqa: E731  (same weights, no graphs)
    model.optimize(batch_size=2, precision="fp32")
    assert model._optimized.graphs is not None
    x1, x2 = torch.randn(2, 3, 64, 48), torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        want1, want2 = eager(x1), eager(x2)
    out1 = model(x1)
    torch.testing.assert_close(out1, want1, rtol=1e-5, atol=1e-6)
    out2 = model(x2)  # same shape: a replay with the new input
    torch.testing.assert_close(out2, want2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out1, want1, rtol=1e-5, atol=1e-6)  # the first result was not overwritten
    assert model._optimized.graphs.captures == 1

    # A new batch size is captured; a larger one runs in chunks of the captured size.
    x3 = torch.randn(5, 3, 64, 48)
    with torch.no_grad():
        want3 = eager(x3)
    torch.testing.assert_close(model(x3[:1]), want3[:1], rtol=1e-5, atol=1e-6)
    assert model._optimized.graphs.captures == 2
    torch.testing.assert_close(model(x3), want3, rtol=1e-5, atol=1e-6)
    assert model._optimized.graphs.captures == 2

    # In-place weight updates are read at replay, as by a real graph.
    with torch.no_grad():
        model.backbone.pos_embed.add_(0.1)
        want = eager(x1)
    torch.testing.assert_close(model(x1), want, rtol=1e-5, atol=1e-6)

    # Casting the model drops the graphs: the next call re-captures in the new dtype.
    model.to(torch.float64)
    out = model(x1)
    assert out.dtype == torch.float64 and model._optimized.graphs.captures == 3
    torch.testing.assert_close(out.float(), want, rtol=1e-5, atol=1e-6)


def test_cuda_graph_sizes_beyond_the_limit_run_padded(fake_cuda):
    model = randomize_weights(Model.from_config("vitpose_s", decoder="simple", backend="torch", **TINY)).eval()
    model.optimize(batch_size=4, precision="fp32")
    model._optimized.graphs.max_graphs = 2
    x = torch.randn(4, 3, 64, 48)
    with torch.no_grad():
        want = model._forward_eager(x)
    for n in (1, 2, 3, 4, 3):
        torch.testing.assert_close(model(x[:n]), want[:n], rtol=1e-5, atol=1e-6)
    sizes = sorted(k[0] for k in model._optimized.graphs.graphs)
    assert sizes == [1, 4]  # 2 and 3 ran zero-padded in the full-batch graph


# --------------------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True)
@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_compile_fullgraph_every_backend(backend):
    torch._dynamo.reset()
    model = randomize_weights(Model.from_config("vitpose_s", decoder="classic", backend=backend,
                                                **dict(TINY, depth=1))).eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        want = model(x)
        got = torch.compile(model, fullgraph=True, backend="inductor")(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * max(1.0, want.abs().max().item()))


def test_cuda_graphs_per_dataset_index(fake_cuda):
    # ViTPose+: the expert is part of the captured graph, so each int dataset index gets its own graph; a
    # per-sample index tensor runs eagerly.
    model = randomize_weights(Model.from_config("vitpose_s", decoder="simple", backend="torch", num_experts=3,
                                                part_features=8, **TINY)).eval()
    model.optimize(batch_size=2, precision="fp32")
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        want = [model._forward_eager(x, i) for i in range(3)]
    for i in (0, 2, 0):
        torch.testing.assert_close(model(x, i), want[i], rtol=1e-5, atol=1e-6)
    assert model._optimized.graphs.captures == 2
    mixed = torch.tensor([0, 2])
    got = model(x, mixed)
    torch.testing.assert_close(got[0], want[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[2][1], rtol=1e-5, atol=1e-6)
    assert model._optimized.graphs.captures == 2
