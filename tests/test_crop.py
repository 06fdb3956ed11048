"""crop.py vs literal transcriptions of the official mmpose 0.x numpy code and cv2.warpAffine."""

import math

import cv2
import numpy as np
import pytest
import torch

from vitpose_fast.data import crop
from vitpose_fast.data.crop import IMAGENET_MEAN, IMAGENET_STD


# ---- official code, transcribed (mmpose/apis/inference.py, mmpose/core/post_processing/post_transforms.py) ----
def official_xyxy2xywh(bbox_xyxy):
    bbox_xywh = bbox_xyxy.copy()
    bbox_xywh[:, 2] = bbox_xywh[:, 2] - bbox_xywh[:, 0] + 1
    bbox_xywh[:, 3] = bbox_xywh[:, 3] - bbox_xywh[:, 1] + 1
    return bbox_xywh


def official_box2cs(image_size, box):
    x, y, w, h = box[:4]
    aspect_ratio = image_size[0] / image_size[1]
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / 200.0, h / 200.0], dtype=np.float32)
    scale = scale * 1.25
    return center, scale


def official_get_warp_matrix(theta, size_input, size_dst, size_target):
    theta = np.deg2rad(theta)
    matrix = np.zeros((2, 3), dtype=np.float32)
    scale_x = size_dst[0] / size_target[0]
    scale_y = size_dst[1] / size_target[1]
    matrix[0, 0] = math.cos(theta) * scale_x
    matrix[0, 1] = -math.sin(theta) * scale_x
    matrix[0, 2] = scale_x * (-0.5 * size_input[0] * math.cos(theta) +
                              0.5 * size_input[1] * math.sin(theta) +
                              0.5 * size_target[0])
    matrix[1, 0] = math.sin(theta) * scale_y
    matrix[1, 1] = math.cos(theta) * scale_y
    matrix[1, 2] = scale_y * (-0.5 * size_input[0] * math.sin(theta) -
                              0.5 * size_input[1] * math.cos(theta) +
                              0.5 * size_target[1])
    return matrix


def official_rotate_point(pt, angle_rad):
    sn, cs = np.sin(angle_rad), np.cos(angle_rad)
    return [pt[0] * cs - pt[1] * sn, pt[0] * sn + pt[1] * cs]


def official_get_3rd_point(a, b):
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def official_get_affine_transform(center, scale, rot, output_size, shift=(0.0, 0.0), inv=False):
    scale_tmp = scale * 200.0
    shift = np.array(shift)
    src_w = scale_tmp[0]
    dst_w = output_size[0]
    dst_h = output_size[1]
    rot_rad = np.pi * rot / 180
    src_dir = official_rotate_point([0.0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0.0, dst_w * -0.5])
    src = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale_tmp * shift
    src[1, :] = center + src_dir + scale_tmp * shift
    src[2, :] = official_get_3rd_point(src[0, :], src[1, :])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    dst[2, :] = official_get_3rd_point(dst[0, :], dst[1, :])
    if inv:
        return cv2.getAffineTransform(np.float32(dst), np.float32(src))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


# ---------------------------------------------------------------------------------------------------------------
def random_boxes_xyxy(n, w, h, rng):
    x1 = rng.uniform(-0.2 * w, 0.9 * w, n)
    y1 = rng.uniform(-0.2 * h, 0.9 * h, n)
    bw = rng.uniform(2, 0.8 * w, n)
    bh = rng.uniform(2, 0.8 * h, n)
    return np.stack([x1, y1, x1 + bw, y1 + bh], 1)


