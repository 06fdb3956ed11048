"""Training pieces: loss, schedule, sampler, RNG/checkpoint round trip, the official train transforms, the
dataset (host and device crop), and parity of the training path between the ``torch`` and ``reference``
backends."""

import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from vitpose_fast import Model
from vitpose_fast.config import BackboneConfig, HeadConfig, ModelConfig
from vitpose_fast.data.crop import get_warp_matrix
from vitpose_fast.data import transforms as T
from vitpose_fast.data.targets import udp_gaussian_target
from vitpose_fast.training.core import (
    ScheduleConfig,
    ShardedSampler,
    build_optimizer,
    capture_rng_state,
    joints_mse_loss,
    load_checkpoint,
    lr_factor,
    restore_rng_state,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

COCO_FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


# ------------------------------------------------------------------------------------------------------ loss
def _official_joints_mse(output, target, target_weight):
    # Literal transcription of mmpose 0.x JointsMSELoss(use_target_weight=True).
    criterion = nn.MSELoss()
    batch_size, num_joints = output.size(0), output.size(1)
    heatmaps_pred = output.reshape((batch_size, num_joints, -1)).split(1, 1)
    heatmaps_gt = target.reshape((batch_size, num_joints, -1)).split(1, 1)
    loss = 0.0
    for idx in range(num_joints):
        heatmap_pred = heatmaps_pred[idx].squeeze(1)
        heatmap_gt = heatmaps_gt[idx].squeeze(1)
        loss += criterion(heatmap_pred * target_weight[:, idx], heatmap_gt * target_weight[:, idx])
    return loss / num_joints


@pytest.mark.parametrize("shape", [(3, 17, 7, 5), (1, 1, 1, 1), (2, 5, 13, 9)])
def test_joints_mse_matches_official(shape):
    pred = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    target = torch.rand(shape, dtype=torch.float64)
    weight = (torch.rand(shape[0], shape[1], 1) > 0.3).double()
    ours = joints_mse_loss(pred, target, weight)
    ref = _official_joints_mse(pred, target, weight)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=0)
    g_ours, = torch.autograd.grad(ours, pred)
    g_ref, = torch.autograd.grad(ref, pred)
    torch.testing.assert_close(g_ours.double(), g_ref, rtol=1e-6, atol=1e-12)


# ------------------------------------------------------------------------------------------------ schedule
def test_lr_factor_follows_mmcv_step_with_linear_warmup():
    cfg = ScheduleConfig()  # 210 epochs, x0.1 at 170 and 200, 500 warmup iters from 0.001
    ipe = 293
    assert lr_factor(0, ipe, cfg) == pytest.approx(0.001)
    assert lr_factor(250, ipe, cfg) == pytest.approx(1 - 0.5 * 0.999)
    assert lr_factor(499, ipe, cfg) == pytest.approx(1 - (1 / 500) * 0.999)
    assert lr_factor(500, ipe, cfg) == 1.0
    assert lr_factor(170 * ipe - 1, ipe, cfg) == 1.0
    assert lr_factor(170 * ipe, ipe, cfg) == pytest.approx(0.1)
    assert lr_factor(200 * ipe, ipe, cfg) == pytest.approx(0.01)
    short = cfg.scaled_to(21)
    assert short.milestones == (17, 20)


def test_scheduler_drives_every_group_from_its_scaled_lr():
    model = Model(_tiny_config(), backend="torch")
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, layer_decay=0.5)
    from vitpose_fast.training.core import build_scheduler

    cfg = ScheduleConfig(epochs=4, milestones=(2,), warmup_iters=3)
    sched = build_scheduler(opt, iters_per_epoch=5, cfg=cfg)
    for step in range(20):
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"] * lr_factor(step, 5, cfg))
        opt.step()
        sched.step()


