"""Sapiens on the ViTPose engine: presets, official checkpoint layout, parity with a transcription of the official
forward (tests/sapiens_oracle.py), metadata, predict, training. Tiny sizes throughout."""

import io
import math
import zipfile

import numpy as np
import pytest
import torch

from vitpose_fast import Model
from vitpose_fast.config import SAPIENS_PRESET_NAMES, preset
from vitpose_fast.data.datasets import COCO, COCO_WHOLEBODY, GOLIATH
from vitpose_fast.model.checkpoint import CheckpointError, load_into, ours_to_sapiens, read_checkpoint

import sapiens_oracle as oracle

BACKENDS = ["reference", "torch", "triton"]
RES = (64, 48)  # a 4x3 token grid (patch 16, padding 2)
TINY = dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=256)
HEAD = dict(deconv=(32, 32), conv=(32, 32))


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random and large enough to matter, activations O(1) (well-conditioned gradients through
    the InstanceNorms): LayerNorm gains 1 + N(0, 0.2), biases N(0, 0.1), weights N(0, 1 / fan_in), pos_embed
    N(0, 0.5)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                gain = "ln" in name or "norm" in name
                p.normal_(1.0 if gain else 0.0, 0.2 if gain else 0.1)
            elif "pos_embed" in name:
                p.normal_(0, 0.5)
            else:
                # ConvTranspose2d weights are [in, out, kh, kw]: each output sums over the input channels.
                fan_in = p.shape[0] if "deconv" in name else p[0].numel()
                p.normal_(0, fan_in ** -0.5)
    return model


def _oracle(k: int, arch=TINY, res=RES, seed: int = 0) -> oracle.TopdownPoseEstimator:
    torch.manual_seed(seed)
    return _randomize(oracle.TopdownPoseEstimator(arch, k, res, **HEAD)).eval()


def _official_file(ref: torch.nn.Module, path, numpy_meta: bool = True) -> str:
    """What the released pose checkpoints hold: mmengine's {"state_dict", "meta"}, the meta with mmpose's
    dataset metainfo as numpy arrays (float32 sigmas, uint8 colours)."""
    meta = {"epoch": 210, "iter": 1000, "mmengine_version": "0.10.3", "cfg": "model = dict(...)"}
    if numpy_meta:
        meta["dataset_meta"] = {"dataset_name": "coco", "num_keypoints": 17, "flip_indices": [0, 2, 1],
                                "sigmas": np.linspace(0.02, 0.1, 17, dtype=np.float32),
                                "dataset_keypoint_weights": np.ones(17, dtype=np.float32),
                                "keypoint_colors": np.zeros((17, 3), dtype=np.uint8),
                                "skeleton_link_colors": np.full((19, 3), 255, dtype=np.uint8)}
    torch.save({"meta": meta, "state_dict": ref.state_dict()}, path)
    return str(path)


def _load(ref, tmp_path, **overrides) -> Model:
    # Head counts are not in the tensors: a custom width needs num_heads (the four presets' widths are known).
    overrides.setdefault("num_heads", ref.backbone.layers[0].attn.num_heads)
    return Model.from_pretrained(_official_file(ref, tmp_path / "sapiens.pth"), **overrides)


def _scaled_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out - ref).abs().max().item() / ref.abs().max().item()


# ---------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", SAPIENS_PRESET_NAMES)
def test_preset_parameter_count_matches_official_arch(name):
    arch = oracle.ARCHS[name]
    cfg = preset(name)
    assert (cfg.backbone.embed_dim, cfg.backbone.depth, cfg.backbone.num_heads, cfg.backbone.mlp_hidden) == (
        arch["embed_dims"], arch["num_layers"], arch["num_heads"], arch["feedforward_channels"])
    for k in (17, 308) if name == "sapiens_0.3b" else (17,):  # the head is the same for every size
        with torch.device("meta"):
            ours = Model.from_config(name, num_keypoints=k)
            official = oracle.TopdownPoseEstimator(arch, k)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in official.parameters())
        assert {k: tuple(v.shape) for k, v in ours_to_sapiens(ours.state_dict()).items()} == {
            k: tuple(v.shape) for k, v in official.state_dict().items()}


