"""Streaming inference: memory bounded by the batch, chunked == unchunked, per-image results in order, bad
images skipped or raised, and image files in every colour mode / orientation read correctly."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from vitpose_fast.benchmarking.common import PeakMemory, _rss_bytes
from vitpose_fast.inference import pipeline
from vitpose_fast import Model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(7)
    return Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(64, 48),
                             deconv_channels=(16, 16)).eval()


def _scene(n, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    xy = rng.uniform(0, 100, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 50, (n, 2)), rng.uniform(0.1, 1, (n, 1))], 1)
    return img, boxes


@pytest.mark.skipif(_rss_bytes() is None, reason="needs /proc/self/statm to sample the resident size")
def test_memory_of_2000_boxes_is_bounded_by_the_batch(tiny):
    img, boxes = _scene(2000)
    batch = 64
    pipeline.predict(tiny, img, boxes[:batch], batch_size=batch)  # warm-up: thread pools, allocator caches
    with PeakMemory(torch.device("cpu")) as peak:
        got = pipeline.predict(tiny, img, boxes, batch_size=batch)
    assert len(got) == 2000
    # Per chunk: 32 crops + 32 flipped (36 KiB each), their heatmaps and decoding buffers: a few MiB; the
    # bound adds allocator slack. Everything-at-once holds 2000 crops (74 MB) plus decoding buffers (~850 MB).
    per_crop = 3 * 64 * 48 * 4 + 17 * 16 * 12 * 4 * 8
    bound_mib = 24 + 4 * batch * per_crop / 2**20
    assert peak.mib < bound_mib, f"peak resident growth {peak.mib:.1f} MiB for 2000 boxes, bound {bound_mib:.1f}"
    # Equal to one chunk holding every box (the first 400, to keep the reference's memory small).
    ref = pipeline.predict(tiny, img, boxes[:400], batch_size=800)
    np.testing.assert_allclose(np.stack([p["keypoints"] for p in got[:400]]),
                               np.stack([p["keypoints"] for p in ref]), rtol=1e-5, atol=1e-4)
    assert [p["score"] for p in got[:400]] == [p["score"] for p in ref]


class CountingModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.batches = model, model.config, []

    def forward(self, x, dataset_index=None):
        self.batches.append(x.shape[0])
        return self.model(x, dataset_index)


def test_predict_iter_streams_in_order_with_meta_and_progress(tiny):
    img, boxes = _scene(23, seed=1)
    counting = CountingModel(tiny)
    seen = []
    items = [(img, boxes[:10], "a"), (img, np.zeros((0, 4)), "b"), (img, boxes[10:], "c"), (img, None, "d")]
    out = list(pipeline.predict_iter(counting, iter(items), batch_size=8, progress=seen.append))
    assert [r.meta for r in out] == ["a", "b", "c", "d"] and [r.index for r in out] == [0, 1, 2, 3]
    assert [len(r.persons) for r in out] == [10, 0, 13, 1]
    assert max(counting.batches) == 8 and sum(counting.batches) == 2 * 24  # flipped copies included
    assert sum(seen) == 24
    assert out[0].image.shape == (120, 160, 3)
    ref = pipeline.predict(tiny, [img, img], [boxes[:10], boxes[10:]], batch_size=64)
    np.testing.assert_allclose(np.stack([p["keypoints"] for p in out[2].persons]),
                               np.stack([p["keypoints"] for p in ref[1]]), rtol=1e-5, atol=1e-4)


def test_results_arrive_before_the_input_ends(tiny):
    img, boxes = _scene(4)
    produced = []

    def frames():
        for i in range(100):
            produced.append(i)
            yield img, boxes, i

    it = pipeline.predict_iter(tiny, frames(), batch_size=4, prefetch=2)
    first = next(it)
    assert first.meta == 0 and len(first.persons) == 4
    assert len(produced) < 20  # decoding runs only a few images ahead
    it.close()  # stops the decoding thread
    time.sleep(0.5)  # the thread notices within 0.1 s
    n = len(produced)
    time.sleep(0.3)
    assert len(produced) == n < 100


def test_bad_images_skipped_or_raised(tiny, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(good)
    jpeg = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:400])  # truncated
    items = [str(good), str(jpeg), str(tmp_path / "missing.png"), str(good)]
    out = list(pipeline.predict_iter(tiny, items, on_error="skip"))
    assert [r.error is None for r in out] == [True, False, False, True]
    assert "cut.jpg" in str(out[1].error) and isinstance(out[2].error, FileNotFoundError)
    assert out[1].persons == [] and len(out[3].persons) == 1
    with pytest.raises(ValueError, match="cut.jpg"):
        list(pipeline.predict_iter(tiny, items))


def test_image_modes_and_orientation(tmp_path):
    rng = np.random.default_rng(3)
    gray8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    p16 = tmp_path / "g16.png"
    Image.fromarray(gray8.astype(np.uint16) * 257).save(p16)  # a 16-bit grayscale PNG
    assert Image.open(p16).mode.startswith("I")
    np.testing.assert_array_equal(pipeline.load_image(p16), np.repeat(gray8[..., None], 3, 2))

    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(pipeline.load_image(tmp_path / "p.png"), np.array(pal.convert("RGB")))

    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "c.tif")
    np.testing.assert_array_equal(pipeline.load_image(tmp_path / "c.tif"), np.array(cmyk.convert("RGB")))

    # EXIF orientation 6: the stored pixels must be rotated 90 degrees clockwise to be upright.
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.png", exif=exif.tobytes())
    np.testing.assert_array_equal(pipeline.load_image(tmp_path / "rot.png"), np.rot90(rgb, k=-1))


def test_model_predict_iter_method(tiny):
    img, boxes = _scene(3, seed=2)
    (r,) = list(tiny.predict_iter([(img, boxes, "x")], flip_test=False))
    ref = pipeline.predict(tiny, img, boxes, flip_test=False)
    assert r.meta == "x"
    np.testing.assert_array_equal(np.stack([p["keypoints"] for p in r.persons]),
                                  np.stack([p["keypoints"] for p in ref]))
