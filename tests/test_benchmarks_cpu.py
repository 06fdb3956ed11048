"""pytest-benchmark CPU suite: heatmap decoding, cropping, and a tiny model's forward against the transformers
port. Each benchmark is a few rounds (``pedantic(rounds=3, iterations=1)``) so the suite stays cheap in a
normal test run; ``--benchmark-disable`` runs each function once, ``--benchmark-only`` shows the timings.
Each benchmark also checks its result, so a fast wrong answer fails."""

import numpy as np
import pytest
import torch

from vitpose_fast import Model

ROUNDS = dict(rounds=3, iterations=1)


def test_decode_udp_32_people(benchmark):
    from vitpose_fast.inference.decode import decode_heatmaps

    heatmaps = torch.rand(32, 17, 64, 48)
    centers = torch.rand(32, 2) * 500
    scales = torch.rand(32, 2) * 2 + 0.5
    out = benchmark.pedantic(decode_heatmaps, args=(heatmaps, centers, scales), kwargs=dict(method="udp"), **ROUNDS)
    assert out.shape == (32, 17, 3) and torch.isfinite(out).all()
    # The score is the raw maximum of each map.
    torch.testing.assert_close(out[..., 2], heatmaps.flatten(2).amax(-1))


def test_crop_and_normalize_16_people(benchmark):
    from vitpose_fast.data.crop import crop_and_normalize

    images = [torch.randint(0, 256, (480, 640, 3), dtype=torch.uint8) for _ in range(4)]
    index = torch.arange(16) // 4
    centers = torch.rand(16, 2, dtype=torch.float64) * torch.tensor([600.0, 440.0]) + 20
    scales = torch.rand(16, 2, dtype=torch.float64) + 0.5
    out = benchmark.pedantic(crop_and_normalize, args=(images, index, centers, scales, (192, 256)), **ROUNDS)
    assert out.shape == (16, 3, 256, 192) and out.dtype == torch.float32
    # Normalised pixels of a uint8 image lie within ImageNet's (0 - mean) / std .. (1 - mean) / std.
    assert out.min() >= -2.2 and out.max() <= 2.7


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "VitPoseForPoseEstimation"):
        pytest.skip("this transformers has no VitPoseForPoseEstimation")
    torch.manual_seed(0)
    ours = Model.from_config("vitpose_s", backend="torch", res=(128, 96), depth=2).eval()
    folder = tmp_path_factory.mktemp("hf_tiny")
    ours.save_pretrained_hf(folder)
    hf = transformers.VitPoseForPoseEstimation.from_pretrained(str(folder)).eval()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        expected = hf(pixel_values=x).heatmaps
    return ours, hf, x, expected


@pytest.mark.parametrize("impl", ["vitpose_fast", "hf"])
def test_tiny_forward_vs_transformers(benchmark, tiny_pair, impl):
    ours, hf, x, expected = tiny_pair
    benchmark.group = "tiny forward (vitpose_s, depth 2, 128x96, batch 2)"

    @torch.no_grad()
    def forward():
        return ours(x) if impl == "vitpose_fast" else hf(pixel_values=x).heatmaps

    out = benchmark.pedantic(forward, **ROUNDS)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-6)
    assert np.isfinite(out.numpy()).all()
