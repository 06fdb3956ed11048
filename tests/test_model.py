"""Model construction, presets, backends and input validation."""

import pytest
import torch

from vitpose_fast import Model, ModelConfig, attention_preset, preset
from vitpose_fast import ops

TINY = dict(depth=2, embed_dim=64, num_heads=2, res=(64, 48))


def _params(name, **kw):
    with torch.device("meta"):
        model = Model.from_config(name, **kw)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    return backbone, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, decoder, paper",
    [
        # The paper's B and H figures are the backbone plus the (117k / 196k parameter) simple decoder;
        # its L figure matches the classic-decoder model (backbone alone: 303.3M, 1.2% below).
        ("vitpose_b", "simple", 86e6),
        ("vitpose_l", "classic", 307e6),
        ("vitpose_h", "simple", 632e6),
    ],
)
def test_preset_parameter_counts_match_paper(name, decoder, paper):
    _, total = _params(name, decoder=decoder)
    assert abs(total - paper) / paper < 0.01, f"{name}: {total / 1e6:.1f}M vs paper {paper / 1e6:.0f}M"


def test_preset_official_values():
    expect = {  # embed, depth, heads, drop path, layer decay (official configs; H uses the repo's 0.85)
        "vitpose_s": (384, 12, 12, 0.1, 0.8),
        "vitpose_b": (768, 12, 12, 0.3, 0.75),
        "vitpose_l": (1024, 24, 16, 0.5, 0.8),
        "vitpose_h": (1280, 32, 16, 0.55, 0.85),
    }
    for name, (dim, depth, heads, dpr, ld) in expect.items():
        cfg = preset(name)
        b = cfg.backbone
        assert (b.embed_dim, b.depth, b.num_heads, b.drop_path_rate, cfg.layer_decay) == (dim, depth, heads, dpr, ld)
        assert b.qkv_bias and b.layer_norm_eps == 1e-6 and b.mlp_ratio == 4


def test_vitpose_g_is_about_one_billion():
    backbone, _ = _params("vitpose_g")
    assert 0.95e9 < backbone < 1.1e9


@pytest.mark.parametrize("res, stride, grid", [((256, 192), 16, (16, 12)), ((384, 288), 16, (24, 18)),
                                               ((576, 432), 16, (36, 27)), ((256, 192), 8, (32, 24))])
def test_token_grids_follow_official_padding(res, stride, grid):
    cfg = preset("vitpose_b", res=res, patch_stride=stride)
    assert cfg.backbone.grid == grid
    assert cfg.backbone.patch_padding == (2 if stride == 16 else 4)
    conv = torch.nn.Conv2d(3, 1, 16, stride=stride, padding=cfg.backbone.patch_padding)
    assert conv(torch.zeros(1, 3, *res)).shape[-2:] == grid


@pytest.mark.parametrize("decoder", ["classic", "simple"])
@pytest.mark.parametrize("stride", [16, 8])
def test_heatmaps_are_quarter_resolution(decoder, stride):
    model = Model.from_config("vitpose_s", decoder=decoder, patch_stride=stride, num_keypoints=7, **TINY)
    out = model(torch.randn(2, 3, 64, 48))
    assert out.shape == (2, 7, 16, 12)


def test_issue_example_builds():
    cfg = preset("vitpose_h", res=(576, 432), decoder="simple", num_keypoints=17, patch_stride=8)
    assert cfg.backbone.grid == (72, 54) and cfg.heatmap_size == (144, 108)


def test_backends_agree_and_share_parameters():
    model = Model.from_config("vitpose_s", decoder="simple", **TINY).eval()
    x = torch.randn(2, 3, 64, 48)
    keys = set(model.state_dict())
    with torch.no_grad():
        ref = model.set_backend("reference")(x)
        for backend in ("torch", "triton", "auto"):
            torch.testing.assert_close(model.set_backend(backend)(x), ref, rtol=1e-5, atol=1e-6)
            assert set(model.state_dict()) == keys


