"""Checkpoint formats: official .pth, Hugging Face folders, our own format, MAE/timm; loading rules; errors."""

import pytest
import torch
import torch.nn.functional as F

from vitpose_fast import Model
from vitpose_fast.model.checkpoint import CheckpointError, official_to_hf, hf_to_official, infer_config

from helpers import randomize_weights

TINY = dict(depth=2, embed_dim=64, num_heads=2, res=(64, 48))


def _randomize(model):
    return randomize_weights(model).eval()


def _same_heatmaps(a, b, x, dataset_index=None):
    with torch.no_grad():
        assert torch.equal(a(x, dataset_index=dataset_index), b(x, dataset_index=dataset_index))


@pytest.mark.parametrize("decoder", ["classic", "simple"])
def test_official_round_trip(decoder, tmp_path):
    model = _randomize(Model.from_config("vitpose_s", decoder=decoder, num_keypoints=5, **TINY))
    model.export_official(tmp_path / "official.pth")
    raw = torch.load(tmp_path / "official.pth", weights_only=True)
    assert set(raw) == {"state_dict", "meta"}
    assert "backbone.cls_token" in raw["state_dict"]  # the released files' layout
    loaded = Model.from_pretrained(tmp_path / "official.pth")
    _same_heatmaps(model, loaded, torch.randn(2, 3, 64, 48))
    # Without our meta (as a released file), the config is inferred from the tensors (head count aside: it is
    # not in any tensor's shape, and this width is no preset's).
    del raw["meta"]
    inferred = Model.from_pretrained(raw, num_heads=2)
    assert inferred.config.head.kind == decoder and inferred.config.head.num_keypoints == 5
    _same_heatmaps(model, inferred, torch.randn(1, 3, 64, 48))


def test_hf_to_official_to_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    bc = VitPoseBackboneConfig(image_size=[64, 48], hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                               out_indices=[2], layer_norm_eps=1e-6)
    hf = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=bc, use_simple_decoder=False, num_labels=17)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.05)
    # HF -> official layout by key mapping alone, written as a released-style .pth, loaded back.
    sd = hf_to_official(hf.state_dict())
    torch.save({"state_dict": sd, "meta": {}}, tmp_path / "converted.pth")
    model = Model.from_pretrained(tmp_path / "converted.pth", num_heads=2).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert (model(x) - hf(x).heatmaps).abs().max() <= 1e-5 * hf(x).heatmaps.abs().max()


def test_hf_export_round_trip_keeps_all_heads(tmp_path):
    model = _randomize(Model.from_config("vitpose_s", num_experts=3, part_features=16, extra_heads=(14, 16),
                                         **TINY))
    model.save_pretrained_hf(tmp_path / "hf")
    back = Model.from_pretrained(tmp_path / "hf")
    assert back.config.extra_heads == (14, 16)
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Key mappings are inverse to each other.
    hf_sd = official_to_hf(a)
    again = hf_to_official(hf_sd)
    assert again.keys() == a.keys() and all(torch.equal(a[k], again[k]) for k in a)


def test_own_format_round_trip_with_attention_specs(tmp_path):
    from vitpose_fast import attention_preset

    model = Model.from_config("vitpose_s", attention=attention_preset("window_shift_pool", depth=2, window=(2, 2)),
                              **TINY)
    model.save(tmp_path / "own.pt")
    back = Model.from_pretrained(tmp_path / "own.pt")
    assert back.config == model.config
    a, b = model.state_dict(), back.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_patch_kernel_14_zero_padded_and_pos_embed_resized():
    model = _randomize(Model.from_config("vitpose_s", **TINY))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    w16 = sd["backbone.patch_embed.proj.weight"]
    sd["backbone.patch_embed.proj.weight"] = w14 = w16[:, :, 1:15, 1:15].clone()
    loaded = Model.from_pretrained(sd, res=(96, 64))  # a different grid: 6x4 instead of 4x3
    w = loaded.state_dict()["backbone.patch_embed.proj.weight"]
    assert torch.equal(w[:, :, 1:15, 1:15], w14) and w[:, :, 0].abs().sum() == 0 and w[:, :, :, -1].abs().sum() == 0
    pos = sd["backbone.pos_embed"]
    want = F.interpolate(pos[:, 1:].reshape(1, 4, 3, -1).permute(0, 3, 1, 2), size=(6, 4), mode="bicubic",
                         align_corners=False).permute(0, 2, 3, 1).reshape(1, 24, -1)
    got = loaded.state_dict()["backbone.pos_embed"]
    assert torch.equal(got[:, :1], pos[:, :1])
    torch.testing.assert_close(got[:, 1:], want)


