"""The paper's flexibilities at model level: partial fine-tuning and ViTPose+ dataset splitting."""

import pytest
import torch

from vitpose_fast import Model

TINY = dict(depth=2, embed_dim=64, num_heads=2, res=(64, 48))


@pytest.mark.parametrize("part", ["attn", "ffn"])
def test_frozen_parameters_unchanged_and_without_grads(part):
    model = Model.from_config("vitpose_s", **TINY).train().freeze(part)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    expect_frozen = {
        "attn": lambda n: ".attn." in n or ".norm1." in n,
        "ffn": lambda n: ".mlp." in n or ".norm2." in n or "patch_embed" in n or n == "backbone.pos_embed",
    }[part]
    assert set(frozen) == {n for n, _ in model.named_parameters() if expect_frozen(n)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, 3, 64, 48)).square().mean().backward()
        opt.step()
    params = dict(model.named_parameters())
    for n, before in frozen.items():
        assert params[n].grad is None, n
        assert torch.equal(params[n], before), n
    assert any(not torch.equal(p, frozen.get(n, p * 0 + 1e9)) for n, p in params.items() if p.requires_grad)


def test_split_moe_models_predict_as_the_moe_model():
    model = Model.from_config("vitpose_s", num_experts=6, part_features=16, extra_heads=(14, 16, 17, 17, 133),
                              **TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    x = torch.randn(2, 3, 64, 48)
    parts = model.split_datasets()
    assert len(parts) == 6
    with torch.no_grad():
        for d, plain in enumerate(parts):
            assert plain.config.backbone.num_experts == 1 and not plain.associate_keypoint_heads
            assert not any(".experts." in k for k in plain.state_dict())
            assert torch.equal(plain(x), model(x, dataset_index=d))


def test_official_export_refuses_what_the_official_model_lacks(tmp_path):
    from vitpose_fast import attention_preset
    from vitpose_fast.model.checkpoint import CheckpointError

    with_token = Model.from_config("vitpose_s", num_knowledge_tokens=1, **TINY)
    with pytest.raises(CheckpointError, match="knowledge token"):
        with_token.export_official(tmp_path / "a.pth")
    with_token.save(tmp_path / "own.pt")
    assert Model.from_pretrained(tmp_path / "own.pt").config.backbone.num_knowledge_tokens == 1
    windowed = Model.from_config("vitpose_s", attention=attention_preset("window", depth=2, window=(2, 2)), **TINY)
    with pytest.raises(CheckpointError, match="relative-position"):
        windowed.export_official(tmp_path / "b.pth")