# ------------------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("size,batch,world", [(23, 2, 2), (40, 3, 3), (7, 1, 2)])
def test_sharded_sampler_global_batches_match_one_process(size, batch, world):
    single = list(ShardedSampler(size, batch * world, 0, 1, seed=5))
    ranks = [list(ShardedSampler(size, batch, r, world, seed=5)) for r in range(world)]
    n = min(len(single) // (batch * world), min(len(r) for r in ranks) // batch)
    for step in range(n):
        glob = sorted(k for r in ranks for k in r[step * batch:(step + 1) * batch])
        assert glob == sorted(single[step * batch * world:(step + 1) * batch * world])


def test_sharded_sampler_epochs_and_mid_epoch_start():
    s = ShardedSampler(30, 4, seed=1)
    s.set_epoch(3)
    full = list(s)
    assert len(full) == len(s) == 28 and all(e == 3 for _, e in full)
    s.set_epoch(3, start_batch=2)
    assert list(s) == full[8:] and len(s) == 20
    s.set_epoch(4)
    assert [i for i, _ in s] != [i for i, _ in full]


# ------------------------------------------------------------------------------------------------ state
def test_rng_state_and_checkpoint_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = capture_rng_state()
    save_checkpoint(tmp_path / "ck.pth", {"rng": [state], "step": 7})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(8)  # move every generator on
    loaded = load_checkpoint(tmp_path / "ck.pth")  # weights_only: only tensors and primitives inside
    assert loaded["step"] == 7 and not (tmp_path / "ck.pth.tmp").exists()
    restore_rng_state(loaded["rng"][0])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])


# ------------------------------------------------------------------------------------------------ transforms
def test_clean_bbox_and_center_scale_follow_official_formulas():
    assert T.clean_bbox([-5.0, 10.0, 50.0, 400.0], 100, 200) == (0.0, 10.0, 49.0, 189.0)
    assert T.clean_bbox([10.0, 10.0, 1.0, 30.0], 100, 200) is None  # x2 == x1
    c, s = T.xywh_to_center_scale(10.0, 20.0, 30.0, 100.0, aspect_ratio=0.75)
    np.testing.assert_allclose(c, [25.0, 70.0])
    np.testing.assert_allclose(s, [75.0 / 200 * 1.25, 100.0 / 200 * 1.25], rtol=1e-6)
    c, s = T.xywh_to_center_scale(0.0, 0.0, 90.0, 60.0, aspect_ratio=0.75)
    np.testing.assert_allclose(s, [90.0 / 200 * 1.25, 120.0 / 200 * 1.25], rtol=1e-6)
    # The training-db jitter moves the centre by at most 0.2 w / 0.2 h and leaves the scale alone.
    rng = np.random.default_rng(0)
    for _ in range(50):
        cj, sj = T.xywh_to_center_scale(10.0, 20.0, 30.0, 100.0, aspect_ratio=0.75, rng=rng)
        assert abs(cj[0] - 25.0) <= 6.0 + 1e-5 and abs(cj[1] - 70.0) <= 20.0 + 1e-5
        np.testing.assert_allclose(sj, [75.0 / 200 * 1.25, 100.0 / 200 * 1.25], rtol=1e-6)


def test_flip_mirrors_joints_and_centre():
    k = 17
    joints = np.zeros((k, 3), np.float32)
    joints[:, 0] = np.arange(k) * 3.0
    joints[:, 1] = np.arange(k)
    vis = np.ones((k, 3), np.float32)
    vis[0, :2] = 0
    rng = np.random.default_rng(0)
    flipped, jf, vf, cf = T.random_flip(rng, joints, vis, np.array([30.0, 40.0], np.float32), 100, COCO_FLIP_PAIRS,
                                        prob=1.0)
    assert flipped
    assert cf[0] == 100 - 30.0 - 1 and cf[1] == 40.0
    assert jf[0, 0] == 0.0  # unlabelled joint zeroed (official joints * visible)
    assert jf[1, 0] == 100 - 1 - joints[2, 0] and jf[2, 0] == 100 - 1 - joints[1, 0]
    assert jf[5, 1] == joints[6, 1]