def test_mae_checkpoint_initialises_backbone(tmp_path):
    # An MAE encoder: 'model' key, no 'backbone.' prefix, cls/mask tokens, decoder, and 'norm' (not last_norm).
    src = _randomize(Model.from_config("vitpose_s", **TINY))
    mae = {k[len("backbone."):]: v for k, v in src.state_dict().items()
           if k.startswith("backbone.") and not k.startswith("backbone.last_norm")}
    mae["pos_embed"] = torch.randn(1, 1 + 16, 64)  # a square 4x4 pretraining grid
    mae.update({"cls_token": torch.zeros(1, 1, 64), "mask_token": torch.zeros(1, 1, 64),
                "norm.weight": torch.randn(64), "norm.bias": torch.randn(64),
                "decoder_embed.weight": torch.randn(32, 64)})
    torch.save({"model": mae}, tmp_path / "mae.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        Model.from_pretrained(tmp_path / "mae.pth", **TINY)
    model = Model.from_pretrained(tmp_path / "mae.pth", strict=False, **TINY)
    sd = model.state_dict()
    assert torch.equal(sd["backbone.blocks.1.mlp.fc2.weight"], src.state_dict()["backbone.blocks.1.mlp.fc2.weight"])
    assert torch.equal(sd["backbone.last_norm.weight"], torch.ones(64))  # not loaded from MAE's norm
    assert sd["backbone.pos_embed"].shape == (1, 13, 64)


def test_truncated_checkpoint_error(tmp_path):
    model = Model.from_config("vitpose_s", **TINY)
    model.save(tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Model.from_pretrained(tmp_path / "cut.pt")


def test_foreign_checkpoint_error(tmp_path):
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3), "fc.bias": torch.zeros(2)}}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match="not a ViTPose checkpoint.*conv1.weight"):
        Model.from_pretrained(tmp_path / "resnet.pth")


class _Foreign:
    pass


def test_arbitrary_pickles_are_refused(tmp_path):
    torch.save({"state_dict": {"backbone.pos_embed": torch.zeros(1)}, "meta": _Foreign()}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        Model.from_pretrained(tmp_path / "pickle.pth")


def test_missing_and_unexpected_keys_are_listed():
    model = Model.from_config("vitpose_s", **TINY)
    sd = dict(model.state_dict())
    del sd["backbone.blocks.1.attn.proj.weight"]
    sd["backbone.blocks.1.attn.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        Model.from_pretrained(sd, num_heads=2)
    msg = str(e.value)
    assert "missing keys (1): backbone.blocks.1.attn.proj.weight" in msg
    assert "unexpected keys (1): backbone.blocks.1.attn.extra" in msg


def test_infer_config_from_tensors():
    model = Model.from_config("vitpose_b", depth=2, decoder="simple", num_keypoints=133, num_experts=6,
                              extra_heads=(14,))
    cfg = infer_config(model.state_dict())
    assert (cfg.backbone.embed_dim, cfg.backbone.depth, cfg.backbone.num_heads) == (768, 2, 12)
    assert cfg.backbone.img_size == (256, 192)
    assert (cfg.head.kind, cfg.head.num_keypoints) == ("simple", 133)
    assert (cfg.backbone.num_experts, cfg.backbone.part_features) == (6, 192)
    assert cfg.extra_heads == (14,)


def test_non_strict_load_logs_what_it_dropped(caplog):
    import logging

    from vitpose_fast.model.checkpoint import load_into
    from vitpose_fast import Model as _Model

    model = _Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(32, 32))
    sd = dict(model.state_dict())
    sd["extra.weight"] = torch.zeros(1)
    del sd["keypoint_head.final_layer.bias"]
    with caplog.at_level(logging.WARNING, logger="vitpose_fast"):
        load_into(model, sd, strict=False)
    text = caplog.text
    assert "1 checkpoint tensors not in the model were dropped (extra.weight)" in text
    assert "keypoint_head.final_layer.bias" in text and "keep their initial values" in text


def _sharded_run(tmp_path, model, step=3):
    """A run folder as ``train.py --fsdp`` leaves it: ``sharded/step_*`` (model and optimizer states through DCP,
    plus the train state) and the ``last.dcp`` link, written by the training code itself in one process."""
    import torch.distributed as dist

    from vitpose_fast.training.distributed import ensure_process_group, save_sharded

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 64, 48), dataset_index=0).square().mean().backward()
    opt.step()  # optimizer moments in the checkpoint too (not read back as weights)
    own_group = ensure_process_group(torch.device("cpu"))  # as train.py: a group of one
    try:
        save_sharded(tmp_path / "last.dcp", model, opt, {"step": step, "config": model.config.to_dict()})
    finally:
        if own_group:
            dist.destroy_process_group()
    return model.eval()


def test_sharded_training_checkpoint_loads_directly(tmp_path):
    from vitpose_fast.training.distributed import consolidate

    # Experts and the classic head: fc2/expert splits and BatchNorm's integer counter in the folder.
    model = _sharded_run(tmp_path, _randomize(Model.from_config("vitpose_s", num_experts=2, part_features=16, **TINY)))
    consolidated = Model.from_pretrained(consolidate(tmp_path / "last.dcp", tmp_path / "w.pth")).state_dict()
    expected = model.state_dict()
    for folder in (tmp_path / "last.dcp", tmp_path / "sharded" / "step_00000003"):  # the link and its target
        loaded = Model.from_pretrained(folder)
        assert loaded.config == model.config and not loaded.training
        sd = loaded.state_dict()
        assert sd.keys() == expected.keys() == consolidated.keys()
        for k in expected:
            assert sd[k].dtype == expected[k].dtype and torch.equal(sd[k], expected[k]), k
            assert torch.equal(sd[k], consolidated[k]), k


def test_sharded_checkpoint_errors(tmp_path):
    _sharded_run(tmp_path, _randomize(Model.from_config("vitpose_s", **TINY)))
    # The run folder itself: says which of its entries to pass.
    with pytest.raises(CheckpointError, match=r"no DCP \.metadata.*OUT/last\.dcp.*holds last\.dcp"):
        Model.from_pretrained(tmp_path)
    # DCP files without our train state (another program's checkpoint, or a write that did not finish).
    (tmp_path / "sharded" / "step_00000003" / "train_state.pt").unlink()
    with pytest.raises(CheckpointError, match=r"last\.dcp' has no train_state\.pt"):
        Model.from_pretrained(tmp_path / "last.dcp")
