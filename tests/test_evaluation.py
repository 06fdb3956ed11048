"""Rescoring, OKS-NMS and COCOeval wrapping vs direct pycocotools and the literal official loops."""

import contextlib
import io
import json
import re

import numpy as np
import pytest

from vitpose_fast.data.datasets import COCO as COCO_INFO
from vitpose_fast.inference.evaluation import (
    STATS_NAMES,
    evaluate_coco,
    format_ap_table,
    oks_iou,
    oks_nms,
    rescore,
    rescore_and_nms,
    results_to_coco,
)

SIGMAS = np.array(COCO_INFO.sigmas)


def make_gt(tmp_path, rng, n_images=3, per_image=2):
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        for _ in range(per_image):
            x, y = rng.uniform(20, 300), rng.uniform(20, 200)
            w, h = rng.uniform(60, 200), rng.uniform(100, 250)
            kp = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.full(17, 2.0)], 1)
            kp[rng.random(17) < 0.2] = 0  # some unlabelled keypoints
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0, "num_keypoints": int((kp[:, 2] > 0).sum()),
                         "keypoints": kp.reshape(-1).tolist()})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_INFO.keypoint_names),
                            "skeleton": [[a + 1, b + 1] for a, b in COCO_INFO.skeleton]}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path, anns


def test_perfect_predictions_score_one(tmp_path):
    path, anns = make_gt(tmp_path, np.random.default_rng(np.random.randint(2**31)))
    kps = np.array([a["keypoints"] for a in anns]).reshape(-1, 17, 3)
    kps[..., 2] = 1.0
    results = results_to_coco([a["image_id"] for a in anns], kps, np.ones(len(anns)))
    stats = evaluate_coco(results, path)
    assert list(stats) == list(STATS_NAMES)
    for name in ("AP", "AP .5", "AP .75", "AR", "AR .5", "AR .75"):
        assert stats[name] == pytest.approx(1.0), name
    assert "AP .5" in format_ap_table(stats) and "1.000" in format_ap_table(stats)


def test_matches_direct_cocoeval(tmp_path):
    COCO = pytest.importorskip("pycocotools.coco").COCO
    COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval
    rng = np.random.default_rng(np.random.randint(2**31))
    path, anns = make_gt(tmp_path, rng)
    kps = np.array([a["keypoints"] for a in anns]).reshape(-1, 17, 3)
    kps[..., :2] += rng.normal(0, 6, kps[..., :2].shape)
    kps[..., 2] = rng.uniform(0, 1, kps.shape[:2])
    results = results_to_coco([a["image_id"] for a in anns], kps, rng.uniform(0.2, 1, len(anns)))
    ours = evaluate_coco(results, str(path))

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(results), "keypoints")
        ev.params.useSegm = None
        ev.params.kpt_oks_sigmas = SIGMAS
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [ours[n] for n in STATS_NAMES] == pytest.approx(list(ev.stats), abs=1e-12)
    with contextlib.redirect_stdout(io.StringIO()):
        again = evaluate_coco(results, COCO(str(path)))
    assert again == ours


def test_rescore_matches_official_loop():
    rng = np.random.default_rng(np.random.randint(2**31))
    kps = rng.uniform(0, 1, (6, 17, 3))
    kps[0, :, 2] = 0.1  # none above vis_thr -> score 0
    box = rng.uniform(0, 1, 6)
    expected = []
    for n in range(6):
        kpt_score, valid = 0.0, 0
        for j in range(17):
            if kps[n, j, 2] > 0.2:
                kpt_score += kps[n, j, 2]
                valid += 1
        expected.append((kpt_score / valid if valid else 0.0) * box[n])
    np.testing.assert_allclose(rescore(kps, box), expected, rtol=1e-12)


