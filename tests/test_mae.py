"""MAE pretraining: masking, the masked-only normalised-pixel loss, patchify against a literal loop, a short
pretraining run whose loss falls, and the saved backbone loading into a ViTPose model."""

import dataclasses
import json

import pytest
import torch

from vitpose_fast import Model
from vitpose_fast.config import AttentionSpec, BackboneConfig
from vitpose_fast.model.mae import MAE, MAEConfig, load_backbone, patchify, random_masking, unpatchify
from vitpose_fast.training import pretrain_mae

TINY = dict(embed_dim=64, depth=2, num_heads=2)


def tiny_config(res=(64, 48), **kw) -> MAEConfig:
    enc = BackboneConfig(img_size=res, drop_path_rate=0.0, **TINY)
    return MAEConfig(encoder=enc, decoder_dim=32, decoder_depth=1, decoder_heads=2, **kw)




def test_masking_keeps_a_quarter_per_sample_and_differs():
    b, n, c = 6, 48, 5  # 48 tokens: a 128x96 input
    x = torch.randn(b, n, c)
    visible, mask, ids_restore = random_masking(x, 0.75)
    assert visible.shape == (b, 12, c)
    assert torch.equal(mask.sum(1), torch.full((b,), 36.0))
    assert len({tuple(m.tolist()) for m in mask}) == b  # P(two equal) = 1 / C(48, 12): never
    for i in range(b):
        kept = (mask[i] == 0).nonzero().squeeze(1)
        # The visible tokens are exactly the unmasked rows of x (as a set; their order is the permutation's).
        assert torch.equal(torch.sort(visible[i], dim=0).values, torch.sort(x[i, kept], dim=0).values)
        assert torch.equal(torch.sort(ids_restore[i]).values, torch.arange(n))


def test_masking_ratio_within_model():
    model = MAE(tiny_config(res=(128, 96)))
    latent, mask, _ = model.forward_encoder(torch.randn(3, 3, 128, 96))
    assert latent.shape == (3, 12, 64) and torch.equal(mask.sum(1), torch.full((3,), 36.0))


def test_patchify_matches_literal_loop():
    imgs = torch.randn(2, 3, 48, 32, dtype=torch.float64)
    p = patchify(imgs)
    assert p.shape == (2, 6, 768)
    for b in range(2):
        for i in range(3):
            for j in range(2):
                patch = imgs[b, :, 16 * i:16 * i + 16, 16 * j:16 * j + 16]  # [c, py, px]
                literal = [patch[c, y, x] for y in range(16) for x in range(16) for c in range(3)]
                assert torch.equal(p[b, i * 2 + j], torch.stack(literal))
    assert torch.equal(unpatchify(p, (3, 2)), imgs)


def test_norm_pix_target_literal():
    model = MAE(tiny_config())
    imgs = torch.randn(2, 3, 64, 48) * 3 + 1
    t = model.target(imgs)
    for b in range(2):
        for k in (0, 5, 11):
            i, j = divmod(k, 3)
            v = imgs[b, :, 16 * i:16 * i + 16, 16 * j:16 * j + 16].permute(1, 2, 0).reshape(-1).double()
            mean = v.sum() / v.numel()
            var = ((v - mean) ** 2).sum() / (v.numel() - 1)
            torch.testing.assert_close(t[b, k].double(), (v - mean) / (var + 1e-6).sqrt(), rtol=1e-5, atol=1e-5)
    raw = MAE(tiny_config(norm_pix_loss=False)).target(imgs)
    assert torch.equal(raw, patchify(imgs))


def test_loss_counts_masked_patches_only():
    model = MAE(tiny_config())
    imgs = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        loss, pred, mask = model(imgs)
        t = model.target(imgs)
        literal = sum(((pred[b, k] - t[b, k]) ** 2).mean() for b in range(2) for k in range(12) if mask[b, k])
        torch.testing.assert_close(loss, literal / mask.sum(), rtol=1e-6, atol=1e-7)
        vis = (mask[0] == 0).nonzero()[0, 0]
        masked = (mask[0] == 1).nonzero()[0, 0]
        bumped = pred.clone()
        bumped[0, vis] += 10.0
        assert torch.equal(model.loss(imgs, bumped, mask), loss)
        bumped = pred.clone()
        bumped[0, masked] += 10.0
        assert model.loss(imgs, bumped, mask) > loss + 1.0


