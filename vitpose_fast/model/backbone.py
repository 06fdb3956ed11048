"""The ViTPose backbone: a plain ViT (official ``mmpose/models/backbones/vit.py``; ViTPose+: ``vit_moe.py``).

Parameter names follow the official checkpoints (``patch_embed.proj``, ``pos_embed``, ``blocks.{i}.norm1``,
``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``mlp.experts.{e}``, ``last_norm``), so an
official state dict loads without renaming. Quirks kept on purpose (each pinned by the parity tests):
- patch conv padding 2 at stride 16 (4 at stride 8), not 0;
- no cls token in the sequence: the cls slot of ``pos_embed`` is added to every patch token (Sapiens,
  ``pos_embed_cls=False``: ``pos_embed`` is [1, Hp*Wp, C] without a cls slot);
- full qkv bias, q scaled before q k^T, LayerNorm eps 1e-6, exact-erf GELU.

Where we knowingly differ: attention specs other than global (window / shift / pool / relative position) are
ours (the official repository never released them); ViTPose+ experts run only on their own samples instead of
every expert on every token.

Knowledge tokens (paper section 3.4, Table 8; no official code): ``BackboneConfig.num_knowledge_tokens`` = T > 0
adds ``knowledge_token`` [1, T, C] (trunc_normal(0.02) at init). After the position embedding the T tokens
(without position embedding) are appended to the N patch tokens; every block processes N + T tokens; they are
dropped before ``last_norm`` (a per-token op), so the heads see only the grid. In attention (see
:class:`Attention`) the N grid queries attend over their window's keys (plus the pooled keys for ``pool``) plus
the T tokens' keys/values as extra global keys (no mask, no rel-pos term), and the T tokens' queries attend
globally over all N + T keys. With global attention this is plain attention over N + T tokens. T = 0 leaves
the model, its outputs and its state dict exactly as without the feature. The token is saved by our own format
(``Model.save``: the config records T); the official and Hugging Face layouts have no such tensor.
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from vitpose_fast import ops
from vitpose_fast.config import AttentionSpec, BackboneConfig
from vitpose_fast.model.fp8 import Fp8Input, Fp8Linear, layers_bias
from vitpose_fast.model.fp8 import linear_layers as fp8_linear_layers
from vitpose_fast.reference.attention import extra_query_attention

DatasetIndex = Union[None, int, torch.Tensor]
BranchOut = Tuple[torch.Tensor, Optional[torch.Tensor]]  # a block branch's output and its pending Linear bias


class DropPath(nn.Module):
    """Stochastic depth per sample (timm's ``drop_path``)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.proj = nn.Conv2d(
            3, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_stride, padding=cfg.patch_padding
        )

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(x)
        hp, wp = x.shape[-2:]
        # Contiguous tokens: elementwise ops keep their inputs' layout, so a transposed view here would make every
        # residual add of the network transposed and every LayerNorm and GEMM on CPU copy its input first.
        return x.flatten(2).transpose(1, 2).contiguous(), (hp, wp)