def test_udp_warp_matrix_matches_crop_module():
    for _ in range(5):
        r = float(np.random.uniform(-80, 80))
        c = np.random.uniform(20, 300, 2).astype(np.float32)
        s = np.random.uniform(0.3, 2.0, 2).astype(np.float32)
        ours = T.affine_matrix(c, s, r, (48, 64), udp=True)
        ref = get_warp_matrix(r, torch.tensor(c * 2.0)[None], torch.tensor([47.0, 63.0]),
                              torch.tensor(s * 200.0)[None])[0].numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def test_half_body_selects_a_body_half():
    k = 17
    joints = np.zeros((k, 3), np.float32)
    joints[:, 0] = np.linspace(10, 50, k)
    joints[:, 1] = np.linspace(0, 160, k)  # head at the top, ankles at the bottom
    vis = np.ones((k, 3), np.float32)
    upper = tuple(range(11))
    hits = 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        out = T.half_body(rng, joints, vis, upper, aspect_ratio=0.75)
        if out is None:
            continue
        hits += 1
        c, s = out
        sel = joints[:11] if c[1] < joints[11, 1] else joints[11:]
        np.testing.assert_allclose(c, sel[:, :2].mean(0), rtol=1e-5)
        h = sel[:, 1].max() - sel[:, 1].min()
        np.testing.assert_allclose(s[1], h / 200 * 1.5, rtol=1e-5)
    assert 30 < hits < 90  # p = 0.3
    few = vis.copy()
    few[9:] = 0  # 9 labelled joints > 8: allowed; 8 would not be
    few[8:] = 0
    assert all(T.half_body(rng, joints, few, upper, 0.75) is None for _ in range(50))


def test_scale_rotation_ranges():
    rng = np.random.default_rng(1)
    draws = [T.random_scale_rotation(rng, np.ones(2, np.float32)) for _ in range(2000)]
    scales = np.array([d[0][0] for d in draws])
    rots = np.array([d[1] for d in draws])
    assert scales.min() >= 0.5 and scales.max() <= 1.5
    assert np.abs(rots).max() <= 80 and 0.33 < np.mean(rots == 0) < 0.47  # rotation applied with p 0.6


# ------------------------------------------------------------------------------------------------ dataset
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from vitpose_fast.data.synthetic import make_synthetic_coco

    return make_synthetic_coco(tmp_path_factory.mktemp("synth"), {"train2017": 6, "val2017": 2}, seed=0,
                               image_size=(160, 120), image_format="png")


def _dataset(synth, **kw):
    from vitpose_fast.data.coco import CocoKeypoints

    return CocoKeypoints(synth.ann_files["train2017"], synth.image_dirs["train2017"], (48, 64), (12, 16),
                         COCO_FLIP_PAIRS, tuple(range(11)), **kw)


def test_dataset_samples_are_deterministic_and_targets_consistent(synth):
    ds = _dataset(synth, seed=3)
    a, b = ds[(1, 4)], ds[(1, 4)]
    assert a["image"].shape == (3, 64, 48) and a["target"].shape == (17, 16, 12)
    assert a["target_weight"].shape == (17, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(ds[(1, 5)]["image"], a["image"])  # a new epoch draws new augmentations
    # Without augmentation, targets equal the UDP encoding of the GT joints mapped by the crop matrix.
    test = _dataset(synth, train=False)
    rec = test.records[0]
    m = T.affine_matrix(rec.center, rec.scale, 0.0, (48, 64), udp=True)
    tgt, w = udp_gaussian_target(T.transform_joints(rec.joints, rec.visible, m, True), rec.visible, (48, 64), (12, 16))
    s = test[0]
    np.testing.assert_array_equal(s["target"].numpy(), tgt)
    np.testing.assert_array_equal(s["target_weight"].numpy(), w)


def test_gpu_crop_path_matches_host_crop(synth):
    from vitpose_fast.data.coco import collate, gpu_crop_batch

    host = _dataset(synth, seed=2)
    dev = _dataset(synth, seed=2, host_crop=False)
    keys = [(i, 1) for i in range(len(host))]
    hb = collate([host[k] for k in keys])
    db = collate([dev[k] for k in keys])
    torch.testing.assert_close(hb["target"], db["target"], rtol=0, atol=0)
    crops = gpu_crop_batch(db, (48, 64), torch.device("cpu"))
    diff = (crops - hb["image"]).abs()
    # cv2's fixed-point bilinear weights vs grid_sample: a few grey levels at sharp edges, ~0 on average.
    grey = 1.0 / (255 * 0.225)
    assert diff.mean() < 0.5 * grey and diff.max() < 12 * grey


# ------------------------------------------------------------------------------------------------ parity
def _tiny_config(head: str = "classic") -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig(img_size=(64, 48), embed_dim=64, depth=2, num_heads=2,
                                               drop_path_rate=0.0),
                       head=HeadConfig(kind=head, deconv_channels=(32, 32)), layer_decay=0.8)


