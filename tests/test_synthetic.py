"""The synthetic COCO-keypoints generator: valid COCO files, consistent labels, determinism."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from vitpose_fast.data import synthetic
from vitpose_fast.data.synthetic import make_synthetic_coco


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("syn"), num_images={"train2017": 6, "val2017": 5}, seed=7)


def test_layout_and_pycocotools(dataset):
    COCO = pytest.importorskip("pycocotools.coco").COCO
    root = dataset.root
    assert (root / "annotations" / "person_keypoints_train2017.json").is_file()
    assert (root / "annotations" / "person_keypoints_val2017.json").is_file()
    assert dataset.det_file == root / "annotations" / "person_detection_results_val2017.json"
    ids = set()
    for split, n in (("train2017", 6), ("val2017", 5)):
        coco = COCO(str(dataset.ann_files[split]))
        assert len(coco.getImgIds()) == n
        assert coco.getCatIds() == [1]
        cat = coco.loadCats(1)[0]
        assert cat["keypoints"] == list(synthetic.KEYPOINT_NAMES) and len(cat["skeleton"]) == 19
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(dataset.image_dirs[split] / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (320, 240) and im.mode == "RGB"
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert 1 <= len(anns) <= 3
        assert not ids & set(coco.getImgIds())  # ids unique across splits
        ids |= set(coco.getImgIds())
    dets = coco.loadRes(str(dataset.det_file))  # COCO detection-results format
    assert len(dets.getAnnIds()) >= len(coco.getAnnIds())
    assert all(d["category_id"] == 1 and 0 < d["score"] <= 1 for d in json.loads(dataset.det_file.read_text()))


def test_keypoints_consistent_with_boxes(dataset):
    vis_seen = set()
    for split in ("train2017", "val2017"):
        data = json.loads(dataset.ann_files[split].read_text())
        for ann in data["annotations"]:
            kps = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
            v = kps[:, 2]
            vis_seen |= set(v.tolist())
            assert set(v.tolist()) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((v > 0).sum()) >= 3
            assert np.all(kps[v == 0, :2] == 0)
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 320 and y + h <= 240
            lab = kps[v > 0, :2]
            assert np.all(lab >= [x - 0.01, y - 0.01]) and np.all(lab <= [x + w + 0.01, y + h + 0.01])
            assert np.all(lab >= 0) and np.all(lab <= [319, 239])
            assert ann["area"] == pytest.approx(w * h, rel=1e-3) and ann["iscrowd"] == 0
    assert 2 in vis_seen


def test_deterministic_and_seed_dependent(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", 3, seed=11, image_size=(97, 65))
    b = make_synthetic_coco(tmp_path / "b", 3, seed=11, image_size=(97, 65))
    c = make_synthetic_coco(tmp_path / "c", 3, seed=12, image_size=(97, 65))
    assert _digest(a.root) == _digest(b.root)
    assert _digest(a.root) != _digest(c.root)


def test_command_line(tmp_path, capsys):
    synthetic.main(["--out", str(tmp_path), "--images", "2", "--seed", "1", "--format", "png"])
    assert len(list((tmp_path / "val2017").glob("*.png"))) == 2
    assert "person_keypoints_val2017.json" in capsys.readouterr().out


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_format"):
        make_synthetic_coco(tmp_path, 1, image_format="gif")
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_coco(tmp_path, 1, image_size=(8, 8))