def test_config_checks():
    with pytest.raises(ValueError, match="global attention"):
        MAEConfig(encoder=BackboneConfig(attention=AttentionSpec("window", (4, 4))))
    with pytest.raises(ValueError, match="multiple of 16"):
        MAEConfig(encoder=BackboneConfig(img_size=(250, 192)))
    with pytest.raises(ValueError, match="does not match"):
        MAE(tiny_config())(torch.randn(1, 3, 64, 64))
    cfg = tiny_config()
    assert MAEConfig.from_dict(cfg.to_dict()) == cfg


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A short pretraining run of the tiny model on synthetic person crops (shared by the tests below)."""
    from vitpose_fast.data.synthetic import make_synthetic_coco

    tmp = tmp_path_factory.mktemp("mae")
    data = make_synthetic_coco(tmp / "data", {"train2017": 3}, seed=0, image_size=(96, 80), splits=("train2017",))
    script = pretrain_mae
    args = [
        "--data-root", str(data.root), "--crop", "--encoder", "vitpose_s", "--embed-dim", "64", "--depth", "2",
        "--num-heads", "2", "--res", "64x48", "--decoder-dim", "32", "--decoder-depth", "1", "--decoder-heads",
        "2", "--epochs", "100", "--batch-size", "64", "--lr", "4e-3", "--warmup-epochs", "3", "--min-crop-scale",
        "1.0", "--workers", "0", "--log-every", "1", "--save-every", "1000", "--no-progress", "--out",
        str(tmp / "run"),
    ]
    threads = torch.get_num_threads()
    # Tiny matrices: one thread avoids oversubscription stalls on a loaded CPU (10x slower otherwise).
    torch.set_num_threads(1)
    try:
        summary = script.main(args)
    finally:
        torch.set_num_threads(threads)
    return script, data, summary, tmp / "run"


def test_pretraining_loss_falls(pretrained):
    script, data, summary, out = pretrained
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(losses) == 100
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"MAE loss: first 5 steps {first:.4f}, last 5 steps {last:.4f}")
    assert last < 0.85 * first  # measured ~0.72-0.77 over seeds

    # The same on a fixed batch with a fixed mask: the trained model beats a fresh one.
    cfg = tiny_config()
    trained = MAE(cfg)
    state = torch.load(out / "mae_last.pth", weights_only=True)
    trained.load_state_dict(state["model"])
    ds = script.MAEImages(script.coco_regions(data.root, "train2017", True, 48 / 64), (64, 48), augment=False)
    imgs = torch.stack([ds[i] for i in range(len(ds))])
    noise = torch.rand(len(ds), 12)
    with torch.no_grad():
        fresh_loss = MAE(cfg).eval()(imgs, noise=noise)[0]
        trained_loss = trained.eval()(imgs, noise=noise)[0]
    print(f"fixed batch of {len(ds)} crops: fresh {fresh_loss:.4f}, trained {trained_loss:.4f}")
    assert trained_loss < 0.85 * fresh_loss


def test_backbone_loads_into_vitpose(pretrained):
    _, _, summary, out = pretrained
    path = summary["backbone"]
    mae_sd = torch.load(path, weights_only=True)["state_dict"]
    torch.manual_seed(123)
    fresh = Model.from_config("vitpose_s", res=(64, 48), **TINY)
    torch.manual_seed(123)
    model = Model.from_pretrained(path, strict=False, res=(64, 48))
    # The file names its encoder config (heads, exact grid); the drop path is pretraining's (0).
    assert model.config.backbone == dataclasses.replace(fresh.config.backbone, drop_path_rate=0.0)
    sd, fresh_sd = model.state_dict(), fresh.state_dict()
    for k, v in sd.items():
        if k.startswith("backbone."):
            assert torch.equal(v, mae_sd[k]), k
        else:
            assert torch.equal(v, fresh_sd[k]), k  # the head stays at its (seeded) init
    assert set(mae_sd) == {k for k in sd if k.startswith("backbone.")}

    # The MAE encoder on all tokens in grid order computes exactly the ViTPose backbone's features.
    mae = MAE(tiny_config())
    mae.load_state_dict(torch.load(out / "mae_last.pth", weights_only=True)["model"])
    imgs = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        latent, _, _ = mae.eval().forward_encoder(imgs, mask_ratio=0.0, noise=torch.arange(12.0).expand(2, 12))
        feats = model.forward_features(imgs)
    torch.testing.assert_close(feats.flatten(2).transpose(1, 2), latent, rtol=1e-5, atol=1e-5)

    # Into a preset-shaped model at another resolution: pos_embed resized, blocks identical.
    other = Model.from_config("vitpose_s", res=(96, 64), **TINY)
    loaded = load_backbone(other, path)
    assert "backbone.pos_embed" in loaded and other.backbone.pos_embed.shape == (1, 6 * 4 + 1, 64)
    key = "backbone.blocks.1.mlp.fc2.weight"
    assert torch.equal(other.state_dict()[key], mae_sd[key])
    assert other(torch.randn(1, 3, 96, 64)).shape == (1, 17, 24, 16)


def test_crop_matrix_identity_and_flip():
    script = pretrain_mae
    m = script.crop_matrix((0.0, 0.0, 48.0, 64.0), (64, 48), flip=False)
    torch.testing.assert_close(torch.from_numpy(m), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64))
    f = script.crop_matrix((0.0, 0.0, 48.0, 64.0), (64, 48), flip=True)
    assert f @ [5.0, 7.0, 1.0] == pytest.approx([42.0, 7.0])  # x -> W - 1 - x
    # Pixel i covers [i, i + 1): a 2x downscale maps source pixels (0, 1) to output 0 (centre 0.5 -> 0).
    h = script.crop_matrix((0.0, 0.0, 96.0, 128.0), (64, 48), flip=False)
    assert h @ [0.5, 0.5, 1.0] == pytest.approx([0.0, 0.0])


def test_image_folder_no_crop_and_resume(tmp_path):
    from PIL import Image

    script = pretrain_mae
    for i, size in enumerate([(40, 30), (50, 70), (33, 33)]):
        Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8).numpy()).save(
            tmp_path / f"{i}.png")
    common = ["--images", str(tmp_path), "--no-crop", "--embed-dim", "32", "--depth", "1", "--num-heads", "1",
              "--res", "32x32", "--decoder-dim", "16", "--decoder-depth", "1", "--decoder-heads", "1",
              "--batch-size", "2", "--workers", "0", "--log-every", "1", "--no-progress", "--out",
              str(tmp_path / "run"), "--warmup-epochs", "1"]
    first = script.main(common + ["--epochs", "2"])
    assert first["steps"] == 2  # 3 images, batch 2, last partial batch dropped
    second = script.main(common + ["--epochs", "3", "--resume", str(tmp_path / "run" / "mae_last.pth")])
    assert second["steps"] == 3
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert Model.from_pretrained(second["backbone"], strict=False).config.backbone.img_size == (32, 32)


@pytest.mark.gpu
def test_cuda_bf16_backends_agree():
    cfg = tiny_config(res=(256, 192))
    model = MAE(cfg).cuda()
    imgs = torch.randn(4, 3, 256, 192, device="cuda")
    noise = torch.rand(4, 192, device="cuda")
    losses = {}
    for backend in ("torch", "triton"):
        model.backend = backend
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(imgs, noise=noise)[0]
        loss.backward()
        losses[backend] = loss.item()
    assert abs(losses["torch"] - losses["triton"]) < 2e-2 * losses["torch"]


def test_defaults_scale_with_the_run_and_machine():
    import argparse as _argparse
    import os as _os

    resolve_defaults = pretrain_mae.resolve_defaults

    short = _argparse.Namespace(workers=None, warmup_epochs=None, epochs=2)
    resolve_defaults(short)
    assert short.warmup_epochs == pytest.approx(0.1)  # not 40 epochs of warmup in a 2-epoch run
    assert 0 <= short.workers <= min(8, _os.cpu_count() or 1)
    long = _argparse.Namespace(workers=3, warmup_epochs=None, epochs=1600)
    resolve_defaults(long)
    assert (long.warmup_epochs, long.workers) == (40.0, 3)  # MAE's own setting
