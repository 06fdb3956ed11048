"""Tracking (ids through crossings, gaps, exits), One-Euro smoothing, detect-every-N, whole-body drawing and the
ground-truth tracking benchmark, on scripted scenes and the synthetic video (CPU, no model or a tiny one)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import load_script
from vitpose_fast.data.datasets import COCO, COCO_WHOLEBODY
from vitpose_fast.data.synthetic import _pose
from vitpose_fast.data.synthetic_video import make_synthetic_video, synthetic_video_ground_truth
from vitpose_fast.inference.pipeline import ImageResult
from vitpose_fast.inference.smoothing import KeypointSmoother, OneEuroConfig, OneEuroFilter
from vitpose_fast.inference.track_eval import keypoint_lag, read_mot
from vitpose_fast.inference.tracking import PoseTracker, TrackerConfig, box_iou

pytest.importorskip("scipy")


def crossing_scene(seed, frames=40, speed=2.5):
    """Two walkers (limbs swinging between two random poses) crossing on one line, both undetected on the 3
    frames where they meet; boxes around the keypoints jittered by 3 % of the height, as a detector's."""
    rng = np.random.default_rng(seed)
    poses = {1: (_pose(rng), _pose(rng)), 2: (_pose(rng), _pose(rng))}
    cross = (frames - 1) // 2
    scene = []
    for f in range(frames):
        people = {}
        for pid, x, h, period in ((1, 60 + speed * f, 100, 14), (2, 60 + speed * (frames - 1 - f), 95, 17)):
            a, b = poses[pid]
            k = (a + (b - a) * (0.5 - 0.5 * np.cos(2 * np.pi * f / period))) * h + [x, 120]
            k = k + rng.normal(0, 1.0, k.shape)
            box = np.concatenate([k.min(0) - 5, k.max(0) + 5]) + rng.normal(0, 0.03 * h, 4)
            people[pid] = (np.concatenate([k, np.full((17, 1), 0.9)], 1), np.concatenate([box, [0.9]]))
        scene.append({} if cross - 1 <= f <= cross + 1 else people)
    return scene


def track_scene(scene, tracker, seed=1):
    """Run ``tracker`` with each frame's persons in a random order -> {frame: {true id: track id}}."""
    rng = np.random.default_rng(seed)
    out = {}
    for f, people in enumerate(scene):
        order = rng.permutation(sorted(people)) if people else []
        boxes = np.array([people[p][1] for p in order]).reshape(-1, 5)
        kps = np.array([people[p][0] for p in order]).reshape(-1, 17, 3)
        ids = tracker.update(boxes, kps if len(order) else None)
        assert len(set(ids.tolist())) == len(ids)  # never shared within a frame
        out[f] = {int(p): int(i) for p, i in zip(order, ids)}
    return out


def ids_of(tracks, person):
    return {v[person] for v in tracks.values() if person in v}


def test_ids_stable_through_a_crossing_with_a_3_frame_gap_in_shuffled_order():
    swapped_by_iou = 0
    for seed in range(12):
        scene = crossing_scene(seed)
        seen = [p for p in scene if p]
        ious = [box_iou(p[1][1][None, :4], p[2][1][None, :4])[0, 0] for p in seen]
        assert max(ious) > 0.4  # the boxes overlap heavily on both sides of the gap
        tracks = track_scene(scene, PoseTracker(TrackerConfig(), COCO.sigmas), seed=seed)
        one, two = ids_of(tracks, 1), ids_of(tracks, 2)
        assert len(one) == 1 and len(two) == 1 and one != two, seed
        iou_only = track_scene(scene, PoseTracker(TrackerConfig(iou_weight=1.0)), seed=seed)
        swapped_by_iou += len(ids_of(iou_only, 1)) > 1
    assert swapped_by_iou > 0  # boxes and motion alone do not settle this scene: the keypoints do