def test_preset_settings():
    cfg = preset("sapiens_1b", num_keypoints=308)
    b = cfg.backbone
    assert b.grid == (64, 48) and b.grid[0] * b.grid[1] == 3072 and b.patch_padding == 2
    assert cfg.heatmap_size == (256, 192) and cfg.layer_decay == 0.85 and b.layer_norm_eps == 1e-6
    assert [preset(n).backbone.head_dim for n in SAPIENS_PRESET_NAMES] == [64, 80, 64, 60]
    with torch.device("meta"):
        m = Model.from_config("sapiens_0.3b")
    assert tuple(m.backbone.pos_embed.shape) == (1, 3072, 1024)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("k", [17, 133, 308])
def test_heatmaps_match_official_forward(k, tmp_path):
    ref = _oracle(k)
    model = _load(ref, tmp_path)
    assert model.config.name == "pretrained" and model.config.head.num_keypoints == k
    x = torch.randn(1, 3, *RES)
    with torch.no_grad():
        want = ref(x)
        for backend in BACKENDS:
            got = model.set_backend(backend)(x)
            assert got.shape == want.shape == (1, k, 16, 12)
            assert _scaled_diff(got, want) <= 2e-5, backend


def test_head_dim_60_and_80_match(tmp_path):
    for heads, dim in ((2, 120), (1, 80)):
        ref = _oracle(17, dict(embed_dims=dim, num_layers=1, num_heads=heads, feedforward_channels=4 * dim))
        model = _load(ref, tmp_path)
        x = torch.randn(1, 3, *RES)
        with torch.no_grad():
            want = ref(x)
            for backend in ("reference", "triton"):  # torch runs SDPA as the oracle does
                assert _scaled_diff(model.set_backend(backend)(x), want) <= 2e-5, (dim // heads, backend)


def test_position_embedding_resized_bicubically_as_official(tmp_path):
    # The official backbone resizes pos_embed at run time for another grid; we resize it once at load (res=).
    ref = _oracle(17)
    model = _load(ref, tmp_path, res=(128, 96))
    assert tuple(model.backbone.pos_embed.shape) == (1, 48, 64)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        assert _scaled_diff(model.set_backend("torch")(x), ref(x)) <= 2e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_step_gradients_match(backend, tmp_path):
    ref = _oracle(133).train()
    model = _load(ref, tmp_path).train().set_backend(backend)
    x = torch.randn(1, 3, *RES)
    target = torch.randn(1, 133, 16, 12)
    torch.nn.functional.mse_loss(ref(x), target).backward()
    torch.nn.functional.mse_loss(model(x), target).backward()
    want = {n: p.grad for n, p in ref.named_parameters()}
    got = ours_to_sapiens({n: p.grad for n, p in model.named_parameters()})
    assert set(got) == set(want)
    for name, g in want.items():
        if name.startswith("head.conv_layers.") and name.endswith(".bias"):
            # A bias right before InstanceNorm is removed with the mean: its gradient is zero up to rounding.
            assert g.abs().max() < 1e-6 and got[name].abs().max() < 1e-6, name
            continue
        assert g.abs().max() > 1e-4, name
        assert (got[name] - g).abs().max().item() <= 1e-4 * g.abs().max().item(), name


# ---------------------------------------------------------------------------------------------- checkpoints
def test_export_round_trip_is_exact_and_official_layout(tmp_path):
    ref = _oracle(308)
    model = _load(ref, tmp_path)
    out = tmp_path / "export.pth"
    model.export_official(out)
    obj = torch.load(out, weights_only=True)
    sd = obj["state_dict"]
    assert list(sd) == list(ref.state_dict())  # the official keys, in the official order
    assert all(torch.equal(sd[k], v) for k, v in ref.state_dict().items())
    again = Model.from_pretrained(out)
    assert again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_numpy_meta_allowlist_exact(tmp_path):
    ref = _oracle(17)
    path = tmp_path / "np1.pth"
    _official_file(ref, path)
    # The same file as numpy 1.x writes it (numpy.core instead of numpy._core).
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in files if n.endswith("data.pkl"))
    assert b"numpy._core.multiarray" in files[pkl]
    files[pkl] = files[pkl].replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    sd, config, _ = read_checkpoint(path)
    assert config.head.num_keypoints == 17 and "backbone.blocks.1.mlp.fc2.weight" in sd
    # Anything beyond the float32 / uint8 arrays stays refused.
    for extra in (np.float64(1.0), np.arange(3, dtype=np.int16)):
        buf = io.BytesIO()
        torch.save({"state_dict": ref.state_dict(), "meta": {"x": extra}}, buf)
        (tmp_path / "bad.pth").write_bytes(buf.getvalue())
        with pytest.raises(CheckpointError, match="weights_only"):
            read_checkpoint(tmp_path / "bad.pth")


