"""Inference past one process on CPU with a random-weight tiny model: Ray Data (``vitpose_fast.ray``, a local
two-CPU cluster started once for the module) and torchrun sharding (two gloo ranks) give exactly the keypoints of
one process, merged without a missing or duplicated image; a run killed part-way resumes without recomputing what
it wrote; unreadable images are reported and skipped as in ``predict``. The two end-to-end CLI tests (Ray, torchrun)
are marked slow: CI runs them with ``pytest -m slow``."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_weights

from vitpose_fast import Model, cli
from vitpose_fast.data.synthetic import make_synthetic_coco
from vitpose_fast.inference.sharding import PARTS, RESULTS, read_rows, shard_indices

BAD = "000000000777.jpg"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale_out")
    data = make_synthetic_coco(root / "coco", {"val2017": 5}, seed=3, image_size=(96, 80), splits=("val2017",))
    folder = root / "images"  # the synthetic images plus one truncated JPEG
    shutil.copytree(data.image_dirs["val2017"], folder)
    first = sorted(folder.iterdir())[0]
    (folder / BAD).write_bytes(first.read_bytes()[:300])
    torch.manual_seed(0)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=64, num_heads=2, res=(64, 48), deconv_channels=(16, 16))
    # Peaked heatmaps: at init they are nearly flat (~1e-7), where the last bits of another batch grouping (Ray's
    # actors see other crops together) can move an argmax.
    randomize_weights(model)
    weights = root / "tiny.pth"
    model.save(weights)
    return root, data, folder, weights


def _good_images(folder):
    return sorted(p for p in folder.iterdir() if p.name != BAD)


def _boxes(data, images):
    """Per image, its detections as [N, 5] xywh + score (the file's own matching: by image id)."""
    dets = json.loads(data.det_file.read_text())
    return [np.array([d["bbox"] + [d["score"]] for d in dets if d["image_id"] == int(p.stem)]).reshape(-1, 5)
            for p in images]


def _cli_predict(weights, *argv):
    return cli.main(["predict", "--weights", str(weights), "--device", "cpu", "--quiet", "--batch-size", "4",
                     "--precision", "fp32", *map(str, argv)])


def test_shard_indices_split_sorted_paths_evenly():
    paths = [f"{c}.jpg" for c in "dbeac"]
    shares = [[paths[i] for i in shard_indices(paths, r, 2)] for r in range(2)]
    assert shares == [["a.jpg", "c.jpg", "e.jpg"], ["b.jpg", "d.jpg"]]
    with pytest.raises(ValueError, match="rank 2"):
        shard_indices(paths, 2, 2)


# ------------------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_pose_predictor_in_map_batches_equals_model_predict(setup, cluster):
    from vitpose_fast.ray import PosePredictor

    root, data, _, weights = setup
    images = sorted(data.image_dirs["val2017"].iterdir())
    boxes = _boxes(data, images)
    boxes[1] = np.zeros((0, 5))  # an image without persons
    by_path = {str(p): b for p, b in zip(images, boxes)}

    def add_boxes(batch):
        out = np.empty(len(batch["path"]), dtype=object)
        for i, p in enumerate(batch["path"]):
            out[i] = by_path[str(Path(p))]
        batch["boxes"] = out
        return batch

    ds = cluster.data.read_images([str(p) for p in images], include_paths=True, mode="RGB").map_batches(add_boxes)
    rows = ds.map_batches(PosePredictor, fn_constructor_kwargs=dict(weights=str(weights), device="cpu", batch_size=4,
                                                                     box_format="xywh"),
                          batch_size=2, compute=cluster.data.ActorPoolStrategy(size=2), num_cpus=0.5).take_all()
    assert sorted(str(Path(r["path"])) for r in rows) == [str(p) for p in images]
    got = {str(Path(r["path"])): r for r in rows}
    expected = Model.from_pretrained(str(weights)).predict([str(p) for p in images], boxes, box_format="xywh",
                                                           batch_size=4, precision="fp32")
    for p, persons in zip(images, expected):
        row = got[str(p)]
        assert row["error"] == ""
        assert row["keypoints"].shape == (len(persons), 17, 3) and row["scores"].shape == (len(persons),)
        if persons:
            np.testing.assert_array_equal(row["keypoints"], np.stack([q["keypoints"] for q in persons]))
            np.testing.assert_array_equal(row["boxes"], np.stack([q["box"] for q in persons]))
            np.testing.assert_array_equal(row["scores"], [q["score"] for q in persons])
    assert sum(len(p) for p in expected) > len(images)  # several persons per image on the whole


@pytest.mark.slow  # two Ray runs / two torchrun launches: ~30 s each on 2 busy cores
def test_ray_engine_cli_writes_parts_merges_reports_bad_images_and_resumes(setup, cluster, tmp_path, capsys):
    root, data, folder, weights = setup
    out = tmp_path / "ray_out"
    good = _good_images(folder)
    # A first run over two of the images stands for a job stopped part-way.
    assert _cli_predict(weights, good[0], good[1], "--boxes", data.det_file, "--engine", "ray", "--workers", "2",
                        "--out", out) == 0
    first_parts = {f.name: f.read_bytes() for f in (out / PARTS).iterdir()}
    # The full folder, JSON writer this time: only the other images are computed, the bad one reported.
    assert _cli_predict(weights, folder, "--boxes", data.det_file, "--engine", "ray", "--workers", "2",
                        "--format", "json", "--out", out) == 1
    err = capsys.readouterr().err
    assert BAD in err and "1 of 6 images could not be read" in err
    new = [f for f in (out / PARTS).iterdir() if f.name not in first_parts]
    assert all(f.suffix == ".json" for f in new)
    assert {f.name: f.read_bytes() for f in (out / PARTS).iterdir() if f.name in first_parts} == first_parts
    new_paths = sorted(Path(json.loads(line)["path"]).name for f in new for line in f.read_text().splitlines())
    assert new_paths == sorted([p.name for p in good[2:]] + [BAD])
    # Every good image once, with exactly the keypoints of one process (Model.predict: the same path as Ray's).
    records = json.loads((out / RESULTS).read_text())
    boxes = _boxes(data, good)
    expected = Model.from_pretrained(str(weights)).predict([str(p) for p in good], boxes, box_format="xywh",
                                                           batch_size=4, precision="fp32")
    want = [(p.name, q["keypoints"]) for p, ps in zip(good, expected) for q in ps]
    assert len(records) == len(want) == sum(len(b) for b in boxes)
    for r, (name, kps) in zip(records, want):  # in path order, then box order
        assert r["file_name"] == name
        np.testing.assert_array_equal(r["keypoints"], kps.reshape(-1))
    # `merge` rebuilds the same file from the parts later.
    os.remove(out / RESULTS)
    assert cli.main(["merge", str(out)]) == 1  # the bad image still has no results
    assert json.loads((out / RESULTS).read_text()) == records


# ------------------------------------------------------------------------------------------------ torchrun
def _run(argv, nproc=None, env=None, timeout=240):
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                         str(nproc)]
    cmd = [sys.executable, *launcher, "-m", "vitpose_fast.cli", "predict", *map(str, argv)]
    return subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow  # two Ray runs / two torchrun launches: ~30 s each on 2 busy cores