def ref_oks_iou(g, d, a_g, a_d, sigmas):
    var = (sigmas * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(len(d), dtype=np.float32)
    for n in range(len(d)):
        dx, dy = d[n, 0::3] - xg, d[n, 1::3] - yg
        e = (dx**2 + dy**2) / var / ((a_g + a_d[n]) / 2 + np.spacing(1)) / 2
        ious[n] = np.sum(np.exp(-e)) / len(e)
    return ious


def test_oks_iou_matches_official():
    rng = np.random.default_rng(np.random.randint(2**31))
    g = rng.uniform(0, 200, (17, 3))
    d = g + rng.normal(0, 10, (5, 17, 3))
    a_d = rng.uniform(1e3, 5e4, 5)
    np.testing.assert_allclose(oks_iou(g, d, 2e4, a_d), ref_oks_iou(g.ravel(), d.reshape(5, -1), 2e4, a_d, SIGMAS),
                               rtol=1e-6)


def test_oks_nms_hand_made():
    rng = np.random.default_rng(np.random.randint(2**31))
    base = np.concatenate([rng.uniform(100, 300, (17, 2)), np.ones((17, 1))], 1)
    far = base + [400, 0, 0]
    near_dup = base + [0.5, -0.5, 0]  # OKS ~ 1 with base
    shifted = base + [25, 0, 0]  # clearly below 0.9 at this area
    kps = np.stack([near_dup, base, far, shifted])
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    areas = np.full(4, 200.0 * 250.0)
    keep = oks_nms(kps, scores, areas, thr=0.9)
    assert keep.tolist() == [1, 3, 2]  # the duplicate of the best pose is dropped
    assert oks_nms(kps, scores, areas, thr=1.0).tolist() == [1, 0, 3, 2]  # nothing exceeds OKS 1
    assert oks_nms(kps[:0], scores[:0], areas[:0]).tolist() == []

    results = rescore_and_nms([7, 7, 7, 9], kps, scores, areas)
    assert [r["image_id"] for r in results] == [7, 7, 9]  # per-image NMS: image 9's pose is never compared
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in results)


def test_dataset_metadata():
    from vitpose_fast.data.datasets import DATASETS, VITPOSE_PLUS_DATASETS, get_dataset

    counts = {"coco": 17, "aic": 14, "mpii": 16, "crowdpose": 14, "ap10k": 17, "apt36k": 17, "coco_wholebody": 133,
              "goliath": 308}
    assert {n: d.num_keypoints for n, d in DATASETS.items()} == counts
    assert [d.name for d in VITPOSE_PLUS_DATASETS] == ["coco", "aic", "mpii", "ap10k", "apt36k", "coco_wholebody"]
    for d in DATASETS.values():
        seen = [i for pair in d.flip_pairs for i in pair]
        assert len(seen) == len(set(seen)), d.name
        for a, b in d.flip_pairs:  # a pair mirrors left/right (L_/R_, l_/_r_) names, or face landmarks
            na, nb = d.keypoint_names[a], d.keypoint_names[b]
            swapped = na.replace("left", "#").replace("right", "left").replace("#", "right")
            swapped = swapped.replace("L_", "#").replace("R_", "L_").replace("#", "R_")
            swapped = re.sub(r"(?<![a-z])([rl])(?=_|$)", lambda m: "l" if m.group(1) == "r" else "r", swapped)
            if d.name == "goliath":  # numbered points along a curve run one way on both sides: a mirror has another number
                swapped, nb = re.sub(r"\d+", "N", swapped), re.sub(r"\d+", "N", nb)
            assert swapped == nb or na.startswith("face-"), (d.name, na, nb)
    wb = get_dataset("WholeBody")
    assert wb.keypoint_names[:17] == DATASETS["coco"].keypoint_names and wb.sigmas[:17] == DATASETS["coco"].sigmas
    assert len(wb.flip_pairs) == 8 + 3 + 29 + 21 and len(wb.skeleton) == 65
    with pytest.raises(KeyError, match="unknown dataset"):
        get_dataset("ochuman2")
