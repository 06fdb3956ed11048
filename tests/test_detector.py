"""The detector hook: Model.predict(images, detector=fn), the CLI's --detector and the Ultralytics YOLO adapter."""

import json
import sys
import types

import numpy as np
import pytest
import torch

from vitpose_fast import cli
from vitpose_fast.data.synthetic import make_synthetic_coco
from vitpose_fast.inference.detectors import YoloDetector, load_detector, run_detector
from vitpose_fast import Model
from vitpose_fast.inference.pipeline import load_image


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    data = make_synthetic_coco(root / "coco", {"val2017": 3}, seed=3, image_size=(112, 96), splits=("val2017",))
    coco = json.loads(data.ann_files["val2017"].read_text())
    paths, gt = [], []
    for info in coco["images"]:
        paths.append(data.image_dirs["val2017"] / info["file_name"])
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == info["id"]]
        # COCO xywh -> inclusive xyxy (w = x2 - x1 + 1, the pipeline's convention).
        gt.append(np.array([[x, y, x + w - 1, y + h - 1] for x, y, w, h in boxes], dtype=np.float64))
    torch.manual_seed(7)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=64, num_heads=2, res=(64, 48),
                              deconv_channels=(16, 16)).eval()
    weights = root / "tiny.pth"
    model.save(weights)
    return root, model, paths, [load_image(p) for p in paths], gt, weights


def gt_detector(images, gt, extra=False):
    """A detector that looks the image up and returns its ground-truth boxes (+ junk the filters must drop)."""
    table = {im.tobytes(): boxes for im, boxes in zip(images, gt)}

    def detect(image):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        boxes = table[image.tobytes()]
        scores = np.linspace(0.9, 0.6, len(boxes))
        if not extra:
            return torch.from_numpy(boxes), scores  # torch outputs are accepted too
        junk = np.array([[0, 0, 20, 20], [5, 5, 40, 30]], dtype=np.float64)
        return (np.concatenate([boxes, junk]), np.concatenate([scores, [0.95, 0.1]]),
                np.array([0] * len(boxes) + [2, 0]))

    return detect


def assert_same(a, b):
    assert len(a) == len(b)
    for pa, pb in zip(a, b):
        assert len(pa) == len(pb)
        for x, y in zip(pa, pb):
            np.testing.assert_allclose(x["keypoints"], y["keypoints"], rtol=0, atol=1e-5)
            np.testing.assert_allclose(x["box"], y["box"])
            assert x["score"] == pytest.approx(y["score"])


def test_detector_equals_passing_the_boxes(synth):
    _, model, paths, images, gt, _ = synth
    scores = [np.linspace(0.9, 0.6, len(b)) for b in gt]
    direct = model.predict(images, [np.concatenate([b, s[:, None]], 1) for b, s in zip(gt, scores)])
    assert_same(model.predict(images, detector=gt_detector(images, gt)), direct)
    assert_same(model.predict([str(p) for p in paths], detector=gt_detector(images, gt)), direct)  # files
    assert_same([model.predict(images[1], detector=gt_detector(images, gt))], [direct[1]])  # one image


def test_predict_iter_detector_streams_the_same_results(synth):
    _, model, paths, images, gt, _ = synth
    scores = [np.linspace(0.9, 0.6, len(b)) for b in gt]
    direct = model.predict(images, [np.concatenate([b, s[:, None]], 1) for b, s in zip(gt, scores)])
    # Files decoded on the streaming thread, the detector run there; chunks of 3 crops span images.
    out = list(model.predict_iter(((str(p), None, k) for k, p in enumerate(paths)),
                                  detector=gt_detector(images, gt), batch_size=3, on_error="skip"))
    assert [r.meta for r in out] == [0, 1, 2]
    assert_same([r.persons for r in out], direct)
    with pytest.raises(ValueError, match="either boxes or a detector"):
        list(model.predict_iter([(images[0], gt[0])], detector=gt_detector(images, gt)))
    # A failing detector stops the run even where unreadable images are skipped.
    with pytest.raises(ValueError, match="needs a detector that returns"):
        list(model.predict_iter(images, detector=gt_detector(images, gt), det_classes=[0], on_error="skip"))


def test_threshold_class_filter_and_batched_form(synth):
    _, model, _, images, gt, _ = synth
    scores = [np.linspace(0.9, 0.6, len(b)) for b in gt]
    direct = model.predict(images, [np.concatenate([b, s[:, None]], 1) for b, s in zip(gt, scores)])
    one = gt_detector(images, gt, extra=True)

    class Batched:
        batched = True

        def __call__(self, ims):
            return [one(im) for im in ims]

    # The label-2 junk box survives the threshold but not the class filter; the 0.1 person box fails the threshold.
    assert_same(model.predict(images, detector=Batched(), det_thr=0.3, det_classes=[0]), direct)
    found = run_detector(one, images, score_thr=0.3)
    assert [len(f) for f in found] == [len(b) + 1 for b in gt]


