"""predict(): parity with the Hugging Face transformers ViTPose port, flip-test wiring, input handling."""

import types

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_fast.data import crop
from vitpose_fast.inference import pipeline
from vitpose_fast.data.synthetic import KEYPOINT_NAMES
from vitpose_fast.inference.decode import decode_heatmaps
from vitpose_fast import Model

transformers = pytest.importorskip("transformers")
from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation  # noqa: E402
from transformers.models.vitpose.image_processing_pil_vitpose import VitPoseImageProcessorPil  # noqa: E402
from transformers.models.vitpose.modeling_vitpose import VitPoseEstimatorOutput  # noqa: E402

IN_H, IN_W = 64, 48
# COCO flip pairs from the joint names alone (independent of vitpose_fast.data.datasets).
COCO_PAIRS = [
    (i, KEYPOINT_NAMES.index("right_" + n[5:])) for i, n in enumerate(KEYPOINT_NAMES) if n.startswith("left_")
]


class Spy(torch.nn.Module):
    """Wraps a model and records what predict() feeds it and gets back."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config
        self.inputs, self.outputs = [], []

    def forward(self, x, dataset_index=None):
        out = self.model(x, dataset_index)
        self.inputs.append(x.clone())
        self.outputs.append(out.clone())
        return out


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    torch.manual_seed(1234)
    backbone = VitPoseBackboneConfig(
        image_size=[IN_H, IN_W], patch_size=[16, 16], hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
        layer_norm_eps=1e-6, out_indices=[2],
    )
    config = VitPoseConfig(backbone_config=backbone, use_simple_decoder=False, num_labels=17)
    hf = VitPoseForPoseEstimation(config).eval()
    folder = tmp_path_factory.mktemp("hf_vitpose")
    hf.save_pretrained(folder)
    ours = Model.from_pretrained(folder).eval()
    return hf, ours, VitPoseImageProcessorPil(size={"height": IN_H, "width": IN_W})


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(4321)
    return Model.from_config(
        "vitpose_s", depth=1, embed_dim=96, num_heads=4, res=(IN_H, IN_W), deconv_channels=(32, 32)
    ).eval()


def smooth_image(h, w, rng):
    small = rng.uniform(0, 255, (h // 10 + 2, w // 10 + 2, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), 0, 255).astype(np.uint8)


def rng_from_torch():
    return np.random.default_rng(int(torch.randint(0, 2**31, ()).item()))


# ----------------------------------------------------------------------------------------- HF parity
def test_crops_match_hf_processor(hf_pair):
    _, _, proc = hf_pair
    rng = rng_from_torch()
    img = smooth_image(101, 87, rng)
    n = 7
    xy = rng.uniform(-10, 70, (n, 2))
    boxes = np.concatenate([xy, rng.uniform(4, 60, (n, 2))], 1)  # xywh, some leave the image
    ref = proc(images=[img], boxes=[boxes], return_tensors="pt").pixel_values
    centers, scales = crop.box_to_center_scale(torch.from_numpy(boxes), IN_W / IN_H)
    ours = crop.crop_and_normalize([torch.from_numpy(img)], [0] * n, centers, scales, (IN_W, IN_H))
    grey = torch.tensor(crop.IMAGENET_STD).view(1, 3, 1, 1) * 255
    err = ((ours - ref) * grey).abs()
    # Interior: every bilinear neighbour inside the image (scipy's order-1 border differs from cv2's).
    mats = crop.crop_matrices(centers, scales, (IN_W, IN_H)).numpy()
    jj, ii = np.meshgrid(np.arange(IN_W), np.arange(IN_H))
    for p in range(n):
        inv = cv2.invertAffineTransform(mats[p])
        sx = inv[0, 0] * jj + inv[0, 1] * ii + inv[0, 2]
        sy = inv[1, 0] * jj + inv[1, 1] * ii + inv[1, 2]
        interior = torch.from_numpy((sx >= 0) & (sy >= 0) & (sx <= 86) & (sy <= 100))
        assert err[p][:, interior].numpy().max(initial=0) <= 1.0


def test_heatmaps_match_hf_on_identical_inputs(hf_pair):
    hf, ours, _ = hf_pair
    x = torch.randn(5, 3, IN_H, IN_W)
    with torch.no_grad():
        ref = hf(pixel_values=x).heatmaps
        got = ours(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_predict_matches_hf_pipeline(hf_pair):
    """End to end on crops inside the image: our crops + model vs the HF processor + model, with our decoder on
    both (HF decodes with a sigma-0.8 blur instead of the official kernel-11 OpenCV blur, so keypoints are
    compared through the same decoder; the raw-maximum scores and the integer argmax are decoder-independent)."""
    hf, ours, proc = hf_pair
    rng = rng_from_torch()
    img = smooth_image(120, 90, rng)
    n = 6
    # Boxes of 5-30 x 5-40 px whose padded crop (aspect-fitted to 3:4, x1.25: at most 37.5 x 50 px) stays inside
    # the 90 x 120 image: outside it scipy's border (HF) and grid_sample's zeros differ by design.
    wh = np.concatenate([rng.uniform(5, 30, (n, 1)), rng.uniform(5, 40, (n, 1))], 1)
    centers = np.concatenate([rng.uniform(20, 70, (n, 1)), rng.uniform(26, 94, (n, 1))], 1)
    boxes = np.concatenate([centers - wh / 2, wh], 1)
    spy = Spy(ours)
    got = pipeline.predict(spy, img, boxes, box_format="xywh", flip_test=False)
    assert len(got) == n
    kps = np.stack([p["keypoints"] for p in got])
    hm = torch.cat(spy.outputs)
    with torch.no_grad():
        ref_hm = hf(pixel_values=proc(images=[img], boxes=[boxes], return_tensors="pt").pixel_values).heatmaps
    # Crops differ only by HF's uint8 rounding: heatmaps agree closely, argmax almost everywhere.
    assert (hm - ref_hm).abs().max() <= 0.03 * ref_hm.abs().max()
    assert (hm.flatten(2).argmax(-1) == ref_hm.flatten(2).argmax(-1)).float().mean() >= 0.9
    # Our keypoints are exactly the official decoding of our heatmaps with HF's box -> (center, scale).
    centers = boxes[:, :2] + boxes[:, 2:] * 0.5
    wh = np.where(
        (boxes[:, 2] > IN_W / IN_H * boxes[:, 3])[:, None],
        np.stack([boxes[:, 2], boxes[:, 2] * IN_H / IN_W], 1),
        np.stack([boxes[:, 3] * IN_W / IN_H, boxes[:, 3]], 1),
    )
    np.testing.assert_allclose(kps, decode_heatmaps(hm, centers, wh / 200 * 1.25).numpy(), rtol=1e-5, atol=1e-3)
    ref = proc.post_process_pose_estimation(VitPoseEstimatorOutput(heatmaps=ref_hm), boxes=[boxes])[0]
    ref_scores = np.stack([r["scores"].numpy() for r in ref])
    np.testing.assert_allclose(kps[..., 2], ref_scores, atol=0.03 * ref_hm.abs().max().item())


def test_decoding_matches_hf_on_gaussian_heatmaps(hf_pair):
    """Where both decoders are exact (Gaussian maps: log is quadratic, so any blur width recovers the centre),
    the whole box -> center/scale -> heatmap -> image mapping must equal HF's post-processing."""
    _, _, proc = hf_pair
    # Maps large enough that the peaks sit >= 12 px from the border: blur borders never reach the stencil.
    n, k, h, w = 4, 17, 56, 42
    mu = torch.rand(n, k, 2, dtype=torch.float64) * torch.tensor([w - 24.0, h - 24.0]) + 12
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    hm = torch.exp(-((xx - mu[..., 0, None, None]) ** 2 + (yy - mu[..., 1, None, None]) ** 2) / (2 * 2.0**2)).float()
    hm = hm * (0.5 + torch.rand(n, k, 1, 1))
    boxes_xywh = torch.cat([torch.rand(n, 2) * 50, torch.rand(n, 2) * 80 + 5], 1).double()
    centers, scales = crop.box_to_center_scale(boxes_xywh, IN_W / IN_H)
    ours = decode_heatmaps(hm, centers, scales).numpy()
    ref = proc.post_process_pose_estimation(VitPoseEstimatorOutput(heatmaps=hm), boxes=[boxes_xywh.numpy()])[0]
    px = (scales.numpy() * 200 / np.array([w - 1, h - 1]))[:, None, :]  # image pixels per heatmap pixel
    np.testing.assert_allclose(ours[..., :2] / px, np.stack([r["keypoints"].numpy() for r in ref]) / px, atol=2e-3)
    np.testing.assert_allclose(ours[..., 2], np.stack([r["scores"].numpy() for r in ref]), rtol=1e-6)


