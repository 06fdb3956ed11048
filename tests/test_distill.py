"""Knowledge tokens (backbone) and knowledge-token distillation (``train/distill.py``, paper Table 8)."""

import copy
import json

import pytest
import torch

from vitpose_fast.training.distill import (fit, freeze, load_token, main, student_loss, token_loss, with_knowledge_token)
from vitpose_fast.model.backbone import Attention
from vitpose_fast.config import AttentionSpec, attention_preset
from vitpose_fast import Model
from vitpose_fast.training.core import param_groups

RES = (32, 32)


def _tiny(**over) -> Model:
    kw = dict(res=RES, depth=2, embed_dim=32, num_heads=2, drop_path_rate=0.0, deconv_channels=(8, 8),
              num_keypoints=3)
    kw.update(over)
    return Model.from_config("vitpose_s", backend="torch", **kw)


def _batches(n, b=2, k=3, hm=(8, 8)):
    return [{"image": torch.randn(b, 3, *RES), "target": torch.rand(b, k, *hm),
             "target_weight": torch.rand(b, k, 1)} for _ in range(n)]


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------------------------
# backbone
def test_no_tokens_leaves_model_unchanged():
    """T = 0 (the default): no parameter, same state-dict keys and same init draws as a config without it."""
    torch.manual_seed(0)
    a = _tiny()
    torch.manual_seed(0)
    b = _tiny(num_knowledge_tokens=0)
    assert a.backbone.knowledge_token is None and "backbone.knowledge_token" not in a.state_dict()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(1, 3, *RES)
    assert torch.equal(a.eval()(x), b.eval()(x))