def test_detector_errors(synth):
    _, model, _, images, gt, _ = synth
    with pytest.raises(ValueError, match="either boxes or a detector"):
        model.predict(images, gt, detector=gt_detector(images, gt))
    with pytest.raises(ValueError, match="needs a detector that returns"):
        model.predict(images, detector=gt_detector(images, gt), det_classes=[0])
    with pytest.raises(ValueError, match="3 boxes but 2 scores"):
        run_detector(lambda im: (np.zeros((3, 4)), np.ones(2)), images[:1])
    with pytest.raises(ValueError, match="must return"):
        run_detector(lambda im: np.zeros((3, 4)), images[:1])


def test_load_detector_from_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_dets.py").write_text(
        "import numpy as np\nclass Holder:\n    @staticmethod\n    def fn(image):\n"
        "        return np.array([[1., 2., 3., 4.]]), np.array([0.5])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_detector("my_dets:Holder.fn")
    found = run_detector(fn, [np.zeros((8, 8, 3), np.uint8)])
    np.testing.assert_array_equal(found[0], [[1, 2, 3, 4, 0.5]])
    for spec, msg in [("my_dets", "expected 'module:callable'"), ("no_such_mod_xyz:fn", "cannot import"),
                      ("my_dets:nope", "no attribute"), ("my_dets:np", "not a callable")]:
        with pytest.raises(ValueError, match=msg):
            load_detector(spec)


def test_yolo_absent_gives_a_clear_error(synth, tmp_path, monkeypatch):
    _, _, paths, _, _, weights = synth
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ImportError, match="pip install ultralytics"):
        load_detector("yolo:yolov8n.pt")
    with pytest.raises(SystemExit, match="pip install ultralytics"):
        cli.main(["predict", "--weights", str(weights), "--device", "cpu", str(paths[0]),
                  "--out", str(tmp_path / "o.json"), "--detector", "yolo:yolov8n.pt"])


def fake_ultralytics(seen):
    """A stand-in ``ultralytics`` module: YOLO(weights)(bgr_list) -> results with .boxes.{xyxy, conf, cls}."""
    mod = types.ModuleType("ultralytics")

    class YOLO:
        def __init__(self, weights):
            seen["weights"] = weights

        def __call__(self, images, **kwargs):
            seen["images"], seen["kwargs"] = images, kwargs
            out = []
            for im in images:
                h, w = im.shape[:2]
                boxes = types.SimpleNamespace(
                    xyxy=torch.tensor([[1.0, 2.0, w - 3.0, h - 4.0], [0.0, 0.0, 9.0, 9.0]]),
                    conf=torch.tensor([0.8, 0.9]), cls=torch.tensor([0.0, 16.0]),  # a person and a dog
                )
                out.append(types.SimpleNamespace(boxes=boxes))
            return out

    mod.YOLO = YOLO
    return mod


def test_yolo_adapter_with_a_fake_ultralytics(synth, monkeypatch):
    _, model, _, images, _, _ = synth
    seen = {}
    monkeypatch.setitem(sys.modules, "ultralytics", fake_ultralytics(seen))
    det = load_detector("yolo:weights/yolov8n.pt", device="cpu")
    assert isinstance(det, YoloDetector) and seen["weights"] == "weights/yolov8n.pt"
    found = run_detector(det, images[:2])
    # Ultralytics reads numpy images as BGR: the adapter flips the RGB frames.
    np.testing.assert_array_equal(seen["images"][0], images[0][..., ::-1])
    assert seen["kwargs"]["device"] == "cpu" and seen["kwargs"]["verbose"] is False
    h, w = images[0].shape[:2]
    for f in found:  # only the person survives
        np.testing.assert_allclose(f, [[1, 2, w - 3, h - 4, 0.8]], rtol=1e-6)
    direct = model.predict(images[:2], [f for f in found])
    assert_same(model.predict(images[:2], detector=det), direct)


def test_cli_detector_on_image_files(synth, tmp_path, monkeypatch):
    root, _, paths, images, gt, weights = synth
    module = types.ModuleType("cli_gt_dets")
    module.detect = gt_detector(images, gt)
    monkeypatch.setitem(sys.modules, "cli_gt_dets", module)
    out_det, out_boxes = tmp_path / "det.json", tmp_path / "boxes.json"
    common = ["predict", "--weights", str(weights), "--device", "cpu", "--quiet", *map(str, paths)]
    assert cli.main(common + ["--detector", "cli_gt_dets:detect", "--out", str(out_det)]) == 0
    # The same boxes as a COCO detection-results file.
    dets = []
    for p, boxes in zip(paths, gt):
        for b, s in zip(boxes, np.linspace(0.9, 0.6, len(boxes))):
            dets.append({"image_id": int(p.stem), "category_id": 1, "score": float(s),
                         "bbox": [b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1]})
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert cli.main(common + ["--boxes", str(tmp_path / "dets.json"), "--out", str(out_boxes)]) == 0
    a, b = json.loads(out_det.read_text()), json.loads(out_boxes.read_text())
    assert len(a) == sum(len(g) for g in gt) == len(b)
    for x, y in zip(a, b):
        assert x["image_id"] == y["image_id"]
        np.testing.assert_allclose(x["keypoints"], y["keypoints"], atol=1e-4)
        np.testing.assert_allclose(x["bbox"], y["bbox"], atol=1e-9)