# ----------------------------------------------------------------------------------------- flip test, batching
def test_flip_test_wiring(tiny_model):
    rng = rng_from_torch()
    img = smooth_image(70, 90, rng)
    boxes = np.array([[5.0, 3.0, 60.0, 66.0, 0.8], [30.0, 10.0, 85.0, 50.0, 0.3], [0.0, 0.0, 89.0, 69.0, 1.0]])
    spy = Spy(tiny_model)
    got = pipeline.predict(spy, img, boxes, flip_test=True, dataset=types.SimpleNamespace(flip_pairs=COCO_PAIRS))
    (x,), (out,) = spy.inputs, spy.outputs
    n = len(boxes)
    assert x.shape == (2 * n, 3, IN_H, IN_W)  # flipped crops ride in the same batch
    torch.testing.assert_close(x[n:], x[:n].flip(3), rtol=0, atol=0)
    perm = list(range(17))
    for a, b in COCO_PAIRS:
        perm[a], perm[b] = b, a
    averaged = (out[:n] + out[n:, perm].flip(3)) / 2
    centers, scales = crop.box_to_center_scale(crop.box_xyxy_to_xywh(torch.from_numpy(boxes[:, :4])), IN_W / IN_H)
    ref = decode_heatmaps(averaged, centers, scales).numpy()
    np.testing.assert_allclose(np.stack([p["keypoints"] for p in got]), ref, rtol=1e-5, atol=1e-3)
    assert [p["score"] for p in got] == pytest.approx([0.8, 0.3, 1.0])
    np.testing.assert_allclose(np.stack([p["box"] for p in got]), boxes[:, :4])