class Attention(nn.Module):
    """Multi-head self-attention over the Hp x Wp grid (spec: global / window / shift / pool / rel-pos) plus
    optional extra tokens after the N grid tokens (x [B, N + T, C], T = x.shape[1] - Hp * Wp): the grid queries
    attend to their window plus the extra tokens' keys/values (``ops.attention`` with ``extra_k``/``extra_v``),
    the extra queries to all N + T tokens (one small SDPA call)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, spec: AttentionSpec, grid: Tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.spec = spec
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if spec.rel_pos:
            size = spec.window if spec.kind == "window" else grid
            # ViTDet: decomposed relative position tables, one per axis (zeros here; trained from scratch they
            # are initialised with trunc_normal(0.02) by `Backbone.init_weights`).
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * size[1] - 1, self.head_dim))
        else:
            self.rel_pos_h = self.rel_pos_w = None

    def forward(self, x: torch.Tensor, grid: Tuple[int, int], backend: str) -> torch.Tensor:
        return linear(self.proj, self.mix(x, grid, backend), backend)

    def mix(self, x: Fp8Input, grid: Tuple[int, int], backend: str) -> torch.Tensor:
        """Everything before ``proj``: the attention output [B, N + T, C] (heads concatenated). With an FP8 qkv,
        x may be its already quantized input (codes [B, N + T, C], scales [B, N + T, 1])."""
        b, n, c = (x[0] if isinstance(x, tuple) else x).shape
        n_grid = grid[0] * grid[1]
        if n < n_grid:
            raise ValueError(f"attention got {n} tokens for a {grid[0]}x{grid[1]} grid (expected >= {n_grid})")
        # [B, N, 3, heads, hd]: q, k, v are strided views in the kernels' [B, N, heads, hd] layout (no copies).
        qkv = linear(self.qkv, x, backend).view(b, n, 3, self.num_heads, self.head_dim)
        if n == n_grid:
            q, k, v = qkv.unbind(2)
            out = ops.attention(q, k, v, self.spec, grid, self.rel_pos_h, self.rel_pos_w, backend=backend)
            return out.reshape(b, n, c)
        q, k, v = qkv[:, :n_grid].unbind(2)
        extra_q, extra_k, extra_v = qkv[:, n_grid:].unbind(2)
        out = ops.attention(q, k, v, self.spec, grid, self.rel_pos_h, self.rel_pos_w, backend=backend,
                            extra_k=extra_k, extra_v=extra_v)
        extra_out = extra_query_attention(extra_q, qkv[:, :, 1], qkv[:, :, 2])
        return torch.cat([out, extra_out], dim=1).reshape(b, n, c)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, dataset_index: DatasetIndex = None, backend: str = "torch") -> torch.Tensor:
        return linear(self.fc2, self.act(linear(self.fc1, x, backend)), backend)

    def forward_split(self, x: torch.Tensor, dataset_index: DatasetIndex, backend: str) -> BranchOut:
        """(fc2 output without its bias, the bias) where the backend fuses the bias into the residual op."""
        h = _fc1_gelu(self.fc1, x, backend)
        return _linear_split(h, [self.fc2], backend)


class MoEMlp(nn.Module):
    """ViTPose+ FFN: shared fc1 and shared fc2 to C - p features, plus one expert Linear(4C -> p) per dataset;
    the output is cat([fc2(h), experts[dataset](h)]). Routing is hard, per sample, by dataset index."""

    def __init__(self, dim: int, hidden: int, num_experts: int, part_features: int):
        super().__init__()
        self.part_features = part_features
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim - part_features)
        self.experts = nn.ModuleList(nn.Linear(hidden, part_features) for _ in range(num_experts))

    def forward(self, x: torch.Tensor, dataset_index: DatasetIndex = None, backend: str = "torch") -> torch.Tensor:
        h = self.act(linear(self.fc1, x, backend))
        if backend == "reference":
            # The official/HF formulation: every expert on every token, selected by a mask.
            idx = _index_tensor(dataset_index, x)
            part = sum(
                linear(e, h, backend) * (idx == i).to(h.dtype).view(-1, *([1] * (h.ndim - 1)))
                for i, e in enumerate(self.experts)
            )
            return torch.cat([linear(self.fc2, h, backend), part], dim=-1)
        if isinstance(dataset_index, int) or (
            isinstance(dataset_index, torch.Tensor) and dataset_index.numel() == 1
        ):
            # One dataset in the batch (the usual case): one GEMM over the concatenated projection, exactly the
            # cost of a dense ViT FFN.
            e = self.experts[int(dataset_index)]
            if isinstance(e, Fp8Linear):
                return fp8_linear_layers(h, [self.fc2, e], backend)
            return F.linear(h, torch.cat([self.fc2.weight, e.weight]), torch.cat([self.fc2.bias, e.bias]))
        return self._mixed(h, dataset_index, backend)

    def forward_split(self, x: torch.Tensor, dataset_index: DatasetIndex, backend: str) -> BranchOut:
        """As :meth:`Mlp.forward_split`; one dataset: the concatenated fc2 + expert projection without bias."""
        single = isinstance(dataset_index, int) or (
            isinstance(dataset_index, torch.Tensor) and dataset_index.numel() == 1
        )
        # Mixed batches index h per expert, so it stays a plain tensor there.
        h = _fc1_gelu(self.fc1, x, backend, quantize_out=single)
        if single:
            return _linear_split(h, [self.fc2, self.experts[int(dataset_index)]], backend)
        return self._mixed(h, dataset_index, backend), None

    def _mixed(self, h: torch.Tensor, dataset_index: DatasetIndex, backend: str) -> torch.Tensor:
        idx = _index_tensor(dataset_index, h)
        shared = linear(self.fc2, h, backend)
        part = h.new_empty(h.shape[:-1] + (self.part_features,))
        # Each expert runs only on its own samples (a host sync for the grouping; mixed batches are training).
        for i in torch.unique(idx).tolist():
            sel = (idx == i).nonzero(as_tuple=True)[0]
            part[sel] = linear(self.experts[i], h[sel], backend)
        return torch.cat([shared, part], dim=-1)


def linear(layer: nn.Module, x: Fp8Input, backend: str) -> torch.Tensor:
    """``layer(x)`` for an ``nn.Linear`` or an :class:`Fp8Linear` (which takes the block's backend)."""
    return layer(x, backend) if isinstance(layer, Fp8Linear) else layer(x)


def _fc1_gelu(fc1: nn.Module, x: Fp8Input, backend: str, quantize_out: bool = True) -> Fp8Input:
    """gelu(fc1(x)); with FP8 layers and a fusing backend the bias+GELU pass also quantizes its output for the
    FP8 fc2 (``quantize_out``), returning (codes, scales)."""
    if isinstance(fc1, Fp8Linear):
        if ops.fuses_linear_bias(backend):
            a = fc1(x, backend, with_bias=False)
            return ops.bias_gelu_fp8(a, fc1.bias, backend) if quantize_out else ops.bias_gelu(a, fc1.bias, backend)
        return F.gelu(fc1(x, backend))
    if ops.fuses_linear_bias(backend):
        return ops.bias_gelu(F.linear(x, fc1.weight), fc1.bias, backend)
    return F.gelu(fc1(x))


def _linear_split(x: Fp8Input, layers: List[nn.Module], backend: str) -> BranchOut:
    """The layers (concatenated along their outputs) as one GEMM whose bias the following fused residual op adds
    (where the backend fuses it) or the GEMM adds."""
    fuse = ops.fuses_linear_bias(backend)
    if isinstance(layers[0], Fp8Linear):
        return fp8_linear_layers(x, layers, backend, with_bias=not fuse), layers_bias(layers) if fuse else None
    weight = layers[0].weight if len(layers) == 1 else torch.cat([m.weight for m in layers])
    bias = layers_bias(layers)
    if fuse:
        return F.linear(x, weight), bias
    return F.linear(x, weight, bias), None


def _add_branch(x: torch.Tensor, branch: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return x + (branch if bias is None else branch + bias.to(branch.dtype))


def _index_tensor(dataset_index: DatasetIndex, x: torch.Tensor) -> torch.Tensor:
    if isinstance(dataset_index, int):
        return torch.full((x.shape[0],), dataset_index, device=x.device, dtype=torch.long)
    idx = dataset_index.to(device=x.device, dtype=torch.long).reshape(-1)
    return idx.expand(x.shape[0]) if idx.numel() == 1 else idx


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN1 x)), then x + DropPath(MLP(LN2 x))."""

    def __init__(self, cfg: BackboneConfig, spec: AttentionSpec, drop_path: float):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, spec, cfg.grid)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        if cfg.num_experts > 1:
            self.mlp: nn.Module = MoEMlp(dim, cfg.mlp_hidden, cfg.num_experts, cfg.part_features)
        else:
            self.mlp = Mlp(dim, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int], dataset_index: DatasetIndex, backend: str,
                pending: Optional[BranchOut] = None) -> Tuple[torch.Tensor, Optional[BranchOut]]:
        """(x, pending) -> (x_out, pending_out). ``pending``: a branch (and its Linear bias) still to be added to x,
        which the fused backends add inside this block's norm1 (:func:`vitpose_fast.ops.residual_layer_norm`);
        likewise the attention branch is added inside norm2, and the MLP branch is returned for the next block's
        norm1 (or the backbone's last_norm). Every parameter a block uses is its own, so wrappers of the block's
        forward (FSDP2 per-block sharding, activation checkpointing, hooks) see all of its work. The
        ``reference`` backend runs the plain pre-norm block and returns no pending branch. FP8 blocks
        (``Model.quantize_fp8``) have norm1 and norm2 write the FP8 inputs (codes, scales) of qkv and fc1."""
        if backend == "reference":
            if pending is not None:
                x = _add_branch(x, *pending)
            x = x + self.drop_path(self.attn(self.norm1(x), grid, backend))
            return x + self.drop_path(self.mlp(self.norm2(x), dataset_index, backend)), None
        if pending is None:
            h: Fp8Input = ops.layer_norm(x, self.norm1.weight, self.norm1.bias, self.norm1.eps)
        else:
            norm1 = ops.residual_layer_norm_fp8 if isinstance(self.attn.qkv, Fp8Linear) else ops.residual_layer_norm
            x, h = norm1(x, *pending, self.norm1.weight, self.norm1.bias, self.norm1.eps, backend)
        a = _linear_split(self.attn.mix(h, grid, backend), [self.attn.proj], backend)
        a, a_bias = self._dropped(*a)
        norm2 = ops.residual_layer_norm_fp8 if isinstance(self.mlp.fc1, Fp8Linear) else ops.residual_layer_norm
        x, h = norm2(x, a, a_bias, self.norm2.weight, self.norm2.bias, self.norm2.eps, backend)
        return x, self._dropped(*self.mlp.forward_split(h, dataset_index, backend))

    def _dropped(self, branch: torch.Tensor, bias: Optional[torch.Tensor]) -> BranchOut:
        # Stochastic depth drops the whole branch, its bias included: add the bias before masking.
        if self.drop_path.p == 0.0 or not self.training:
            return branch, bias
        return self.drop_path(branch if bias is None else branch + bias.to(branch.dtype)), None


def run_blocks(blocks, x: torch.Tensor, grid: Tuple[int, int], dataset_index: DatasetIndex, backend: str,
               norm: nn.LayerNorm, pending: Optional[BranchOut] = None, checkpointing: bool = False) -> torch.Tensor:
    """``norm(blocks(x + pending))``: the blocks in turn, each block's last branch fused into the next LayerNorm
    (see :meth:`Block.forward`), ``checkpointing`` recomputing each block in backward."""
    for blk in blocks:
        if checkpointing:
            x, pending = torch.utils.checkpoint.checkpoint(blk, x, grid, dataset_index, backend, pending,
                                                           use_reentrant=False)
        else:
            x, pending = blk(x, grid, dataset_index, backend, pending)
    if pending is None:
        return norm(x)
    return ops.residual_layer_norm(x, *pending, norm.weight, norm.bias, norm.eps, backend)[1]


class Backbone(nn.Module):
    """pixels [B, 3, H, W] -> features [B, C, Hp, Wp] (one stride-16 or stride-8 map)."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        hp, wp = cfg.grid
        self.pos_embed = nn.Parameter(torch.zeros(1, hp * wp + int(cfg.pos_embed_cls), cfg.embed_dim))
        if cfg.num_knowledge_tokens:
            self.knowledge_token = nn.Parameter(torch.zeros(1, cfg.num_knowledge_tokens, cfg.embed_dim))
        else:
            self.register_parameter("knowledge_token", None)
        # linspace(0, rate, depth): block 0 gets 0, the last block the full rate (computed on the host so that
        # building under a meta-device context works).
        dpr = [cfg.drop_path_rate * i / (cfg.depth - 1) if cfg.depth > 1 else 0.0 for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, cfg.block_attention(i), dpr[i]) for i in range(cfg.depth))
        self.last_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.grad_checkpointing = False

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official from-scratch init: trunc_normal(0.02) Linear weights, zero biases, LN (1, 0)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, Attention) and m.rel_pos_h is not None:
                nn.init.trunc_normal_(m.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(m.rel_pos_w, std=0.02)
        if self.knowledge_token is not None:  # last: models without tokens draw the same random numbers
            nn.init.trunc_normal_(self.knowledge_token, std=0.02)

    def grid_pos_embed(self) -> torch.Tensor:
        """The [1, Hp*Wp, C] position embedding added to the patch tokens. ViTPose: the cls slot's embedding is
        added to every patch token (official; a no-op for MAE sin-cos tables). Sapiens has no cls slot."""
        if self.cfg.pos_embed_cls:
            return self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        return self.pos_embed

    def forward_tokens(
        self, x: torch.Tensor, dataset_index: DatasetIndex = None, backend: str = "torch"
    ) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """pixels -> (grid tokens after last_norm [B, N, C], grid). Fused backends add every residual inside the
        LayerNorm after it: the position embedding into the first norm1, each block's branches into its norm2
        and the next block's norm1, the last into last_norm (a per-token op, so the knowledge tokens' rows are
        normalised and then dropped)."""
        x, grid = self.patch_embed(x)
        n_grid = x.shape[1]
        pending: Optional[BranchOut] = None
        if backend == "reference":
            x = x + self.grid_pos_embed()
        elif self.knowledge_token is None:
            pending = (self.grid_pos_embed(), None)
        else:
            x = x + self.grid_pos_embed()
        if self.knowledge_token is not None:
            x = torch.cat([x, self.knowledge_token.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        checkpointing = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        x = run_blocks(self.blocks, x, grid, dataset_index, backend, self.last_norm, pending, checkpointing)
        return x[:, :n_grid], grid

    def forward(self, x: torch.Tensor, dataset_index: DatasetIndex = None, backend: str = "torch") -> torch.Tensor:
        tokens, (hp, wp) = self.forward_tokens(x, dataset_index, backend)
        # [B, N, C] -> [B, C, Hp, Wp] as a view; the heads accept the channels-last strides.
        return tokens.transpose(1, 2).unflatten(2, (hp, wp))