def test_distinct_people_get_distinct_ids_and_short_gaps_keep_them():
    truth = synthetic_video_ground_truth(100)
    bench = load_script("benchmarks/bench_tracking.py")
    poses = bench.simulated_poses(truth, 0.015)
    tracker = PoseTracker(TrackerConfig(), COCO.sigmas)
    seen = {}
    for det, kps, owners in poses:
        ids = tracker.update(det, kps)
        assert len(set(ids.tolist())) == len(ids)
        for pid, tid in zip(owners, ids):
            seen.setdefault(pid, set()).add(int(tid))
    # The still person (a 2-frame gap) and the walkers (id 2 has a 3-frame gap) keep one id each.
    for pid in (1, 2, 3):
        assert len(seen[pid]) == 1
    assert len({next(iter(seen[p])) for p in (1, 2, 3)}) == 3


def test_a_person_who_leaves_and_comes_back_gets_a_new_id():
    truth = synthetic_video_ground_truth(100)
    gone = [f for f, p in enumerate(truth.frames) if 4 not in p]
    assert gone[-1] - gone[0] + 1 > TrackerConfig().max_age  # away for longer than a lost track is kept
    bench = load_script("benchmarks/bench_tracking.py")
    tracker = PoseTracker(TrackerConfig(), COCO.sigmas)
    before, after, others = set(), set(), set()
    for f, (det, kps, owners) in enumerate(bench.simulated_poses(truth, 0.015)):
        for pid, tid in zip(owners, tracker.update(det, kps)):
            (before if f < gone[0] else after).add(int(tid)) if pid == 4 else others.add(int(tid))
    assert len(before) == 1 and len(after) == 1
    assert before != after and not (after & others) and not (before & others)


def test_boxes_of_one_frame_without_keypoints_and_bad_input():
    tracker = PoseTracker()
    a = tracker.update(np.array([[0, 0, 10, 20], [50, 0, 60, 20.0]]))
    b = tracker.update(np.array([[51, 0, 61, 20], [1, 0, 11, 20.0]]))
    assert a.tolist() == [1, 2] and b.tolist() == [2, 1]
    assert tracker.update(np.zeros((0, 5))).tolist() == []
    with pytest.raises(ValueError, match=r"\[N, 4\] or \[N, 5\]"):
        tracker.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="keypoints must be"):
        tracker.update(np.zeros((2, 4)), np.zeros((3, 17, 3)))


# ------------------------------------------------------------------------------------------------ smoothing
def test_one_euro_reduces_a_still_persons_jitter():
    rng = np.random.default_rng(0)
    truth = np.array([[100.0, 50.0], [120.0, 80.0]])
    smoother = KeypointSmoother()
    raw, out = [], []
    for f in range(200):
        kp = np.concatenate([truth + rng.normal(0, 2.0, truth.shape), np.ones((2, 1))], 1)
        s = smoother(7, kp, f / 25.0, np.array([80, 40, 140, 140]))
        raw.append(kp[:, :2])
        out.append(s[:, :2])
        assert (s[:, 2] == kp[:, 2]).all()
    rms = lambda xs: float(np.sqrt(((np.array(xs[20:]) - truth) ** 2).sum(-1).mean()))  # noqa: E731
    assert rms(out) < 0.6 * rms(raw)


def test_one_euro_follows_a_moving_person_within_a_frame():
    """The stated lag: under one frame (40 ms at 25 fps) for a keypoint moving one body height per second."""
    height, fps = 100.0, 25.0
    f = OneEuroFilter(OneEuroConfig())
    lags = []
    for i in range(100):
        t = i / fps
        x = np.array([[height * t, 10.0]])
        y = f(x, t, scale=height)
        if i > 50:
            lags.append((x[0, 0] - y[0, 0]) / height)  # seconds behind, for a speed of `height` px/s
    lag = float(np.mean(lags))
    assert 0 < lag < 1 / fps