def test_default_flip_pairs_come_from_coco(tiny_model):
    pytest.importorskip("vitpose_fast.data.datasets")
    img = smooth_image(50, 40, rng_from_torch())
    a = pipeline.predict(tiny_model, img, [[2, 3, 30, 45]])
    b = pipeline.predict(tiny_model, img, [[2, 3, 30, 45]], dataset=types.SimpleNamespace(flip_pairs=COCO_PAIRS))
    np.testing.assert_allclose(a[0]["keypoints"], b[0]["keypoints"], rtol=1e-6, atol=1e-5)


def test_batching_multiple_images_and_types(tiny_model, tmp_path):
    rng = rng_from_torch()
    imgs = [smooth_image(60, 80, rng), smooth_image(45, 33, rng), smooth_image(90, 50, rng)]
    corners = rng.uniform(0, 30, (4, 2)) @ np.array([[1, 0, 1, 0], [0, 1, 0, 1.0]]) + [0, 0, 10, 12]  # xyxy
    boxes = [corners, np.zeros((0, 4)), None]
    kw = dict(boxes=boxes, dataset=types.SimpleNamespace(flip_pairs=COCO_PAIRS))
    ref = pipeline.predict(tiny_model, imgs, batch_size=64, **kw)
    assert [len(r) for r in ref] == [4, 0, 1]
    np.testing.assert_allclose(ref[2][0]["box"], [0, 0, 49, 89])
    Image.fromarray(imgs[0]).save(tmp_path / "a.png")
    mixed = [str(tmp_path / "a.png"), torch.from_numpy(imgs[1]), Image.fromarray(imgs[2])]
    for other in (pipeline.predict(tiny_model, imgs, batch_size=3, **kw), pipeline.predict(tiny_model, mixed, **kw)):
        for r, o in zip(ref, other):
            for p, q in zip(r, o):
                np.testing.assert_allclose(p["keypoints"], q["keypoints"], rtol=1e-5, atol=1e-3)