def test_two_torchrun_ranks_equal_one_process_and_resume(setup, tmp_path, capsys):
    root, data, folder, weights = setup
    common = ["--weights", weights, "--device", "cpu", "--quiet", "--batch-size", "4", "--precision", "fp32", folder,
              "--boxes", data.det_file]
    assert _cli_predict(weights, folder, "--boxes", data.det_file, "--out", tmp_path / "one.json") == 1
    one = json.loads((tmp_path / "one.json").read_text())
    out = tmp_path / "shards"
    proc = _run(common + ["--out", out], nproc=2)
    assert proc.returncode != 0 and BAD in proc.stderr  # the bad image is reported (and fails the run's status)
    assert "1 of 6 images could not be read" in proc.stderr
    assert json.loads((out / RESULTS).read_text()) == one
    shards = sorted((out / PARTS).glob("shard-*-of-00002.jsonl"))
    assert len(shards) == 2
    paths = [r["path"] for r in read_rows(out)]
    assert sorted(paths) == sorted(set(paths)) == [str(p) for p in _good_images(folder)]

    # Rank 1 preempted: its last image lost, a torn line left. The rerun recomputes only that image.
    rank0 = shards[0].read_bytes()
    lines = shards[1].read_bytes().splitlines(keepends=True)
    shards[1].write_bytes(b"".join(lines[:-1]) + lines[-1][:20])
    os.remove(out / RESULTS)
    proc = _run(common + ["--out", out], nproc=2)
    assert "rank 0: 3 images already have results" in proc.stderr  # 3 good of its 3 (the bad one is retried)
    assert f"rank 1: {len(lines) - 1} images already have results" in proc.stderr
    assert shards[0].read_bytes() == rank0
    assert shards[1].read_bytes().splitlines(keepends=True)[:-1] == lines[:-1]
    assert json.loads((out / RESULTS).read_text()) == one


