"""Parity of the fused heatmap-decoding kernel with the batched torch decoding (vitpose_fast.inference.decode).

Positions are compared in heatmap pixels (image error / image pixels per heatmap pixel), to 1e-4 px (on pure
noise, plus the rounding the Newton step amplifies there); scores must match to
1e-6 relative (both are the raw maximum, so they are in fact equal).
"""

import pytest
import torch
import triton

from vitpose_fast.inference.decode import gaussian_blur, heatmap_keypoints
from vitpose_fast.kernels import heatmap_decode as hd
from vitpose_fast.reference.heatmap_decode import decode_heatmaps_ref

METHODS = ("argmax", "default", "dark", "udp")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL_PX = 1e-4


def _boxes(n: int):
    # Scales in [0.5, 1.5] (100..300 image px per box side), centres anywhere in a 500 px image.
    centers = torch.rand(n, 2, dtype=torch.float64, device=DEVICE) * 500
    scales = 0.5 + torch.rand(n, 2, dtype=torch.float64, device=DEVICE)
    return centers, scales


def _udp_heatmaps(kpts: torch.Tensor, H: int, W: int, sigma: float = 2.0) -> torch.Tensor:
    """The official UDP Gaussian target (mmpose ``_udp_generate_target``) of heatmap-space keypoints [N, K, 2]:
    exp(-d^2 / (2 sigma^2)) around the sub-pixel keypoint, on the window of radius 3 sigma around
    int(keypoint + 0.5)."""
    x = torch.arange(W, dtype=torch.float64, device=kpts.device)
    y = torch.arange(H, dtype=torch.float64, device=kpts.device)
    kx, ky = kpts[..., 0:1].double(), kpts[..., 1:2].double()
    mux, muy = torch.floor(kx + 0.5), torch.floor(ky + 0.5)
    gx = torch.exp(-((x - kx) ** 2) / (2 * sigma**2)) * ((x - mux).abs() <= 3 * sigma)
    gy = torch.exp(-((y - ky) ** 2) / (2 * sigma**2)) * ((y - muy).abs() <= 3 * sigma)
    return (gy[..., :, None] * gx[..., None, :]).float()


def _peaked_maps(N: int, K: int, H: int, W: int, noise: float = 0.02) -> torch.Tensor:
    """Model-like maps: UDP targets of random sub-pixel keypoints, random amplitude, plus Gaussian noise."""
    kpts = torch.rand(N, K, 2, device=DEVICE) * torch.tensor([W - 1.0, H - 1.0], device=DEVICE)
    amp = 0.3 + 0.7 * torch.rand(N, K, 1, 1, device=DEVICE)
    return amp * _udp_heatmaps(kpts, H, W) + noise * torch.randn(N, K, H, W, device=DEVICE)


def _hm_error(out: torch.Tensor, ref: torch.Tensor, scales: torch.Tensor, H: int, W: int, method: str):
    """|out - ref| of (x, y) in heatmap pixels, [N, K, 2] float64."""
    size = torch.tensor([W, H], dtype=torch.float64, device=scales.device) - (1.0 if method == "udp" else 0.0)
    img_px_per_hm_px = scales * 200.0 / size
    return (out[..., :2].double() - ref[..., :2].double()).abs() / img_px_per_hm_px[:, None, :]


def _ref(hm, centers, scales, method: str = "udp", kernel: int = 11) -> torch.Tensor:
    # cuDNN would run the reference's fp32 blur convolutions in TF32 (torch's default), 1e-3 relative.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        return decode_heatmaps_ref(hm, centers, scales, method, kernel)


def _check(hm: torch.Tensor, method: str, kernel: int = 11, tol: float = TOL_PX) -> None:
    N, K, H, W = hm.shape
    centers, scales = _boxes(N)
    out = hd.decode_heatmaps_triton(hm, centers, scales, method, kernel)
    ref = _ref(hm, centers, scales, method, kernel)
    assert out.shape == (N, K, 3) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    err = _hm_error(out, ref, scales, H, W, method)
    assert err.max().item() <= tol, f"{method}: max error {err.max().item():.3g} heatmap px"
    torch.testing.assert_close(out[..., 2], ref[..., 2], rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(1, 1, 8, 6), (3, 5, 13, 11), (1, 17, 64, 48)])
def test_matches_reference_on_udp_encoded_maps(method, shape):
    _check(_peaked_maps(*shape), method)