def test_vitpose_checkpoint_into_sapiens_and_reverse_fail_clearly(tmp_path):
    sapiens_ckpt = _official_file(_oracle(17), tmp_path / "sapiens.pth")
    vitpose = Model.from_config("vitpose_b", depth=2, embed_dim=64, num_heads=2, res=RES)
    vitpose_ckpt = tmp_path / "vitpose.pth"
    vitpose.export_official(vitpose_ckpt)
    sapiens = Model.from_config("sapiens_0.3b", depth=2, embed_dim=64, num_heads=2, res=RES,
                                deconv_channels=(32, 32), conv_channels=(32, 32))
    with pytest.raises(CheckpointError, match="ViTPose checkpoint .* is a Sapiens model"):
        load_into(sapiens, read_checkpoint(vitpose_ckpt)[0])
    with pytest.raises(CheckpointError, match="Sapiens checkpoint .* is a ViTPose model"):
        load_into(vitpose, read_checkpoint(sapiens_ckpt)[0])
    load_into(sapiens, read_checkpoint(sapiens_ckpt)[0])  # the right pair loads


def test_lite_exports_refused(tmp_path):
    tiny = torch.nn.Linear(2, 2)
    ts = tmp_path / "sapiens_0.3b_coco_best_coco_AP_796_torchscript.pt2"
    torch.jit.save(torch.jit.script(tiny), str(ts))
    with pytest.raises(CheckpointError, match="TorchScript .* not supported"):
        Model.from_pretrained(ts)
    ep = tmp_path / "sapiens_0.3b_coco_best_coco_AP_796_bfloat16.pt2"
    torch.export.save(torch.export.export(tiny, (torch.randn(1, 2),)), str(ep))
    with pytest.raises(CheckpointError, match="torch.export .* not supported"):
        Model.from_pretrained(ep)


# ---------------------------------------------------------------------------------------------- metadata
def test_goliath_metadata():
    g = GOLIATH
    assert g.num_keypoints == 308 and len(g.flip_pairs) == 146 and len(g.skeleton) == 65 and g.encoding == "udp"
    names = g.keypoint_names
    assert all(0 < s < 0.2 for s in g.sigmas)
    seen = set()
    for a, b in g.flip_pairs:
        assert a not in seen and b not in seen
        seen |= {a, b}
    pairs = {frozenset((names[a], names[b])) for a, b in g.flip_pairs}
    for side in ("shoulder", "wrist", "ankle", "heel", "thumb4"):
        assert frozenset((f"left_{side}", f"right_{side}")) in pairs
    assert frozenset(("l_center_of_pupil", "r_center_of_pupil")) in pairs
    # Every keypoint Goliath shares with COCO-WholeBody has its sigma (the config copies them).
    w = dict(zip(COCO_WHOLEBODY.keypoint_names, COCO_WHOLEBODY.sigmas))
    shared = [(n, s) for n, s in zip(names, g.sigmas) if n in w]
    assert len(shared) >= 50 and all(math.isclose(s, w[n]) for n, s in shared)
    # Body and feet links are COCO-WholeBody's (by name); the hands chain wrist -> finger joints -> tips.
    wn = COCO_WHOLEBODY.keypoint_names
    links = {frozenset((names[a], names[b])) for a, b in g.skeleton}
    assert {frozenset((wn[a], wn[b])) for a, b in COCO_WHOLEBODY.skeleton[:25]} <= links
    assert frozenset(("left_wrist", "left_thumb_third_joint")) in links