def _mhsa(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Plain multi-head self-attention over every token of x [B, M, C] with attn's weights (explicit fp64)."""
    b, m, c = x.shape
    h, d = attn.num_heads, attn.head_dim
    qkv = torch.nn.functional.linear(x, attn.qkv.weight.double(), attn.qkv.bias.double())
    q, k, v = qkv.view(b, m, 3, h, d).permute(2, 0, 3, 1, 4)
    out = ((q * d**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
    return torch.nn.functional.linear(out.transpose(1, 2).reshape(b, m, c), attn.proj.weight.double(),
                                      attn.proj.bias.double())


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_global_attention_with_tokens_is_plain_attention_over_n_plus_t(backend):
    grid, t = (3, 5), 2
    attn = Attention(32, 2, True, AttentionSpec(), grid)
    x = torch.randn(2, grid[0] * grid[1] + t, 32)
    torch.testing.assert_close(attn(x, grid, backend).double(), _mhsa(attn, x.double()), atol=1e-5, rtol=1e-5)


def _preset_model(name: str, tokens: int) -> Model:
    specs = attention_preset(name, depth=4, window=(3, 2))
    model = Model.from_config("vitpose_s", backend="reference", res=(40, 24), patch_stride=8, depth=4,
                              embed_dim=32, num_heads=2, drop_path_rate=0.0, attention=specs, decoder="simple",
                              num_keypoints=2, num_knowledge_tokens=tokens)
    return model.eval()


@pytest.mark.parametrize("name", ["full", "window", "window_shift", "window_pool", "window_shift_pool",
                                  "full_window"])
def test_token_flows_through_every_attention_preset(name):
    """Forward + backward with a knowledge token: triton (interpreter) and torch agree with the reference in
    outputs and every gradient (the token's included), and the token changes the heatmaps."""
    model = _preset_model(name, tokens=1)
    x = torch.randn(1, 3, 40, 24)
    results = {}
    for backend in ("reference", "torch", "triton"):
        model.set_backend(backend)
        out = model(x)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        results[backend] = [out, *grads]
    assert results["reference"][0].shape == (1, 2, 10, 6)
    names = [n for n, _ in model.named_parameters()]
    token_grad = results["reference"][1 + names.index("backbone.knowledge_token")]
    assert token_grad.abs().sum() > 0
    for backend in ("torch", "triton"):
        for what, a, b in zip(["out"] + names, results[backend], results["reference"]):
            torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4, msg=lambda m: f"{backend} {what}: {m}")
    model.set_backend("reference")
    with torch.no_grad():
        model.backbone.knowledge_token.add_(torch.randn_like(model.backbone.knowledge_token))
        assert not torch.allclose(model(x), results["reference"][0])


def test_token_saved_in_own_format_and_refused_by_hf(tmp_path):
    model = with_knowledge_token(_tiny().eval(), num_tokens=2)
    model.save(tmp_path / "m.pth")
    loaded = Model.from_pretrained(tmp_path / "m.pth", backend="torch")
    assert loaded.config.backbone.num_knowledge_tokens == 2
    assert torch.equal(loaded.backbone.knowledge_token, model.backbone.knowledge_token)
    x = torch.randn(1, 3, *RES)
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    with pytest.raises(Exception, match="knowledge_token has no Hugging Face equivalent"):
        model.save_pretrained_hf(tmp_path / "hf")


def test_token_width_must_match():
    with pytest.raises(ValueError, match="same width"):
        with_knowledge_token(_tiny(), torch.zeros(1, 1, 48))


# --------------------------------------------------------------------------------------------------------------
# the two stages
def test_stage1_trains_only_the_token():
    teacher = freeze(_tiny())
    teacher = with_knowledge_token(teacher, trainable=True)
    before = _snapshot(teacher)
    token = teacher.backbone.knowledge_token
    opt = torch.optim.AdamW([token], lr=1e-2, weight_decay=0.0)
    hist = fit(token_loss(teacher, torch.device("cpu")), opt, _batches(3), max_steps=3, log_interval=1)
    assert len(hist) == 3 and all(r["loss"] > 0 for r in hist)
    after = teacher.state_dict()
    assert not torch.equal(after["backbone.knowledge_token"], before["backbone.knowledge_token"])
    for k, v in before.items():
        if k != "backbone.knowledge_token":
            assert torch.equal(after[k], v), k
    assert all(p.grad is None for n, p in teacher.named_parameters() if n != "backbone.knowledge_token")


def test_stage2_keeps_the_token_frozen_and_trains_the_student():
    token = torch.randn(1, 1, 32) * 0.02
    student = with_knowledge_token(_tiny(), token, trainable=False).train()
    teacher = freeze(with_knowledge_token(_tiny(), token, trainable=False))
    before = _snapshot(student)
    opt = torch.optim.AdamW(param_groups(student, 1e-3, 0.05, 0.9))
    assert all("knowledge_token" not in n for g in opt.param_groups for n in g["param_names"])
    fit(student_loss(student, torch.device("cpu"), teacher, 1.0), opt, _batches(2), max_steps=2)
    after = student.state_dict()
    assert torch.equal(after["backbone.knowledge_token"], token)
    assert student.backbone.knowledge_token.grad is None
    changed = [k for k, v in before.items() if not torch.equal(after[k], v)]
    assert "backbone.patch_embed.proj.weight" in changed and "keypoint_head.final_layer.weight" in changed


def test_heatmap_distillation_term_is_zero_for_an_identical_teacher():
    student = with_knowledge_token(_tiny(), trainable=False).eval()
    teacher = freeze(copy.deepcopy(student))
    loss, parts = student_loss(student, torch.device("cpu"), teacher, 0.5)(_batches(1)[0])
    assert parts["loss_heatmap_distill"].item() == 0.0
    assert loss.item() == parts["loss_gt"].item()
    with pytest.raises(ValueError, match="both a teacher and a weight"):
        student_loss(student, torch.device("cpu"), teacher, 0.0)


def test_cli_token_then_student(tmp_path):
    """Stage 1 then stage 2 (token + heatmap) on a tiny synthetic COCO set through the command line."""
    from vitpose_fast.data.synthetic import make_synthetic_coco

    data = make_synthetic_coco(tmp_path / "synth", {"train2017": 2}, seed=0, image_size=(96, 128),
                               splits=("train2017",))
    common = ["--preset", "tiny_synthetic", "--data-root", str(data.root), "--device", "cpu", "--workers", "0",
              "--batch-size", "2", "--max-steps", "2", "--log-interval", "1", "--backend", "torch"]
    s1 = main(["--stage", "token", "--teacher", "tiny_synthetic", "--out", str(tmp_path / "tok"), *common])
    token = load_token(s1["out"])
    assert token.shape == (1, 1, 192) and len(s1["history"]) == 2
    s2 = main(["--stage", "student", "--token", str(s1["out"]), "--teacher", "tiny_synthetic",
               "--heatmap-distill", "1.0", "--out", str(tmp_path / "stu"), *common])
    assert all("loss_heatmap_distill" in r for r in s2["history"])
    student = Model.from_pretrained(s2["out"])
    assert torch.equal(student.backbone.knowledge_token, token)
    records = [json.loads(line) for line in (tmp_path / "stu" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