def test_keypoint_lag_measures_a_known_delay():
    t = np.arange(120)
    truth = np.stack([np.sin(t / 6.0) * 30, np.cos(t / 9.0) * 20], -1)[:, None, :]
    delayed = np.roll(truth, 3, axis=0)
    assert keypoint_lag(delayed[10:], truth[10:]) == pytest.approx(3.0, abs=0.05)
    assert keypoint_lag(truth, truth) == pytest.approx(0.0, abs=0.05)


# ------------------------------------------------------------------------------------------ detect-every-N
class OraclePose:
    """A stand-in pose model for :func:`predict_video`: each box gets the true keypoints of the person it
    overlaps most (IoU >= 0.3), else keypoints with zero scores."""

    def __init__(self, truth):
        self.truth = truth
        self.config = SimpleNamespace(extra_heads=(), head=SimpleNamespace(num_keypoints=17))
        self.boxes_seen = []

    def predict_iter(self, items, **kwargs):
        for k, (image, boxes, meta) in enumerate(items):
            frame = meta[0]
            people = self.truth.frames[frame]
            boxes = np.zeros((0, 5)) if boxes is None or not len(boxes) else np.asarray(boxes, dtype=np.float64)
            self.boxes_seen.append((frame, len(boxes)))
            persons = []
            pids = sorted(people)
            iou = box_iou(boxes[:, :4], np.array([people[p][0] for p in pids]).reshape(-1, 4))
            for j, box in enumerate(boxes):
                kp = np.zeros((17, 3), np.float32)
                if len(pids) and iou[j].max() >= 0.3:
                    kp = people[pids[int(iou[j].argmax())]][1].astype(np.float32).copy()
                    kp[:, 2] = np.where(kp[:, 2] > 0, 0.9, 0.0)
                persons.append({"keypoints": kp, "box": box[:4].astype(np.float32), "score": float(box[4])})
            yield ImageResult(k, meta, persons, image)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    pytest.importorskip("cv2")
    return make_synthetic_video(tmp_path_factory.mktemp("synthetic_video"), num_frames=100)


def test_synthetic_video_files(video):
    from vitpose_fast.inference.video import VideoReader, load_frame_boxes

    with VideoReader(video.video) as r:
        assert r.num_frames == 100 and (r.width, r.height) == (320, 240) and r.fps == pytest.approx(25.0)
    gt = read_mot(video.gt_file)
    assert sorted(gt) == list(range(100))
    for f, people in enumerate(video.truth.frames):
        assert sorted(gt[f]) == sorted(people)
        for pid, (box, _) in people.items():
            np.testing.assert_allclose(gt[f][pid], box, atol=0.02)
    boxes = load_frame_boxes(video.boxes_file)
    assert sum(len(b) for b in boxes.values()) == sum(len(p) for p in video.truth.frames) - 5  # the gaps
    assert "frameRate=25" in (video.root / "seqinfo.ini").read_text()
    bad = video.root / "bad_gt.txt"
    bad.write_text("1,1,10,10,5,5,1,1,1\n2,x,10,10,5,5\n")
    with pytest.raises(ValueError, match="bad_gt.txt:2: expected 'frame, id, left, top, width, height"):
        read_mot(bad)
    kps = json.loads(video.keypoints_file.read_text())
    assert np.array(kps["0"]["1"]).shape == (17, 3)


