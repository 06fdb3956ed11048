"""Attention over a token grid: the dense explicit-softmax oracle and the fast PyTorch (SDPA) composition.

Layout: q, k, v are [B, N, heads, head_dim] (the qkv Linear output reshaped, no transposes), N = Hp * Wp
tokens in row-major grid order; the output has the same layout. scale = head_dim ** -0.5.

Semantics of an :class:`AttentionSpec` (every implementation, the Triton kernel included, follows them):

- ``global``: full attention over the N tokens.
- ``window`` (wh, ww): attention inside non-overlapping wh x ww windows. A grid the window does not divide is
  zero-padded at the bottom/right to (Hpad, Wpad) = multiples of the window; padded tokens are masked out as
  keys (they never change a real token's output) and their outputs are dropped.
- ``shift``: Swin's shifted partition. Pad first, then displace the partition by (sh, sw) = (wh // 2, ww // 2):
  exactly ``torch.roll(x, (-sh, -sw))`` on the padded grid, window partition, Swin's region mask (in the rolled
  frame, rows [0, Hpad-wh), [Hpad-wh, Hpad-sh), [Hpad-sh, Hpad) are three regions, columns likewise; a token
  attends only to tokens of its own region), then the reverse roll. A token at padded-grid position (y, x)
  sits at rolled position ((y - sh) mod Hpad, (x - sw) mod Wpad).
- ``pool``: each window of the partition the block uses (the shifted one when ``shift``; a window that wraps
  around the map pools its pieces together, as the rolled map has them side by side) is average-pooled over
  its real (unpadded) tokens into one key and one value token. The P = (Hpad/wh) * (Wpad/ww) pooled tokens of
  the whole map are appended to every window's keys and values (no region or padding mask on them). No new
  parameters: pooling k and v after the projection equals projecting the pooled x, because the projection
  is affine and the pooling weights sum to one.
- ``rel_pos``: ViTDet's decomposed relative position (``add_decomposed_rel_pos``): the logit of query at
  in-window coordinate (iq, jq) and key at (ik, jk) gets ``q . rel_pos_h[iq - ik + wh - 1] + q . rel_pos_w[jq -
  jk + ww - 1]`` with the *unscaled* q; tables [2*wh-1, head_dim] and [2*ww-1, head_dim]. In-window
  coordinates are those of the (rolled, for shift) partition. For global attention the "window" is the whole
  grid: tables [2*Hp-1, head_dim] and [2*Wp-1, head_dim]. Pooled keys get no relative-position term.
  (Models zero-initialise the tables; ViTDet uses trunc_normal(std=0.02) when training from scratch.)
- ``extra_k``, ``extra_v`` ([B, T, heads, head_dim], optional): T extra global key/value tokens (the knowledge
  tokens of :class:`vitpose_fast.model.backbone.Backbone`) appended to every window's keys and values, after the
  pooled ones: no region or padding mask, no relative-position term. For ``global`` attention this is plain
  attention of the N grid queries over the N + T tokens. Only the N grid tokens are queries here; the extra
  tokens' own queries attend to all N + T tokens (:func:`extra_query_attention`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from vitpose_fast.config import AttentionSpec


@dataclass(frozen=True)
class Geometry:
    """The partition of an Hp x Wp grid an AttentionSpec uses (global = one window of the whole grid)."""

    hp: int
    wp: int
    wh: int  # window height (Hp for global)
    ww: int
    hpad: int  # padded grid, a multiple of the window
    wpad: int
    sh: int  # shift (0 unless spec.shift)
    sw: int

    @property
    def nh(self) -> int:
        return self.hpad // self.wh

    @property
    def nw(self) -> int:
        return self.wpad // self.ww

    @property
    def num_windows(self) -> int:
        return self.nh * self.nw

    @property
    def window_tokens(self) -> int:
        return self.wh * self.ww


def geometry(spec: AttentionSpec, grid: Tuple[int, int]) -> Geometry:
    hp, wp = int(grid[0]), int(grid[1])
    if hp < 1 or wp < 1:
        raise ValueError(f"grid must be two positive ints (Hp, Wp), got {grid!r}")
    if spec.kind == "global":
        return Geometry(hp, wp, hp, wp, hp, wp, 0, 0)
    wh, ww = spec.window
    hpad, wpad = -(-hp // wh) * wh, -(-wp // ww) * ww
    sh, sw = (wh // 2, ww // 2) if spec.shift else (0, 0)
    return Geometry(hp, wp, wh, ww, hpad, wpad, sh, sw)


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec, grid, rel_pos_h, rel_pos_w):
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"q, k, v must all be [B, N, heads, head_dim]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    g = geometry(spec, grid)
    if q.shape[1] != g.hp * g.wp:
        raise ValueError(f"q has {q.shape[1]} tokens but grid {tuple(grid)} has {g.hp * g.wp}")
    if spec.rel_pos:
        want_h, want_w = (2 * g.wh - 1, q.shape[-1]), (2 * g.ww - 1, q.shape[-1])
        if rel_pos_h is None or rel_pos_w is None:
            raise ValueError("spec.rel_pos is set but rel_pos_h / rel_pos_w were not given")
        if tuple(rel_pos_h.shape) != want_h or tuple(rel_pos_w.shape) != want_w:
            raise ValueError(
                f"rel_pos_h / rel_pos_w must be {want_h} / {want_w} for {spec} on grid {tuple(grid)}; "
                f"got {tuple(rel_pos_h.shape)} / {tuple(rel_pos_w.shape)}"
            )
    elif rel_pos_h is not None or rel_pos_w is not None:
        raise ValueError("rel_pos_h / rel_pos_w were given but spec.rel_pos is False")
    return g


def check_extra(q: torch.Tensor, extra_k: Optional[torch.Tensor], extra_v: Optional[torch.Tensor]) -> int:
    """The number T of extra key/value tokens (0 when both are None); raises on a malformed pair."""
    if extra_k is None and extra_v is None:
        return 0
    if extra_k is None or extra_v is None:
        raise ValueError("extra_k and extra_v must be given together (or neither)")
    b, _, h, d = q.shape
    if extra_k.dim() != 4 or extra_k.shape != extra_v.shape or (extra_k.shape[0], *extra_k.shape[2:]) != (b, h, d):
        raise ValueError(
            f"extra_k / extra_v must both be [B, T, heads, head_dim] = [{b}, T, {h}, {d}]; got "
            f"{tuple(extra_k.shape)} / {tuple(extra_v.shape)}"
        )
    if extra_k.dtype != q.dtype or extra_v.dtype != q.dtype:
        raise ValueError(f"extra_k / extra_v must have q's dtype {q.dtype}; got {extra_k.dtype} / {extra_v.dtype}")
    return extra_k.shape[1]


def _region(r: torch.Tensor, size: int, window: int, shift: int) -> torch.Tensor:
    # Swin's three slices (0, -window), (-window, -shift), (-shift, None) of the rolled axis; one region unshifted.
    if shift == 0:
        return torch.zeros_like(r)
    return (r >= size - window).long() + (r >= size - shift).long()


def token_layout(spec: AttentionSpec, grid: Tuple[int, int], device=None):
    """Per real token n (row-major): (window id, region id, in-window row, in-window column), each [N] int64.

    Index arithmetic only: rolled position ((y - sh) mod Hpad, (x - sw) mod Wpad), window = rolled // window.
    """
    g = geometry(spec, grid)
    n = torch.arange(g.hp * g.wp, device=device)
    y, x = n // g.wp, n % g.wp
    r, c = (y - g.sh) % g.hpad, (x - g.sw) % g.wpad
    win = (r // g.wh) * g.nw + c // g.ww
    reg = _region(r, g.hpad, g.wh, g.sh) * 3 + _region(c, g.wpad, g.ww, g.sw)
    return win, reg, r % g.wh, c % g.ww


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    grid: Tuple[int, int],
    rel_pos_h: Optional[torch.Tensor] = None,
    rel_pos_w: Optional[torch.Tensor] = None,
    extra_k: Optional[torch.Tensor] = None,
    extra_v: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The oracle: dense [N, N (+P) (+T)] logits in fp32 (fp64 for fp64 inputs) with an explicit mask and
    softmax, cast back to q's dtype.

    Token i may attend token j iff they share window and region (see the module docstring); pooled keys are
    the dense pooling matrix applied to k and v; extra keys are visible to every query. Memory
    O(B * heads * N^2): tiny shapes only.
    """
    g = check_inputs(q, k, v, spec, grid, rel_pos_h, rel_pos_w)
    has_extra = check_extra(q, extra_k, extra_v) > 0
    dtype, d = q.dtype, q.shape[-1]
    acc = torch.promote_types(dtype, torch.float32)
    q, k, v = (t.to(acc).transpose(1, 2) for t in (q, k, v))  # [B, h, N, d]
    win, reg, i, j = token_layout(spec, grid, q.device)
    allowed = (win[:, None] == win[None, :]) & (reg[:, None] == reg[None, :])
    logits = (q * d**-0.5) @ k.transpose(-2, -1)
    if spec.rel_pos:
        # Clamped indices only reach pairs in different windows, which the mask removes.
        idx_h = (i[:, None] - i[None, :] + g.wh - 1).clamp(0, 2 * g.wh - 2)
        idx_w = (j[:, None] - j[None, :] + g.ww - 1).clamp(0, 2 * g.ww - 2)
        qh, qw = q @ rel_pos_h.to(acc).t(), q @ rel_pos_w.to(acc).t()  # [B, h, N, 2w-1]
        n = q.shape[2]
        logits = logits + qh.gather(-1, idx_h.expand(*qh.shape[:2], n, n))
        logits = logits + qw.gather(-1, idx_w.expand(*qw.shape[:2], n, n))
    logits = logits.masked_fill(~allowed, float("-inf"))
    if spec.pool:
        member = (torch.arange(g.num_windows, device=q.device)[:, None] == win[None, :]).to(acc)  # [P, N]
        pool = member / member.sum(1, keepdim=True)
        kp, vp = pool @ k, pool @ v
        logits = torch.cat([logits, (q * d**-0.5) @ kp.transpose(-2, -1)], dim=-1)
        v = torch.cat([v, vp], dim=2)
    if has_extra:
        ek, ev = (t.to(acc).transpose(1, 2) for t in (extra_k, extra_v))  # [B, h, T, d]
        logits = torch.cat([logits, (q * d**-0.5) @ ek.transpose(-2, -1)], dim=-1)
        v = torch.cat([v, ev], dim=2)
    out = logits.softmax(dim=-1) @ v
    return out.transpose(1, 2).to(dtype)