def test_color_conversions(tiny_model):
    rgb = smooth_image(40, 30, rng_from_torch())
    kw = dict(flip_test=False)
    ref = pipeline.predict(tiny_model, rgb, **kw)[0]["keypoints"]
    rgba = np.concatenate([rgb, np.full((40, 30, 1), 7, np.uint8)], 2)
    np.testing.assert_array_equal(pipeline.predict(tiny_model, rgba, **kw)[0]["keypoints"], ref)
    from_pil = pipeline.predict(tiny_model, Image.fromarray(rgba, "RGBA"), **kw)[0]["keypoints"]
    np.testing.assert_array_equal(from_pil, ref)
    np.testing.assert_array_equal(pipeline.predict(tiny_model, rgb[..., ::-1][..., ::-1], **kw)[0]["keypoints"], ref)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(
        pipeline.predict(tiny_model, gray, **kw)[0]["keypoints"],
        pipeline.predict(tiny_model, np.repeat(gray[..., None], 3, 2), **kw)[0]["keypoints"],
    )


def test_restores_training_mode(tiny_model):
    tiny_model.train()
    try:
        pipeline.predict(tiny_model, np.zeros((20, 20, 3), np.uint8), flip_test=False)
        assert tiny_model.training
    finally:
        tiny_model.eval()


# ----------------------------------------------------------------------------------------- bad inputs
def test_empty_boxes_give_empty_results(tiny_model):
    spy = Spy(tiny_model)
    img = np.zeros((20, 30, 3), np.uint8)
    assert pipeline.predict(spy, img, np.zeros((0, 4))) == []
    assert pipeline.predict(spy, [img, img], [[], np.zeros((0, 5))]) == [[], []]
    assert spy.inputs == []


@pytest.mark.parametrize(
    "boxes, fmt, match",
    [
        ([[1, 2, 3]], "xyxy", r"\[N, 4\] or \[N, 5\]"),
        ([[[1, 2, 3, 4]]], "xyxy", r"\[N, 4\] or \[N, 5\]"),
        ([[5, 5, 2, 9]], "xyxy", "inverted"),
        ([[5, 5, 0, 9]], "xywh", "zero or negative"),
        ([[100, 5, 120, 9]], "xyxy", "entirely outside the 30x20 image"),
        ([[-50, -40, 10, 10]], "xywh", "entirely outside"),
        ([[1, 2, np.nan, 4]], "xyxy", "NaN"),
        ([[1, 2, 3, 4]], "cxcywh", "box_format"),
        ([[1, 2, 3, 4], [1, 2]], "xyxy", r"numeric \[N, 4\]"),
    ],
)
def test_bad_boxes(tiny_model, boxes, fmt, match):
    with pytest.raises(ValueError, match=match):
        pipeline.predict(tiny_model, np.zeros((20, 30, 3), np.uint8), boxes, box_format=fmt)


def test_partly_outside_boxes_are_kept_unclipped(tiny_model):
    got = pipeline.predict(tiny_model, np.zeros((20, 30, 3), np.uint8), [[-5, -5, 10, 40]], flip_test=False)
    np.testing.assert_allclose(got[0]["box"], [-5, -5, 10, 40])
    assert np.isfinite(got[0]["keypoints"]).all()


def test_bad_images(tiny_model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        pipeline.predict(tiny_model, [str(bad)])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        pipeline.predict(tiny_model, str(tmp_path / "missing.png"))
    with pytest.raises(TypeError, match="uint8"):
        pipeline.predict(tiny_model, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        pipeline.predict(tiny_model, np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="2 images but boxes for 1"):
        pipeline.predict(tiny_model, [np.zeros((8, 8, 3), np.uint8)] * 2, [[[0, 0, 4, 4]]])
    with pytest.raises(ValueError, match="decode"):
        pipeline.predict(tiny_model, np.zeros((8, 8, 3), np.uint8), decode="soft")


def test_flip_needs_pairs_for_unknown_heads():
    model = Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(32, 32), num_keypoints=5,
                              deconv_channels=(8, 8)).eval()
    with pytest.raises(ValueError, match="dataset="):
        pipeline.predict(model, np.zeros((8, 8, 3), np.uint8))
    assert pipeline.predict(model, np.zeros((8, 8, 3), np.uint8), flip_test=False)[0]["keypoints"].shape == (5, 3)