def test_detect_every_4_gives_the_same_ids_as_every_frame(video, tmp_path):
    from vitpose_fast.inference.video import load_frame_boxes, predict_video

    boxes = load_frame_boxes(video.boxes_file)
    runs = {}
    for n in (1, 4):
        model = OraclePose(video.truth)
        out = tmp_path / f"every{n}.jsonl"
        stats = predict_video(model, video.video, out, boxes=boxes, track=True, detect_every=n, progress=False)
        assert stats["frames"] == 100 and stats["persons_per_s"] > 0
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        runs[n] = {d["frame"]: {tuple(np.round(p["box"])): p["track_id"] for p in d["persons"]} for d in lines}
        runs[n]["model"] = model
    # Between detections the boxes come from the tracks (frames 1, 2, 3, 5, ... also get persons).
    seen4 = dict(runs[4]["model"].boxes_seen)
    assert all(seen4[f] > 0 for f in range(1, 100) if f % 4)
    # Same person -> same id: match each frame's persons by the true person their box overlaps most.
    truth = video.truth

    def by_person(frame_tracks, f):
        people = truth.frames[f]
        pids = sorted(people)
        out = {}
        for box, tid in frame_tracks.items():
            iou = box_iou(np.array(box)[None], np.array([people[p][0] for p in pids]))[0]
            if iou.max() >= 0.3:
                out[pids[int(iou.argmax())]] = tid
        return out

    compared = 0
    for f in range(100):
        a, b = by_person(runs[1][f], f), by_person(runs[4][f], f)
        for pid in set(a) & set(b):
            assert a[pid] == b[pid], (f, pid)
            compared += 1
    assert compared >= 0.95 * sum(len(p) for p in truth.frames)


# ------------------------------------------------------------------------------------------ whole-body
def test_whole_body_drawing_has_face_and_hands():
    from vitpose_fast.inference.visualize import draw_poses

    rng = np.random.default_rng(0)
    kps = np.zeros((133, 3))
    kps[:, 2] = 0.9
    kps[:17, :2] = rng.uniform(20, 60, (17, 2))
    kps[9] = kps[10] = [40, 40, 0.9]
    kps[23:91, :2] = np.stack([np.linspace(100, 180, 68), np.full(68, 30)], 1)  # face: a horizontal line
    kps[91:112, :2] = np.stack([np.full(21, 120), np.linspace(100, 180, 21)], 1)  # left hand: a vertical line
    kps[112:, :2] = np.stack([np.full(21, 170), np.linspace(100, 180, 21)], 1)
    image = np.zeros((200, 200, 3), np.uint8)
    drawn = np.asarray(draw_poses(image, [{"keypoints": kps, "track_id": 3}], draw_boxes=False)).astype(int)
    # Between two face landmarks, along the hand chains, and on the wrist-to-hand link: all drawn.
    assert drawn[30, 140].sum() > 0 and drawn[150, 120].sum() > 0 and drawn[150, 170].sum() > 0
    mid = ((kps[9, :2] + kps[91, :2]) / 2).round().astype(int)
    assert drawn[mid[1], mid[0]].sum() > 0
    # The face and hand colours differ from the person's; the same drawing from 17 keypoints has none of it.
    assert tuple(drawn[150, 120]) != tuple(drawn[150, 170])
    body_only = np.asarray(draw_poses(image, [{"keypoints": kps[:17]}], draw_boxes=False)).astype(int)
    assert body_only[30, 140].sum() == 0 and body_only[150, 120].sum() == 0


def test_whole_body_head_in_video_names_its_keypoint_set(video, tmp_path):
    import torch

    from vitpose_fast import Model

    torch.manual_seed(0)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(64, 48),
                              deconv_channels=(16, 16), extra_heads=(14, 16, 17, 17, 133)).eval()
    out, vis = tmp_path / "wb.jsonl", tmp_path / "wb.mp4"
    model.predict_video(video.video, out, vis=vis, boxes={0: video.truth.detections[0]}, max_frames=2,
                        dataset_index=5, track=True, smooth="one_euro", progress=False, kpt_thr=0.0)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [d["keypoint_set"] for d in lines] == ["coco_wholebody"] * 2
    assert len(lines[0]["persons"]) == len(video.truth.detections[0])
    assert all(len(p["keypoints"]) == COCO_WHOLEBODY.num_keypoints for p in lines[0]["persons"])
    assert vis.stat().st_size > 0


