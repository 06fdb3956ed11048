"""Grid attention: the Triton kernel (forward and backward, every mode) and the SDPA composition against the
dense oracle, plus literal checks of the shift (Swin's roll + region mask) and pool semantics."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from vitpose_fast.config import AttentionSpec, BackboneConfig, attention_preset
from vitpose_fast.reference.attention import attention_ref, attention_torch, geometry, pool_windows

GLOBAL, WINDOW, SHIFT, POOL, SHIFT_POOL = "global", "window", "shift", "pool", "shift_pool"


def _spec(mode: str, window, rel_pos: bool) -> AttentionSpec:
    if mode == GLOBAL:
        return AttentionSpec(rel_pos=rel_pos)
    return AttentionSpec("window", window, shift=mode in (SHIFT, SHIFT_POOL), pool=mode in (POOL, SHIFT_POOL),
                         rel_pos=rel_pos)


def _inputs(b, grid, heads, d, spec, dtype=torch.float32, device="cpu"):
    """q, k, v as strided views of one qkv tensor (the model's layout) and rel-pos tables (or None)."""
    g = geometry(spec, grid)
    n = grid[0] * grid[1]
    qkv = torch.randn(b, n, 3, heads, d, device=device, dtype=dtype, requires_grad=True)
    tables = [None, None]
    if spec.rel_pos:
        tables = [(0.5 * torch.randn(2 * w - 1, d, device=device)).requires_grad_() for w in (g.wh, g.ww)]
    return qkv, tables


def _run(fn, qkv, tables, spec, grid, do, **kw):
    q, k, v = qkv.unbind(2)
    out = fn(q, k, v, spec, grid, *tables, **kw)
    params = [qkv] + [t for t in tables if t is not None]
    return [out, *torch.autograd.grad(out, params, do)]


def _assert_close(got, want, atol, rtol=1e-4, names=("out", "dqkv", "drel_h", "drel_w")):
    for name, a, b in zip(names, got, want):
        # Table gradients sum over every query of the batch (and FA2's dS = P * (dP - rowsum(dO * O)) leaves
        # rounding-level noise where the exact value is 0, e.g. 1-token windows): 5x looser.
        tol = atol * (5 if name.startswith("drel") else 1)
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=rtol, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------------------------------------------
# Triton kernel vs the oracle (interpreter on CPU). Each mode with and without rel-pos; the cases between them
# cover grids the window does not divide, 1-token windows, batch 1, head_dim 80 and multi-block loops.
KERNEL_CASES = [
    # mode, rel_pos, batch, grid, window, heads, head_dim, blocks (None: default)
    (GLOBAL, False, 1, (5, 3), None, 2, 16, None),
    (GLOBAL, True, 2, (7, 6), None, 1, 16, (16, 16)),  # 42 tokens: 3 query and 3 key blocks
    (WINDOW, False, 2, (7, 6), (4, 4), 2, 16, None),
    (WINDOW, True, 1, (5, 3), (1, 1), 2, 80, None),
    (SHIFT, False, 2, (7, 6), (3, 2), 1, 16, None),
    (SHIFT, True, 2, (5, 3), (2, 2), 2, 16, None),
    (POOL, False, 1, (4, 4), (2, 2), 2, 80, None),
    (POOL, True, 2, (7, 6), (4, 4), 1, 16, None),
    (POOL, False, 1, (7, 6), (1, 2), 1, 16, None),  # 21 pooled tokens: 2 pooled-key blocks
    (SHIFT_POOL, False, 2, (7, 6), (6, 6), 1, 16, (16, 16)),  # 36-token windows over 3 blocks, padded
    (SHIFT_POOL, True, 1, (5, 3), (2, 2), 2, 16, None),
]


@pytest.mark.parametrize("mode,rel_pos,b,grid,window,heads,d,blocks", KERNEL_CASES)
def test_kernel_matches_reference(mode, rel_pos, b, grid, window, heads, d, blocks):
    from vitpose_fast.kernels import attention as kernel

    spec = _spec(mode, window, rel_pos)
    qkv, tables = _inputs(b, grid, heads, d, spec)
    do = torch.randn(b, grid[0] * grid[1], heads, d)
    kw = {} if blocks is None else {"config": kernel.Config(*blocks)}
    got = _run(kernel.attention, qkv, tables, spec, grid, do, **kw)
    want = _run(attention_ref, qkv, tables, spec, grid, do)
    assert got[0].shape == qkv[:, :, 0].shape and got[0].is_contiguous()
    _assert_close(got, want, atol=2e-5)


# Head dims that are not powers of two run as power-of-two column parts (80 = 64 + 16, 88 -> 64 + 32,
# 104 -> 64 + 32 + 16): every part's loads, dots and stores, forward and backward, against the oracle.
@pytest.mark.parametrize("d", [80, 88, 104])
@pytest.mark.parametrize("mode,rel_pos,grid,window", [(GLOBAL, True, (3, 5), None), (SHIFT_POOL, True, (5, 3), (2, 2)),
                                                      (WINDOW, False, (4, 3), (2, 3))])
def test_kernel_split_head_dims_match_reference(d, mode, rel_pos, grid, window):
    from vitpose_fast.kernels import attention as kernel

    spec = _spec(mode, window, rel_pos)
    qkv, tables = _inputs(1, grid, 2, d, spec)
    do = torch.randn(1, grid[0] * grid[1], 2, d)
    got = _run(kernel.attention, qkv, tables, spec, grid, do)
    _assert_close(got, _run(attention_ref, qkv, tables, spec, grid, do), atol=2e-5)


def test_head_dim_parts_are_exact_or_nearly():
    from vitpose_fast.kernels.attention import head_dim_parts

    assert head_dim_parts(80) == (64, 16)  # ViT-H: no padded MMA columns
    for d in range(1, 129):
        parts = head_dim_parts(d)
        assert 1 <= len(parts) <= 3 and all(p >= 16 and p & (p - 1) == 0 for p in parts), (d, parts)
        assert sum(parts) >= d and (sum(parts) - d < 16 or sum(parts) == 16), (d, parts)


def test_kernel_fp16_error_within_twice_torch():
    """fp16 (interpreter): kernel error vs the fp32 oracle <= 2x the SDPA composition's own fp16 error."""
    from vitpose_fast.kernels import attention as kernel

    spec, grid = _spec(SHIFT_POOL, (3, 2), True), (7, 6)
    qkv, tables = _inputs(2, grid, 2, 16, spec, dtype=torch.float16)
    do = torch.randn(2, 42, 2, 16).half()
    q, k, v = (t.detach().float() for t in qkv.unbind(2))
    want = attention_ref(q, k, v, spec, grid, *tables)
    err_kernel = (kernel.attention(*qkv.unbind(2), spec, grid, *tables).float() - want).abs().max()
    err_torch = (attention_torch(*qkv.unbind(2), spec, grid, *tables).float() - want).abs().max()
    assert err_kernel <= 2 * err_torch + 1e-3, (err_kernel, err_torch)
    got = _run(kernel.attention, qkv, tables, spec, grid, do)
    ref = _run(attention_ref, qkv, tables, spec, grid, do)
    _assert_close(got, ref, atol=2e-2, rtol=2e-2)


def test_kernel_registered_ops_pass_opcheck():
    """The torch.library ops pass opcheck: schema and fake impl of the kernel, and the rel-pos prologue's autograd
    registration and AOT dispatch too (it is plain torch inside)."""
    from vitpose_fast.kernels import attention  # noqa: F401  (registers the ops)

    spec, grid = _spec(POOL, (2, 2), True), (3, 4)
    qkv, tables = _inputs(1, grid, 1, 16, spec)
    q, k, v = (t.detach().contiguous() for t in qkv.unbind(2))
    kp, vp = pool_windows(k, spec, grid), pool_windows(v, spec, grid)
    g = geometry(spec, grid)
    ah, aw = (torch.randn(1, 12, 1, w) for w in (g.wh, g.ww))
    args = (q, k, v, kp, vp, ah, aw, [3, 4, 2, 2, 4, 4, 0, 0], [64, 64, 4, 2])
    torch.library.opcheck(torch.ops.vitpose_fast.grid_attention_fwd, args,
                          test_utils=("test_schema", "test_faketensor"))
    idx = torch.arange(12)[:, None] % 2 - torch.arange(2)[None, :] + 1
    torch.library.opcheck(torch.ops.vitpose_fast.rel_pos_tables, (qkv.unbind(2)[0], tables[0], idx))


# torch.compile (fullgraph; aot_eager: the forward and backward graphs AOTAutograd builds, run without Inductor) vs
# the oracle's eager autograd, every gradient: under torch 2.11 the rel-pos prologue, then a torch.autograd.Function,
# lost its gradient when compiled (dq and both tables wrong, dk and dv right).
@pytest.mark.parametrize("mode,b,grid,window,heads", [(GLOBAL, 2, (3, 4), None, 2), (SHIFT, 1, (3, 4), (2, 2), 1)])
def test_kernel_compiled_rel_pos_gradients_match_reference(mode, b, grid, window, heads):
    from vitpose_fast.kernels import attention as kernel

    spec = _spec(mode, window, True)
    qkv, tables = _inputs(b, grid, heads, 16, spec)
    do = torch.randn(b, grid[0] * grid[1], heads, 16)

    def step(q, k, v, rel_h, rel_w):
        return kernel.attention(q, k, v, spec, grid, rel_h, rel_w)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = _run(lambda q, k, v, s, g, h, w: compiled(q, k, v, h, w), qkv, tables, spec, grid, do)
    want = _run(attention_ref, qkv, tables, spec, grid, do)
    # dqkv split into dq, dk, dv: a failure names the gradient that is off.
    got, want = ([r[0], *r[1].unbind(2), *r[2:]] for r in (got, want))
    _assert_close(got, want, atol=2e-5, names=("out", "dq", "dk", "dv", "drel_h", "drel_w"))


# --------------------------------------------------------------------------------------------------------------
# SDPA composition vs the oracle (plain torch: every mode on several grids).
TORCH_GRIDS = [((5, 3), (2, 2)), ((4, 4), (4, 4)), ((7, 6), (3, 2)), ((5, 3), (1, 1))]


@pytest.mark.parametrize("grid,window", TORCH_GRIDS)
def test_torch_composition_matches_reference(grid, window):
    for mode, rel_pos in itertools.product((GLOBAL, WINDOW, SHIFT, POOL, SHIFT_POOL), (False, True)):
        spec = _spec(mode, window, rel_pos)
        qkv, tables = _inputs(2, grid, 2, 8, spec, dtype=torch.float64)
        do = torch.randn(2, grid[0] * grid[1], 2, 8, dtype=torch.float64)
        got = _run(attention_torch, qkv, tables, spec, grid, do)
        want = _run(attention_ref, qkv, tables, spec, grid, do)
        _assert_close(got, want, atol=1e-10, rtol=1e-10)


# --------------------------------------------------------------------------------------------------------------
# Literal semantics checks, built the way Swin / a pooling layer would.
def _swin_attention(q, k, v, grid, window):
    """Swin-style: pad, torch.roll by -shift, partition, Swin's img_mask region mask (+ padded keys masked),
    explicit softmax per window, reverse. q, k, v: [B, N, heads, d], fp64."""
    (hp, wp), (wh, ww) = grid, window
    sh, sw = wh // 2, ww // 2
    hpad, wpad = -(-hp // wh) * wh, -(-wp // ww) * ww
    b, n, heads, d = q.shape

    def partition(x):  # [B, Hpad, Wpad, C] -> [B * nW, wh * ww, C]
        c = x.shape[-1]
        x = x.view(x.shape[0], hpad // wh, wh, wpad // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, wh * ww, c)

    def shifted(t):
        x = F.pad(t.reshape(b, hp, wp, -1), (0, 0, 0, wpad - wp, 0, hpad - hp))
        return torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))

    img_mask = torch.zeros(1, hpad, wpad, 1)
    h_slices = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)) if sh else (slice(None),)
    w_slices = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)) if sw else (slice(None),)
    cnt = 0
    for hs in h_slices:
        for ws in w_slices:
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    mask_windows = partition(img_mask).squeeze(-1)  # [nW, T]
    blocked = mask_windows[:, None, :] != mask_windows[:, :, None]
    real = torch.roll(F.pad(torch.ones(1, hp, wp, 1), (0, 0, 0, wpad - wp, 0, hpad - hp)), (-sh, -sw), (1, 2))
    blocked = blocked | (partition(real).squeeze(-1)[:, None, :] == 0)  # padded keys
    qw, kw, vw = (partition(shifted(t)).view(-1, wh * ww, heads, d).transpose(1, 2) for t in (q, k, v))
    attn = (qw * d**-0.5) @ kw.transpose(-2, -1)
    attn = attn.view(b, -1, heads, wh * ww, wh * ww).masked_fill(blocked[None, :, None], float("-inf"))
    out = attn.softmax(-1).view(-1, heads, wh * ww, wh * ww) @ vw  # [B * nW, heads, T, d]
    out = out.transpose(1, 2).reshape(b, hpad // wh, wpad // ww, wh, ww, heads * d)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, hpad, wpad, heads * d)
    out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))[:, :hp, :wp]
    return out.reshape(b, n, heads, d)


