"""Grid attention (global, window, shifted window, pooling window, decomposed rel-pos) as one FlashAttention-2
kernel family.

Semantics: exactly :mod:`vitpose_fast.reference.attention` (read its docstring). q, k, v: [B, N, heads, head_dim]
in the model's layout (the qkv Linear output reshaped; any strides with a unit last stride, so no transposes or
copies), N = Hp * Wp row-major; output [B, N, heads, head_dim] contiguous. scale = head_dim ** -0.5.

Algorithm. Every mode is the same tiling: one program per (query block of one window, batch * head). Global
attention is the one window of the whole grid (no padding, no shift). A program walks the key blocks of its own
window, then the P pooled key/value tokens (``pool``), with an online base-2 softmax; no score matrix is ever
written. Window membership, padding (grid padded at the bottom/right to multiples of the window) and Swin's
shift are index arithmetic on window-local token numbers t = i * ww + j: rolled position (r, c) = (window row *
wh + i, window column * ww + j), original position ((r + sh) mod Hpad, (c + sw) mod Wpad), real iff inside the
Hp x Wp grid; Swin's region id compares (r, c) with Hpad - wh, Hpad - sh (and columns alike). No torch.roll
copies, no materialised masks. Padded tokens are masked as keys and never stored as queries.

Backward (FA2): ``_bwd_kv`` gives dK/dV per key block looping over the query blocks that see it (window keys:
the queries of its window; pooled keys: ceil(P / BLOCK_P) extra programs per (batch, head), each looping over
every query of the map) on transposed [keys, queries] tiles (every product then has the key block as its M
side, so the streamed query tiles can be 32 wide and stay on wgmma), ``_bwd_q`` gives dQ per query block; both
recompute P from the saved logsumexp;
delta = rowsum(dO * O) is a small torch prologue. With rel-pos, a second ``_bwd_q`` launch (``DA_PASS``)
recomputes P and dP once more and returns only the table gradients dA_h, dA_w (see below): kept beside dQ, their
accumulators and one-hot products spilled kilobytes per thread on sm_90a. No atomics. dq, dk, dv come back as
three contiguous tensors (autograd stacks them into the qkv gradient: one extra copy).

Around the kernel, in torch (autograd differentiates it): ``pool`` averages k and v per window
(:func:`pool_windows`) and the kernel receives them as P extra key/value tokens, so the pooled tokens' gradient
flows back to the tokens they pooled. Extra global key/value tokens (``extra_k``, ``extra_v`` [B, T, heads, d]:
the backbone's knowledge tokens) are concatenated after the pooled ones into the same appended set (P + T
tokens, seen by every query, no mask or rel-pos term), so they cost one small copy and reuse the pooled-key
loops forward and backward; this works for every spec, global included (the appended loop does not depend on
``pool``). ``rel_pos``: the prologue computes per query the [wh] and [ww] tables
A_h[n, a] = q_n . rel_pos_h[i_n - a + wh - 1] (a = key row in the window) and A_w likewise, in fp32 (one
[B*N*heads, d] x [d, 2w-1] GEMM plus a gather); the kernel adds A_h[q, i_k] + A_w[q, j_k] to each logit and its
dA pass returns dA_h, dA_w (a one-hot [BLOCK_N, w] product of dS; fp32-accurate: dS split into three bf16
terms against the exact bf16 one-hot on the GPU, tf32x3 in the interpreter, which has no bf16), from which
autograd gives the table and extra q gradients. Pooled keys get no rel-pos term. For global rel-pos at
large grids the prologue tables are [B, N, heads, Hp] fp32 (still far below the [N, N] bias the torch path makes).

Dtypes: fp32, fp16, bf16 inputs; fp32 accumulation and softmax statistics; P and dS are cast to the input dtype
for the tensor-core products (fp32 inputs use IEEE fp32 dots, not tf32). Offsets are int64.

Head dims up to 128, split into at most three power-of-two column parts of >= 16 (tl.dot's minimum), the least
padding first, then the fewest parts (:func:`head_dim_parts`): 64 -> 64, 80 -> 64 + 16 (exact: ViT-H wastes no
MMA work, where one 128-wide tile did 60 % more than the useful part), 88 -> 64 + 32 (8 % padded), 104 -> 64 +
32 + 16 (7 %), 120 -> 128. Every product over the head dim (QK^T, dO V^T) is one accumulator chain over the
parts; every product into it (PV, dV, dK, dQ) is one product per part; only a last part past d is masked.

Resources on sm_90a (``python -m vitpose_fast.kernels.report``; tests/test_kernel_report.py holds the bounds),
bf16 at ViTPose-H's grid (36 x 27, 8 x 8 windows), triton 3.9 and 3.6: no spill in any mode without rel-pos at
d64 and d80, in both configs. The backward runs 8 warps above 64 head-dim columns (at 4 warps the dK/dV
accumulators beside K and V spilled). Still spilling, tens of bytes per thread, all at the 255-register cap:
rel-pos kernels (the forward and dQ pass hold two gathered [BLOCK_M, BLOCK_N] fp32 bias tiles beside the
accumulators: 20-28 B at d80 with 3.9, 96-172 B with 3.6; the global dA pass's 64- and 32-wide accumulators,
4-44 B), and d88 / d104 (96 and 112 columns of fp32 accumulators: without rel-pos 40-48 B in d104's dQ pass
with 3.9, 32-88 B in its forward with 3.6; 40-390 B with rel-pos). The next steps would be 32-query dQ tiles for those head dims (wgmma needs the 64-row M side,
so that means 8 warps over a 64 x 32 tile) and loading the rel-pos bias as two small [BLOCK_M, w] tables
instead of a gathered tile. AUTOTUNE_CONFIGS keeps only configs that build without spills and on wgmma only
without rel-pos (32-row tiles run mma.sync: wgmma needs M >= 64 per warpgroup); with rel-pos 128x64 spills
12-44 B (3.9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from vitpose_fast.config import AttentionSpec
from vitpose_fast.kernels import runtime
from vitpose_fast.reference.attention import Geometry, check_extra, check_inputs, pool_windows, token_layout

LOG2E = 1.4426950408889634
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 128
MAX_REL_POS_SIDE = 256  # the dQ pass keeps [BLOCK_M, next_pow2(side)] rel-pos gradient tiles in registers


@dataclass(frozen=True)
class Config:
    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2


DEFAULT_CONFIG = Config()
# Swept only with VITPOSE_FAST_AUTOTUNE=1 (:func:`vitpose_fast.kernels.runtime.tuned`: forward timing, per
# shape/spec, cached for the process). Every entry
# builds for sm_90a without spills and on wgmma only (tests/test_kernel_report.py): 32-row tiles (64x32, 32x32)
# fell back to mma.sync, 128x128 w8 spilled 0.1-0.2 KB per thread in the forward and dQ pass at d80, 64x64 w4
# with 3 stages 4 B in the forward.
AUTOTUNE_CONFIGS = (
    DEFAULT_CONFIG,
    Config(128, 64, 8, 2),
)


# --------------------------------------------------------------------------------------------------------------
# jit helpers
@triton.jit
def _coords(t, win, T, WH, WW, HP, WP, HPAD, WPAD, SH, SW, NWW):
    """Window-local token numbers t of window ``win`` -> (token index n, in-window row i, column j, real, region)."""
    i = t // WW
    j = t % WW
    r = (win // NWW) * WH + i
    c = (win % NWW) * WW + j
    y = (r + SH) % HPAD
    x = (c + SW) % WPAD
    real = (t < T) & (y < HP) & (x < WP)
    # Swin's regions in the rolled frame; with no shift every token of a window shares one region.
    reg = ((r >= HPAD - WH).to(tl.int32) + (r >= HPAD - SH).to(tl.int32)) * 3
    reg += (c >= WPAD - WW).to(tl.int32) + (c >= WPAD - SW).to(tl.int32)
    n = tl.where(real, y * WP + x, 0).to(tl.int64)
    return n, i, j, real, reg


@triton.jit
def _ld(rows, rmask, D: tl.constexpr, OFF: tl.constexpr, W: tl.constexpr):
    """Columns [OFF, OFF + W) of the rows at pointers ``rows`` [R] (masked beyond head dim D) -> [R, W]."""
    offs = OFF + tl.arange(0, W)
    if OFF + W > D:
        return tl.load(rows[:, None] + offs[None, :], mask=rmask[:, None] & (offs < D)[None, :], other=0.0)
    else:
        return tl.load(rows[:, None] + offs[None, :], mask=rmask[:, None], other=0.0)


@triton.jit
def _st(rows, val, rmask, D: tl.constexpr, OFF: tl.constexpr, W: tl.constexpr):
    offs = OFF + tl.arange(0, W)
    val = val.to(rows.dtype.element_ty)
    if OFF + W > D:
        tl.store(rows[:, None] + offs[None, :], val, mask=rmask[:, None] & (offs < D)[None, :])
    else:
        tl.store(rows[:, None] + offs[None, :], val, mask=rmask[:, None])


@triton.jit
def _ld3(rows, rmask, D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr):
    """The head-dim parts of rows (parts past NPARTS are never used, so they compile away)."""
    return _ld(rows, rmask, D, 0, D0), _ld(rows, rmask, D, D0, D1), _ld(rows, rmask, D, D0 + D1, D2)


@triton.jit
def _st3(rows, x0, x1, x2, rmask, D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
         NPARTS: tl.constexpr):
    _st(rows, x0, rmask, D, 0, D0)
    if NPARTS > 1:
        _st(rows, x1, rmask, D, D0, D1)
    if NPARTS > 2:
        _st(rows, x2, rmask, D, D0 + D1, D2)


@triton.jit
def _dot_t3(a0, a1, a2, b0, b1, b2, NPARTS: tl.constexpr, PREC: tl.constexpr):
    """a @ b^T contracted over the head dim, part by part into one accumulator."""
    s = tl.dot(a0, tl.trans(b0), input_precision=PREC)
    if NPARTS > 1:
        s = tl.dot(a1, tl.trans(b1), s, input_precision=PREC)
    if NPARTS > 2:
        s = tl.dot(a2, tl.trans(b2), s, input_precision=PREC)
    return s


@triton.jit
def _acc3(p, b0, b1, b2, c0, c1, c2, NPARTS: tl.constexpr, PREC: tl.constexpr):
    """c_j += p @ b_j for each head-dim part (p cast to b's dtype)."""
    p = p.to(b0.dtype)
    c0 = tl.dot(p, b0, c0, input_precision=PREC)
    if NPARTS > 1:
        c1 = tl.dot(p, b1, c1, input_precision=PREC)
    if NPARTS > 2:
        c2 = tl.dot(p, b2, c2, input_precision=PREC)
    return c0, c1, c2


@triton.jit
def _window_mask(s, qn, qreal, qreg, ki, kj, kreal, kreg, AH, AW, a_base, aw_base, stride_an, stride_awn,
                 qk_scale, HAS_REL: tl.constexpr, KEYS_FIRST: tl.constexpr = False):
    """Base-2 logits from the raw q.k products s: scale*log2e (+ rel-pos), -inf where masked. s is [BLOCK_M
    queries, BLOCK_N keys], or [BLOCK_N, BLOCK_M] with KEYS_FIRST (dK/dV's transposed tiles)."""
    s = s * qk_scale
    if KEYS_FIRST:
        pair = kreal[:, None] & qreal[None, :]
        same = kreg[:, None] == qreg[None, :]
        ah_off = qn[None, :] * stride_an + ki[:, None]
        aw_off = qn[None, :] * stride_awn + kj[:, None]
    else:
        pair = qreal[:, None] & kreal[None, :]
        same = qreg[:, None] == kreg[None, :]
        ah_off = qn[:, None] * stride_an + ki[None, :]
        aw_off = qn[:, None] * stride_awn + kj[None, :]
    if HAS_REL:
        bias = tl.load(AH + a_base + ah_off, mask=pair, other=0.0)
        bias += tl.load(AW + aw_base + aw_off, mask=pair, other=0.0)
        s += bias * 1.4426950408889634
    return tl.where(pair & same, s, float("-inf"))


@triton.jit
def _softmax_step(s, m_i, l_i):
    """Online base-2 softmax: (new max, new sum, probabilities, rescale factor of the old accumulator)."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet stay exactly zero
    p = tl.math.exp2(s - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    return m_new, l_i * alpha + tl.sum(p, 1), p, alpha


# --------------------------------------------------------------------------------------------------------------
# forward
@triton.jit
def _fwd(
    Q, K, V, KP, VP, AH, AW, O, LSE,
    sqb, sqn, sqh, skb, skn, skh, svb, svn, svh,
    H, N, P, HP, WP, WH, WW, HPAD, WPAD, SH, SW, NWW, T, NQB,
    qk_scale,
    D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, NPARTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
    HAS_POOL: tl.constexpr, HAS_REL: tl.constexpr, PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    win = pid // NQB
    b = bh // H
    h = bh % H
    qn, qi, qj, qreal, qreg = _coords((pid % NQB) * BLOCK_M + tl.arange(0, BLOCK_M), win, T, WH, WW, HP, WP,
                                      HPAD, WPAD, SH, SW, NWW)
    q0, q1, q2 = _ld3(Q + b * sqb + h * sqh + qn * sqn, qreal, D, D0, D1, D2)
    a_base = (b * N * H + h) * WH
    aw_base = (b * N * H + h) * WW

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc0 = tl.zeros([BLOCK_M, D0], tl.float32)
    acc1 = tl.zeros([BLOCK_M, D1], tl.float32)
    acc2 = tl.zeros([BLOCK_M, D2], tl.float32)
    for start in range(0, T, BLOCK_N):
        kn, ki, kj, kreal, kreg = _coords(start + tl.arange(0, BLOCK_N), win, T, WH, WW, HP, WP, HPAD, WPAD, SH,
                                          SW, NWW)
        k0, k1, k2 = _ld3(K + b * skb + h * skh + kn * skn, kreal, D, D0, D1, D2)
        v0, v1, v2 = _ld3(V + b * svb + h * svh + kn * svn, kreal, D, D0, D1, D2)
        s = _window_mask(_dot_t3(q0, q1, q2, k0, k1, k2, NPARTS, PREC), qn, qreal, qreg, ki, kj, kreal, kreg,
                         AH, AW, a_base, aw_base, H * WH, H * WW, qk_scale, HAS_REL)
        m_i, l_i, p, alpha = _softmax_step(s, m_i, l_i)
        acc0, acc1, acc2 = _acc3(p, v0, v1, v2, acc0 * alpha[:, None], acc1 * alpha[:, None],
                                 acc2 * alpha[:, None], NPARTS, PREC)
    if HAS_POOL:
        for start in range(0, P, BLOCK_P):
            pidx = start + tl.arange(0, BLOCK_P)
            preal = pidx < P
            prow = (b * P + pidx.to(tl.int64)) * (H * D) + h * D
            k0, k1, k2 = _ld3(KP + prow, preal, D, D0, D1, D2)
            v0, v1, v2 = _ld3(VP + prow, preal, D, D0, D1, D2)
            s = _dot_t3(q0, q1, q2, k0, k1, k2, NPARTS, PREC) * qk_scale
            s = tl.where(qreal[:, None] & preal[None, :], s, float("-inf"))
            m_i, l_i, p, alpha = _softmax_step(s, m_i, l_i)
            acc0, acc1, acc2 = _acc3(p, v0, v1, v2, acc0 * alpha[:, None], acc1 * alpha[:, None],
                                     acc2 * alpha[:, None], NPARTS, PREC)

    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    _st3(O + (b * N + qn) * (H * D) + h * D, acc0 / l_safe[:, None], acc1 / l_safe[:, None],
         acc2 / l_safe[:, None], qreal, D, D0, D1, D2, NPARTS)
    tl.store(LSE + bh * N + qn, m_i + tl.math.log2(l_safe), mask=qreal)


# --------------------------------------------------------------------------------------------------------------
# backward
@triton.jit
def _bwd_kv_tile(q0, q1, q2, do0, do1, do2, lse, delta, v0, v1, v2, st, dk0, dk1, dk2, dv0, dv1, dv2,
                 NPARTS: tl.constexpr, PREC: tl.constexpr):
    """One query block's share of dK, dV from the transposed logits st [keys, queries]: every product then has
    the key block as its M side, so the streamed query block may be narrower than wgmma's 64 rows."""
    pt = tl.math.exp2(st - lse[None, :])
    dv0, dv1, dv2 = _acc3(pt, do0, do1, do2, dv0, dv1, dv2, NPARTS, PREC)
    dpt = _dot_t3(v0, v1, v2, do0, do1, do2, NPARTS, PREC)
    dst = pt * (dpt - delta[None, :])
    dk0, dk1, dk2 = _acc3(dst, q0, q1, q2, dk0, dk1, dk2, NPARTS, PREC)
    return dk0, dk1, dk2, dv0, dv1, dv2


@triton.jit
def _bwd_kv(
    Q, K, V, KP, VP, AH, AW, DO, LSE, DELTA, DK, DV, DKP, DVP,
    sqb, sqn, sqh, skb, skn, skh, svb, svn, svh,
    H, N, P, HP, WP, WH, WW, HPAD, WPAD, SH, SW, NWW, T, NKB, NWIN,
    qk_scale, sm_scale,
    D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, NPARTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
    HAS_POOL: tl.constexpr, HAS_REL: tl.constexpr, PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    a_base = (b * N * H + h) * WH
    aw_base = (b * N * H + h) * WW
    if pid < NKB * NWIN:
        # Keys of one window: only that window's queries see them.
        dk0 = tl.zeros([BLOCK_N, D0], tl.float32)
        dk1 = tl.zeros([BLOCK_N, D1], tl.float32)
        dk2 = tl.zeros([BLOCK_N, D2], tl.float32)
        dv0 = tl.zeros([BLOCK_N, D0], tl.float32)
        dv1 = tl.zeros([BLOCK_N, D1], tl.float32)
        dv2 = tl.zeros([BLOCK_N, D2], tl.float32)
        win = pid // NKB
        kn, ki, kj, kreal, kreg = _coords((pid % NKB) * BLOCK_N + tl.arange(0, BLOCK_N), win, T, WH, WW, HP, WP,
                                          HPAD, WPAD, SH, SW, NWW)
        k0, k1, k2 = _ld3(K + b * skb + h * skh + kn * skn, kreal, D, D0, D1, D2)
        v0, v1, v2 = _ld3(V + b * svb + h * svh + kn * svn, kreal, D, D0, D1, D2)
        for start in range(0, T, BLOCK_M):
            qn, qi, qj, qreal, qreg = _coords(start + tl.arange(0, BLOCK_M), win, T, WH, WW, HP, WP, HPAD, WPAD,
                                              SH, SW, NWW)
            q0, q1, q2 = _ld3(Q + b * sqb + h * sqh + qn * sqn, qreal, D, D0, D1, D2)
            do0, do1, do2 = _ld3(DO + (b * N + qn) * (H * D) + h * D, qreal, D, D0, D1, D2)
            lse = tl.load(LSE + bh * N + qn, mask=qreal, other=0.0)
            delta = tl.load(DELTA + bh * N + qn, mask=qreal, other=0.0)
            s = _window_mask(_dot_t3(k0, k1, k2, q0, q1, q2, NPARTS, PREC), qn, qreal, qreg, ki, kj, kreal, kreg,
                             AH, AW, a_base, aw_base, H * WH, H * WW, qk_scale, HAS_REL, True)
            dk0, dk1, dk2, dv0, dv1, dv2 = _bwd_kv_tile(q0, q1, q2, do0, do1, do2, lse, delta, v0, v1, v2, s, dk0,
                                                        dk1, dk2, dv0, dv1, dv2, NPARTS, PREC)
        rows = (b * N + kn) * (H * D) + h * D
        _st3(DK + rows, dk0 * sm_scale, dk1 * sm_scale, dk2 * sm_scale, kreal, D, D0, D1, D2, NPARTS)
        _st3(DV + rows, dv0, dv1, dv2, kreal, D, D0, D1, D2, NPARTS)
    elif HAS_POOL:
        # Pooled keys: every real query of the map sees them.
        pidx = (pid - NKB * NWIN) * BLOCK_P + tl.arange(0, BLOCK_P)
        preal = pidx < P
        prow = (b * P + pidx.to(tl.int64)) * (H * D) + h * D
        kp0, kp1, kp2 = _ld3(KP + prow, preal, D, D0, D1, D2)
        vp0, vp1, vp2 = _ld3(VP + prow, preal, D, D0, D1, D2)
        dkp0 = tl.zeros([BLOCK_P, D0], tl.float32)
        dkp1 = tl.zeros([BLOCK_P, D1], tl.float32)
        dkp2 = tl.zeros([BLOCK_P, D2], tl.float32)
        dvp0 = tl.zeros([BLOCK_P, D0], tl.float32)
        dvp1 = tl.zeros([BLOCK_P, D1], tl.float32)
        dvp2 = tl.zeros([BLOCK_P, D2], tl.float32)
        for qwin in range(0, NWIN):
            for start in range(0, T, BLOCK_M):
                qn, qi, qj, qreal, qreg = _coords(start + tl.arange(0, BLOCK_M), qwin, T, WH, WW, HP, WP, HPAD,
                                                  WPAD, SH, SW, NWW)
                q0, q1, q2 = _ld3(Q + b * sqb + h * sqh + qn * sqn, qreal, D, D0, D1, D2)
                do0, do1, do2 = _ld3(DO + (b * N + qn) * (H * D) + h * D, qreal, D, D0, D1, D2)
                lse = tl.load(LSE + bh * N + qn, mask=qreal, other=0.0)
                delta = tl.load(DELTA + bh * N + qn, mask=qreal, other=0.0)
                s = _dot_t3(kp0, kp1, kp2, q0, q1, q2, NPARTS, PREC) * qk_scale
                s = tl.where(preal[:, None] & qreal[None, :], s, float("-inf"))
                dkp0, dkp1, dkp2, dvp0, dvp1, dvp2 = _bwd_kv_tile(q0, q1, q2, do0, do1, do2, lse, delta, vp0, vp1,
                                                                  vp2, s, dkp0, dkp1, dkp2, dvp0, dvp1, dvp2,
                                                                  NPARTS, PREC)
        _st3(DKP + prow, dkp0 * sm_scale, dkp1 * sm_scale, dkp2 * sm_scale, preal, D, D0, D1, D2, NPARTS)
        _st3(DVP + prow, dvp0, dvp1, dvp2, preal, D, D0, D1, D2, NPARTS)


@triton.jit
def _bwd_q(
    Q, K, V, KP, VP, AH, AW, DO, LSE, DELTA, DQ, DAH, DAW,
    sqb, sqn, sqh, skb, skn, skh, svb, svn, svh,
    H, N, P, HP, WP, WH, WW, HPAD, WPAD, SH, SW, NWW, T, NQB,
    qk_scale, sm_scale,
    D: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, NPARTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
    WH_P: tl.constexpr, WW_P: tl.constexpr,
    HAS_POOL: tl.constexpr, HAS_REL: tl.constexpr, PREC: tl.constexpr, REL_PREC: tl.constexpr,
    DQ_PASS: tl.constexpr, DA_PASS: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    win = pid // NQB
    b = bh // H
    h = bh % H
    qn, qi, qj, qreal, qreg = _coords((pid % NQB) * BLOCK_M + tl.arange(0, BLOCK_M), win, T, WH, WW, HP, WP,
                                      HPAD, WPAD, SH, SW, NWW)
    q0, q1, q2 = _ld3(Q + b * sqb + h * sqh + qn * sqn, qreal, D, D0, D1, D2)
    do0, do1, do2 = _ld3(DO + (b * N + qn) * (H * D) + h * D, qreal, D, D0, D1, D2)
    lse = tl.load(LSE + bh * N + qn, mask=qreal, other=0.0)
    delta = tl.load(DELTA + bh * N + qn, mask=qreal, other=0.0)
    a_base = (b * N * H + h) * WH
    aw_base = (b * N * H + h) * WW
    dq0 = tl.zeros([BLOCK_M, D0], tl.float32)
    dq1 = tl.zeros([BLOCK_M, D1], tl.float32)
    dq2 = tl.zeros([BLOCK_M, D2], tl.float32)
    dah = tl.zeros([BLOCK_M, WH_P], tl.float32)
    daw = tl.zeros([BLOCK_M, WW_P], tl.float32)
    for start in range(0, T, BLOCK_N):
        kn, ki, kj, kreal, kreg = _coords(start + tl.arange(0, BLOCK_N), win, T, WH, WW, HP, WP, HPAD, WPAD, SH,
                                          SW, NWW)
        k0, k1, k2 = _ld3(K + b * skb + h * skh + kn * skn, kreal, D, D0, D1, D2)
        v0, v1, v2 = _ld3(V + b * svb + h * svh + kn * svn, kreal, D, D0, D1, D2)
        s = _window_mask(_dot_t3(q0, q1, q2, k0, k1, k2, NPARTS, PREC), qn, qreal, qreg, ki, kj, kreal, kreg,
                         AH, AW, a_base, aw_base, H * WH, H * WW, qk_scale, HAS_REL)
        p = tl.math.exp2(s - lse[:, None])
        dp = _dot_t3(do0, do1, do2, v0, v1, v2, NPARTS, PREC)
        ds = p * (dp - delta[:, None])
        if DQ_PASS:
            dq0, dq1, dq2 = _acc3(ds, k0, k1, k2, dq0, dq1, dq2, NPARTS, PREC)
        if DA_PASS:
            # dA_h[q, a] = sum of dS over the keys in window row a: dS @ one-hot(key row).
            onehot_h = ki[:, None] == tl.arange(0, WH_P)[None, :]
            onehot_w = kj[:, None] == tl.arange(0, WW_P)[None, :]
            if REL_PREC == "bf16x3":
                # dS as three bf16 terms (8 + 8 + 8 significant bits: fp32's 24) against an exact bf16 one-hot:
                # fp32-accurate on bf16 tensor cores, with half the operand registers of tf32x3.
                hi = ds.to(tl.bfloat16)
                rest = ds - hi.to(tl.float32)
                mid = rest.to(tl.bfloat16)
                lo = (rest - mid.to(tl.float32)).to(tl.bfloat16)
                oh = onehot_h.to(tl.bfloat16)
                ow = onehot_w.to(tl.bfloat16)
                dah = tl.dot(lo, oh, tl.dot(mid, oh, tl.dot(hi, oh, dah)))
                daw = tl.dot(lo, ow, tl.dot(mid, ow, tl.dot(hi, ow, daw)))
            else:
                dah = tl.dot(ds, onehot_h.to(tl.float32), dah, input_precision=REL_PREC)
                daw = tl.dot(ds, onehot_w.to(tl.float32), daw, input_precision=REL_PREC)
    if HAS_POOL and DQ_PASS:
        for start in range(0, P, BLOCK_P):
            pidx = start + tl.arange(0, BLOCK_P)
            preal = pidx < P
            prow = (b * P + pidx.to(tl.int64)) * (H * D) + h * D
            k0, k1, k2 = _ld3(KP + prow, preal, D, D0, D1, D2)
            v0, v1, v2 = _ld3(VP + prow, preal, D, D0, D1, D2)
            s = _dot_t3(q0, q1, q2, k0, k1, k2, NPARTS, PREC) * qk_scale
            s = tl.where(qreal[:, None] & preal[None, :], s, float("-inf"))
            p = tl.math.exp2(s - lse[:, None])
            dp = _dot_t3(do0, do1, do2, v0, v1, v2, NPARTS, PREC)
            ds = p * (dp - delta[:, None])
            dq0, dq1, dq2 = _acc3(ds, k0, k1, k2, dq0, dq1, dq2, NPARTS, PREC)
    if DQ_PASS:
        _st3(DQ + (b * N + qn) * (H * D) + h * D, dq0 * sm_scale, dq1 * sm_scale, dq2 * sm_scale, qreal, D, D0, D1,
             D2, NPARTS)
    if DA_PASS:
        offs_a = tl.arange(0, WH_P)
        tl.store(DAH + a_base + qn[:, None] * (H * WH) + offs_a[None, :], dah,
                 mask=qreal[:, None] & (offs_a < WH)[None, :])
        offs_a = tl.arange(0, WW_P)
        tl.store(DAW + aw_base + qn[:, None] * (H * WW) + offs_a[None, :], daw,
                 mask=qreal[:, None] & (offs_a < WW)[None, :])


# --------------------------------------------------------------------------------------------------------------
# launchers
def _pow2(x: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(x))


def head_dim_parts(d: int) -> Tuple[int, ...]:
    """The head dim as at most three power-of-two tile widths (each >= 16, tl.dot's minimum), covering d with
    the least padding, then the fewest parts: 80 -> 64 + 16, 88 -> 64 + 32, 104 -> 64 + 32 + 16."""
    widths = (16, 32, 64, 128)
    combos = [(a,) for a in widths]
    combos += [(a, b) for a in widths for b in widths if b <= a]
    combos += [(a, b, c) for a in widths for b in widths for c in widths if c <= b <= a]
    return min((c for c in combos if sum(c) >= d), key=lambda c: (sum(c), len(c)))


def _parts_meta(d: int) -> dict:
    parts = head_dim_parts(d)
    padded = parts + (16,) * (3 - len(parts))  # absent parts: never loaded or used, any width compiles
    return dict(D=d, D0=padded[0], D1=padded[1], D2=padded[2], NPARTS=len(parts))


def _blocks(cfg: List[int], t: int, p: int) -> Tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_P): a window (or the pooled token count) smaller than the configured block would
    waste most of the tile, so blocks shrink to it (tl.dot needs >= 16)."""
    return min(cfg[0], _pow2(t)), min(cfg[1], _pow2(t)), min(cfg[1], _pow2(p))


def _bwd_warps(cfg: List[int], d: int) -> int:
    # Above 64 head-dim columns the backward's fp32 dK/dV (and dQ) accumulators beside the K/V (Q/dO) tiles
    # exceed 255 registers per thread at 4 warps (spills); 8 warps halve every tile's share per thread.
    return max(cfg[2], 8) if sum(head_dim_parts(d)) > 64 else cfg[2]


def _da_pass_blocks(block_n: int) -> dict:
    # Measured on sm_90a (kernel report): 32-key tiles over 8 warps keep the dA pass at a few bytes of spill even
    # for global rel-pos at 36 x 27 (64- and 32-wide accumulators), against kilobytes with 64-key tiles.
    return dict(BLOCK_N=min(block_n, 32), num_warps=8)


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _common(q: torch.Tensor, geom: List[int], p: int) -> tuple:
    b, n, h, d = q.shape
    hp, wp, wh, ww, hpad, wpad, sh, sw = geom
    return (h, n, p, hp, wp, wh, ww, hpad, wpad, sh, sw, wpad // ww, wh * ww)


def _prec(q: torch.Tensor) -> str:
    return "ieee" if q.dtype == torch.float32 else "tf32"


def _rel_prec(q: torch.Tensor) -> str:
    # The interpreter has no bf16 arithmetic: off the GPU the dA products run in tf32x3 (fp32 there). "meta" is
    # the kernel report's ahead-of-time GPU build.
    if q.dtype == torch.float32:
        return "ieee"
    return "bf16x3" if q.is_cuda or q.device.type == "meta" else "tf32x3"


def _dense(*ts: Optional[torch.Tensor]) -> List[Optional[torch.Tensor]]:
    # Pooled tokens and rel-pos tables are indexed as contiguous tensors (no-ops for the prologue's outputs).
    return [None if t is None else t.contiguous() for t in ts]


def _forward(q, k, v, kp, vp, ah, aw, geom: List[int], cfg: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    kp, vp, ah, aw = _dense(kp, vp, ah, aw)
    b, n, h, d = q.shape
    p = 0 if kp is None else kp.shape[1]
    args = _common(q, geom, p)
    t, nwin = args[-1], (geom[4] // geom[2]) * (geom[5] // geom[3])
    block_m, block_n, block_p = _blocks(cfg, t, p)
    nqb = triton.cdiv(t, block_m)
    o = torch.empty((b, n, h, d), device=q.device, dtype=q.dtype)
    lse = torch.empty((b, h, n), device=q.device, dtype=torch.float32)
    dummy = lse  # never read when the matching feature is off
    _fwd[(nqb * nwin, b * h)](
        q, k, v, kp if kp is not None else q, vp if vp is not None else q, ah if ah is not None else dummy,
        aw if aw is not None else dummy, o, lse,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        *args, nqb, d**-0.5 * LOG2E,
        **_parts_meta(d), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_P=block_p, HAS_POOL=kp is not None,
        HAS_REL=ah is not None, PREC=_prec(q), num_warps=cfg[2], num_stages=cfg[3],
    )
    return o, lse


def _backward(do, q, k, v, kp, vp, ah, aw, o, lse, geom: List[int], cfg: List[int]):
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    kp, vp, ah, aw = _dense(kp, vp, ah, aw)
    do = do.contiguous()
    b, n, h, d = q.shape
    p = 0 if kp is None else kp.shape[1]
    args = _common(q, geom, p)
    t, nwin = args[-1], (geom[4] // geom[2]) * (geom[5] // geom[3])
    wh, ww = geom[2], geom[3]
    block_m, block_n, block_p = _blocks(cfg, t, p)
    delta = (o.float() * do.float()).sum(-1).transpose(1, 2).contiguous()  # [B, h, N]
    dq, dk, dv = (torch.empty((b, n, h, d), device=q.device, dtype=q.dtype) for _ in range(3))
    # Absent outputs are distinct empty tensors: custom-op outputs may not alias each other.
    dkp = torch.empty_like(kp) if kp is not None else q.new_empty(0)
    dvp = torch.empty_like(vp) if vp is not None else q.new_empty(0)
    dah = torch.empty_like(ah) if ah is not None else q.new_empty(0, dtype=torch.float32)
    daw = torch.empty_like(aw) if aw is not None else q.new_empty(0, dtype=torch.float32)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2))
    kp_, vp_ = (kp, vp) if kp is not None else (q, q)
    ah_, aw_ = (ah, aw) if ah is not None else (delta, delta)
    warps = _bwd_warps(cfg, d)
    feats = dict(**_parts_meta(d), BLOCK_M=block_m, BLOCK_N=block_n, HAS_POOL=kp is not None, HAS_REL=ah is not None,
                 PREC=_prec(q), num_warps=warps, num_stages=cfg[3])
    nkb = triton.cdiv(t, block_n)
    # Pooled keys are the M side of their dK/dV products: at least 64 rows keeps them on wgmma.
    block_pkv = max(block_p, min(64, block_n))
    # dK/dV stream 32-query tiles: their products have the key block as M side (wgmma keeps 64 rows), and the
    # [keys, queries] fp32 tiles beside the dK/dV accumulators stay small enough not to spill (kernel report).
    _bwd_kv[(nkb * nwin + triton.cdiv(p, block_pkv), b * h)](
        q, k, v, kp_, vp_, ah_, aw_, do, lse, delta, dk, dv, dkp if kp is not None else dk,
        dvp if vp is not None else dv, *strides, *args, nkb, nwin, d**-0.5 * LOG2E, d**-0.5, BLOCK_P=block_pkv,
        **dict(feats, BLOCK_M=min(32, block_m)),
    )
    nqb = triton.cdiv(t, block_m)
    q_args = (q, k, v, kp_, vp_, ah_, aw_, do, lse, delta, dq, dah if ah is not None else delta,
              daw if aw is not None else delta, *strides, *args, nqb, d**-0.5 * LOG2E, d**-0.5)
    rel = dict(WH_P=_pow2(wh) if ah is not None else 16, WW_P=_pow2(ww) if ah is not None else 16,
               REL_PREC=_rel_prec(q))
    _bwd_q[(nqb * nwin, b * h)](*q_args, BLOCK_P=block_p, **rel, DQ_PASS=True, DA_PASS=False, **feats)
    if ah is not None:
        # The rel-pos table gradients in a pass of their own: recomputing P and dP is cheaper than the registers
        # the [BLOCK_M, window side] accumulators and their one-hot products take beside dQ's (spills).
        _bwd_q[(nqb * nwin, b * h)](*q_args, BLOCK_P=block_p, **rel, DQ_PASS=False, DA_PASS=True,
                                    **dict(feats, **_da_pass_blocks(block_n)))
    return dq, dk, dv, dkp, dvp, dah, daw


# --------------------------------------------------------------------------------------------------------------
# torch.library registration (torch.compile traces through the ops) and autograd
@torch.library.custom_op("vitpose_fast::grid_attention_fwd", mutates_args=())
def _fwd_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kp: Optional[torch.Tensor], vp: Optional[torch.Tensor],
    ah: Optional[torch.Tensor], aw: Optional[torch.Tensor], geom: List[int], cfg: List[int],
) -> Tuple[torch.Tensor, torch.Tensor]:
    return _forward(q, k, v, kp, vp, ah, aw, geom, cfg)


@_fwd_op.register_fake
def _fwd_fake(q, k, v, kp, vp, ah, aw, geom, cfg):
    b, n, h, d = q.shape
    return q.new_empty((b, n, h, d)), q.new_empty((b, h, n), dtype=torch.float32)


@torch.library.custom_op("vitpose_fast::grid_attention_bwd", mutates_args=())
def _bwd_op(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kp: Optional[torch.Tensor],
    vp: Optional[torch.Tensor], ah: Optional[torch.Tensor], aw: Optional[torch.Tensor], o: torch.Tensor,
    lse: torch.Tensor, geom: List[int], cfg: List[int],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(do, q, k, v, kp, vp, ah, aw, o, lse, geom, cfg)


@_bwd_op.register_fake
def _bwd_fake(do, q, k, v, kp, vp, ah, aw, o, lse, geom, cfg):
    b, n, h, d = q.shape
    like = [t.new_empty(t.shape) if t is not None else q.new_empty(0) for t in (kp, vp)]
    rel = [t.new_empty(t.shape) if t is not None else q.new_empty(0, dtype=torch.float32) for t in (ah, aw)]
    return (q.new_empty((b, n, h, d)), q.new_empty((b, n, h, d)), q.new_empty((b, n, h, d)), *like, *rel)


def _setup_context(ctx, inputs, output):
    q, k, v, kp, vp, ah, aw, geom, cfg = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, kp, vp, ah, aw, o, lse)
    ctx.geom, ctx.cfg = geom, cfg
    ctx.has = (kp is not None, ah is not None)


def _autograd_backward(ctx, do, _dlse):
    q, k, v, kp, vp, ah, aw, o, lse = ctx.saved_tensors
    dq, dk, dv, dkp, dvp, dah, daw = torch.ops.vitpose_fast.grid_attention_bwd(
        do, q, k, v, kp, vp, ah, aw, o, lse, ctx.geom, ctx.cfg
    )
    has_pool, has_rel = ctx.has
    return (dq, dk, dv, dkp if has_pool else None, dvp if has_pool else None, dah if has_rel else None,
            daw if has_rel else None, None, None)


_fwd_op.register_autograd(_autograd_backward, setup_context=_setup_context)


# The rel-pos prologue is a custom op as well, not a torch.autograd.Function: torch 2.11's Dynamo returns every
# intermediate of a Function's forward as an extra output, so an output that is itself one of them (a no-op
# `.contiguous()` of the gather) filled two output slots; autograd kept the extra one, and the compiled backward
# ran on a zero gradient: no rel-pos term in dq, zero table gradients (pytorch/pytorch#180642; 2.13 is right).
# Dynamo never traces into a custom op, in any version.
@torch.library.custom_op("vitpose_fast::rel_pos_tables", mutates_args=())
def _rel_pos_op(q: torch.Tensor, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """A [B, N, heads, w] (fp32) = q_n . table[idx[n, a]] for idx [N, w]: one [B*N*heads, d] x [d, 2w-1] GEMM
    and a gather."""
    qr = torch.matmul(q.float(), table.float().t())  # [B, N, heads, 2w-1]
    return qr.gather(-1, idx[None, :, None, :].expand(*qr.shape[:3], idx.shape[1]))


@_rel_pos_op.register_fake
def _rel_pos_fake(q, table, idx):
    return q.new_empty((*q.shape[:3], idx.shape[1]), dtype=torch.float32)


def _rel_pos_setup_context(ctx, inputs, output):
    # q itself (in its own dtype: for the model a view of the qkv output, already alive), not the fp32 copy plain
    # autograd of the matmul would keep for the table gradient.
    ctx.save_for_backward(*inputs)


def _rel_pos_backward(ctx, grad):
    q, table, idx = ctx.saved_tensors
    gqr = grad.new_zeros(*grad.shape[:3], table.shape[0])
    gqr.scatter_add_(-1, idx[None, :, None, :].expand_as(grad), grad)
    dq = torch.matmul(gqr, table.float()).to(q.dtype) if ctx.needs_input_grad[0] else None
    dtable = None
    if ctx.needs_input_grad[1]:
        dtable = (gqr.reshape(-1, table.shape[0]).t() @ q.reshape(-1, q.shape[-1]).float()).to(table.dtype)
    return dq, dtable, None


_rel_pos_op.register_autograd(_rel_pos_backward, setup_context=_rel_pos_setup_context)


# --------------------------------------------------------------------------------------------------------------
# public API
def supports(q: torch.Tensor, spec: AttentionSpec) -> bool:
    """Whether :func:`attention` runs q of this shape/dtype/device (grid limits are checked at the call)."""
    return runtime.on_device(q) and q.dim() == 4 and q.dtype in _DTYPES and 1 <= q.shape[-1] <= MAX_HEAD_DIM


def _rel_pos_tables(q: torch.Tensor, spec: AttentionSpec, grid, g: Geometry, rel_pos_h, rel_pos_w):
    """A_h [B, N, heads, wh] and A_w [B, N, heads, ww] (fp32): q_n . rel_pos[i_n - a + w - 1] for key row a."""
    _, _, i, j = token_layout(spec, grid, q.device)
    tables = []
    for coord, table, w in ((i, rel_pos_h, g.wh), (j, rel_pos_w, g.ww)):
        idx = coord[:, None] - torch.arange(w, device=q.device)[None, :] + w - 1  # [N, w]
        tables.append(torch.ops.vitpose_fast.rel_pos_tables(q, table, idx))
    return tables


def _config(q: torch.Tensor, spec: AttentionSpec, g: Geometry, appended: int, run) -> Config:
    key = (__name__, tuple(q.shape), q.dtype, q.device, spec, g, appended)
    return runtime.tuned(key, DEFAULT_CONFIG, AUTOTUNE_CONFIGS, run)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    grid: Tuple[int, int],
    rel_pos_h: Optional[torch.Tensor] = None,
    rel_pos_w: Optional[torch.Tensor] = None,
    extra_k: Optional[torch.Tensor] = None,
    extra_v: Optional[torch.Tensor] = None,
    *,
    config: Optional[Config] = None,
) -> torch.Tensor:
    """Grid attention of q, k, v [B, N, heads, head_dim] -> [B, N, heads, head_dim] (see the module docstring),
    with optional extra global key/value tokens extra_k, extra_v [B, T, heads, head_dim]; differentiable in
    q, k, v, the rel-pos tables and the extra tokens."""
    g = check_inputs(q, k, v, spec, grid, rel_pos_h, rel_pos_w)
    has_extra = check_extra(q, extra_k, extra_v) > 0
    if not supports(q, spec) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(
            f"triton attention needs CUDA (or TRITON_INTERPRET=1) tensors of one dtype in {_DTYPES} with head_dim "
            f"<= {MAX_HEAD_DIM}; got {q.dtype}/{k.dtype}/{v.dtype}, head_dim {q.shape[-1]}, device {q.device}"
        )
    if spec.rel_pos and max(g.wh, g.ww) > MAX_REL_POS_SIDE:
        raise ValueError(f"rel_pos supports windows (or global grids) up to {MAX_REL_POS_SIDE} a side, got {g}")
    if q.shape[0] * q.shape[2] > 65535:
        raise ValueError(f"batch * heads = {q.shape[0] * q.shape[2]} exceeds the launch grid limit 65535")
    kp = vp = ah = aw = None
    if spec.pool:
        kp, vp = pool_windows(k, spec, grid), pool_windows(v, spec, grid)
    if has_extra:
        kp = extra_k if kp is None else torch.cat([kp, extra_k], dim=1)
        vp = extra_v if vp is None else torch.cat([vp, extra_v], dim=1)
    if kp is not None:
        kp, vp = kp.contiguous(), vp.contiguous()
    if spec.rel_pos:
        ah, aw = _rel_pos_tables(q, spec, grid, g, rel_pos_h, rel_pos_w)
    geom = [g.hp, g.wp, g.wh, g.ww, g.hpad, g.wpad, g.sh, g.sw]

    def run(c: Config) -> torch.Tensor:
        cfg = [c.block_m, c.block_n, c.num_warps, c.num_stages]
        return torch.ops.vitpose_fast.grid_attention_fwd(q, k, v, kp, vp, ah, aw, geom, cfg)[0]

    if config is None:
        with torch.no_grad():
            config = _config(q, spec, g, 0 if kp is None else kp.shape[1], run)
    return run(config)


# --------------------------------------------------------------------------------------------------------------
# kernel resource report (python -m vitpose_fast.kernels.report)
REPORT_MODES = ("global", "window", "shift", "pool", "shift_pool")


def _report_spec(mode: str, rel_pos: bool, window=(8, 8)) -> AttentionSpec:
    if mode == "global":
        return AttentionSpec(rel_pos=rel_pos)
    return AttentionSpec("window", window, shift="shift" in mode, pool="pool" in mode, rel_pos=rel_pos)


def _bwd_q_label(kwargs: dict) -> str:
    return "attn_bwd_q" if kwargs["DQ_PASS"] else "attn_bwd_dA"


def report_cases(head_dims=(64, 80, 88, 104), modes=REPORT_MODES, rel_pos=(False, True), configs=None,
                 grid=(36, 27), batch=32):
    """The report's attention cases: ViTPose-H 576x432's token grid (36 x 27; 8 x 8 windows), bf16, the
    launcher's own forward and backward at each head dim (12 heads at d64 as ViT-B, else 16), mode, rel-pos
    setting and config (default: every AUTOTUNE_CONFIGS entry at d64 and d80, the default elsewhere)."""
    from vitpose_fast.reference.attention import geometry

    from vitpose_fast.kernels.report_case import Case, meta_tensor

    cases = []
    for d in head_dims:
        heads = 12 if d == 64 else 16
        cfgs = configs if configs is not None else (AUTOTUNE_CONFIGS if d in (64, 80) else (DEFAULT_CONFIG,))
        for mode in modes:
            for rel in rel_pos:
                spec = _report_spec(mode, rel)
                g = geometry(spec, grid)
                n = grid[0] * grid[1]
                geom = [g.hp, g.wp, g.wh, g.ww, g.hpad, g.wpad, g.sh, g.sw]

                def tensors(spec=spec, g=g, n=n, heads=heads, d=d):
                    q, k, v = meta_tensor(batch, n, 3, heads, d).unbind(2)
                    kp = vp = ah = aw = None
                    if spec.pool:
                        kp, vp = (meta_tensor(batch, g.num_windows, heads, d) for _ in range(2))
                    if spec.rel_pos:
                        ah = meta_tensor(batch, n, heads, g.wh, dtype=torch.float32)
                        aw = meta_tensor(batch, n, heads, g.ww, dtype=torch.float32)
                    return q, k, v, kp, vp, ah, aw

                for c in cfgs:
                    cfg = [c.block_m, c.block_n, c.num_warps, c.num_stages]
                    label = f"{c.block_m}x{c.block_n} w{c.num_warps} s{c.num_stages}"

                    def fwd(tensors=tensors, geom=geom, cfg=cfg):
                        _forward(*tensors(), geom, cfg)

                    def bwd(tensors=tensors, geom=geom, cfg=cfg, n=n, heads=heads, d=d):
                        q, k, v, kp, vp, ah, aw = tensors()
                        o = meta_tensor(batch, n, heads, d)
                        lse = meta_tensor(batch, heads, n, dtype=torch.float32)
                        _backward(meta_tensor(batch, n, heads, d), q, k, v, kp, vp, ah, aw, o, lse, geom, cfg)

                    common = dict(module=__name__, spec=mode + ("+rel" if rel else ""), head_dim=d, config=label,
                                  default=c == DEFAULT_CONFIG, rel_pos=rel, tensor_core=True)
                    cases.append(Case(kernels={"_fwd": "attn_fwd"}, launch=fwd, **common))
                    cases.append(Case(kernels={"_bwd_kv": "attn_bwd_kv", "_bwd_q": _bwd_q_label}, launch=bwd,
                                      **common))
    return cases
