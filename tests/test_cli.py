"""The vitpose-fast command line on a synthetic data set with a random-weight tiny model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_fast import cli
from vitpose_fast.data.synthetic import make_synthetic_coco
from vitpose_fast.model import Model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_synthetic_coco(root / "coco", {"val2017": 3}, seed=5, image_size=(96, 80), splits=("val2017",))
    torch.manual_seed(0)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=64, num_heads=2, res=(64, 48), deconv_channels=(16, 16))
    weights = root / "tiny.pth"
    model.save(weights)
    return root, data, weights


def test_predict_writes_results_and_pngs(setup, capsys):
    root, data, weights = setup
    out, vis = root / "preds.json", root / "vis"
    images = sorted(data.image_dirs["val2017"].iterdir())
    rc = cli.main(["predict", "--weights", str(weights), "--device", "cpu", "--quiet", str(images[0]),
                   str(data.image_dirs["val2017"]), "--out", str(out), "--vis", str(vis)])
    assert rc == 0
    results = json.loads(out.read_text())
    assert len(results) == 4  # one whole-image person per input image (the first image is given twice)
    for r in results:
        assert r["category_id"] == 1 and len(r["keypoints"]) == 51 and r["score"] == 1.0
        assert r["bbox"] == [0.0, 0.0, 96.0, 80.0]
    assert {r["image_id"] for r in results} == {int(p.stem) for p in images}
    pngs = sorted(vis.glob("*.png"))
    assert [p.stem for p in pngs] == [p.stem for p in images]
    assert Image.open(pngs[0]).size == (96, 80)
    assert "wrote 4 persons" in capsys.readouterr().out


def test_predict_with_detection_boxes(setup):
    root, data, weights = setup
    dets = json.loads(data.det_file.read_text())
    out = root / "preds_dets.json"
    cli.main(["predict", "--weights", str(weights), "--device", "cpu", "--quiet", "--no-flip",
              str(data.image_dirs["val2017"]), "--boxes", str(data.det_file), "--box-thr", "0.45", "--out", str(out)])
    results = json.loads(out.read_text())
    kept = [d for d in dets if d["score"] >= 0.45]
    assert len(results) == len(kept)
    assert sorted(r["score"] for r in results) == pytest.approx(sorted(d["score"] for d in kept))
    kps = np.array([r["keypoints"] for r in results]).reshape(-1, 17, 3)
    assert np.isfinite(kps).all()


@pytest.mark.parametrize("use_dets", [False, True])
def test_eval_prints_ap_table(setup, capsys, use_dets):
    root, data, weights = setup
    argv = ["eval", "--weights", str(weights), "--device", "cpu", "--quiet", "--ann",
            str(data.ann_files["val2017"]), "--images", str(data.image_dirs["val2017"]), "--out", str(root / "r.json")]
    if use_dets:
        argv += ["--dets", str(data.det_file)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "| AP | AP .5 |" in text and ("detections" if use_dets else "GT boxes") in text
    assert json.loads((root / "r.json").read_text())


def test_bad_paths(setup, tmp_path):
    _, _, weights = setup
    with pytest.raises(SystemExit, match="no such image"):
        cli.main(["predict", "--weights", str(weights), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o.json")])
    with pytest.raises(SystemExit, match="no images"):
        cli.main(["predict", "--weights", str(weights), str(tmp_path), "--out", str(tmp_path / "o.json")])


def test_precision_fp8_predict_and_eval(setup, capsys):
    root, data, weights = setup
    out = root / "preds_fp8.json"
    common = ["--weights", str(weights), "--device", "cpu", "--quiet"]
    cli.main(["predict", *common, str(data.image_dirs["val2017"]), "--out", str(root / "p32.json")])
    cli.main(["predict", *common, "--precision", "fp8", str(data.image_dirs["val2017"]), "--out", str(out)])
    fp32 = np.array([r["keypoints"] for r in json.loads((root / "p32.json").read_text())]).reshape(-1, 17, 3)
    fp8 = np.array([r["keypoints"] for r in json.loads(out.read_text())]).reshape(-1, 17, 3)
    assert fp8.shape == fp32.shape and np.isfinite(fp8).all()
    # Scores are heatmap maxima: FP8 GEMMs move them by a few percent at most.
    np.testing.assert_allclose(fp8[..., 2], fp32[..., 2], rtol=0.1, atol=1e-3)
    assert cli.main(["eval", *common, "--precision", "fp8", "--ann", str(data.ann_files["val2017"]),
                     "--images", str(data.image_dirs["val2017"])]) == 0
    assert "| AP | AP .5 |" in capsys.readouterr().out


def test_precision_fp8_on_an_old_gpu_says_so(setup, monkeypatch):
    _, data, weights = setup
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(SystemExit, match=r"--precision fp8: NVIDIA A100 is sm_80.*--precision bf16"):
        cli.main(["predict", "--weights", str(weights), "--device", "cuda", "--precision", "fp8",
                  str(data.image_dirs["val2017"]), "--out", "unused.json"])