def test_killed_run_restarts_without_recomputing(setup, tmp_path):
    # A real SIGKILL of a one-rank sharded run (what torchrun starts, WORLD_SIZE=1), then the same command again.
    root, data, folder, weights = setup
    many = tmp_path / "many"
    many.mkdir()
    src = _good_images(folder)[0]
    for i in range(300):  # long enough that the kill lands mid-run
        shutil.copy(src, many / f"{i + 1:04d}.jpg")
    out = tmp_path / "out"
    argv = ["--weights", weights, "--device", "cpu", "--quiet", "--batch-size", "2", many, "--out", out]
    env = dict(os.environ, OMP_NUM_THREADS="1", RANK="0", WORLD_SIZE="1")
    cmd = [sys.executable, "-m", "vitpose_fast.cli", "predict", *map(str, argv)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = out / PARTS / "shard-00000-of-00001.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if shard.exists() and shard.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        proc.kill()
    before = shard.read_bytes()
    finished = before.count(b"\n")
    assert 0 < finished < 300
    assert not (out / RESULTS).exists()
    again = _run(argv, env={"RANK": "0", "WORLD_SIZE": "1"})
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{finished} images already have results" in again.stderr
    after = shard.read_bytes()
    assert after[: before.rfind(b"\n") + 1] == before[: before.rfind(b"\n") + 1]  # finished rows kept as written
    names = [Path(r["path"]).name for r in read_rows(out)]
    assert sorted(names) == sorted(set(names)) and len(names) == 300
    records = json.loads((out / RESULTS).read_text())
    assert [r["image_id"] for r in records] == list(range(1, 301))
    assert len({tuple(r["keypoints"]) for r in records}) == 1  # 300 copies of one image: one answer


def test_sharded_output_errors(setup, tmp_path):
    _, _, folder, weights = setup
    with pytest.raises(SystemExit, match="--vis is for one process, not with --engine ray"):
        _cli_predict(weights, folder, "--engine", "ray", "--out", tmp_path / "o", "--vis", tmp_path / "v")
    with pytest.raises(SystemExit, match="--strict is not for --engine ray"):
        _cli_predict(weights, folder, "--engine", "ray", "--out", tmp_path / "o", "--strict")
    with pytest.raises(SystemExit, match="--out is a folder"):
        _cli_predict(weights, folder, "--engine", "ray", "--out", tmp_path / "file.json")
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="exists and is not a directory"):
        _cli_predict(weights, folder, "--engine", "ray", "--out", tmp_path / "file")
    with pytest.raises(SystemExit, match="no parts/ folder"):
        cli.main(["merge", str(tmp_path)])


def test_decode_images_reads_bytes_as_load_image_and_marks_bad_ones(tmp_path):
    from PIL import Image

    from vitpose_fast.inference.pipeline import load_image
    from vitpose_fast.ray import decode_images

    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees to display upright
    Image.fromarray(np.random.randint(0, 255, (20, 30, 3), np.uint8)).save(rotated, exif=exif)
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.random.randint(0, 65535, (12, 9), np.uint16)).save(gray16)
    paths = [str(rotated), str(gray16), "broken.jpg"]
    batch = {"bytes": np.array([rotated.read_bytes(), gray16.read_bytes(), rotated.read_bytes()[:100]], dtype=object),
             "path": np.array(paths, dtype=object)}
    out = decode_images(batch)
    assert set(out) == {"path", "image", "error"}
    for i in range(2):
        assert out["error"][i] == ""
        np.testing.assert_array_equal(out["image"][i], load_image(paths[i]))
    assert out["image"][0].shape == (30, 20, 3)  # upright
    assert "broken.jpg" in out["error"][2]
