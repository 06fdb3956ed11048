"""Masked-autoencoder (MAE, He et al. 2021) pretraining of the ViTPose backbone (the paper's Table 3).

The encoder IS :class:`vitpose_fast.model.backbone.Backbone`, so its parameters are named as a ViTPose backbone's
(``patch_embed.proj``, ``pos_embed``, ``blocks.{i}.*``, ``last_norm``) and :meth:`MAE.save_backbone` writes a
checkpoint that ``Model.from_pretrained(path, strict=False)`` (or :func:`load_backbone` into an existing model)
loads into any preset of the same width, resizing ``pos_embed`` when the resolution differs.

Algorithm (shapes for an input [B, 3, H, W], H and W multiples of 16, grid (Hp, Wp) = (H/16, W/16),
N = Hp * Wp, C the encoder width, Cd the decoder width):

1. Patch embedding with ViTPose's conv (kernel 16, stride 16, padding 2): [B, N, C]. The token grid equals the
   16x16 patch grid of the reconstruction targets, but the padding offsets each token's receptive field by
   2 px (up and left) from its target patch. That is a deliberate consequence of pretraining exactly the
   patch embedding ViTPose fine-tunes, not a bug.
2. ``x + pos_embed[:, 1:] + pos_embed[:, :1]`` (ViTPose's rule; the cls slot is zero here, as in MAE).
   ``pos_embed`` is MAE's fixed 2-D sin-cos table (first half of the channels encodes the column, second half
   the row), frozen during pretraining; it becomes a learned parameter when fine-tuned.
3. Per-sample random masking: ``argsort`` of uniform noise [B, N]; the first ``int(N * (1 - mask_ratio))``
   tokens of each sample's permutation are kept (visible) -> [B, Nv, C].
4. Encoder blocks on the visible tokens only, then ``last_norm``. Only global attention is allowed (windows
   and relative positions need the full grid), so each block gets the virtual grid (1, Nv).
5. Decoder: Linear(C -> Cd), mask tokens appended, unshuffled to grid order, plus a FIXED 2-D sin-cos decoder
   position table (MAE's choice), ``decoder_depth`` pre-norm blocks (our ``Block``, drop path 0), LayerNorm,
   Linear(Cd -> 16 * 16 * 3): one predicted patch per token [B, N, 768].
6. Loss: MSE against the patchified input (per patch, channel-last ``(py, px, c)`` order, MAE's ``patchify``),
   with ``norm_pix_loss`` each target patch normalised by its own mean and (unbiased) variance,
   ``(t - mean) / sqrt(var + 1e-6)``; averaged over patch pixels, then over the MASKED patches only.

Where we knowingly differ from the MAE reference: no cls token goes through the encoder (ViTPose has none in
its sequence, so pretraining without one matches fine-tuning), and the encoder's final norm is ``last_norm``
and is transferred (the official ViTPose loader drops MAE's ``norm.*``). Init is MAE's: xavier-uniform Linear
weights and patch kernel (flattened), zero Linear biases, LayerNorm (1, 0), mask token N(0, 0.02).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from vitpose_fast import ops
from vitpose_fast.model.backbone import Backbone, Block, run_blocks
from vitpose_fast.model.checkpoint import FORMAT, CheckpointError, atomic_save, load_into, read_checkpoint
from vitpose_fast.config import GLOBAL, AttentionSpec, BackboneConfig, HeadConfig, ModelConfig

StateDict = Dict[str, torch.Tensor]
PATCH = 16  # reconstruction patch size: ViTPose's patch stride


@dataclass(frozen=True)
class MAEConfig:
    """MAE pretraining of a ViTPose backbone. ``encoder`` must use global attention, patch stride 16 and a
    plain FFN; MAE's reference recipe uses no drop path in pretraining (the default here)."""

    encoder: BackboneConfig = field(default_factory=lambda: BackboneConfig(drop_path_rate=0.0))
    mask_ratio: float = 0.75
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    norm_pix_loss: bool = True

    def __post_init__(self):
        e = self.encoder
        specs = (e.attention,) if isinstance(e.attention, AttentionSpec) else e.attention
        if any(s.kind != "global" or s.rel_pos for s in specs):
            raise ValueError("MAE encoder needs global attention without relative positions in every block "
                             "(it runs on a random subset of tokens, not the full grid)")
        if e.patch_stride != PATCH or e.patch_size != PATCH:
            raise ValueError(f"MAE encoder needs patch size and stride {PATCH} (the target patches), "
                             f"got kernel {e.patch_size} stride {e.patch_stride}")
        if e.num_experts != 1:
            raise ValueError("MAE pretraining of ViTPose+ (num_experts > 1) is not supported; pretrain the plain "
                             "backbone and initialise the experts from it")
        if e.img_size[0] % PATCH or e.img_size[1] % PATCH:
            raise ValueError(f"input size {e.img_size} must be a multiple of {PATCH} in both dimensions")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if e.embed_dim % 4 or self.decoder_dim % 4:
            raise ValueError("2-D sin-cos position tables need widths divisible by 4, got "
                             f"encoder {e.embed_dim}, decoder {self.decoder_dim}")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} is not divisible by decoder_heads {self.decoder_heads}")
        if self.decoder_depth < 1:
            raise ValueError(f"decoder_depth must be >= 1, got {self.decoder_depth}")

    @property
    def grid(self) -> Tuple[int, int]:
        return self.encoder.grid

    @property
    def decoder_backbone_config(self) -> BackboneConfig:
        """The decoder's blocks as a BackboneConfig (so they are our ``Block``)."""
        return BackboneConfig(img_size=self.encoder.img_size, embed_dim=self.decoder_dim, depth=self.decoder_depth,
                              num_heads=self.decoder_heads, drop_path_rate=0.0)

    def to_dict(self) -> dict:
        """Primitives only (safe for ``torch.load(weights_only=True)`` and JSON)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "encoder"}
        d["encoder"] = ModelConfig(backbone=self.encoder).to_dict()["backbone"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MAEConfig":
        d = dict(d)
        enc = ModelConfig.from_dict({"backbone": d.pop("encoder"), "head": dataclasses.asdict(HeadConfig())})
        return cls(encoder=enc.backbone, **d)


def sincos_pos_embed_2d(dim: int, grid: Tuple[int, int]) -> torch.Tensor:
    """MAE's ``get_2d_sincos_pos_embed`` for an Hp x Wp grid -> [Hp * Wp, dim] float32 (row-major tokens).

    Channels [0, dim/2) encode the column, [dim/2, dim) the row; each half is [sin(p * w), cos(p * w)] with
    ``w_k = 10000 ** (-k / (dim / 4))``, k < dim / 4 (computed in float64)."""
    hp, wp = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(hp, dtype=torch.float64), torch.arange(wp, dtype=torch.float64),
                                indexing="ij")

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one_axis(cols), one_axis(rows)], dim=1).float()


def patchify(imgs: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """[B, 3, H, W] -> [B, N, patch * patch * 3], patches row-major, each flattened in (py, px, c) order."""
    b, c, h, w = imgs.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = imgs.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, grid: Tuple[int, int], patch: int = PATCH) -> torch.Tensor:
    """Inverse of :func:`patchify`: [B, N, patch * patch * 3] -> [B, 3, Hp * patch, Wp * patch]."""
    b = patches.shape[0]
    hp, wp = grid
    x = patches.reshape(b, hp, wp, patch, patch, -1)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, -1, hp * patch, wp * patch)


def random_masking(x: torch.Tensor, mask_ratio: float, noise: Optional[torch.Tensor] = None):
    """Keep ``int(N * (1 - mask_ratio))`` tokens of each sample, chosen by ``argsort(noise)`` (lowest noise kept).

    x: [B, N, C]; noise: [B, N] (uniform random when None). Returns (visible [B, Nv, C] in permutation order,
    mask [B, N] float (1 = masked, 0 = visible, grid order), ids_restore [B, N] long: the position of each grid
    token in the shuffled sequence)."""
    b, n, c = x.shape
    keep = int(n * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} leaves no visible token out of {n}")
    if noise is None:
        noise = torch.rand(b, n, device=x.device)
    elif noise.shape != (b, n):
        raise ValueError(f"noise must have shape {(b, n)}, got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, c))
    mask = torch.ones(b, n, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    return visible, torch.gather(mask, 1, ids_restore), ids_restore


class MAE(nn.Module):
    """``forward(imgs [B, 3, H, W] normalised float, noise=None) -> (loss, pred [B, N, 768], mask [B, N])``.

    ``backbone`` is a ViTPose :class:`Backbone`; everything else is the MAE decoder. ``backend`` picks the
    attention implementation as :class:`vitpose_fast.Model` does (``auto``/``reference``/``torch``/``triton``).
    """

    def __init__(self, config: MAEConfig, backend: str = "auto"):
        super().__init__()
        self.config = config
        self.backend = ops.check_backend(backend)
        self.backbone = Backbone(config.encoder)
        dec = config.decoder_backbone_config
        cd = config.decoder_dim
        self.decoder_embed = nn.Linear(config.encoder.embed_dim, cd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cd))
        hp, wp = config.grid
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, hp * wp, cd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(Block(dec, GLOBAL, 0.0) for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(cd, eps=dec.layer_norm_eps)
        self.decoder_pred = nn.Linear(cd, PATCH * PATCH * 3)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """MAE's ``initialize_weights`` (see the module doc); both position tables fixed sin-cos."""
        c = self.config.encoder.embed_dim
        pos = self.backbone.pos_embed
        pos.zero_()  # the cls slot stays 0: ViTPose adds it to every token
        pos[0, 1:] = sincos_pos_embed_2d(c, self.config.grid)
        pos.requires_grad_(False)
        self.decoder_pos_embed[0] = sincos_pos_embed_2d(self.config.decoder_dim, self.config.grid)
        w = self.backbone.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def resolved_backend(self, device: torch.device) -> str:
        return ops.resolve(self.backend, device)

    # ------------------------------------------------------------------------------------------------ forward
    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: Optional[float] = None,
                        noise: Optional[torch.Tensor] = None):
        """imgs -> (visible tokens after ``last_norm`` [B, Nv, C], mask [B, N], ids_restore [B, N])."""
        self._check_input(imgs)
        backend = self.resolved_backend(imgs.device)
        bb = self.backbone
        x, _ = bb.patch_embed(imgs)
        x = x + bb.pos_embed[:, 1:] + bb.pos_embed[:, :1]
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        x, mask, ids_restore = random_masking(x, ratio, noise)
        vgrid = (1, x.shape[1])  # global attention only checks the token count
        checkpointing = bb.grad_checkpointing and self.training and torch.is_grad_enabled()
        return run_blocks(bb.blocks, x, vgrid, None, backend, bb.last_norm, checkpointing=checkpointing), mask, \
            ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Visible tokens [B, Nv, C] -> predicted patches [B, N, 16 * 16 * 3] in grid order."""
        backend = self.resolved_backend(x.device)
        x = self.decoder_embed(x)
        b, nv, cd = x.shape
        n = ids_restore.shape[1]
        x = torch.cat([x, self.mask_token.to(x.dtype).expand(b, n - nv, cd)], dim=1)
        x = torch.gather(x, 1, ids_restore[..., None].expand(-1, -1, cd))
        x = x + self.decoder_pos_embed
        return self.decoder_pred(run_blocks(self.decoder_blocks, x, self.config.grid, None, backend, self.decoder_norm))

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """Reconstruction targets [B, N, 768] float32 (per-patch normalised when ``norm_pix_loss``)."""
        t = patchify(imgs.float())
        if self.config.norm_pix_loss:
            mean = t.mean(dim=-1, keepdim=True)
            var = t.var(dim=-1, keepdim=True)  # unbiased, as MAE
            t = (t - mean) / (var + 1e-6).sqrt()
        return t

    def loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches only (float32)."""
        per_patch = (pred.float() - self.target(imgs)).pow(2).mean(dim=-1)
        mask = mask.float()
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, imgs: torch.Tensor, mask_ratio: Optional[float] = None,
                noise: Optional[torch.Tensor] = None):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.loss(imgs, pred, mask), pred, mask

    def _check_input(self, imgs: torch.Tensor) -> None:
        if not isinstance(imgs, torch.Tensor) or imgs.ndim != 4 or imgs.shape[1] != 3:
            got = tuple(imgs.shape) if isinstance(imgs, torch.Tensor) else type(imgs).__name__
            raise ValueError(f"imgs must be a [B, 3, H, W] tensor, got {got}")
        if tuple(imgs.shape[-2:]) != self.config.encoder.img_size:
            h, w = self.config.encoder.img_size
            raise ValueError(f"input size {imgs.shape[-2]}x{imgs.shape[-1]} does not match the MAE's {h}x{w}")

    # ------------------------------------------------------------------------------------------------ export
    def encoder_state_dict(self) -> StateDict:
        """The backbone's weights with official ``backbone.*`` keys (``pos_embed`` included), detached copies."""
        return {f"backbone.{k}": v.detach().clone() for k, v in self.backbone.state_dict().items()}

    def save_backbone(self, path: Union[str, os.PathLike]) -> None:
        """Write ``{"state_dict": backbone.*, "meta": {...}}``: an official-layout backbone checkpoint.

        ``meta`` names the encoder's config (so loaders know the exact source grid and head count); the stored
        drop path is the pretraining one (0 by default): pass the fine-tuning recipe's ``drop_path_rate`` as an
        override, or load into a preset model with :func:`load_backbone`."""
        meta = {FORMAT: ModelConfig(backbone=self.config.encoder, name="mae_pretrained").to_dict(),
                "mae": self.config.to_dict()}
        atomic_save({"state_dict": self.encoder_state_dict(), "meta": meta}, path)


def load_backbone(model: nn.Module, src) -> List[str]:
    """Load a backbone checkpoint (ours, official, MAE/timm, HF) into an existing ``Model``'s backbone only.

    Every backbone parameter of ``model`` must be in the checkpoint (after the official adaptations: pos_embed
    resize, 14->16 kernels), except relative-position tables, which a global-attention checkpoint cannot have
    (they keep their init); heads and other non-backbone keys are left at their current values. Returns the
    loaded keys."""
    sd, config, _ = read_checkpoint(src)
    sd = {k: v for k, v in sd.items() if k.startswith("backbone.") and k != "backbone.cls_token"}
    own = [k for k in model.state_dict() if k.startswith("backbone.")]
    missing = sorted(k for k in set(own) - set(sd) if ".rel_pos_" not in k)
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise CheckpointError(f"backbone checkpoint lacks {len(missing)} of the model's backbone keys: {shown}")
    load_into(model, sd, strict=False, source_grid=config.backbone.grid if config is not None else None)
    return sorted(sd)