# ---------------------------------------------------------------------------------------------- predict / train
def _tiny_1024(k: int) -> Model:
    # Depth and width cut; the real input size (1024x768, 3,072 tokens) and head structure.
    return Model.from_config("sapiens_0.3b", depth=1, embed_dim=32, num_heads=2, num_keypoints=k,
                             deconv_channels=(16, 16), conv_channels=(16, 16), backend="torch")


def test_predict_synthetic_person_1024x768():
    from vitpose_fast.data.synthetic import _render
    from vitpose_fast.inference.pipeline import head_dataset

    for k, info in ((17, COCO), (133, COCO_WHOLEBODY), (308, GOLIATH)):
        assert head_dataset(_tiny_1024(k)) is info  # flip test swaps this set's pairs
    # 17 keypoints: UDP decoding of 133 maps of 256x192 alone takes seconds on a CPU.
    model = _tiny_1024(17).eval()
    image, anns = _render(np.random.default_rng(0), 640, 480)
    x, y, w, h = anns[0]["bbox"]
    box = np.array([[x, y, x + w, y + h]], dtype=np.float32)
    res = model.predict([np.asarray(image)], boxes=[box], flip_test=True)
    persons = res[0]
    assert len(persons) == 1
    kp = np.asarray(persons[0]["keypoints"])
    assert kp.shape == (17, 3) and np.isfinite(kp).all()
    # Decoded inside the 1024x768 crop around the box (the crop is the box padded to 3:4, scale 1.25).
    cx, cy, size = x + w / 2, y + h / 2, 1.25 * max(h, w * 4 / 3)
    assert (np.abs(kp[:, 1] - cy) <= size / 2 + 1).all() and (np.abs(kp[:, 0] - cx) <= size * 3 / 8 + 1).all()


