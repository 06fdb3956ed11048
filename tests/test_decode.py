"""Heatmap decoding vs a literal per-keypoint numpy + cv2 transcription of the official mmpose 0.x code, vs
keypoints encoded with the official targets, and on degenerate maps."""

import math

import cv2
import numpy as np
import pytest
import torch

from vitpose_fast.data.targets import msra_gaussian_target, udp_gaussian_target
from vitpose_fast.inference.decode import (
    DECODE_METHODS,
    decode_heatmaps,
    flip_back,
    gaussian_blur,
    get_max_preds,
    heatmap_keypoints,
    transform_preds,
)

# ---------------------------------------------------------------------------------------------------------------
# Literal reference: mmpose/core/evaluation/top_down_eval.py and post_transforms.py (loops, cv2, numpy).


def ref_get_max_preds(heatmaps):
    N, K, _, W = heatmaps.shape
    reshaped = heatmaps.reshape((N, K, -1))
    idx = np.argmax(reshaped, 2).reshape((N, K, 1))
    maxvals = np.amax(reshaped, 2).reshape((N, K, 1))
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % W
    preds[:, :, 1] = preds[:, :, 1] // W
    preds = np.where(np.tile(maxvals, (1, 1, 2)) > 0.0, preds, -1)
    return preds, maxvals


def ref_taylor(heatmap, coord):
    H, W = heatmap.shape[:2]
    px, py = int(coord[0]), int(coord[1])
    if 1 < px < W - 2 and 1 < py < H - 2:
        dx = 0.5 * (heatmap[py][px + 1] - heatmap[py][px - 1])
        dy = 0.5 * (heatmap[py + 1][px] - heatmap[py - 1][px])
        dxx = 0.25 * (heatmap[py][px + 2] - 2 * heatmap[py][px] + heatmap[py][px - 2])
        dxy = 0.25 * (
            heatmap[py + 1][px + 1] - heatmap[py - 1][px + 1] - heatmap[py + 1][px - 1] + heatmap[py - 1][px - 1]
        )
        dyy = 0.25 * (heatmap[py + 2][px] - 2 * heatmap[py][px] + heatmap[py - 2][px])
        derivative = np.array([[dx], [dy]])
        hessian = np.array([[dxx, dxy], [dxy, dyy]])
        if dxx * dyy - dxy**2 != 0:
            offset = -np.linalg.inv(hessian) @ derivative
            coord += np.squeeze(np.array(offset.T), axis=0)
    return coord


def ref_gaussian_blur(heatmaps, kernel):
    border = (kernel - 1) // 2
    N, K, H, W = heatmaps.shape
    for i in range(N):
        for j in range(K):
            origin_max = np.max(heatmaps[i, j])
            dr = np.zeros((H + 2 * border, W + 2 * border), dtype=np.float32)
            dr[border:-border, border:-border] = heatmaps[i, j].copy()
            dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
            heatmaps[i, j] = dr[border:-border, border:-border].copy()
            heatmaps[i, j] *= origin_max / np.max(heatmaps[i, j])
    return heatmaps


def ref_post_dark_udp(coords, batch_heatmaps, kernel):
    B, K, H, W = batch_heatmaps.shape
    N = coords.shape[0]
    for heatmaps in batch_heatmaps:
        for heatmap in heatmaps:
            cv2.GaussianBlur(heatmap, (kernel, kernel), 0, heatmap)
    np.clip(batch_heatmaps, 0.001, 50, batch_heatmaps)
    np.log(batch_heatmaps, batch_heatmaps)
    pad = np.pad(batch_heatmaps, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge").flatten()
    index = coords[..., 0] + 1 + (coords[..., 1] + 1) * (W + 2)
    index += (W + 2) * (H + 2) * np.arange(0, B * K).reshape(-1, K)
    index = index.astype(int).reshape(-1, 1)
    i_ = pad[index]
    ix1 = pad[index + 1]
    iy1 = pad[index + W + 2]
    ix1y1 = pad[index + W + 3]
    ix1_y1_ = pad[index - W - 3]
    ix1_ = pad[index - 1]
    iy1_ = pad[index - 2 - W]
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    derivative = np.concatenate([dx, dy], axis=1).reshape(N, K, 2, 1)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=1).reshape(N, K, 2, 2)
    hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
    coords -= np.einsum("ijmn,ijnk->ijmk", hessian, derivative).reshape(N, K, 2)
    return coords


