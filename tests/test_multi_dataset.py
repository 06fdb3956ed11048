"""Multi-dataset (ViTPose+) training: the COCO -> AIC keypoint remap, the mixed dataset and its collate, the ratio
sampler (shares, determinism, resumption, sharding), the per-head loss (only its own head and expert get
gradients; per-head normalisation against the official masked full-batch formulation; the data-parallel
scaling), train.py end to end on two synthetic sets with different K (train, evaluate, checkpoint, resume
bit-identically), and split models predicting as the MoE model through ``pipeline.predict``."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitpose_fast import Model
from vitpose_fast.data.multi import (
    DatasetSource,
    MultiDataset,
    RatioSampler,
    collate_multi,
    main as multi_main,
)
from vitpose_fast.data.datasets import AIC, COCO, MPII, VITPOSE_PLUS_DATASETS
from vitpose_fast.inference.pipeline import predict
from vitpose_fast.training.core import MultiHeadModel, joints_mse_loss, multi_dataset_loss

REPO = Path(__file__).resolve().parent.parent

from vitpose_fast.training import train as train_script

TINY = dict(depth=2, embed_dim=64, num_heads=2, res=(64, 48), drop_path_rate=0.0)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The synthetic COCO set and an AIC-style copy of it (``python -m vitpose_fast.data.multi``)."""
    from vitpose_fast.data.synthetic import make_synthetic_coco

    root = tmp_path_factory.mktemp("multi")
    coco = make_synthetic_coco(root / "coco", {"train2017": 8, "val2017": 3}, seed=4, image_size=(160, 120))
    multi_main(["--src", str(coco.root), "--dst", str(root / "aic"), "--as", "aic"])
    return coco.root, root / "aic"


def _sources(synth):
    coco_root, aic_root = synth
    return [DatasetSource(info, r / "annotations/person_keypoints_train2017.json", r / "train2017")
            for info, r in ((COCO, coco_root), (AIC, aic_root))]


# ------------------------------------------------------------------------------------------------ data
def test_aic_copy_maps_joints_by_name(synth):
    coco_root, aic_root = synth
    src = json.loads((coco_root / "annotations/person_keypoints_train2017.json").read_text())
    dst = json.loads((aic_root / "annotations/person_keypoints_train2017.json").read_text())
    assert dst["categories"][0]["keypoints"] == list(AIC.keypoint_names)
    assert (aic_root / "train2017").is_dir()
    for a, b in zip(src["annotations"], dst["annotations"]):
        c, k = np.reshape(a["keypoints"], (17, 3)), np.reshape(b["keypoints"], (14, 3))
        assert a["bbox"] == b["bbox"] and len(k) == 14
        # AIC order: right shoulder/elbow/wrist, left ..., right hip/knee/ankle, left ..., head top, neck.
        for aic_j, coco_j in enumerate([6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15]):
            np.testing.assert_allclose(k[aic_j], c[coco_j], atol=0.006)
        assert k[12].tolist() == [0, 0, 0]  # head top: not drawn, unlabelled
        if c[5, 2] and c[6, 2]:
            np.testing.assert_allclose(k[13, :2], (c[5, :2] + c[6, :2]) / 2, atol=0.006)
            assert k[13, 2] == min(c[5, 2], c[6, 2])
        else:
            assert k[13].tolist() == [0, 0, 0]
        assert b["num_keypoints"] == int((k[:, 2] > 0).sum())


def test_multi_dataset_samples_keep_their_own_keypoints_and_index(synth):
    ds = MultiDataset(_sources(synth), (48, 64), (12, 16), seed=1)
    assert len(ds) == sum(ds.sizes) and len(ds.sizes) == 2
    assert ds.parts[0].udp and not ds.parts[1].udp  # COCO UDP, AIC MSRA
    first, last = ds[(0, 0, 0)], ds[(len(ds) - 1, 0, 0)]
    assert first["target"].shape == (17, 16, 12) and first["target_weight"].shape == (17, 1)
    assert last["target"].shape == (14, 16, 12) and last["target_weight"].shape == (14, 1)
    assert (int(first["dataset_index"]), int(last["dataset_index"])) == (0, 1)
    # Deterministic per key; a repeated draw within the epoch gets its own augmentation.
    torch.testing.assert_close(ds[(3, 2, 0)]["image"], ds[(3, 2, 0)]["image"], rtol=0, atol=0)
    assert not torch.equal(ds[(3, 2, 0)]["image"], ds[(3, 2, 1)]["image"])
    # An MPII source trains without the half-body transform (as the official ViTPose+ pipeline).
    mpii = DatasetSource(MPII, Path("unused.json"), Path("unused"))
    from vitpose_fast.data.multi import augment_for

    assert augment_for(MPII).prob_half_body == 0 and augment_for(COCO).prob_half_body == 0.3
    assert mpii.index == 2