def test_backend_environment_variable(monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.resolve("auto", torch.device("cpu")) == "reference"
    assert ops.resolve("torch", torch.device("cpu")) == "torch"  # an explicit choice wins
    monkeypatch.setenv(ops.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="VITPOSE_FAST_BACKEND"):
        ops.resolve("auto", torch.device("cpu"))
    monkeypatch.delenv(ops.ENV_VAR)
    assert ops.resolve("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        Model.from_config("vitpose_s", backend="cuda", **TINY)


def test_moe_single_dataset_costs_one_gemm_and_matches_reference():
    model = Model.from_config("vitpose_s", num_experts=6, part_features=16, **TINY).eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        for idx in (0, 5, torch.tensor([4, 4, 4]), torch.tensor([1, 3, 1])):
            ref = model.set_backend("reference")(x, dataset_index=idx)
            fast = model.set_backend("torch")(x, dataset_index=idx)
            torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)


def test_dataset_index_selects_head():
    model = Model.from_config("vitpose_s", num_experts=3, part_features=16, extra_heads=(14, 16), **TINY).eval()
    x = torch.randn(2, 3, 64, 48)
    assert model(x, dataset_index=0).shape[1] == 17
    assert model(x, dataset_index=1).shape[1] == 14
    assert model(x, dataset_index=torch.tensor([2, 2])).shape[1] == 16
    with pytest.raises(ValueError, match="mixes dataset indices"):
        model(x, dataset_index=torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (torch.randn(1, 4, 64, 48), {}, r"3 RGB channels.*\(1, 4, 64, 48\)"),
        (torch.randn(3, 64, 48), {}, r"\[B, 3, H, W\]"),
        (torch.zeros(1, 3, 64, 48, dtype=torch.uint8), {}, "floating-point.*uint8"),
        (torch.randn(1, 3, 60, 48), {}, "not divisible by the patch stride 16"),
        (torch.randn(1, 3, 80, 48), {}, "does not match the model's 64x48"),
    ],
)
def test_bad_input_errors(x, kwargs, match):
    model = Model.from_config("vitpose_s", **TINY)
    with pytest.raises((ValueError, TypeError), match=match):
        model(x, **kwargs)


def test_moe_requires_dataset_index():
    model = Model.from_config("vitpose_s", num_experts=6, part_features=16, **TINY)
    with pytest.raises(ValueError, match="pass dataset_index"):
        model(torch.randn(1, 3, 64, 48))
    with pytest.raises(ValueError, match="out of range"):
        model(torch.randn(1, 3, 64, 48), dataset_index=6)


def test_config_errors_and_round_trip():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("vitpose_x")
    with pytest.raises(TypeError, match="unknown config override 'resolution'"):
        preset("vitpose_b", resolution=(256, 192))
    with pytest.raises(ValueError, match="patch_stride"):
        preset("vitpose_b", patch_stride=4)
    with pytest.raises(ValueError, match="per-block specs"):
        preset("vitpose_b", attention=attention_preset("window", depth=3))
    cfg = preset("vitpose_b", attention=attention_preset("full_window", depth=12), num_experts=6)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.backbone.part_features == 192  # the released ViTPose+-B value


def test_attention_presets_match_table5():
    specs = attention_preset("full_window", depth=12)
    assert [i + 1 for i, s in enumerate(specs) if s.kind == "global"] == [3, 6, 9, 12]
    shifted = attention_preset("window_shift_pool", depth=4, window=(16, 12))
    assert [s.shift for s in shifted] == [False, True, False, True]
    assert all(s.pool and s.window == (16, 12) for s in shifted)


def test_grad_checkpointing_same_gradients():
    model = Model.from_config("vitpose_s", **TINY).train()
    model.backbone.blocks[0].drop_path.p = model.backbone.blocks[1].drop_path.p = 0.0
    x = torch.randn(2, 3, 64, 48)
    model(x).square().mean().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-5, atol=1e-7)
