"""Parity with transformers' VitPose (an independent implementation of the official model).

Random-weight HF models are saved with ``save_pretrained`` and loaded through ``Model.from_pretrained``; heatmaps
must agree to 1e-5 of their scale in fp32, on every backend that runs here.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation  # noqa: E402

from vitpose_fast import Model  # noqa: E402

from helpers import randomize_weights  # noqa: E402

BACKENDS = ["reference", "torch", "triton"]


def _hf_model(simple: bool, hidden: int, heads: int, depth: int = 2, res=(64, 48), experts: int = 1,
              part: int = 0, k: int = 17):
    bc = VitPoseBackboneConfig(
        image_size=list(res), hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads,
        num_experts=experts, part_features=part or 256, out_indices=[depth], layer_norm_eps=1e-6,
    )
    model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=bc, use_simple_decoder=simple, num_labels=k))
    return randomize_weights(model).eval()


def _check(hf, tmp_path, x, dataset_index=None):
    hf.save_pretrained(tmp_path)
    model = Model.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ref = hf(x, dataset_index=dataset_index).heatmaps
        for backend in BACKENDS:
            out = model.set_backend(backend)(x, dataset_index=dataset_index)
            assert out.shape == ref.shape
            err = (out - ref).abs().max().item()
            scale = ref.abs().max().item()
            assert err <= 1e-5 * scale, f"{backend}: max abs diff {err:.3g} vs heatmap scale {scale:.3g}"
    return model


@pytest.mark.parametrize("simple", [True, False], ids=["simple", "classic"])
def test_parity_decoders(simple, tmp_path):
    hf = _hf_model(simple, hidden=96, heads=3)
    _check(hf, tmp_path, torch.randn(2, 3, 64, 48))


def test_parity_head_dim_80_non_square(tmp_path):
    # ViT-H's head dim (1280 / 16 = 80) at reduced width and depth; a non-4:3, non-square input.
    hf = _hf_model(True, hidden=160, heads=2, depth=2, res=(80, 48))
    model = _check(hf, tmp_path, torch.randn(1, 3, 80, 48))
    assert model.config.backbone.head_dim == 80
    assert model.config.backbone.img_size == (80, 48)


@pytest.mark.parametrize("dataset_index", [0, 1, 2, 3, 4, 5])
def test_parity_moe_each_dataset(dataset_index, tmp_path):
    hf = _hf_model(False, hidden=64, heads=2, experts=6, part=16)
    x = torch.randn(2, 3, 64, 48)
    model = _check(hf, tmp_path, x, torch.full((2,), dataset_index))
    assert model.config.backbone.num_experts == 6 and model.config.backbone.part_features == 16


def test_parity_moe_mixed_batch(tmp_path):
    hf = _hf_model(True, hidden=64, heads=2, experts=3, part=16)
    _check(hf, tmp_path, torch.randn(4, 3, 64, 48), torch.tensor([2, 0, 2, 1]))