def ref_transform_preds(coords, center, scale, output_size, use_udp):
    scale = scale * 200.0
    if use_udp:
        scale_x, scale_y = scale[0] / (output_size[0] - 1.0), scale[1] / (output_size[1] - 1.0)
    else:
        scale_x, scale_y = scale[0] / output_size[0], scale[1] / output_size[1]
    out = np.ones_like(coords)
    out[:, 0] = coords[:, 0] * scale_x + center[0] - scale[0] * 0.5
    out[:, 1] = coords[:, 1] * scale_y + center[1] - scale[1] * 0.5
    return out


def ref_decode(heatmaps, center, scale, method, kernel=11):
    """keypoints_from_heatmaps; returns (heatmap coords [N,K,2], image coords [N,K,2], maxvals [N,K,1])."""
    heatmaps = heatmaps.copy()
    N, K, H, W = heatmaps.shape
    preds, maxvals = ref_get_max_preds(heatmaps)
    if method == "udp":
        preds = ref_post_dark_udp(preds, heatmaps, kernel)
    elif method == "dark":
        heatmaps = np.log(np.maximum(ref_gaussian_blur(heatmaps, kernel), 1e-10))
        for n in range(N):
            for k in range(K):
                preds[n][k] = ref_taylor(heatmaps[n][k], preds[n][k])
    elif method == "default":
        for n in range(N):
            for k in range(K):
                heatmap = heatmaps[n][k]
                px, py = int(preds[n][k][0]), int(preds[n][k][1])
                if 1 < px < W - 1 and 1 < py < H - 1:
                    diff = np.array(
                        [heatmap[py][px + 1] - heatmap[py][px - 1], heatmap[py + 1][px] - heatmap[py - 1][px]]
                    )
                    preds[n][k] += np.sign(diff) * 0.25
    hm = preds.copy()
    img = np.stack([ref_transform_preds(preds[i], center[i], scale[i], [W, H], method == "udp") for i in range(N)])
    return hm, img, maxvals


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def random_boxes(n, rng):
    centers = rng.uniform(50, 600, size=(n, 2)).astype(np.float32)
    scales = rng.uniform(0.3, 3.0, size=(n, 2)).astype(np.float32)
    return centers, scales


def encoded_heatmaps(n, k, size, encoding, rng, margin=8, noise=0.0):
    """Heatmaps [n, k, h, w] of random keypoints via the official targets, and the Gaussian centres in heatmap px
    (sub-pixel for UDP, the integer window centre for MSRA)."""
    W, H = size
    image_size = np.array([W * 4, H * 4])
    maps, centres = [], []
    for _ in range(n):
        hm_xy = rng.uniform([margin, margin], [W - 1 - margin, H - 1 - margin], size=(k, 2))
        if encoding == "udp":
            joints = hm_xy * (image_size - 1) / (np.array(size) - 1)
            target, _ = udp_gaussian_target(joints, np.ones(k), image_size, size)
            centres.append(hm_xy)
        else:
            joints = hm_xy * image_size / np.array(size)
            target, _ = msra_gaussian_target(joints, np.ones(k), image_size, size)
            centres.append(np.trunc(hm_xy + 0.5))
        maps.append(target)
    maps = np.stack(maps).astype(np.float32)
    if noise:
        maps += noise * rng.standard_normal(maps.shape).astype(np.float32)
    return maps, np.stack(centres)


# ---------------------------------------------------------------------------------------------------------------
# Parity with the literal official code