# ------------------------------------------------------------------------------------------ benchmark
def test_tracking_benchmark_metrics_on_the_synthetic_video():
    pytest.importorskip("motmetrics")
    bench = load_script("benchmarks/bench_tracking.py")
    truth = synthetic_video_ground_truth()
    rows = {r["row"]: r for r in bench.tracker_rows(truth, 0.015, OneEuroConfig())}
    oks = rows["tracker, IoU + OKS"]
    assert oks["IDF1"] >= 0.95 and oks["MOTA"] >= 0.95
    assert oks["IDSW"] == 1  # the person who comes back (a new id, as documented)
    # Keypoints are what separates the crossing walkers: box IoU alone swaps them.
    assert rows["tracker, IoU only"]["IDSW"] > oks["IDSW"]
    assert oks["still jitter smoothed px"] < 0.6 * oks["still jitter raw px"]
    assert oks["walkers lag frames"] < 1.0
    if "HOTA" in oks:  # trackeval installed: HOTA, and its IDF1/MOTA/IDSW agree with motmetrics'
        assert oks["HOTA"] > 0.85
        assert oks["trackeval_IDF1"] == pytest.approx(oks["IDF1"], abs=1e-6)
        assert oks["trackeval_IDSW"] == oks["IDSW"]


def test_a_failure_on_the_writer_thread_reaches_the_caller(video, tmp_path, monkeypatch):
    import vitpose_fast.inference.visualize as visualize
    from vitpose_fast.inference.video import predict_video

    calls = []

    def failing_draw(image, persons, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("drawing failed")
        return image

    monkeypatch.setattr(visualize, "draw_poses", failing_draw)
    out = tmp_path / "w.jsonl"
    with pytest.raises(RuntimeError, match="drawing failed"):
        predict_video(OraclePose(video.truth), video.video, out, vis=tmp_path / "w.mp4",
                      boxes={0: video.truth.detections[0]}, track=True, progress=False)
    assert len(out.read_text().splitlines()) == 4  # the frames finished before the failure are kept
    with pytest.raises(ValueError, match="expected a .mp4"):
        predict_video(OraclePose(video.truth), video.video, out, vis=tmp_path / "w.txt", progress=False)


def test_tracked_persons_keep_their_colour_and_show_their_id():
    from vitpose_fast.inference.visualize import draw_poses

    kps = np.concatenate([np.random.default_rng(0).uniform(40, 90, (17, 2)), np.full((17, 1), 0.9)], 1)
    image = np.zeros((120, 120, 3), np.uint8)
    box = [20.0, 20.0, 100.0, 110.0]
    first = np.asarray(draw_poses(image, [{"keypoints": kps, "box": box, "track_id": 2}]))
    # Listed second, the same track is drawn the same: its colour follows its id, not its place.
    second = np.asarray(draw_poses(image, [{"keypoints": kps + [0, 0, -1], "box": [0, 0, 5, 5]},
                                           {"keypoints": kps, "box": box, "track_id": 2}]))
    np.testing.assert_array_equal(first[15:, 15:], second[15:, 15:])
    anonymous = np.asarray(draw_poses(image, [{"keypoints": kps, "box": box}]))
    label = (slice(22, 36), slice(22, 36))  # inside the box's top-left corner
    assert (first[label] != anonymous[label]).any()


def test_tracking_benchmark_pipeline_rows(tmp_path):
    pytest.importorskip("motmetrics")
    pytest.importorskip("cv2")
    import torch

    from vitpose_fast import Model

    bench = load_script("benchmarks/bench_tracking.py")
    torch.manual_seed(0)
    model = Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(64, 48),
                              deconv_channels=(16, 16)).eval()
    (row,) = bench.pipeline_rows(tmp_path, model, (1,), batch_size=8, flip=False, frames=40)
    assert row["row"] == "predict_video, detect every 1"
    assert row["frames/s"] > 0 and row["persons/s"] > 0 and row["model-only persons/s"] > 0
    assert 0 <= row["IDF1"] <= 1 and row["GT_IDs"] == 4
    assert (tmp_path / "vis_every1.mp4").stat().st_size > 0
