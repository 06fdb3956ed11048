"""Heatmap targets vs a literal transcription of the official TopDownGenerateTarget loops."""

import numpy as np
import pytest

from vitpose_fast.data.targets import msra_gaussian_target, udp_gaussian_target


def ref_udp(joints, vis, image_size, heatmap_size, sigma):
    K = len(joints)
    image_size, heatmap_size = np.array(image_size), np.array(heatmap_size)
    target_weight = np.ones((K, 1), dtype=np.float32)
    target_weight[:, 0] = vis
    target = np.zeros((K, heatmap_size[1], heatmap_size[0]), dtype=np.float32)
    tmp_size = sigma * 3
    size = 2 * tmp_size + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, None]
    for j in range(K):
        feat_stride = (image_size - 1.0) / (heatmap_size - 1.0)
        mu_x = int(joints[j][0] / feat_stride[0] + 0.5)
        mu_y = int(joints[j][1] / feat_stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            target_weight[j] = 0
            continue
        mu_x_ac = joints[j][0] / feat_stride[0]
        mu_y_ac = joints[j][1] / feat_stride[1]
        x0 = y0 = size // 2
        x0 += mu_x_ac - mu_x
        y0 += mu_y_ac - mu_y
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        g_x = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        img_x = max(0, ul[0]), min(br[0], heatmap_size[0])
        img_y = max(0, ul[1]), min(br[1], heatmap_size[1])
        if target_weight[j] > 0.5:
            target[j][img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
    return target, target_weight


def ref_msra(joints, vis, image_size, heatmap_size, sigma):
    K = len(joints)
    W, H = heatmap_size
    image_size = np.array(image_size)
    target_weight = np.zeros((K, 1), dtype=np.float32)
    target = np.zeros((K, H, W), dtype=np.float32)
    tmp_size = sigma * 3
    for j in range(K):
        target_weight[j] = vis[j]
        feat_stride = image_size / [W, H]
        mu_x = int(joints[j][0] / feat_stride[0] + 0.5)
        mu_y = int(joints[j][1] / feat_stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= W or ul[1] >= H or br[0] < 0 or br[1] < 0:
            target_weight[j] = 0
        if target_weight[j] > 0.5:
            size = 2 * tmp_size + 1
            x = np.arange(0, size, 1, np.float32)
            y = x[:, None]
            x0 = y0 = size // 2
            g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
            g_x = max(0, -ul[0]), min(br[0], W) - ul[0]
            g_y = max(0, -ul[1]), min(br[1], H) - ul[1]
            img_x = max(0, ul[0]), min(br[0], W)
            img_y = max(0, ul[1]), min(br[1], H)
            target[j][img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
    return target, target_weight


@pytest.mark.parametrize("encode,ref", [(udp_gaussian_target, ref_udp), (msra_gaussian_target, ref_msra)])
@pytest.mark.parametrize("sigma", [2, 3, 1.5])
@pytest.mark.parametrize("sizes", [((192, 256), (48, 64)), ((37, 29), (13, 11)), ((8, 9), (2, 3))])
def test_matches_official(encode, ref, sigma, sizes):
    image_size, heatmap_size = sizes
    K = 40
    # Joints inside, on and beyond every border (including slightly negative, where int() truncates).
    joints = np.random.uniform(-0.3, 1.3, (K, 3)) * [image_size[0], image_size[1], 0]
    joints[:4, :2] = [[0, 0], [image_size[0] - 1, image_size[1] - 1], [-1.9, 3], [image_size[0] + 30, 2]]
    vis = (np.random.rand(K) < 0.8).astype(np.float32)
    target, weight = encode(joints, np.stack([vis, vis, np.zeros(K)], 1), image_size, heatmap_size, sigma)
    ref_t, ref_w = ref(joints, vis, image_size, heatmap_size, sigma)
    assert target.dtype == np.float32 and target.shape == ref_t.shape
    np.testing.assert_array_equal(weight, ref_w)
    np.testing.assert_allclose(target, ref_t, atol=1e-7, rtol=1e-6)


def test_peak_and_far_outside():
    target, weight = udp_gaussian_target(np.array([[100.3, 120.7], [1e4, 50.0]]), np.ones(2), (192, 256), (48, 64))
    # The sub-pixel centre in heatmap px; the map peaks at its nearest pixel.
    cx, cy = 100.3 * 47 / 191, 120.7 * 63 / 255
    y, x = np.unravel_index(target[0].argmax(), target[0].shape)
    assert (x, y) == (round(cx), round(cy))
    assert target[0].max() == pytest.approx(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 8), rel=1e-6)
    assert weight[:, 0].tolist() == [1.0, 0.0] and not target[1].any()


def test_udp_needs_two_heatmap_pixels():
    with pytest.raises(ValueError, match="heatmap_size"):
        udp_gaussian_target(np.zeros((1, 2)), np.ones(1), (8, 8), (1, 4))