@pytest.mark.parametrize("method", DECODE_METHODS)
@pytest.mark.parametrize("size", [(48, 64), (17, 23)])
def test_matches_official(method, size):
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    heatmaps, _ = encoded_heatmaps(3, 5, size, "udp", rng, margin=1.5, noise=0.01)
    heatmaps *= rng.uniform(0.3, 1.2, size=(3, 5, 1, 1)).astype(np.float32)
    centers, scales = random_boxes(3, rng)
    ref_hm, ref_img, ref_max = ref_decode(heatmaps, centers, scales, method)

    hm = heatmap_keypoints(torch.from_numpy(heatmaps), method)
    torch.testing.assert_close(hm[..., :2], torch.from_numpy(ref_hm).float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(hm[..., 2], torch.from_numpy(ref_max[..., 0]), atol=0, rtol=0)

    out = decode_heatmaps(torch.from_numpy(heatmaps), centers, torch.from_numpy(scales), method)
    px = scales[:, None, :] * 200 / (np.array(size) - (method == "udp"))  # image px per heatmap px
    err = np.abs(out[..., :2].numpy() - ref_img) / px
    assert err.max() < 1e-4, f"{method}: max error {err.max():.2e} heatmap px vs the official code"


@pytest.mark.parametrize("method", DECODE_METHODS)
def test_borders_corners_match_official(method):
    """Peaks on every border pixel and corner, including rows/columns 1 and W-2, where edge rules apply."""
    H, W = 13, 11
    positions = [(x, y) for x in (0, 1, 2, W - 3, W - 2, W - 1) for y in (0, 1, H - 2, H - 1)]
    positions += [(x, 0) for x in range(W)] + [(0, y) for y in range(H)]
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    heatmaps = np.zeros((1, len(positions), H, W), np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    for k, (x, y) in enumerate(positions):
        sx, sy = x + rng.uniform(-0.4, 0.4), y + rng.uniform(-0.4, 0.4)
        heatmaps[0, k] = np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / 8)
    heatmaps += 0.003 * rng.random(heatmaps.shape, dtype=np.float32)
    ref_hm, _, _ = ref_decode(heatmaps, np.zeros((1, 2)), np.ones((1, 2)), method)
    hm = heatmap_keypoints(torch.from_numpy(heatmaps), method)
    torch.testing.assert_close(hm[..., :2], torch.from_numpy(ref_hm).float(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kernel", [3, 7, 17])
@pytest.mark.parametrize("method", ["dark", "udp"])
def test_other_kernels_match_official(method, kernel):
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    heatmaps, _ = encoded_heatmaps(2, 3, (24, 32), "udp", rng, margin=3, noise=0.005)
    ref_hm, _, _ = ref_decode(heatmaps, np.zeros((2, 2)), np.ones((2, 2)), method, kernel)
    hm = heatmap_keypoints(torch.from_numpy(heatmaps), method, kernel)
    torch.testing.assert_close(hm[..., :2], torch.from_numpy(ref_hm).float(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [(48, 64), (5, 3), (1, 7), (6, 1)])
@pytest.mark.parametrize("kernel", [3, 5, 11, 17])
def test_blur_matches_cv2(size, kernel):
    W, H = size
    x = torch.randn(2, H, W)
    ours = gaussian_blur(x, kernel)
    ref = np.stack([cv2.GaussianBlur(m, (kernel, kernel), 0) for m in x.numpy()])
    torch.testing.assert_close(ours, torch.from_numpy(ref), atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Accuracy on encoded keypoints, with the transform back inverted independently

# Max error in heatmap px of each method vs the Gaussian centre it was encoded at (noise-free maps).
# UDP/dark targets: centre is sub-pixel. MSRA targets: centre is the integer window centre, symmetric, so
# argmax and default are exact and dark's Taylor step stays on it.
# Measured: udp ~4e-5, dark ~5e-4 (its zero-border blur biases the log-curvature), default <= 0.25 per axis.
SUBPIXEL_TOL = {"udp": 1e-3, "dark": 5e-3, "default": 0.25 * math.sqrt(2) + 1e-6, "argmax": 0.5 * math.sqrt(2)}


@pytest.mark.parametrize("method", DECODE_METHODS)
def test_recovers_udp_encoded_keypoints(method):
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    heatmaps, centres = encoded_heatmaps(4, 6, (48, 64), "udp", rng)
    hm = heatmap_keypoints(torch.from_numpy(heatmaps), method)[..., :2].numpy()
    err = np.linalg.norm(hm - centres, axis=-1).max()
    assert err < SUBPIXEL_TOL[method], f"{method}: {err:.4f} heatmap px"


@pytest.mark.parametrize("method", ["argmax", "default", "dark"])
def test_recovers_msra_encoded_keypoints(method):
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    heatmaps, centres = encoded_heatmaps(4, 6, (48, 64), "msra", rng)
    hm = heatmap_keypoints(torch.from_numpy(heatmaps), method)[..., :2].numpy()
    assert np.abs(hm - centres).max() < 1e-4


def test_udp_image_roundtrip():
    """Image keypoints -> official UDP affine (get_warp_matrix) -> UDP target -> decode -> image keypoints."""
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    n, k, size, image_size = 3, 5, np.array([48, 64]), np.array([192, 256])
    centers, scales = random_boxes(n, rng)
    box = scales * 200.0
    maps, truth = [], []
    for i in range(n):
        # Keypoints inside the middle of the box, in image px.
        kp = centers[i] + rng.uniform(-0.35, 0.35, size=(k, 2)) * box[i]
        # get_warp_matrix(0, 2c, image_size - 1, 200 s) applied to the joints: the network-input px.
        joints = (kp - centers[i] + 0.5 * box[i]) * (image_size - 1) / box[i]
        maps.append(udp_gaussian_target(joints, np.ones(k), image_size, size)[0])
        truth.append(kp)
    out = decode_heatmaps(torch.from_numpy(np.stack(maps)), centers, scales, "udp").numpy()
    err_hm = np.abs(out[..., :2] - np.stack(truth)) / (box[:, None, :] / (size - 1))
    assert err_hm.max() < 2e-3


def test_msra_image_roundtrip():
    """Non-UDP affine (get_affine_transform) -> MSRA target -> argmax decode lands on the transformed centre."""
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    n, k, size = 3, 5, np.array([48, 64])
    centers, scales = random_boxes(n, rng)
    box = scales * 200.0
    hm_xy = rng.uniform(8, 40, size=(n, k, 2))
    maps = [msra_gaussian_target(hm_xy[i] * 4, np.ones(k), size * 4, size)[0] for i in range(n)]
    out = decode_heatmaps(torch.from_numpy(np.stack(maps)), centers, scales, "argmax").numpy()
    # Independent inverse of x_hm = (x - c) * W / (200 s) + W / 2.
    expected = (np.trunc(hm_xy + 0.5) - size / 2) * (box / size)[:, None, :] + centers[:, None, :]
    np.testing.assert_allclose(out[..., :2], expected, atol=1e-3)


def test_transform_preds_matches_official():
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    coords = rng.uniform(-1, 60, size=(4, 7, 2)).astype(np.float32)
    centers, scales = random_boxes(4, rng)
    for udp in (False, True):
        ours = transform_preds(torch.from_numpy(coords), centers, scales, (48, 64), use_udp=udp).numpy()
        ref = np.stack([ref_transform_preds(coords[i], centers[i], scales[i], [48, 64], udp) for i in range(4)])
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Degenerate maps


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the official 0/0 on flat maps
@pytest.mark.parametrize("method", DECODE_METHODS)
def test_degenerate_maps(method):
    H, W = 9, 7
    maps = torch.stack(
        [
            torch.zeros(H, W),  # flat zero: max <= 0
            torch.full((H, W), 0.3),  # flat positive: first maximum (0, 0)
            -torch.rand(H, W) - 0.1,  # negative
            torch.full((H, W), -2.0),  # flat negative
            torch.rand(H, W),  # noise
        ]
    )[None]
    out = heatmap_keypoints(maps, method)
    assert torch.isfinite(out).all()
    for k in (0, 2, 3):
        assert out[0, k, :2].tolist() == [-1.0, -1.0]
    assert out[0, 1, :2].tolist() == [0.0, 0.0]
    ref_hm, _, ref_max = ref_decode(maps.numpy(), np.zeros((1, 2)), np.ones((1, 2)), method)
    torch.testing.assert_close(out[0, 1, :2], torch.from_numpy(ref_hm[0, 1]).float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[..., 2], torch.from_numpy(ref_max[..., 0]))
    img = decode_heatmaps(maps, np.array([[100.0, 50.0]]), np.array([[1.0, 2.0]]), method)
    assert torch.isfinite(img).all()


def test_noise_maps_match_official():
    """Uniform-noise maps: finite everywhere; argmax/default exact. After the blur such maps are nearly flat
    (log-curvature ~1e-3), so float32 rounding differences between cv2's and our blur summation order move a
    Newton step by up to ~1e-3 px: dark/udp are compared at 1e-2 px where the official step stays within 1 px."""
    maps = torch.rand(3, 4, 12, 10)
    start, _ = ref_get_max_preds(maps.numpy())
    for method in DECODE_METHODS:
        ours = heatmap_keypoints(maps, method)[..., :2]
        assert torch.isfinite(ours).all()
        ref_hm, _, _ = ref_decode(maps.numpy(), np.zeros((3, 2)), np.ones((3, 2)), method)
        if method in ("argmax", "default"):
            assert torch.equal(ours, torch.from_numpy(ref_hm).float())
        else:
            near = np.abs(ref_hm - start).max(-1) <= 1
            np.testing.assert_allclose(ours.numpy()[near], ref_hm[near], atol=1e-2, rtol=0)


def test_first_maximum_on_ties_and_low_precision_input():
    maps = torch.zeros(1, 2, 5, 6)
    maps[0, 0, 1, 4] = maps[0, 0, 3, 2] = 1.0
    maps[0, 1, 2, 3] = 0.5
    coords, maxvals = get_max_preds(maps.half())
    assert coords[0].tolist() == [[4.0, 1.0], [3.0, 2.0]]
    assert maxvals[0].tolist() == [1.0, 0.5]


def test_flat_index_beyond_float32_exact_range():
    """N*K*H*W > 2**24: the planted peak's flat index is not representable in float32."""
    N, K, H, W = 1, 1025, 128, 128
    maps = torch.zeros(N, K, H, W)
    x, y = 77, 101
    flat_index = (K - 1) * H * W + y * W + x
    assert flat_index > 2**24 and float(np.float32(flat_index)) != flat_index
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    sx, sy = x + 0.3, y - 0.2
    maps[0, K - 1] = torch.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / 8)
    maps[0, K - 2, 5, 9] = 1.0
    # argmax and default only: the blur of dark/udp over 16.8M pixels is too slow for a 2-core test budget,
    # and they start from the same int64 argmax and per-map gathers.
    for method in ("argmax", "default"):
        out = heatmap_keypoints(maps, method)
        assert out[0, K - 2, :2].tolist() == [9.0, 5.0]
    assert heatmap_keypoints(maps, "argmax")[0, K - 1, :2].tolist() == [x, y]
    assert heatmap_keypoints(maps, "default")[0, K - 1, :2].tolist() == [x + 0.25, y - 0.25]


# ---------------------------------------------------------------------------------------------------------------
# Flip test


def test_flip_back_matches_official_and_mirrors_keypoints():
    pairs = [(1, 2), (3, 4)]
    maps = torch.randn(2, 5, 6, 7)
    ref = maps.numpy().copy()
    for left, right in pairs:
        ref[:, left], ref[:, right] = maps[:, right].numpy(), maps[:, left].numpy()
    ref = ref[..., ::-1]
    torch.testing.assert_close(flip_back(maps, pairs), torch.from_numpy(ref.copy()))
    torch.testing.assert_close(flip_back(flip_back(maps, pairs), pairs), maps)

    # A heatmap peak at x on the flipped input comes back at W - 1 - x (UDP: no shift needed).
    rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())
    heatmaps, centres = encoded_heatmaps(1, 5, (48, 64), "udp", rng)
    mirrored = torch.from_numpy(heatmaps[..., ::-1].copy())
    perm = [0, 2, 1, 4, 3]
    decoded = heatmap_keypoints(flip_back(mirrored[:, perm], pairs), "udp")
    assert np.abs(decoded[..., :2].numpy() - centres).max() < 0.05


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown decode method"):
        heatmap_keypoints(torch.rand(1, 1, 4, 4), "megvii")
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        heatmap_keypoints(torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="centers"):
        decode_heatmaps(torch.rand(2, 1, 4, 4), np.zeros((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="out of range"):
        flip_back(torch.rand(1, 3, 4, 4), [(1, 3)])