def smooth_image(h, w, rng):
    # Low-frequency content: cv2 quantises sample positions to 1/32 pixel, which on white noise alone would
    # move values by several grey levels; real photos are smooth at that scale.
    small = rng.uniform(0, 255, (h // 12 + 2, w // 12 + 2, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), 0, 255).astype(np.uint8)


def test_box_conversions_match_official():
    rng = np.random.default_rng(int(torch.randint(0, 2**31, ()).item()))
    boxes = random_boxes_xyxy(11, 320, 240, rng)
    xywh = official_xyxy2xywh(boxes)
    ours = crop.box_xyxy_to_xywh(torch.from_numpy(boxes))
    np.testing.assert_allclose(ours.numpy(), xywh, rtol=0, atol=1e-12)
    np.testing.assert_allclose(crop.box_xywh_to_xyxy(ours).numpy(), boxes, atol=1e-12)
    for image_size in [(192, 256), (48, 64), (288, 384), (100, 100)]:
        centers, scales = crop.box_to_center_scale(torch.from_numpy(xywh), image_size[0] / image_size[1])
        for i in range(len(xywh)):
            c, s = official_box2cs(image_size, xywh[i])
            np.testing.assert_allclose(centers[i].numpy(), c, rtol=1e-6)
            np.testing.assert_allclose(scales[i].numpy(), s, rtol=1e-6)
    # Exactly-at-aspect boxes take neither branch.
    c, s = crop.box_to_center_scale(torch.tensor([[0.0, 0.0, 75.0, 100.0]], dtype=torch.float64), 0.75)
    np.testing.assert_allclose(s.numpy()[0], [75 / 200 * 1.25, 100 / 200 * 1.25])


def test_warp_matrix_matches_official():
    n = 9
    theta = torch.empty(n, dtype=torch.float64).uniform_(-80, 80)
    size_input = torch.empty(n, 2, dtype=torch.float64).uniform_(10, 900)
    size_target = torch.empty(n, 2, dtype=torch.float64).uniform_(5, 600)
    size_dst = torch.tensor([191.0, 255.0], dtype=torch.float64)
    ours = crop.get_warp_matrix(theta, size_input, size_dst, size_target)
    assert ours.shape == (n, 2, 3) and ours.dtype == torch.float64
    for i in range(n):
        ref = official_get_warp_matrix(theta[i].item(), size_input[i].numpy(), size_dst.numpy(), size_target[i].numpy())
        np.testing.assert_allclose(ours[i].numpy(), ref, rtol=1e-5, atol=1e-4)  # ref is float32


@pytest.mark.parametrize("inv", [False, True])
def test_affine_transform_matches_official(inv):
    n = 7
    center = torch.empty(n, 2, dtype=torch.float64).uniform_(0, 500)
    scale = torch.empty(n, 2, dtype=torch.float64).uniform_(0.1, 3)
    rot = torch.empty(n, dtype=torch.float64).uniform_(-80, 80)
    shift = (0.03, -0.07)
    output_size = (48, 64)
    ours = crop.get_affine_transform(center, scale, rot, output_size, shift=shift, inv=inv)
    for i in range(n):
        ref = official_get_affine_transform(
            center[i].numpy(), scale[i].numpy(), rot[i].item(), np.array(output_size), shift=shift, inv=inv
        )
        # The official matrix comes from float32 points through cv2.getAffineTransform.
        np.testing.assert_allclose(ours[i].numpy(), ref, rtol=1e-4, atol=2e-3 * (1 + np.abs(ref).max()))
    both = crop.get_affine_transform(center, scale, rot, output_size, shift=shift, inv=not inv)
    composed = torch.cat([ours, torch.tensor([[[0, 0, 1.0]]], dtype=torch.float64).expand(n, 1, 3)], 1)
    composed = both @ composed
    np.testing.assert_allclose(composed[..., :2].numpy(), np.broadcast_to(np.eye(2), (n, 2, 2)), atol=1e-10)


@pytest.mark.parametrize("udp", [True, False])
def test_crop_matches_cv2_warp_affine(udp):
    rng = np.random.default_rng(int(torch.randint(0, 2**31, ()).item()))
    out_w, out_h = 37, 53  # odd sizes; aspect ratio != 0.75 on purpose
    sizes = [(61, 83), (120, 97), (45, 45)]
    images = [smooth_image(h, w, rng) for h, w in sizes]
    persons = [4, 0, 3]  # one image without persons
    index = np.repeat(np.arange(len(images)), persons)
    rng.shuffle(index)  # persons need not be grouped by image
    boxes = np.concatenate([random_boxes_xyxy(1, sizes[i][1], sizes[i][0], rng) for i in index])
    centers, scales = crop.box_to_center_scale(
        crop.box_xyxy_to_xywh(torch.from_numpy(boxes)), out_w / out_h
    )
    ours = crop.crop_and_normalize(
        [torch.from_numpy(im) for im in images], torch.from_numpy(index), centers, scales, (out_w, out_h), udp=udp
    )
    assert ours.shape == (len(index), 3, out_h, out_w) and ours.dtype == torch.float32
    std = np.array(IMAGENET_STD) * 255
    mean = np.array(IMAGENET_MEAN) * 255
    grey = ours.permute(0, 2, 3, 1).numpy() * std + mean
    mats = crop.crop_matrices(centers, scales, (out_w, out_h), udp=udp).numpy()
    jj, ii = np.meshgrid(np.arange(out_w), np.arange(out_h))
    checked = 0
    for p, b in enumerate(index):
        m = mats[p]
        ref = cv2.warpAffine(
            images[b], m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        inv = cv2.invertAffineTransform(m)
        sx = inv[0, 0] * jj + inv[0, 1] * ii + inv[0, 2]
        sy = inv[1, 0] * jj + inv[1, 1] * ii + inv[1, 2]
        h, w = sizes[b]
        interior = (sx >= 0) & (sy >= 0) & (sx <= w - 1) & (sy <= h - 1)
        outside = (sx < -1.1) | (sy < -1.1) | (sx > w + 0.1) | (sy > h + 0.1)
        err = np.abs(grey[p][interior] - ref[interior].astype(np.float64))
        assert err.max(initial=0) <= 1.0, f"person {p}: max grey-level error {err.max()}"
        np.testing.assert_allclose(grey[p][outside], 0.0, atol=1e-3)
        checked += interior.sum()
    assert checked > 100


def test_crop_batched_tensor_and_device_dtype():
    images = torch.randint(0, 256, (2, 30, 40, 3), dtype=torch.uint8)
    boxes = torch.tensor([[1.0, 2.0, 20.0, 25.0], [5.0, 5.0, 35.0, 28.0], [0.0, 0.0, 39.0, 29.0]])
    centers, scales = crop.box_to_center_scale(crop.box_xyxy_to_xywh(boxes), 0.75)
    index = torch.tensor([1, 0, 1])
    batched = crop.crop_and_normalize(images, index, centers, scales, (12, 16))
    as_list = crop.crop_and_normalize(list(images), index.tolist(), centers, scales, (12, 16))
    single = torch.cat([
        crop.crop_and_normalize([images[int(b)]], [0], centers[i : i + 1], scales[i : i + 1], (12, 16))
        for i, b in enumerate(index)
    ])
    torch.testing.assert_close(batched, as_list, rtol=0, atol=0)
    torch.testing.assert_close(batched, single, rtol=1e-6, atol=1e-5)
    empty = crop.crop_and_normalize(images, torch.zeros(0, dtype=torch.long), centers[:0], scales[:0], (12, 16))
    assert empty.shape == (0, 3, 16, 12)


def test_crop_rejects_bad_inputs():
    images = [torch.zeros(10, 10, 3, dtype=torch.uint8)]
    c, s = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match="image_index"):
        crop.crop_and_normalize(images, [1], c, s, (8, 8))
    with pytest.raises(ValueError, match="centers"):
        crop.crop_and_normalize(images, [0, 0], c, s, (8, 8))
    with pytest.raises(ValueError, match="HxWx3"):
        crop.crop_and_normalize([torch.zeros(10, 10, dtype=torch.uint8)], [0], c, s, (8, 8))