# --------------------------------------------------------------------------------------------------------------
# The fast PyTorch composition: pad + roll + partition, SDPA per window, reverse.
def _to_grid(t: torch.Tensor, g: Geometry) -> torch.Tensor:
    """[B, N, ...] -> zero-padded, rolled [B, Hpad, Wpad, ...]."""
    b, rest = t.shape[0], t.shape[2:]
    x = t.reshape(b, g.hp, g.wp, -1)
    x = F.pad(x, (0, 0, 0, g.wpad - g.wp, 0, g.hpad - g.hp))
    if g.sh or g.sw:
        x = torch.roll(x, shifts=(-g.sh, -g.sw), dims=(1, 2))
    return x.reshape(b, g.hpad, g.wpad, *rest)


def pool_windows(t: torch.Tensor, spec: AttentionSpec, grid: Tuple[int, int]) -> torch.Tensor:
    """Average of each window's real tokens: [B, N, heads, head_dim] -> [B, P, heads, head_dim] (window-major)."""
    g = geometry(spec, grid)
    b, c = t.shape[0], t.shape[2:].numel()
    x = _to_grid(t.to(torch.promote_types(t.dtype, torch.float32)), g)
    x = x.reshape(b, g.nh, g.wh, g.nw, g.ww, c).sum(dim=(2, 4))
    ones = torch.ones(1, g.hp * g.wp, 1, device=t.device)
    count = _to_grid(ones, g).reshape(g.nh, g.wh, g.nw, g.ww).sum(dim=(1, 3))
    return (x / count[None, :, :, None]).reshape(b, g.num_windows, *t.shape[2:]).to(t.dtype)