def test_collate_groups_targets_per_dataset():
    ks = {0: 17, 1: 14, 3: 17}
    order = [1, 0, 1, 3, 1]
    batch = [{"image": torch.randn(3, 8, 6), "target": torch.rand(ks[d], 4, 3),
              "target_weight": torch.rand(ks[d], 1), "dataset_index": torch.tensor(d)} for d in order]
    out = collate_multi(batch)
    assert out["image"].shape == (5, 3, 8, 6) and out["dataset_index"].tolist() == order
    assert list(out["targets"]) == [0, 1, 3]
    for d, g in out["targets"].items():
        pos = [i for i, x in enumerate(order) if x == d]
        assert g["index"].tolist() == pos
        assert g["target"].shape == (len(pos), ks[d], 4, 3)
        for row, i in enumerate(pos):
            assert torch.equal(g["target"][row], batch[i]["target"])
            assert torch.equal(g["target_weight"][row], batch[i]["target_weight"])


# ------------------------------------------------------------------------------------------------ sampler
def test_ratio_sampler_honours_ratios_and_covers_each_set():
    sizes, batch = (300, 40), 8
    s = RatioSampler(sizes, batch, ratios=(1, 0.5), seed=3)
    assert s.num_batches == 340 // 8
    shares = []
    for epoch in range(12):
        s.set_epoch(epoch)
        keys = list(s)
        assert len(keys) == len(s) == s.num_batches * batch and all(k[1] == epoch for k in keys)
        flat = np.array([k[0] for k in keys])
        shares.append((flat >= 300).mean())
        second = [(k[0] - 300, k[2]) for k in keys if k[0] >= 300]
        # A set's draws go through a permutation of its records before any record repeats.
        for i in range(0, len(second), 40):
            chunk = second[i:i + 40]
            assert len({r for r, _ in chunk}) == len(chunk) and {c for _, c in chunk} == {i // 40}
    # 12 x 336 draws with p = 1/3: std of the mean ~0.0074.
    assert abs(np.mean(shares) - 1 / 3) < 0.03
    default = RatioSampler(sizes, batch, seed=3)  # proportional to the sizes, as ConcatDataset
    assert np.allclose(default.probs, np.array(sizes) / 340)


def test_ratio_sampler_is_deterministic_resumable_and_sharded():
    sizes = (23, 9, 14)
    a, b = RatioSampler(sizes, 6, (2, 1, 1), seed=7), RatioSampler(sizes, 6, (2, 1, 1), seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    full = list(a)
    assert full == list(b)
    b.set_epoch(3)
    assert list(b) != full
    a.set_epoch(2, start_batch=3)
    assert list(a) == full[18:] and len(a) == len(full) - 18
    # world processes with batch 2 see, per step, exactly the global batch of one process with batch 6.
    ranks = [RatioSampler(sizes, 2, (2, 1, 1), rank=r, world_size=3, seed=7) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    shards = [list(r) for r in ranks]
    for step in range(len(full) // 6):
        glob = sorted(k for sh in shards for k in sh[2 * step:2 * step + 2])
        assert glob == sorted(full[6 * step:6 * step + 6])
    with pytest.raises(ValueError, match="ratios"):
        RatioSampler(sizes, 6, (1, 1))
    with pytest.raises(ValueError, match="no full batch"):
        RatioSampler((2, 1), 4)


# ------------------------------------------------------------------------------------------------ loss
def _moe(kind="classic"):
    model = Model.from_config("vitpose_s", num_experts=3, part_features=16, extra_heads=(14, 16), decoder=kind,
                              **TINY)
    with torch.no_grad():  # non-trivial heads (the official init is ~0)
        for name, p in model.named_parameters():
            if "head" in name and p.ndim > 1:
                p.normal_(0, 0.05)
    return model


def _targets(index, ks=(17, 14, 16), hw=(16, 12)):
    out = {}
    for d in sorted(set(index)):
        pos = torch.tensor([i for i, x in enumerate(index) if x == d])
        out[d] = {"index": pos, "target": torch.rand(len(pos), ks[d], *hw),
                  "target_weight": (torch.rand(len(pos), ks[d], 1) > 0.2).float()}
    return out


def _run(model, x, index, targets, **kw):
    outs = MultiHeadModel(model)(x, torch.tensor(index), {d: g["index"] for d, g in targets.items()})
    return multi_dataset_loss(outs, targets, **kw)


def _is_zero(p):
    return p.grad is None or not p.grad.any()


def test_each_dataset_loss_touches_only_its_head_and_expert():
    model = _moe().train()
    index = [0, 1, 2, 1, 0, 2, 1]
    x = torch.randn(len(index), 3, 64, 48)
    targets = _targets(index)
    for d in range(3):
        model.zero_grad(set_to_none=True)
        _, parts = _run(model, x, index, targets)
        parts[d].backward()
        for e in range(3):
            head = model.head_for(e)
            experts = [blk.mlp.experts[e] for blk in model.backbone.blocks]
            for p in list(head.parameters()) + [p for ex in experts for p in ex.parameters()]:
                assert _is_zero(p) == (e != d), (d, e)
        for blk in model.backbone.blocks:  # shared parts learn from every dataset
            assert blk.mlp.fc2.weight.grad.abs().sum() > 0 and blk.attn.qkv.weight.grad.abs().sum() > 0


def test_per_head_normalisation_is_independent_of_batch_composition():
    model = _moe().train()
    index = [1] + [0] * 7  # one sample of dataset 1 (AIC-like, K = 14), seven of dataset 0
    x = torch.randn(8, 3, 64, 48)
    targets = _targets(index)
    total, parts = _run(model, x, index, targets, loss_weights={1: 0.5})
    for d in (0, 1):
        g = targets[d]
        solo = joints_mse_loss(model(x[g["index"]], dataset_index=d), g["target"], g["target_weight"])
        torch.testing.assert_close(parts[d], solo, rtol=1e-5, atol=0)
    torch.testing.assert_close(total, parts[0] + 0.5 * parts[1])
    # The official formulation (head on the whole batch, targets and weights masked to its dataset, full-batch
    # mean) weights head d by its share of the batch: 1/8 of ours for the single AIC sample. (Its head also
    # runs, and takes BatchNorm statistics, on the other datasets' samples; the mask zeroes their rows, so
    # any prediction can stand there.)
    with torch.no_grad():
        outs = MultiHeadModel(model)(x, torch.tensor(index), {1: targets[1]["index"]})
        pos = targets[1]["index"]
        pred, tgt, w = torch.randn(8, 14, 16, 12), torch.zeros(8, 14, 16, 12), torch.zeros(8, 14, 1)
        pred[pos], tgt[pos], w[pos] = outs[1], targets[1]["target"], targets[1]["target_weight"]
        official = joints_mse_loss(pred, tgt, w)  # masked: the weights are zero outside dataset 1
        ours = joints_mse_loss(outs[1], targets[1]["target"], targets[1]["target_weight"])
    torch.testing.assert_close(official, ours / 8, rtol=1e-5, atol=0)


def test_data_parallel_scaling_matches_one_process():
    # Two "ranks" with different dataset mixes: averaging their gradients of the count-scaled losses gives the
    # gradient of the one-process loss on the whole batch (simple heads: no BatchNorm batch statistics).
    model = _moe("simple").train()
    index = [0, 1, 1, 0, 0, 2]
    x = torch.randn(6, 3, 64, 48)
    targets = _targets(index)
    total, _ = _run(model, x, index, targets)
    ref = torch.autograd.grad(total, list(model.parameters()), allow_unused=True)
    counts = torch.bincount(torch.tensor(index), minlength=3)
    grads = []
    for half in (slice(0, 3), slice(3, 6)):
        sub = index[half]
        t = {}
        for d in sorted(set(sub)):
            rows = [i for i, x_ in enumerate(index) if x_ == d and half.start <= i < half.stop]
            sel = [targets[d]["index"].tolist().index(i) for i in rows]
            t[d] = {"index": torch.tensor([i - half.start for i in rows]),
                    "target": targets[d]["target"][sel], "target_weight": targets[d]["target_weight"][sel]}
        loss, _ = _run(model, x[half], sub, t, global_counts=counts, world_size=2)
        grads.append(torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))
    for r, a, b in zip(ref, *grads):
        if r is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
            continue
        mean = ((a if a is not None else 0) + (b if b is not None else 0)) / 2
        torch.testing.assert_close(mean, r, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------------ train.py
def _argv(synth, out, *extra, datasets=None):
    coco_root, aic_root = synth
    datasets = datasets or ["--datasets", f"coco={coco_root},aic={aic_root}", "--ratios", "1,0.5"]
    return ["--preset", "tiny_synthetic_multi", *datasets, "--device", "cpu", "--workers", "0", "--batch-size", "8",
            "--out", str(out), "--no-progress", "--log-interval", "1", "--seed", "5", "--deterministic", *extra]


def _weights(path):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return ck["model"] if "model" in ck else ck["state_dict"]


def test_train_script_multi_dataset_trains_evaluates_and_resumes(synth, tmp_path):
    common = ["--epochs", "2", "--save-interval", "1", "--use-gt-bbox"]
    full = train_script.main(_argv(synth, tmp_path / "full", *common, "--eval-interval", "2"))
    steps = full["step"]
    assert steps >= 4 and full["epochs_done"] == 2
    records = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if "loss" in r]
    assert any("loss/aic" in r for r in train_recs) and any("loss/coco" in r for r in train_recs)
    assert all(0 < r["loss"] < 1 for r in train_recs)
    evals = [r for r in records if "val/AP" in r]
    assert len(evals) == 1 and {"val/coco/AP", "val/aic/AP"} <= set(evals[0])
    assert evals[0]["val/AP"] == pytest.approx((evals[0]["val/coco/AP"] + evals[0]["val/aic/AP"]) / 2)
    assert (tmp_path / "full" / "val_keypoints_aic.json").exists()
    ck = torch.load(tmp_path / "full" / "last.pth", map_location="cpu", weights_only=True)
    assert ck["datasets"] == ["coco", "aic"] and ck["ratios"] == pytest.approx([2 / 3, 1 / 3])

    stop = steps // 2 + 1  # mid-epoch 2
    first = train_script.main(_argv(synth, tmp_path / "a", *common, "--eval-interval", "0", "--max-steps",
                                    str(stop)))
    assert first["step"] == stop
    resumed = train_script.main(_argv(synth, tmp_path / "b", *common, "--eval-interval", "0", "--resume",
                                      str(tmp_path / "a" / "last.pth")))
    assert resumed["step"] == steps
    a, b = _weights(tmp_path / "b" / "final.pth"), _weights(tmp_path / "full" / "final.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    model = Model.from_pretrained(tmp_path / "full" / "final.pth")
    assert model.config.backbone.num_experts == 6 and model.config.extra_heads == (14,)
    with pytest.raises(ValueError, match="trained on datasets"):
        train_script.main(_argv(synth, tmp_path / "c", *common, "--resume", str(tmp_path / "a" / "last.pth"),
                                datasets=["--datasets", f"coco={synth[0]}"]))


def test_two_processes_match_one_with_the_same_global_batch(synth, tmp_path):
    # Ranks whose batch lacks a dataset skip its head and expert (DDP finds them unused) and the per-head losses
    # are normalised by the global counts: two gloo processes with batch 4 train as one with batch 8 (simple
    # heads and no drop path, so nothing but reduction order differs).
    import os
    import subprocess

    extra = ["--head", "simple", "--drop-path", "0", "--epochs", "2", "--max-steps", "3", "--eval-interval", "0"]
    one = _argv(synth, tmp_path / "one", *extra)
    two = _argv(synth, tmp_path / "two", *extra)
    two[two.index("--batch-size") + 1] = "4"
    train_script.main(one)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "train" / "train.py"), *two]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = _weights(tmp_path / "one" / "last.pth"), _weights(tmp_path / "two" / "last.pth")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=0, atol=1e-5, msg=k)


def test_train_script_rejects_bad_multi_dataset_arguments(synth, tmp_path):
    with pytest.raises(ValueError, match="--experts 0"):
        train_script.main(_argv(synth, tmp_path, "--experts", "0"))
    with pytest.raises(ValueError, match="--ratios needs 2"):
        train_script.main(_argv(synth, tmp_path, "--ratios", "1,2,3"))
    with pytest.raises(ValueError, match="needs --datasets"):
        train_script.main(["--preset", "tiny_synthetic", "--data-root", str(synth[0]), "--experts", "6"])
    with pytest.raises(ValueError, match="unknown dataset"):
        train_script.main(["--preset", "tiny_synthetic_multi", "--datasets", f"cocoa={synth[0]}"])


# ------------------------------------------------------------------------------------------------ split
def test_split_models_predict_as_the_moe_model_through_the_pipeline():
    model = Model.from_config("vitpose_s", num_experts=6, part_features=16, extra_heads=(14, 16, 17, 17, 133),
                              **TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 71, 3), dtype=np.uint8), rng.integers(0, 256, (33, 40, 3), dtype=np.uint8)]
    boxes = [np.array([[3.0, 4.0, 60.0, 45.0], [10.5, 0.0, 30.0, 20.0]]), np.array([[0.0, 2.0, 39.0, 31.0]])]
    for d, plain in enumerate(model.split_datasets()):
        info = VITPOSE_PLUS_DATASETS[d]
        decode = "udp" if info.encoding == "udp" else "default"
        ours = predict(plain, images, boxes, dataset=info, decode=decode)
        ref = predict(model, images, boxes, dataset_index=d, dataset=info, decode=decode)
        for img_ours, img_ref in zip(ours, ref):
            for p, q in zip(img_ours, img_ref):
                assert p["keypoints"].shape == (info.num_keypoints, 3)
                np.testing.assert_array_equal(p["keypoints"], q["keypoints"])
