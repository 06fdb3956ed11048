"""Layer-wise lr decay groups against an independent transcription of the official constructor
(``mmcv_custom/layer_decay_optimizer_constructor.py``: ``get_num_layer_for_vit`` + ``add_params``)."""

import pytest
import torch

from vitpose_fast import Model
from vitpose_fast.training.core import build_optimizer, param_groups


def _official_num_layer(var_name, num_max_layer):
    # Literal transcription of the official get_num_layer_for_vit.
    if var_name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    elif var_name.startswith("backbone.patch_embed"):
        return 0
    elif var_name.startswith("backbone.blocks"):
        layer_id = int(var_name.split(".")[2])
        return layer_id + 1
    else:
        return num_max_layer - 1


def _official_groups(model, base_lr, base_wd, paramwise_num_layers, layer_decay_rate):
    # Literal transcription of the official add_params: group name -> (lr, weight_decay, param names).
    parameter_groups = {}
    num_layers = paramwise_num_layers + 2
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if len(param.shape) == 1 or name.endswith(".bias") or "pos_embed" in name:
            group_name = "no_decay"
            this_weight_decay = 0.0
        else:
            group_name = "decay"
            this_weight_decay = base_wd
        layer_id = _official_num_layer(name, num_layers)
        group_name = "layer_%d_%s" % (layer_id, group_name)
        if group_name not in parameter_groups:
            scale = layer_decay_rate ** (num_layers - layer_id - 1)
            parameter_groups[group_name] = {"weight_decay": this_weight_decay, "param_names": [], "lr": scale * base_lr}
        parameter_groups[group_name]["param_names"].append(name)
    return parameter_groups


def _per_param(groups):
    out = {}
    for g in groups.values() if isinstance(groups, dict) else groups:
        for name in g["param_names"]:
            assert name not in out, f"{name} is in two groups"
            out[name] = (g["lr"], g["weight_decay"])
    return out


@pytest.mark.parametrize("preset,depth,decay", [("vitpose_b", 12, 0.75), ("vitpose_s", 12, 0.8)])
@pytest.mark.parametrize("decoder", ["classic", "simple"])
def test_groups_match_official(preset, depth, decay, decoder):
    with torch.device("meta"):
        model = Model.from_config(preset, decoder=decoder)
    assert model.config.layer_decay == decay
    lr, wd = 5e-4, 0.1
    ours = _per_param(param_groups(model, lr, wd, model.config.layer_decay))
    official = _per_param(_official_groups(model, lr, wd, depth, decay))
    assert set(ours) == {n for n, _ in model.named_parameters()}
    assert ours.keys() == official.keys()
    for name in ours:
        assert ours[name][0] == pytest.approx(official[name][0], rel=1e-12), name
        assert ours[name][1] == official[name][1], name
    # Spot values from the official B config: embeddings 0.75**13, head and last_norm 1.0, no decay on biases.
    if preset == "vitpose_b":
        assert ours["backbone.pos_embed"] == (pytest.approx(lr * 0.75**13), 0.0)
        assert ours["backbone.patch_embed.proj.weight"] == (pytest.approx(lr * 0.75**13), wd)
        assert ours["backbone.blocks.11.attn.qkv.weight"] == (pytest.approx(lr * 0.75), wd)
        assert ours["backbone.last_norm.weight"] == (pytest.approx(lr), 0.0)
        assert ours["keypoint_head.final_layer.weight"] == (pytest.approx(lr), wd)
        assert ours["keypoint_head.final_layer.bias"] == (pytest.approx(lr), 0.0)


def test_frozen_params_are_skipped_and_optimizer_builds():
    model = Model.from_config("vitpose_s", depth=2, embed_dim=64, num_heads=2, res=(64, 48), decoder="simple")
    model.backbone.patch_embed.proj.weight.requires_grad_(False)
    groups = param_groups(model, 1e-3, 0.1, 0.8)
    names = [n for g in groups for n in g["param_names"]]
    assert "backbone.patch_embed.proj.weight" not in names
    assert len(names) == sum(p.requires_grad for p in model.parameters())
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, layer_decay=0.8)
    assert opt.defaults["betas"] == (0.9, 0.999)
    # depth 2 -> num_layers 4: embeddings 0.8**3, block 0 0.8**2, block 1 0.8, rest 1.
    by_name = _per_param(opt.param_groups)
    assert by_name["backbone.pos_embed"][0] == pytest.approx(1e-3 * 0.8**3)
    assert by_name["backbone.blocks.0.norm1.weight"][0] == pytest.approx(1e-3 * 0.8**2)
    assert by_name["backbone.blocks.1.mlp.fc1.weight"][0] == pytest.approx(1e-3 * 0.8)