def _window_mask(g: Geometry, device) -> torch.Tensor:
    """[num_windows, T, T] bool: key is real and in the query's region (or is the query itself, so a padded
    query never has an empty row: its output is dropped, and an all -inf row would put NaN in the gradients)."""
    r = torch.arange(g.hpad, device=device).view(g.nh, g.wh)
    c = torch.arange(g.wpad, device=device).view(g.nw, g.ww)
    r = r[:, None, :, None].expand(g.nh, g.nw, g.wh, g.ww).reshape(g.num_windows, -1)
    c = c[None, :, None, :].expand(g.nh, g.nw, g.wh, g.ww).reshape(g.num_windows, -1)
    real = ((r + g.sh) % g.hpad < g.hp) & ((c + g.sw) % g.wpad < g.wp)
    reg = _region(r, g.hpad, g.wh, g.sh) * 3 + _region(c, g.wpad, g.ww, g.sw)
    eye = torch.eye(g.window_tokens, dtype=torch.bool, device=device)
    return (reg[:, :, None] == reg[:, None, :]) & (real[:, None, :] | eye)


def _decomposed_rel_pos(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, wh: int, ww: int):
    """ViTDet ``add_decomposed_rel_pos`` bias for windows q [Bw, heads, wh*ww, d] -> [Bw, heads, T, T]."""
    dev = q.device
    rh = rel_pos_h.to(q.dtype)[torch.arange(wh, device=dev)[:, None] - torch.arange(wh, device=dev)[None] + wh - 1]
    rw = rel_pos_w.to(q.dtype)[torch.arange(ww, device=dev)[:, None] - torch.arange(ww, device=dev)[None] + ww - 1]
    r_q = q.reshape(*q.shape[:2], wh, ww, q.shape[-1])
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
    bias = rel_h[..., :, None] + rel_w[..., None, :]
    return bias.reshape(*q.shape[:3], wh * ww)


def attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    grid: Tuple[int, int],
    rel_pos_h: Optional[torch.Tensor] = None,
    rel_pos_w: Optional[torch.Tensor] = None,
    extra_k: Optional[torch.Tensor] = None,
    extra_v: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The same attention as :func:`attention_ref` through ``F.scaled_dot_product_attention``.

    Windows: pad + roll + partition to [B * windows, heads, T, d], one SDPA call whose float mask carries the
    padding/region mask and the rel-pos bias (ViTDet's literal einsums), pooled and extra keys concatenated to
    every window, reverse. Without padding, shift or rel_pos no mask is passed (SDPA's fused kernels).
    """
    g = check_inputs(q, k, v, spec, grid, rel_pos_h, rel_pos_w)
    has_extra = check_extra(q, extra_k, extra_v) > 0
    b, n, h, d = q.shape
    if spec.kind == "global" and not spec.rel_pos:
        if has_extra:
            k, v = torch.cat([k, extra_k], dim=1), torch.cat([v, extra_v], dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    nwin, t = g.num_windows, g.window_tokens

    def part(x: torch.Tensor) -> torch.Tensor:  # [B, N, h, d] -> [B * windows, h, T, d]
        x = _to_grid(x, g).reshape(b, g.nh, g.wh, g.nw, g.ww, h, d)
        return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b * nwin, h, t, d)

    qw, kw, vw = part(q), part(k), part(v)
    mask = None
    if g.hpad != g.hp or g.wpad != g.wp or g.sh or g.sw:
        mask = _window_mask(g, q.device)[None, :, None]  # [1, windows, 1, T, T]
    bias = None
    if spec.rel_pos:
        bias = _decomposed_rel_pos(qw, rel_pos_h, rel_pos_w, g.wh, g.ww)
    shared = []  # key/value tokens every window sees: pooled, then extra
    if spec.pool:
        shared.append([pool_windows(x, spec, grid) for x in (k, v)])
    if has_extra:
        shared.append([extra_k, extra_v])
    if shared:
        kp, vp = (torch.cat(ts, dim=1).transpose(1, 2) for ts in zip(*shared))  # [B, h, P (+T), d]
        p = kp.shape[2]
        kw = torch.cat([kw, kp[:, None].expand(b, nwin, h, p, d).reshape(b * nwin, h, p, d)], dim=2)
        vw = torch.cat([vw, vp[:, None].expand(b, nwin, h, p, d).reshape(b * nwin, h, p, d)], dim=2)
        if mask is not None:
            mask = F.pad(mask, (0, p), value=True)
        if bias is not None:
            bias = F.pad(bias, (0, p))
    attn_mask = None
    if bias is not None:
        attn_mask = bias
        if mask is not None:
            attn_mask = bias.view(b, nwin, h, t, -1).masked_fill(~mask, float("-inf")).view(b * nwin, h, t, -1)
    elif mask is not None:
        attn_mask = mask.expand(b, nwin, 1, t, mask.shape[-1]).reshape(b * nwin, 1, t, -1)
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask)
    out = out.reshape(b, g.nh, g.nw, h, g.wh, g.ww, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, g.hpad, g.wpad, h, d)
    if g.sh or g.sw:
        out = torch.roll(out, shifts=(g.sh, g.sw), dims=(1, 2))
    return out[:, : g.hp, : g.wp].reshape(b, n, h, d)


def extra_query_attention(
    extra_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """The extra (knowledge) tokens' own outputs: plain attention of extra_q [B, T, heads, d] over all N + T
    tokens k, v [B, N + T, heads, d] (no window, mask or rel-pos) -> [B, T, heads, d]. T is tiny, so one SDPA
    call on strided views (no copies) serves every backend."""
    out = F.scaled_dot_product_attention(extra_q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