@pytest.mark.parametrize("method", METHODS)
def test_peaks_on_every_border_and_corner(method):
    H, W = 13, 11
    border = [(x, y) for y in range(H) for x in range(W) if x in (0, W - 1) or y in (0, H - 1)]
    kpts = torch.tensor(border, dtype=torch.float32, device=DEVICE)
    # Sub-pixel jitter that stays inside the map, so the peak pixel is the border pixel itself or next to it.
    upper = kpts.new_tensor([W - 1, H - 1])
    kpts = torch.minimum(torch.maximum(kpts + 0.4 * (torch.rand_like(kpts) - 0.5), torch.zeros_like(upper)), upper)
    hm = _udp_heatmaps(kpts[None], H, W)
    _check(hm, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [0.5, 1e-4, 100.0, 0.0, -0.25])
def test_flat_maps(method, value):
    # Ties everywhere: the first index (0, 0) wins (or (-1, -1) for a maximum <= 0); the blurred log map is exactly
    # flat (every blur output sums the same taps in the same order), so udp takes no Newton step.
    hm = torch.full((2, 3, 9, 7), value, device=DEVICE)
    _check(hm, method)
    centers, scales = _boxes(2)
    out = hd.decode_heatmaps_triton(hm, centers, scales, method)
    size = torch.tensor([7.0, 9.0], dtype=torch.float64, device=DEVICE) - (1.0 if method == "udp" else 0.0)
    xy = 0.0 if value > 0 else -1.0
    box = scales * 200.0
    expected = xy * (box / size) + (centers - box * 0.5)  # transform_preds of (xy, xy)
    torch.testing.assert_close(out[..., :2], expected[:, None].float().expand(2, 3, 2), rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_all_negative_maps(method):
    hm = -0.01 - torch.rand(2, 4, 13, 11, device=DEVICE)
    _check(hm, method)


def test_first_maximum_on_ties_across_chunks():
    # 64 x 48 maps span two chunks of the default block; equal maxima in either order across the boundary.
    N, K, H, W = 1, 4, 64, 48
    hm = 0.5 * torch.rand(N, K, H, W, device=DEVICE)
    flat = hm.view(N, K, H * W)
    for k, (i, j) in enumerate([(5, 3000), (2047, 2048), (100, 101), (3071, 0)]):
        flat[0, k, i] = flat[0, k, j] = 1.0
    _check(hm, "argmax", tol=0.0)
    _check(hm, "default", tol=0.0)


def test_first_maximum_on_ties_in_one_lane_across_chunks():
    # Each lane keeps a running maximum over the chunks, so only a tie at the same offset of two different chunks
    # (flat indices i and i + BLOCK * c) exercises the chunk merge: the lane must keep the earlier one.
    block = hd._DEFAULT_CONFIG.kwargs["BLOCK"]
    H, W = 72, 96  # 6912 values: four chunks of the default block, the last one partial
    assert H * W > 3 * block
    pairs = [(0, block), (7, 3 * block + 7), (block + 5, 2 * block + 5), (block - 1, 3 * block - 1)]
    hm = 0.5 * torch.rand(1, len(pairs), H, W, device=DEVICE)
    flat = hm.view(1, len(pairs), H * W)
    for k, (i, j) in enumerate(pairs):
        flat[0, k, i] = flat[0, k, j] = 1.0
    centers = torch.tensor([[48.0, 36.0]], dtype=torch.float64, device=DEVICE)
    scales = torch.tensor([[W / 200.0, H / 200.0]], dtype=torch.float64, device=DEVICE)  # one image px per map px
    out = hd.decode_heatmaps_triton(hm, centers, scales, "argmax")
    first = torch.tensor([[i % W, i // W] for i, _ in pairs], dtype=torch.float32, device=DEVICE)
    torch.testing.assert_close(out[0, :, :2], first, rtol=0, atol=0)
    _check(hm, "argmax", tol=0.0)


def _newton_sensitivity(hm: torch.Tensor, method: str, kernel: int = 11) -> torch.Tensor:
    """A first-order bound [N, K] on how far rounding moves the reference's Newton step at each argmax.

    Each log value L = log(B) carries an absolute error ~ u * (blur(|h|) / |B| + |L|): the relative rounding
    error of the fp32 blur sum B (large where positive and negative values cancel), plus log's own. The step
    M^-1 g then moves by ~ ||M^-1|| * (|dg| + |dM| * |step|). Returned without the (few-ulp) constant.
    """
    N, K, H, W = hm.shape
    flat = hm.reshape(N, K, -1)
    idx = flat.argmax(-1)
    valid = flat.amax(-1) > 0
    x = torch.where(valid, idx % W, 0)
    y = torch.where(valid, idx // W, 0)
    border = "reflect101" if method == "udp" else "zero"
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        b = gaussian_blur(hm, kernel, border=border).double()
        b_abs = gaussian_blur(hm.abs(), kernel, border=border).double()
    if method == "udp":
        L = torch.log(b.clamp(0.001, 50.0))
        step, scale, eps = 1, 1.0, 2.0**-23
    else:
        b_abs = b_abs * (hm.amax((-2, -1)) / b.amax((-2, -1))).abs()[..., None, None]
        b = b * (hm.amax((-2, -1)) / b.amax((-2, -1)))[..., None, None]
        L = torch.log(b.clamp_min(1e-10))
        step, scale, eps = 2, 0.25, 0.0
    err_l = (b_abs / b.abs().clamp_min(1e-30) + L.abs()).reshape(N, K, -1)
    L = L.reshape(N, K, -1)

    def at(t, dx, dy):
        return t.gather(2, ((y + dy).clamp(0, H - 1) * W + (x + dx).clamp(0, W - 1))[..., None])[..., 0]

    offsets = [(dx, dy) for dx in (-step, -1, 0, 1, step) for dy in (-step, -1, 0, 1, step)]
    err_l = torch.stack([at(err_l, dx, dy) for dx, dy in offsets], -1).amax(-1)
    dxx = scale * (at(L, step, 0) - 2 * at(L, 0, 0) + at(L, -step, 0)) + eps
    dyy = scale * (at(L, 0, step) - 2 * at(L, 0, 0) + at(L, 0, -step)) + eps
    if method == "udp":
        dxy = 0.5 * (at(L, 1, 1) - at(L, 1, 0) - at(L, 0, 1) + 2 * at(L, 0, 0) - at(L, -1, 0) - at(L, 0, -1)
                     + at(L, -1, -1))
    else:
        dxy = 0.25 * (at(L, 1, 1) - at(L, 1, -1) - at(L, -1, 1) + at(L, -1, -1))
    m = torch.stack((torch.stack((dxx, dxy), -1), torch.stack((dxy, dyy), -1)), -2)
    inv_norm = 1.0 / torch.linalg.svdvals(m)[..., -1]
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        steps = (heatmap_keypoints(hm, method) - heatmap_keypoints(hm, "argmax"))[..., :2].abs().amax(-1).double()
    return 2.0**-24 * err_l * inv_norm * (1 + steps)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_pure_noise_maps(method, noise):
    # On noise the refinement can be arbitrarily sensitive: both sides then agree only to their rounding
    # (blur summation order, libm log) amplified by the Newton step, so dark/udp are held to TOL_PX plus 16 ulps
    # of each log value propagated through it (_newton_sensitivity).
    N, K, H, W = 3, 5, 13, 11
    hm = torch.randn(N, K, H, W, device=DEVICE) if noise == "normal" else torch.rand(N, K, H, W, device=DEVICE)
    centers, scales = _boxes(N)
    out = hd.decode_heatmaps_triton(hm, centers, scales, method)
    ref = _ref(hm, centers, scales, method)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[..., 2], ref[..., 2], rtol=1e-6, atol=0)
    err = _hm_error(out, ref, scales, H, W, method).amax(-1)
    if method in ("argmax", "default"):
        assert err.max().item() == 0.0
        return
    bound = TOL_PX + 32 * _newton_sensitivity(hm, method)
    assert (err <= bound).all(), f"error {err.max().item():.3g} heatmap px over its bound"


def test_dark_rescale_and_clamp_on_tiny_peaks():
    # Peaks of ~1e-9 over a negative background: the blurred stencil values fall below 1e-9, so the kernel takes
    # its exact path (whole-map blurred maximum, max rescale, the 1e-10 clamp acting on part of the stencil).
    N, K, H, W = 1, 6, 15, 13
    kpts = 3 + torch.rand(N, K, 2, device=DEVICE) * torch.tensor([W - 7.0, H - 7.0], device=DEVICE)
    amp = 10 ** (-10 + torch.rand(N, K, 1, 1, device=DEVICE))
    hm = amp * _udp_heatmaps(kpts, H, W, sigma=1.0) - 1e-11 * torch.rand(N, K, H, W, device=DEVICE)
    blurred = gaussian_blur(hm, 11, border="zero")
    assert (blurred.amax((-2, -1)) < 1e-9).all()  # the exact path is the one under test
    _check(hm, "dark")


@pytest.mark.parametrize("method", ["dark", "udp"])
@pytest.mark.parametrize("kernel", [1, 3, 7, 17])
def test_other_blur_kernel_sizes(method, kernel):
    _check(_peaked_maps(1, 3, 24, 20), method, kernel)


@pytest.mark.parametrize("method", METHODS)
def test_fp16_input(method):
    # Both sides decode the same fp16 values in fp32, so the fp32 tolerance applies.
    _check(_peaked_maps(2, 5, 13, 11).half(), method)


def test_more_than_2pow24_elements(monkeypatch):
    # 2 maps of 2900 x 2900: 16.8M > 2**24 values, the second map's flat offsets past 2**24. The peaks sit where a
    # float32 flat index would round (odd offsets), and the expected pixels are known by construction.
    if DEVICE == "cpu":
        # The interpreter's cost is per loop iteration, not per element: one chunk per million values.
        monkeypatch.setattr(hd, "_DEFAULT_CONFIG", triton.Config({"BLOCK": 2**20}, num_warps=4))
    N, K, H, W = 1, 2, 2900, 2900
    assert N * K * H * W > 2**24
    hm = 0.5 * torch.rand(N, K, H, W, device=DEVICE)
    peaks = [(2899, 1449), (2897, 2899)]  # (x, y): last column of the first map, last row of the second
    for k, (x, y) in enumerate(peaks):
        hm[0, k, y, x] = 1.0
    centers = torch.tensor([[0.0, 0.0]], dtype=torch.float64, device=DEVICE)
    scales = torch.tensor([[W / 200.0, H / 200.0]], dtype=torch.float64, device=DEVICE)  # identity transform
    out = hd.decode_heatmaps_triton(hm, centers, scales, "default")
    ref = _ref(hm, centers, scales, "default")
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    expected = torch.tensor([[x, y] for x, y in peaks], dtype=torch.float32, device=DEVICE) - W / 2.0
    # 'default' moves inner peaks by +-0.25 toward the higher neighbour; these sit on the border: no shift.
    torch.testing.assert_close(out[0, :, :2], expected, rtol=0, atol=0)


def test_numpy_centers_and_scales():
    hm = _peaked_maps(2, 3, 16, 12)
    centers, scales = _boxes(2)
    scales = scales.float()
    out = hd.decode_heatmaps_triton(hm, centers.cpu().numpy(), scales.cpu().numpy())
    ref = _ref(hm, centers, scales)
    assert _hm_error(out, ref, scales.double(), 16, 12, "udp").max().item() <= TOL_PX


def test_custom_op_traces():
    hm = _peaked_maps(2, 3, 13, 11)
    centers, scales = _boxes(2)
    torch.library.opcheck(torch.ops.vitpose_fast.heatmap_decode.default, (hm, centers, scales, "udp", 11))
    compiled = torch.compile(hd.decode_heatmaps_triton, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(hm, centers, scales), hd.decode_heatmaps_triton(hm, centers, scales))


def test_input_errors_and_supports():
    hm = torch.zeros(1, 2, 8, 6, device=DEVICE)
    c, s = _boxes(1)
    with pytest.raises(ValueError, match="unknown decode method"):
        hd.decode_heatmaps_triton(hm, c, s, "megvii")
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        hd.decode_heatmaps_triton(hm[0], c, s)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        hd.decode_heatmaps_triton(hm.to(torch.int32), c, s)
    with pytest.raises(ValueError, match="odd int"):
        hd.decode_heatmaps_triton(hm, c, s, "udp", 4)
    with pytest.raises(ValueError, match="between 1 and"):
        hd.decode_heatmaps_triton(hm[..., :0], c, s)
    with pytest.raises(ValueError, match=r"centers must have shape \[N, 2\]"):
        hd.decode_heatmaps_triton(hm, c[:, :1], s)
    assert hd.supports(hm, "udp") and hd.supports(hm.half(), "dark")
    assert not hd.supports(hm, "megvii")
    assert not hd.supports(hm.double(), "udp")
    assert not hd.supports(hm[..., :1], "udp") and hd.supports(hm[..., :1], "dark")
    assert not hd.supports(hm, "udp", kernel=19)
    assert hd.decode_heatmaps_triton(hm[:0], c[:0], s[:0]).shape == (0, 2, 3)


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_bf16_gpu(method):
    _check(_peaked_maps(4, 17, 64, 48).bfloat16(), method)


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_vitpose_huge_resolution_gpu(method):
    # ViTPose at 576 x 432 input: 144 x 108 heatmaps, batch 64 x 17 keypoints.
    _check(_peaked_maps(64, 17, 144, 108), method)
