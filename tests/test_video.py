"""Video in (OpenCV), JSON lines and an annotated video out, on a short clip made from synthetic frames."""

import json
import sys
import types

import numpy as np
import pytest
import torch

from vitpose_fast import cli
from vitpose_fast.data.synthetic import make_synthetic_coco
from vitpose_fast import Model
from vitpose_fast.inference.video import VideoReader, is_video_source, load_frame_boxes, predict_video
from vitpose_fast.inference.visualize import draw_poses

cv2 = pytest.importorskip("cv2")

FPS = 5.0
N_FRAMES = 6


def read_all(path):
    """Every frame of a video as RGB, read with OpenCV directly (independently of VideoReader)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    data = make_synthetic_coco(root / "coco", {"val2017": N_FRAMES}, seed=11, image_size=(128, 96),
                               splits=("val2017",), image_format="png")
    coco = json.loads(data.ann_files["val2017"].read_text())
    path = root / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (128, 96))
    gt = {}
    for i, info in enumerate(coco["images"]):
        bgr = cv2.imread(str(data.image_dirs["val2017"] / info["file_name"]))
        writer.write(bgr)
        gt[i] = [[x, y, x + w - 1, y + h - 1, 0.5 + 0.1 * k]
                 for k, (x, y, w, h) in enumerate(a["bbox"] for a in coco["annotations"] if a["image_id"] == info["id"])]
    writer.release()
    (root / "boxes.json").write_text(json.dumps({str(k): v for k, v in gt.items()}))
    torch.manual_seed(3)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=64, num_heads=2, res=(64, 48),
                              deconv_channels=(16, 16)).eval()
    weights = root / "tiny.pth"
    model.save(weights)
    return root, path, gt, model, weights


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reader_frames_times_and_sources(clip):
    _, path, _, _, _ = clip
    with VideoReader(path) as reader:
        assert reader.fps == pytest.approx(FPS) and reader.num_frames == N_FRAMES
        assert (reader.width, reader.height) == (128, 96)
        items = list(reader)
    assert [i for i, _, _ in items] == list(range(N_FRAMES))
    assert [t for _, t, _ in items] == pytest.approx([i / FPS for i in range(N_FRAMES)])
    for (_, _, frame), ref in zip(items, read_all(path)):
        np.testing.assert_array_equal(frame, ref)
    assert is_video_source("clip.MP4") and is_video_source("0") and is_video_source("rtsp://cam/1")
    assert not is_video_source("img.png") and not is_video_source("images/")
    with pytest.raises(FileNotFoundError):
        VideoReader(path.with_name("missing.mp4"))
    bad = path.with_name("bad.mp4")
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot open video"):
        VideoReader(bad)


def test_cli_video_with_boxes_writes_jsonl_and_annotated_video(clip, capsys):
    root, path, gt, model, weights = clip
    out, vis = root / "poses.jsonl", root / "vis.mp4"
    rc = cli.main(["predict", str(path), "--weights", str(weights), "--device", "cpu", "--quiet", "--precision", "fp32",
                   "--boxes", str(root / "boxes.json"), "--box-thr", "0.55", "--frames-per-batch", "4",
                   "--out", str(out), "--vis", str(vis)])
    assert rc == 0 and "frames/s" in capsys.readouterr().out
    lines = read_jsonl(out)
    assert [d["frame"] for d in lines] == list(range(N_FRAMES))
    assert [d["time"] for d in lines] == pytest.approx([i / FPS for i in range(N_FRAMES)])
    frames = read_all(path)
    for d, frame in zip(lines, frames):
        kept = np.array([b for b in gt[d["frame"]] if b[4] >= 0.55]).reshape(-1, 5)
        assert len(d["persons"]) == len(kept)
        # Same as predicting the independently decoded frame with the same boxes.
        ref = model.predict(frame, kept, precision="fp32")
        for p, r in zip(d["persons"], ref):
            np.testing.assert_allclose(p["keypoints"], r["keypoints"], atol=2e-3)
            np.testing.assert_allclose(p["box"], r["box"], atol=2e-3)
            assert p["score"] == pytest.approx(r["score"])
    drawn = read_all(vis)
    assert len(drawn) == N_FRAMES and drawn[0].shape == frames[0].shape
    # The annotated frames are the drawn skeletons (up to the codec), not the plain frames.
    for d, frame, out_frame in zip(lines, frames, drawn):
        persons = [{"keypoints": np.array(p["keypoints"]), "box": p["box"]} for p in d["persons"]]
        luma = np.array([0.299, 0.587, 0.114])  # thin coloured lines lose their chroma in 4:2:0 video
        drawn_delta = (np.asarray(draw_poses(frame, persons)) - frame.astype(float)) @ luma
        seen_delta = (out_frame.astype(float) - frame) @ luma
        assert np.abs(drawn_delta).max() > 0 if persons else np.abs(drawn_delta).max() == 0
        if persons:
            assert np.corrcoef(drawn_delta.ravel(), seen_delta.ravel())[0, 1] > 0.8


def test_detector_on_video_equals_boxes(clip, tmp_path, monkeypatch):
    root, path, gt, model, _ = clip
    frames = iter(range(N_FRAMES))

    def detector(image):  # frames arrive in order: return that frame's ground-truth boxes
        b = np.array(gt[next(frames)]).reshape(-1, 5)
        return b[:, :4], b[:, 4]

    a, b = tmp_path / "det.jsonl", tmp_path / "boxes.jsonl"
    stats = predict_video(model, path, a, detector=detector, det_thr=0.0, frames_per_batch=4, progress=False)
    assert stats["frames"] == N_FRAMES and stats["persons"] == sum(len(v) for v in gt.values())
    predict_video(model, path, b, boxes=load_frame_boxes(root / "boxes.json"), progress=False, max_frames=4)
    la, lb = read_jsonl(a), read_jsonl(b)
    assert len(lb) == 4
    for x, y in zip(la, lb):
        assert x == y


def test_whole_frame_default_and_boxes_file_formats(clip, tmp_path):
    _, path, _, model, _ = clip
    out = tmp_path / "whole.jsonl"
    predict_video(model, path, out, progress=False, max_frames=2, flip_test=False)
    lines = read_jsonl(out)
    assert len(lines) == 2 and all(len(d["persons"]) == 1 for d in lines)
    assert lines[0]["persons"][0]["box"] == [0.0, 0.0, 127.0, 95.0]
    (tmp_path / "l.json").write_text(json.dumps([[[1, 2, 30, 40]], []]))
    (tmp_path / "l.jsonl").write_text('{"frame": 3, "boxes": [[1, 2, 30, 40, 0.7]]}\n')
    assert load_frame_boxes(tmp_path / "l.json")[0].tolist() == [[1, 2, 30, 40, 1.0]]
    assert load_frame_boxes(tmp_path / "l.jsonl")[3].tolist() == [[1, 2, 30, 40, 0.7]]
    (tmp_path / "bad.json").write_text(json.dumps({"0": [[1, 2, 3]]}))
    with pytest.raises(ValueError, match=r"\[N, 4\] or \[N, 5\]"):
        load_frame_boxes(tmp_path / "bad.json")


def test_cli_video_with_a_detector(clip, tmp_path, monkeypatch, capsys):
    _, path, _, _, weights = clip
    module = types.ModuleType("video_dets")
    module.detect = lambda image: (np.array([[10.0, 5.0, 60.0, 90.0]]), np.array([0.9]))
    monkeypatch.setitem(sys.modules, "video_dets", module)
    out = tmp_path / "d.jsonl"
    assert cli.main(["predict", str(path), "--weights", str(weights), "--device", "cpu", "--quiet", "--no-flip",
                     "--detector", "video_dets:detect", "--max-frames", "3", "--out", str(out)]) == 0
    lines = read_jsonl(out)
    assert [d["frame"] for d in lines] == [0, 1, 2]
    assert all(d["persons"][0]["box"] == [10.0, 5.0, 60.0, 90.0] for d in lines)
    with pytest.raises(SystemExit, match="either --boxes or --detector"):
        cli.main(["predict", str(path), "--weights", str(weights), "--boxes", "b.json",
                  "--detector", "video_dets:detect", "--out", str(out)])


def test_cli_video_tracking_smoothing_and_detect_every(clip, tmp_path, monkeypatch, capsys):
    _, path, _, _, weights = clip
    calls = []
    module = types.ModuleType("video_track_dets")

    def detect(image):
        calls.append(1)
        return np.array([[10.0, 5.0, 60.0, 90.0], [70.0, 10.0, 120.0, 90.0]]), np.array([0.9, 0.8])

    module.detect = detect
    monkeypatch.setitem(sys.modules, "video_track_dets", module)
    out = tmp_path / "t.jsonl"
    assert cli.main(["predict", str(path), "--weights", str(weights), "--device", "cpu", "--quiet", "--no-flip",
                     "--detector", "video_track_dets:detect", "--track", "--smooth", "one_euro",
                     "--detect-every", "4", "--out", str(out)]) == 0
    assert "persons/s" in capsys.readouterr().out
    lines = read_jsonl(out)
    assert [d["frame"] for d in lines] == list(range(N_FRAMES))
    assert len(calls) == len(range(0, N_FRAMES, 4))  # the detector ran on frames 0 and 4 only
    assert all(d["keypoint_set"] == "coco" for d in lines)
    for d in lines:
        ids = [p["track_id"] for p in d["persons"]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i >= 1 for i in ids)
    assert sorted(p["track_id"] for p in lines[0]["persons"]) == [1, 2]
    with pytest.raises(SystemExit, match="detect_every"):  # the library's check: needs a detector or boxes
        cli.main(["predict", str(path), "--weights", str(weights), "--device", "cpu", "--quiet",
                  "--detect-every", "2", "--out", str(out)])
    with pytest.raises(SystemExit):  # the option's own check, one line
        cli.main(["predict", str(path), "--weights", str(weights), "--device", "cpu", "--quiet",
                  "--detect-every", "0", "--out", str(out)])
    assert "--detect-every: must be >= 1, got 0" in capsys.readouterr().err