def test_layer_decay_085_groups_and_a_finetuning_step():
    from vitpose_fast.training.core import build_optimizer

    model = Model.from_config("sapiens_0.3b", depth=2, embed_dim=64, num_heads=2, res=RES,
                              deconv_channels=(32, 32), conv_channels=(32, 32)).train()
    opt = build_optimizer(model, layer_decay=model.config.layer_decay)
    scale = {n: g["lr_scale"] for g in opt.param_groups for n in g["param_names"]}
    assert scale["backbone.pos_embed"] == pytest.approx(0.85 ** 3)
    assert scale["backbone.blocks.0.attn.qkv.weight"] == pytest.approx(0.85 ** 2)
    assert scale["keypoint_head.conv_layers.0.weight"] == 1.0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model(torch.randn(2, 3, *RES)).square().mean()
    loss.backward()
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.slow  # torch.export + ONNX Runtime: ~15 s on a shared 2-core machine
def test_onnx_export_with_external_data(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitpose_fast.model.onnx_export import check_onnx

    # Mid-size for a test (a few MB of weights), with the weights beside the graph as Sapiens-1B/2B need.
    model = _randomize(Model.from_config("sapiens_0.3b", depth=2, embed_dim=256, num_heads=4, num_keypoints=133,
                                         res=(256, 192), deconv_channels=(64, 64), conv_channels=(64, 64))).eval()
    path = model.export_onnx(tmp_path / "sapiens.onnx", external_data=True)
    data = [p for p in tmp_path.iterdir() if p.name != "sapiens.onnx"]
    weights = sum(p.numel() for p in model.parameters()) * 4
    assert data and sum(p.stat().st_size for p in data) >= 0.95 * weights  # small tensors may stay inline
    assert (tmp_path / "sapiens.onnx").stat().st_size < weights / 10
    monkeypatch.setenv("VITPOSE_FAST_BACKEND", "reference")
    errors = check_onnx(model, path, batches=(1, 2))
    assert max(errors.values()) < 1e-4, errors


def test_optimize_and_fp8_smoke():
    from vitpose_fast.model.fp8 import fp8_unavailable_reason

    model = _randomize(Model.from_config("sapiens_0.3b", depth=1, embed_dim=64, num_heads=2, res=RES,
                                         deconv_channels=(32, 32), conv_channels=(32, 32))).eval()
    x = torch.randn(2, 3, *RES)
    with torch.no_grad():
        want = model(x)
        got = model.optimize(2, precision="fp32")(x)  # no BatchNorm to fold: the InstanceNorm head runs as is
    assert _scaled_diff(got, want) <= 1e-5
    if fp8_unavailable_reason(x.device) is not None:
        pytest.skip(fp8_unavailable_reason(x.device))
    model.optimize(2, dtype=torch.bfloat16, precision="fp8")
    assert model.is_fp8
    with torch.no_grad():
        assert _scaled_diff(model(x).float(), want) <= 0.1  # bf16 + e4m3 GEMMs against fp32


def test_video_draws_the_head_keypoint_set(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    from vitpose_fast.inference import visualize
    from vitpose_fast.inference.video import predict_video

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (96, 128))
    for i in range(2):
        writer.write(np.full((128, 96, 3), 40 * i, dtype=np.uint8))
    writer.release()
    drawn = []
    real = visualize.draw_poses

    def spy(image, persons, *args, **kwargs):
        drawn.append((len(persons[0]["keypoints"]), kwargs.get("dataset")))
        return real(image, persons, *args, **kwargs)

    monkeypatch.setattr(visualize, "draw_poses", spy)
    for k, info in ((133, COCO_WHOLEBODY), (308, GOLIATH)):
        drawn.clear()
        model = Model.from_config("sapiens_0.3b", depth=1, embed_dim=32, num_heads=2, res=RES, num_keypoints=k,
                                  deconv_channels=(16, 16), conv_channels=(16, 16)).eval()
        predict_video(model, path, tmp_path / "out.jsonl", vis=tmp_path / "vis.mp4", progress=False)
        assert drawn == [(k, info)] * 2


def test_training_presets_follow_the_official_configs():
    from vitpose_fast.training.presets import get_preset

    p = get_preset("sapiens_1b_coco_1024x768")
    assert p.model.backbone.img_size == (1024, 768) and p.model.backbone.drop_path_rate == 0.0
    assert p.layer_decay == 0.85 and p.data.sigma == 6.0 and p.data.udp and p.eval_interval == 1
    assert (p.optim.lr, p.optim.weight_decay, p.optim.grad_clip) == (5e-4, 0.1, 1.0)
    assert p.optim.schedule.milestones == (170, 200) and p.optim.schedule.warmup_iters == 500


def test_model_flops_count_the_sapiens_head():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from vitpose_fast.benchmarking.common import model_flops

    model = Model.from_config("sapiens_0.3b", depth=2, embed_dim=64, num_heads=2, res=RES, num_keypoints=133,
                              deconv_channels=(32, 32), conv_channels=(24, 16), backend="reference").eval()
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, *RES))
    # The same relation as tests/test_run_benchmark.py's ViTPose cases (the counter's convention).
    assert counter.get_total_flops() == 2 * model_flops(model.config).total


@pytest.mark.slow  # the run measures CPU matmul rates first: tens of seconds on a shared 2-core machine
def test_benchmark_runs_sapiens_with_the_same_peers(capsys):
    from helpers import load_script

    run = load_script("benchmarks/run.py")
    payload = run.main(["--model", "sapiens_0.3b", "--res", "64x48", "--depth", "1", "--batch", "1", "--iters", "1",
                        "--warmup", "0", "--no-save",
                        "--backends", "reference,hf,sdpa-bf16,vitpose_fast,vitpose_fast-fp8"])
    rows = {r["backend"] for r in payload["rows"] if r.get("images_s")}
    assert rows == {"reference", "sdpa-bf16", "vitpose_fast", "vitpose_fast-fp8"}
    assert "no Sapiens" in payload["skipped"]["infer/global/hf"]


def test_cli_names_the_wrong_family_in_one_line(tmp_path):
    from PIL import Image

    from vitpose_fast.cli import main as cli_main

    weights = _official_file(_oracle(17), tmp_path / "s.pth")
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(tmp_path / "img.png")
    with pytest.raises(SystemExit) as e:  # (the smallest preset: the CLI builds it before loading)
        cli_main(["predict", str(tmp_path / "img.png"), "--model", "vitpose_s", "--weights", weights,
                  "--out", str(tmp_path / "o.json"), "--device", "cpu"])
    msg = str(e.value.code)
    assert msg.startswith("vitpose-fast:") and "Sapiens checkpoint" in msg and "\n" not in msg