def _batches(n, b=4, seed=0):
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        images = torch.from_numpy(g.standard_normal((b, 3, 64, 48)).astype(np.float32))
        targets, weights = [], []
        for _ in range(b):
            joints = np.concatenate([g.uniform(0, [48, 64], (17, 2)), np.zeros((17, 1))], 1)
            vis = (g.random(17) > 0.2).astype(np.float32)
            t, w = udp_gaussian_target(joints, vis, (48, 64), (12, 16))
            targets.append(torch.from_numpy(t))
            weights.append(torch.from_numpy(w))
        out.append((images, torch.stack(targets), torch.stack(weights)))
    return out


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("head", ["classic", "simple"])
def test_training_step_parity_torch_vs_reference(head):
    torch.manual_seed(0)
    ref = Model(_tiny_config(head), backend="reference")
    fast = Model(_tiny_config(head), backend="torch")
    fast.load_state_dict(ref.state_dict())
    images, target, weight = _batches(1)[0]
    losses, grads = [], []
    for m in (ref, fast):
        m.train()
        loss = joints_mse_loss(m(images), target, weight)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert _rel(losses[1], losses[0]) <= 1e-6
    for name, g in grads[0].items():
        assert _rel(grads[1][name], g) <= 1e-5, name

    # 50 optimiser steps on the same batches: the loss curves track each other.
    torch.manual_seed(1)
    ref = Model(_tiny_config(head), backend="reference")
    fast = Model(_tiny_config(head), backend="torch")
    fast.load_state_dict(ref.state_dict())
    curves = []
    for m in (ref, fast):
        opt = build_optimizer(m, lr=1e-3, weight_decay=0.1, layer_decay=0.8)
        curve = []
        for images, target, weight in _batches(50, seed=7):
            loss = joints_mse_loss(m(images), target, weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(loss.item())
        curves.append(np.array(curve))
    rel = np.abs(curves[1] - curves[0]) / np.abs(curves[0])
    assert curves[0][-1] < curves[0][0]
    # Rounding differences grow step by step (AdamW normalises tiny gradient differences; train-mode BatchNorm
    # feeds them back), to about 1e-4 by step 50 on a correct path: the early steps carry the tight bound, a
    # wrong gradient would leave the curves at once.
    assert rel[:25].max() <= 2e-5, f"max relative loss difference over 25 steps {rel[:25].max():.2e}"
    assert rel.max() <= 1e-3, f"max relative loss difference {rel.max():.2e}"


def test_plot_writes_png(tmp_path):
    import json

    from vitpose_fast.training.plot import plot

    lines = [dict(step=s, epoch=0, loss=1.0 / s, lr=1e-3) for s in range(1, 6)]
    lines += [{"step": 5, "epoch": 1, "val/AP": 0.1, "val/AP .5": 0.3, "val/AR": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    out = plot(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
