"""The vitpose-fast command line on a synthetic data set with a random-weight tiny model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_fast.cli import commands as cli
from vitpose_fast.data.synthetic import make_synthetic_coco
from vitpose_fast import Model


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


# ------------------------------------------------------------------------------------- nothing silent
def _predict(weights, *argv):
    return cli.main(["predict", "--weights", str(weights), "--device", "cpu", "--quiet", "--no-flip", *map(str, argv)])


def test_detections_matching_no_image_are_an_error_or_counted(setup, tmp_path, capsys):
    root, data, weights = setup
    folder = data.image_dirs["val2017"]
    dets = json.loads(data.det_file.read_text())
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{**d, "image_id": d["image_id"] + 1000} for d in dets]))
    with pytest.raises(SystemExit, match=f"none of the {len(dets)} detections"):
        _predict(weights, folder, "--boxes", wrong, "--out", tmp_path / "o.json")
    first = min(d["image_id"] for d in dets)
    half = tmp_path / "half.json"
    half.write_text(json.dumps([{**d, "image_id": d["image_id"] + (1000 if d["image_id"] != first else 0)}
                                for d in dets]))
    assert _predict(weights, folder, "--boxes", half, "--out", tmp_path / "o.json") == 0
    err = capsys.readouterr().err
    n_bad = sum(d["image_id"] != first for d in dets)
    assert f"{n_bad} of {len(dets)} detections" in err and "2 of 3 images have no detections" in err
    out = json.loads((tmp_path / "o.json").read_text())
    assert {r["image_id"] for r in out} == {first}
    assert {r["file_name"] for r in out} == {f"{first:012d}.jpg"} or all(r["file_name"].endswith(".jpg") for r in out)


def test_detections_match_by_file_name_and_annotation_ids(setup, tmp_path):
    root, data, weights = setup
    folder = tmp_path / "named"
    folder.mkdir()
    src = sorted(data.image_dirs["val2017"].iterdir())
    for i, p in enumerate(src):
        (folder / f"frame_{'abc'[i]}.jpg").write_bytes(p.read_bytes())
    dets = [{"file_name": "frame_b.jpg", "image_id": 0, "category_id": 1, "bbox": [5, 5, 40, 50], "score": 0.9}]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    assert _predict(weights, folder, "--boxes", tmp_path / "d.json", "--out", tmp_path / "o.json") == 0
    out = json.loads((tmp_path / "o.json").read_text())
    assert [r["file_name"] for r in out] == ["frame_b.jpg"] and out[0]["score"] == pytest.approx(0.9)
    ann = {"images": [{"id": 70 + i, "file_name": f"frame_{c}.jpg"} for i, c in enumerate("abc")]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    by_id = [{**dets[0], "image_id": 72}]
    del by_id[0]["file_name"]
    (tmp_path / "d2.json").write_text(json.dumps(by_id))
    assert _predict(weights, folder, "--boxes", tmp_path / "d2.json", "--ann", tmp_path / "ann.json",
                    "--out", tmp_path / "o2.json") == 0
    out = json.loads((tmp_path / "o2.json").read_text())
    assert [(r["image_id"], r["file_name"]) for r in out] == [(72, "frame_c.jpg")]


def test_colliding_numeric_names(setup, tmp_path):
    _, data, weights = setup
    src = sorted(data.image_dirs["val2017"].iterdir())[0]
    for name in ("001.jpg", "1.jpg"):
        (tmp_path / name).write_bytes(src.read_bytes())
    with pytest.raises(SystemExit, match="both get image id 1"):
        _predict(weights, tmp_path, "--out", tmp_path / "o.json")


def test_eval_refuses_detections_of_unknown_images(setup, tmp_path, capsys):
    root, data, weights = setup
    dets = json.loads(data.det_file.read_text())
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps(dets + [{**dets[0], "image_id": 999999}]))
    argv = ["eval", "--weights", str(weights), "--device", "cpu", "--quiet", "--ann", str(data.ann_files["val2017"]),
            "--images", str(data.image_dirs["val2017"]), "--dets", str(shifted)]
    with pytest.raises(SystemExit, match="1 of .* detections .* not in"):
        cli.main(argv)
    assert cli.main(argv + ["--allow-unmatched-dets"]) == 0
    captured = capsys.readouterr()
    assert "ignored" in captured.err and "| AP |" in captured.out
    ap_row = captured.out.strip().splitlines()[-1]
    assert all(float(v) == -1 or 0 <= float(v) <= 1 for v in ap_row.strip("| ").split(" | "))  # fractions (-1: empty)


def test_unreadable_images_are_skipped_reported_or_fatal(setup, tmp_path, capsys):
    _, data, weights = setup
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = sorted(data.image_dirs["val2017"].iterdir())
    for p in src:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "000000000777.jpg").write_bytes(src[0].read_bytes()[:300])  # truncated JPEG
    out = tmp_path / "o.json"
    assert _predict(weights, folder, "--out", out) == 1
    err = capsys.readouterr().err
    assert "000000000777.jpg" in err and "1 of 4 images could not be read" in err
    assert len(json.loads(out.read_text())) == 3
    with pytest.raises(SystemExit, match="000000000777.jpg.*--strict"):
        _predict(weights, folder, "--out", out, "--strict")


def test_output_paths_checked_before_any_work(tmp_path):
    img = tmp_path / "1.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    missing_weights = tmp_path / "nope.pth"  # never read: the output check comes first
    with pytest.raises(SystemExit, match="is a directory"):
        _predict(missing_weights, img, "--out", tmp_path)
    with pytest.raises(SystemExit, match="not a directory"):
        _predict(missing_weights, img, "--out", tmp_path / "o.json", "--vis", img)


def test_interrupted_predict_keeps_finished_images(setup, tmp_path, monkeypatch):
    _, data, weights = setup
    real = cli._coco_records
    calls = []

    def records_then_killed(*a):
        calls.append(a)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) during the third image
        return real(*a)

    monkeypatch.setattr(cli, "_coco_records", records_then_killed)
    out = tmp_path / "o.json"
    with pytest.raises(KeyboardInterrupt):
        _predict(weights, data.image_dirs["val2017"], "--boxes", data.det_file, "--out", out)
    got = json.loads(out.read_text())
    first_two = {a[0] for a in calls[:2]}
    dets = json.loads(data.det_file.read_text())
    assert {r["image_id"] for r in got} == first_two
    assert len(got) == sum(d["image_id"] in first_two for d in dets)


def test_killed_predict_keeps_finished_images(setup, tmp_path):
    # A real SIGKILL of a running `vitpose-fast predict` on a folder: the output is valid JSON holding whole images.
    import shutil
    import signal
    import subprocess
    import sys
    import time

    _, data, weights = setup
    src = sorted(data.image_dirs["val2017"].iterdir())[0]
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):  # long enough that the kill lands mid-run
        shutil.copy(src, folder / f"{i + 1:04d}.jpg")
    out = tmp_path / "o.json"
    code = "import sys; from vitpose_fast.cli.commands import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "predict", "--weights", str(weights), "--device", "cpu",
                             "--quiet", "--batch-size", "2", str(folder), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and len(out.read_bytes()) > 10:  # at least one record written
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL  # killed mid-run, not finished
    finally:
        proc.kill()
    got = json.loads(out.read_text())
    assert 0 < len(got) < 400
    ids = sorted(r["image_id"] for r in got)
    assert ids == list(range(1, len(got) + 1))  # one whole-image person per finished image, in order


def test_dataset_option_and_skeleton_for_other_heads(tmp_path, monkeypatch, capsys):
    from vitpose_fast.data.datasets import AIC, MPII

    torch.manual_seed(0)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(64, 48),
                              deconv_channels=(8, 8), num_keypoints=16)
    weights = tmp_path / "k16.pth"
    model.save(weights)
    img = tmp_path / "5.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 50, 3), dtype=np.uint8)).save(img)
    base = ["predict", "--weights", str(weights), "--device", "cpu", "--quiet", str(img), "--out",
            str(tmp_path / "o.json")]
    with pytest.raises(SystemExit, match="--dataset NAME"):
        cli.main(base)
    with pytest.raises(SystemExit, match="aic has 14 keypoints"):
        cli.main(base + ["--dataset", "aic"])
    drawn = []
    monkeypatch.setattr("vitpose_fast.inference.visualize.save_poses", lambda *a, **k: drawn.append(k["skeleton"]))
    assert cli.main(base + ["--dataset", "mpii", "--vis", str(tmp_path / "vis")]) == 0
    assert drawn == [MPII.skeleton]
    assert "no --boxes given: each image is one person" in capsys.readouterr().err
    # A ViTPose+ layout: head 1 is AIC's 14 keypoints, drawn with AIC's skeleton by default.
    plus = Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(64, 48), deconv_channels=(8, 8),
                             extra_heads=(14,))
    plus.save(tmp_path / "plus.pth")
    drawn.clear()
    base[2] = str(tmp_path / "plus.pth")
    assert cli.main(base + ["--dataset-index", "1", "--vis", str(tmp_path / "vis")]) == 0
    assert drawn == [AIC.skeleton]
    assert len(json.loads((tmp_path / "o.json").read_text())[0]["keypoints"]) == 14 * 3


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