@pytest.mark.parametrize("grid,window", [((4, 4), (2, 2)), ((7, 6), (4, 4)), ((5, 3), (3, 2)), ((6, 5), (5, 1))])
def test_shift_matches_swin_roll_and_mask(grid, window):
    spec = AttentionSpec("window", window, shift=True)
    q, k, v = (torch.randn(2, grid[0] * grid[1], 2, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(attention_ref(q, k, v, spec, grid), _swin_attention(q, k, v, grid, window))


@pytest.mark.parametrize("grid,window,shift", [((4, 6), (2, 3), False), ((4, 6), (2, 3), True),
                                               ((7, 5), (3, 2), False), ((7, 5), (4, 4), True)])
def test_pool_is_avg_pool_of_x_then_projection(grid, window, shift):
    """pool_windows(k) with k = x W^T + b equals projecting avg-pooled x; avg-pooling = F.avg_pool2d over the
    real tokens of the (rolled, for shift) zero-padded map."""
    spec = AttentionSpec("window", window, shift=shift, pool=True)
    g = geometry(spec, grid)
    b, c, heads, d = 2, 12, 2, 4
    x = torch.randn(b, grid[0] * grid[1], c, dtype=torch.float64)
    proj = torch.nn.Linear(c, heads * d).double()
    k = proj(x).view(b, -1, heads, d)
    pooled_x = pool_windows(x.view(b, -1, 1, c), spec, grid).view(b, -1, c)
    torch.testing.assert_close(pool_windows(k, spec, grid), proj(pooled_x).view(b, -1, heads, d))

    def padded_rolled(t):  # [B, N, C] -> [B, C, Hpad, Wpad]
        t = F.pad(t.view(t.shape[0], *grid, -1), (0, 0, 0, g.wpad - g.wp, 0, g.hpad - g.hp))
        return torch.roll(t, (-g.sh, -g.sw), (1, 2)).permute(0, 3, 1, 2)

    sums = F.avg_pool2d(padded_rolled(x), window, divisor_override=1)
    counts = F.avg_pool2d(padded_rolled(torch.ones(1, x.shape[1], 1, dtype=x.dtype)), window, divisor_override=1)
    literal = (sums / counts).flatten(2).transpose(1, 2)  # [B, P, C] window-major
    torch.testing.assert_close(pooled_x, literal)


def test_rejects_mismatched_rel_pos_tables():
    spec = AttentionSpec("window", (2, 2), rel_pos=True)
    q = torch.randn(1, 6, 1, 8)
    with pytest.raises(ValueError, match="rel_pos_h / rel_pos_w must be"):
        attention_ref(q, q, q, spec, (2, 3), torch.zeros(5, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="not given"):
        attention_torch(q, q, q, spec, (2, 3))


# --------------------------------------------------------------------------------------------------------------
# A whole reduced-width ViTPose-B-shaped block, every spec of the attention presets: triton vs reference.
def _preset_specs(depth: int, window):
    specs = []
    for name in ("full", "window", "window_shift", "window_pool", "window_shift_pool", "full_window"):
        for s in attention_preset(name, depth=depth, window=window):
            if s not in specs:
                specs.append(s)
    return specs


@pytest.mark.parametrize("spec", _preset_specs(4, (4, 4)), ids=str)
def test_block_triton_matches_reference(spec):
    from vitpose_fast.model.backbone import Block

    cfg = BackboneConfig(img_size=(64, 48), patch_stride=8, embed_dim=32, num_heads=2, depth=4, attention=spec)
    block = Block(cfg, spec, drop_path=0.0)
    if spec.rel_pos:
        for t in (block.attn.rel_pos_h, block.attn.rel_pos_w):
            torch.nn.init.normal_(t, std=0.5)
    x = torch.randn(1, cfg.grid[0] * cfg.grid[1], cfg.embed_dim, requires_grad=True)
    params = [x] + list(block.parameters())
    results = []
    for backend in ("triton", "reference"):
        # A block returns its MLP branch still to be added (fused into the next LayerNorm on fused backends).
        out, pending = block(x, cfg.grid, None, backend)
        if pending is not None:
            branch, bias = pending
            out = out + (branch if bias is None else branch + bias)
        results.append([out, *torch.autograd.grad(out.square().sum(), params)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# GPU: bf16 / fp16 at real shapes, the 2x rule (kernel error <= 2x the torch composition's error in that dtype).
GPU_CASES = [
    # grid, heads, head_dim, spec
    ((32, 24), 12, 64, _spec(SHIFT_POOL, (8, 8), True)),
    ((32, 24), 12, 64, _spec(WINDOW, (16, 12), True)),
    ((32, 24), 12, 64, _spec(GLOBAL, None, True)),
    ((32, 24), 12, 64, _spec(SHIFT, (8, 8), False)),
    ((36, 27), 16, 80, _spec(SHIFT_POOL, (8, 8), True)),
    ((36, 27), 16, 80, _spec(GLOBAL, None, False)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("grid,heads,d,spec", GPU_CASES)
def test_gpu_low_precision_within_twice_torch_error(grid, heads, d, spec, dtype):
    from vitpose_fast.kernels import attention as kernel

    b = 2
    qkv, tables = _inputs(b, grid, heads, d, spec, dtype=dtype, device="cuda")
    do = torch.randn(b, grid[0] * grid[1], heads, d, device="cuda", dtype=dtype)
    qkv32 = qkv.detach().float().requires_grad_()
    want = _run(attention_ref, qkv32, tables, spec, grid, do.float())
    got = _run(kernel.attention, qkv, tables, spec, grid, do)
    base = _run(attention_torch, qkv, tables, spec, grid, do)
    for name, g, t, w in zip(("out", "dqkv", "drel_h", "drel_w"), got, base, want):
        err, err_torch = (g.float() - w).abs().max().item(), (t.float() - w).abs().max().item()
        assert err <= 2 * err_torch + 1e-5 * w.abs().max().item(), f"{name}: {err} vs torch {err_torch}"


# --------------------------------------------------------------------------------------------------------------
# Extra global key/value tokens (knowledge tokens): every mode, outputs and gradients (the extra k/v included).
EXTRA_CASES = [
    # mode, rel_pos, batch, grid, window, heads, head_dim, extra tokens
    (GLOBAL, False, 2, (5, 3), None, 2, 16, 1),
    (GLOBAL, True, 1, (4, 3), None, 1, 16, 3),
    (WINDOW, True, 2, (7, 6), (4, 4), 1, 16, 1),
    (SHIFT, False, 1, (5, 3), (2, 2), 2, 16, 2),
    (POOL, True, 1, (7, 6), (4, 4), 1, 16, 1),
    (SHIFT_POOL, True, 2, (5, 3), (2, 2), 1, 80, 1),
]


def _run_extra(fn, qkv, tables, extra, spec, grid, do, **kw):
    q, k, v = qkv.unbind(2)
    out = fn(q, k, v, spec, grid, *tables, extra[:, :, 0], extra[:, :, 1], **kw)
    params = [qkv, extra] + [t for t in tables if t is not None]
    return [out, *torch.autograd.grad(out, params, do)]


def _extra(b, t, heads, d, dtype=torch.float32):
    return torch.randn(b, t, 2, heads, d, dtype=dtype, requires_grad=True)


@pytest.mark.parametrize("mode,rel_pos,b,grid,window,heads,d,t", EXTRA_CASES)
def test_extra_kv_kernel_and_torch_match_reference(mode, rel_pos, b, grid, window, heads, d, t):
    from vitpose_fast.kernels import attention as kernel

    spec = _spec(mode, window, rel_pos)
    qkv, tables = _inputs(b, grid, heads, d, spec)
    extra = _extra(b, t, heads, d)
    do = torch.randn(b, grid[0] * grid[1], heads, d)
    want = _run_extra(attention_ref, qkv, tables, extra, spec, grid, do)
    names = ("out", "dqkv", "dextra", "drel_h", "drel_w")
    _assert_close(_run_extra(kernel.attention, qkv, tables, extra, spec, grid, do), want, atol=2e-5, names=names)
    _assert_close(_run_extra(attention_torch, qkv, tables, extra, spec, grid, do), want, atol=2e-5, names=names)


@pytest.mark.parametrize("mode", [GLOBAL, WINDOW, SHIFT, POOL, SHIFT_POOL])
def test_extra_kv_torch_matches_reference_fp64(mode):
    spec, grid = _spec(mode, (3, 2), True), (7, 6)
    qkv, tables = _inputs(2, grid, 2, 8, spec, dtype=torch.float64)
    extra = _extra(2, 2, 2, 8, dtype=torch.float64)
    do = torch.randn(2, 42, 2, 8, dtype=torch.float64)
    got = _run_extra(attention_torch, qkv, tables, extra, spec, grid, do)
    want = _run_extra(attention_ref, qkv, tables, extra, spec, grid, do)
    _assert_close(got, want, atol=1e-10, rtol=1e-10, names=("out", "dqkv", "dextra", "drel_h", "drel_w"))


def test_extra_kv_global_is_plain_attention_over_n_plus_t():
    """Global attention with T extra tokens = explicit softmax attention of the N queries over N + T keys."""
    from vitpose_fast.kernels import attention as kernel

    b, n, t, heads, d = 2, 11, 2, 2, 16
    q, k, v = (torch.randn(b, n, heads, d, dtype=torch.float64) for _ in range(3))
    ek, ev = (torch.randn(b, t, heads, d, dtype=torch.float64) for _ in range(2))
    kk, vv = torch.cat([k, ek], 1).transpose(1, 2), torch.cat([v, ev], 1).transpose(1, 2)
    plain = ((q.transpose(1, 2) @ kk.transpose(-2, -1)) * d**-0.5).softmax(-1) @ vv
    plain = plain.transpose(1, 2)
    spec, grid = AttentionSpec(), (1, n)
    torch.testing.assert_close(attention_ref(q, k, v, spec, grid, extra_k=ek, extra_v=ev), plain)
    torch.testing.assert_close(attention_torch(q, k, v, spec, grid, extra_k=ek, extra_v=ev), plain)
    got = kernel.attention(*(x.float() for x in (q, k, v)), spec, grid, extra_k=ek.float(), extra_v=ev.float())
    torch.testing.assert_close(got, plain.float(), atol=2e-5, rtol=1e-4)


def test_extra_kv_rejects_malformed_tokens():
    q = torch.randn(1, 6, 2, 8)
    spec = AttentionSpec("window", (2, 2))
    with pytest.raises(ValueError, match="together"):
        attention_ref(q, q, q, spec, (2, 3), extra_k=torch.randn(1, 1, 2, 8))
    with pytest.raises(ValueError, match=r"\[B, T, heads, head_dim\]"):
        attention_torch(q, q, q, spec, (2, 3), extra_k=torch.randn(1, 1, 3, 8), extra_v=torch.randn(1, 1, 3, 8))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("spec", [_spec(SHIFT_POOL, (8, 8), True), _spec(GLOBAL, None, True),
                                  _spec(GLOBAL, None, False)], ids=str)
def test_gpu_extra_kv_within_twice_torch_error(spec, dtype):
    """Knowledge tokens at ViTPose-B 1/8 shapes: our kernel (and, for plain global attention, the dispatched
    vendor kernel) vs the fp32 oracle, at most 2x the SDPA composition's error in outputs and gradients."""
    from vitpose_fast import ops

    b, grid, heads, d = 2, (32, 24), 12, 64
    qkv, tables = _inputs(b, grid, heads, d, spec, dtype=dtype, device="cuda")
    extra = torch.randn(b, 1, 2, heads, d, device="cuda", dtype=dtype, requires_grad=True)
    do = torch.randn(b, grid[0] * grid[1], heads, d, device="cuda", dtype=dtype)
    ref = [t.detach().float().requires_grad_() for t in (qkv, extra)]
    want = _run_extra(attention_ref, ref[0], tables, ref[1], spec, grid, do.float())
    got = _run_extra(lambda *a: ops.attention(*a[:7], backend="triton", extra_k=a[7], extra_v=a[8]),
                     qkv, tables, extra, spec, grid, do)
    base = _run_extra(attention_torch, qkv, tables, extra, spec, grid, do)
    for name, g, t, w in zip(("out", "dqkv", "dextra", "drel_h", "drel_w"), got, base, want):
        err, err_torch = (g.float() - w).abs().max().item(), (t.float() - w).abs().max().item()
        assert err <= 2 * err_torch + 1e-5 * w.abs().max().item(), f"{name}: {err} vs torch {err_torch}"
