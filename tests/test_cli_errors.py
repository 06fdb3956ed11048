"""A new user's mistakes at the command line: each is one line on stderr and a non-zero exit (never a traceback,
never a quiet wrong answer), and the good part of the run is kept."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_fast import cli
from vitpose_fast import Model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    torch.manual_seed(0)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(64, 48), deconv_channels=(8, 8))
    weights = root / "tiny.pth"
    model.save(weights)
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for i in (1, 2, 3):
        Image.fromarray(rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return root, weights, images


def _fails(argv, match, capsys):
    """main() exits with one line (and no traceback) that matches ``match``."""
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    message = info.value.code if isinstance(info.value.code, str) else err.strip()
    assert info.value.code not in (0, None)
    assert "\n" not in message.strip() and "Traceback" not in err, message
    assert message.startswith("vitpose-fast"), message
    import re

    assert re.search(match, message), message
    return message


def _predict(weights, *argv):
    return ["predict", "--weights", weights, "--device", "cpu", "--quiet", "--precision", "fp32", *argv]


def test_dataset_index_the_model_does_not_have(tiny, tmp_path, capsys):
    _, weights, images = tiny
    _fails(_predict(weights, images, "--dataset-index", "3", "--out", tmp_path / "o.json"),
           r"--dataset-index 3: this model has 1 expert\(s\) and 1 head\(s\).*3 ap10k", capsys)
    _fails(_predict(weights, images, "--dataset-index", "-1", "--out", tmp_path / "o.json"),
           r"--dataset-index: must be >= 0", capsys)


def test_a_nan_detection_is_skipped_and_counted_not_its_image(tiny, tmp_path, capsys):
    _, weights, images = tiny
    dets = [{"image_id": 1, "bbox": [5, 5, 30, 40], "score": 0.9},
            {"image_id": 1, "bbox": [float("nan"), 5, 30, 40], "score": 0.8},
            {"image_id": 2, "bbox": [3, 4, 20, 30], "score": 0.7}]
    (tmp_path / "d.json").write_text(json.dumps(dets))  # json writes NaN, as numpy-made files do
    assert cli.main([str(a) for a in _predict(weights, images, "--boxes", tmp_path / "d.json", "--no-flip",
                                              "--out", tmp_path / "o.json")]) == 0
    err = capsys.readouterr().err
    assert "1 with NaN or infinite numbers" in err and "could not be read" not in err
    got = json.loads((tmp_path / "o.json").read_text())
    assert sorted((r["image_id"], r["score"]) for r in got) == [(1, 0.9), (2, 0.7)]


def test_vis_names_do_not_collide(tiny, tmp_path):
    _, weights, images = tiny
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.open(images / "1.png").save(folder / "a.png")
    Image.open(images / "2.png").convert("RGB").save(folder / "a.jpg")
    assert cli.main([str(a) for a in _predict(weights, folder, "--no-flip", "--out", tmp_path / "o.json",
                                              "--vis", tmp_path / "vis")]) == 0
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["a.jpg.png", "a.png.png"]


def test_an_absurd_box_fails_its_image_and_the_others_are_written(tiny, tmp_path, capsys):
    _, weights, images = tiny
    dets = [{"image_id": 1, "bbox": [0, 0, 1e9, 1e9], "score": 0.9},
            {"image_id": 2, "bbox": [3, 4, 20, 30], "score": 0.7},
            {"image_id": 3, "bbox": [1, 1, 30, 30], "score": 0.6}]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    rc = cli.main([str(a) for a in _predict(weights, images, "--boxes", tmp_path / "d.json", "--no-flip",
                                            "--out", tmp_path / "o.json")])
    assert rc == 1
    assert "more than 8x the 50x60 image" in capsys.readouterr().err
    assert sorted(r["image_id"] for r in json.loads((tmp_path / "o.json").read_text())) == [2, 3]


def test_weights_that_cannot_be_loaded(tiny, tmp_path, capsys, monkeypatch):
    _, weights, images = tiny
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    _fails(_predict(text, images, "--out", tmp_path / "o.json"), r"cannot read checkpoint .*notes\.pth", capsys)
    # A typo in a path under an existing folder is not looked up on the Hugging Face Hub.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    import vitpose_fast.model.hub as hub

    monkeypatch.setattr(hub, "resolve_hub_id", lambda src: pytest.fail(f"{src} looked up on the Hub"))
    _fails(_predict("runs/tiny/bset.pth", images, "--out", tmp_path / "o.json"),
           r"'runs/tiny/bset.pth' does not exist", capsys)
    _fails(_predict(weights, images, "--model", "vitpose_s", "--out", tmp_path / "o.json"),
           r"does not fit", capsys)


def test_detection_files_of_the_wrong_shape(tiny, tmp_path, capsys):
    _, weights, images = tiny
    cases = {
        "ann.json": ({"images": [], "annotations": []}, r"looks like a COCO annotation file"),
        "nobox.json": ([{"image_id": 1, "score": 0.5}], r"entry 0 is not a detection with 'bbox'"),
        "short.json": ([{"image_id": 1, "bbox": [1, 2, 3], "score": 0.5}], r"bbox must be \[x, y, w, h\]"),
        "text.json": ([{"image_id": 1, "bbox": [1, 2, 3, "4"], "score": 0.5}], r"bbox must be a number"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        _fails(_predict(weights, images, "--boxes", tmp_path / name, "--out", tmp_path / "o.json"), match, capsys)


def test_device_and_outputs(tiny, tmp_path, capsys, monkeypatch):
    _, weights, images = tiny
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _fails(["predict", "--weights", weights, "--device", "cuda", images, "--out", tmp_path / "o.json"],
           r"--device cuda: this torch has no usable CUDA device", capsys)
    _fails(_predict(weights, images, "--device", "gpu0", "--out", tmp_path / "o.json"), r"not a torch device", capsys)
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    _fails(_predict(weights, images, "--out", blocker / "o.json"), r"cannot create a file there", capsys)
    _fails(_predict(weights, images, "--out", tmp_path / "o.json", "--vis", blocker / "vis"),
           r"not a writable directory", capsys)
    _fails(["export", "--weights", weights, "--onnx", blocker / "m.onnx"], r"cannot create a file there", capsys)


def test_eval_with_a_file_that_is_not_annotations(tiny, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    _, weights, images = tiny
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]))
    _fails(["eval", "--weights", weights, "--device", "cpu", "--ann", tmp_path / "dets.json", "--images", images],
           r"--ann .*dets.json: not a COCO keypoints annotation file", capsys)
    _fails(["eval", "--weights", weights, "--device", "cpu", "--ann", tmp_path / "none.json", "--images", images],
           r"none.json.* does not exist", capsys)


def _clip(path, frames=3):
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (48, 40))
    for i in range(frames):
        writer.write(np.full((40, 48, 3), 40 * i, np.uint8))
    writer.release()
    return path


def test_video_mistakes(tiny, tmp_path, capsys):
    _, weights, _ = tiny
    clip = _clip(tmp_path / "a.avi")
    dets = [{"image_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    _fails(_predict(weights, clip, "--boxes", tmp_path / "dets.json", "--out", tmp_path / "o.jsonl"),
           r"--boxes: .*dets.json is a COCO file .*per-frame boxes", capsys)
    _fails(_predict(weights, clip, _clip(tmp_path / "b.avi"), "--out", tmp_path / "o.json"),
           r"predict takes one video .* per run", capsys)


def test_detector_module_in_the_working_directory(tiny, tmp_path, monkeypatch):
    _, weights, images = tiny
    (tmp_path / "my_dets_here.py").write_text(
        "import numpy as np\n"
        "def detect(image):\n"
        "    return np.array([[2.0, 3.0, 30.0, 40.0]]), np.array([0.8])\n")
    monkeypatch.chdir(tmp_path)
    # As the console script: no "" (the working directory) on sys.path, which `python -m pytest` adds.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_dets_here", raising=False)
    assert cli.main([str(a) for a in _predict(weights, images, "--detector", "my_dets_here:detect", "--no-flip",
                                              "--out", tmp_path / "o.json")]) == 0
    got = json.loads((tmp_path / "o.json").read_text())
    assert len(got) == 3 and all(r["bbox"] == [2.0, 3.0, 29.0, 38.0] for r in got)


def test_read_only_arrays_do_not_warn():
    torch.manual_seed(0)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(64, 48), deconv_channels=(8, 8))
    image = np.zeros((40, 30, 3), np.uint8)
    image.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        persons = model.predict(image, flip_test=False)
    assert len(persons) == 1 and np.isfinite(persons[0]["keypoints"]).all()


# ------------------------------------------------------------------------------------------------ training
def _train(argv, monkeypatch, rank="0"):
    from vitpose_fast.training.train import run

    monkeypatch.setenv("RANK", rank)
    with pytest.raises(SystemExit) as info:
        run([str(a) for a in argv])
    return info.value.code


@pytest.mark.parametrize("rank", ["0", "1"])
def test_train_mistakes_are_one_line_from_rank_0(tmp_path, monkeypatch, capsys, rank):
    from vitpose_fast.data.synthetic import make_synthetic_coco

    data = make_synthetic_coco(tmp_path / "synth", {"train2017": 2, "val2017": 1}, seed=1, image_size=(64, 48))
    base = ["--preset", "tiny_synthetic", "--device", "cpu", "--out", tmp_path / "run", "--no-progress", "--batch-size", "1",
            "--workers", "0"]
    junk = tmp_path / "junk.pth"
    junk.write_text("junk")
    cases = [
        (["--data-root", tmp_path / "nope"], r"--data-root .*nope: no such folder"),
        (["--data-root", data.root, "--init", junk], r"cannot read checkpoint .*junk\.pth"),
        (["--data-root", data.root, "--resume", junk], r"junk\.pth"),
        (["--data-root", data.root, "--resume", tmp_path / "missing.pth"], r"missing\.pth"),
    ]
    for argv, match in cases:
        code = _train(base + argv, monkeypatch, rank)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if rank == "0":
            import re

            assert isinstance(code, str) and "\n" not in code and code.startswith("train: ") and re.search(match, code)
        else:
            assert code == 1  # the other ranks leave quietly: one message per job


def test_train_command_runs_the_training_script(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--preset", "tiny_synthetic", "--device", "cpu", "--data-root", str(tmp_path / "nope")])
    assert info.value.code == f"vitpose-fast: train: --data-root {tmp_path / 'nope'}: no such folder (expected the " \
        "COCO layout: annotations/, train2017/, val2017/)"
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--preset", "no_such_preset"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_console_script_prints_one_line(tiny, tmp_path):
    # The real process: stderr holds exactly one line, the exit status is 1.
    _, weights, images = tiny
    env = {k: v for k, v in os.environ.items() if k != "VITPOSE_FAST_TRACEBACK"}
    proc = subprocess.run([sys.executable, "-m", "vitpose_fast.cli", "predict", "--weights", str(tmp_path / "x.pth"),
                           str(images), "--out", str(tmp_path / "o.json")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("vitpose-fast: ") and "x.pth" in proc.stderr


def test_eval_without_pycocotools_names_the_install(tiny, tmp_path, capsys, monkeypatch):
    _, weights, images = tiny
    (tmp_path / "ann.json").write_text("{}")
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # absent, as on the GPU image
    _fails(["eval", "--weights", weights, "--device", "cpu", "--ann", tmp_path / "ann.json", "--images", images],
           r"need pycocotools \(pip install pycocotools\)", capsys)
