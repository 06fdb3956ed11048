"""``ViTPose``: backbone + keypoint head(s), the network of the drop-in ViTPose (building, loading, saving,
forward, inference set-up). The users' class is ``vitpose_fast.Model``
(:class:`vitpose_fast.inference.model.Model`): this class plus ``predict`` / ``predict_iter``, which need the
inference layer above this one.

State-dict keys are the official mmpose ones (``backbone.*``, ``keypoint_head.*``,
``associate_keypoint_heads.{i}.*``), so ``Model.state_dict()`` *is* an official-layout state dict (minus the
unused ``backbone.cls_token``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from typing import Optional, Union

import torch
import torch.nn as nn

from vitpose_fast import ops
from vitpose_fast.model import fp8
from vitpose_fast.model import optimize as _optimize
from vitpose_fast.model.backbone import Backbone, DatasetIndex
from vitpose_fast.config import ModelConfig, preset, vitpose_plus_order, with_overrides
from vitpose_fast.model.heads import build_head
from vitpose_fast.model import precision as _precision

logger = logging.getLogger("vitpose_fast")
_UNSET = object()


class ViTPose(nn.Module):
    """ViTPose (the network; users take :class:`vitpose_fast.Model`, which adds ``predict``).
    ``forward(pixel_values [B, 3, H, W], dataset_index=None) -> heatmaps [B, K, H/4, W/4]``
    for both decoders and both patch strides (at stride 8 the heads upsample x2 instead of x4).

    ``dataset_index`` (int or [B] tensor) picks the ViTPose+ expert per sample and, when the model has one head
    per dataset, the head (index 0 is ``keypoint_head``, index i > 0 is ``associate_keypoint_heads[i-1]``).
    A model with several heads needs one dataset per batch in ``forward``; ``forward_features`` plus
    ``head_for(i)`` serve mixed batches.
    """

    def __init__(self, config: ModelConfig, backend: str = "auto"):
        super().__init__()
        self.config = config
        self.backend = ops.check_backend(backend)
        self.backbone = Backbone(config.backbone)
        c = config.backbone.embed_dim
        up = config.head_upsample
        self.keypoint_head = build_head(c, config.head, up)
        self.associate_keypoint_heads = nn.ModuleList(
            build_head(c, dataclasses.replace(config.head, num_keypoints=k), up) for k in config.extra_heads
        )
        self._optimized = None  # set by optimize()
        self.precision: Optional[str] = None  # set by apply_precision / optimize / load
        self.init_weights()

    # ---------------------------------------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: Union[str, ModelConfig], backend: str = "auto", **overrides) -> "ViTPose":
        """``Model.from_config("vitpose_h", res=(576, 432), decoder="simple", num_keypoints=17, patch_stride=8)``.

        Builds with random (official-init) weights. Pass ``device="meta"`` through ``torch.device`` context
        managers to count parameters without allocating.
        """
        if isinstance(config, str):
            config = preset(config, **overrides)
        elif overrides:
            config = with_overrides(config, **overrides)
        return cls(config, backend=backend)

    @classmethod
    def from_pretrained(cls, src, backend: str = "auto", strict: bool = True, **overrides) -> "ViTPose":
        """Load an official mmpose ``.pth`` (dict with ``state_dict``/``meta``), a Hugging Face
        ``save_pretrained`` folder or its ``model.safetensors``, our own format, an MAE/timm checkpoint (backbone
        only, ``strict=False``), or an in-memory state dict. The variant, decoder, keypoint count, experts and extra
        heads are inferred from the tensors; ``overrides`` (e.g. ``res=(384, 288)``, ``num_heads=...``) adjust
        the inferred config (the position embedding is resized bicubically when the grid differs). The model is
        returned in eval mode."""
        from vitpose_fast.model.checkpoint import load_model

        return load_model(cls, src, backend=backend, strict=strict, **overrides)

    @classmethod
    def load(cls, weights, preset: Optional[str] = None, device="cpu", precision: Optional[str] = None,
             backend: str = "auto", **overrides) -> "ViTPose":
        """The users' loader (the CLI's too): ``weights`` (anything :meth:`from_pretrained` reads) into the model
        it describes, or into ``preset`` built with ``overrides`` when given; moved to ``device``, in eval mode,
        at ``precision`` (None / ``"auto"``: the device's default, see :mod:`vitpose_fast.model.precision`).
        Raises :class:`vitpose_fast.model.checkpoint.CheckpointError` for weights that cannot be read or do not
        fit, ValueError for a bad precision, :class:`vitpose_fast.model.fp8.Fp8UnavailableError` for FP8
        where it cannot run."""
        from vitpose_fast.model.checkpoint import load_into, read_checkpoint

        device = torch.device(device)
        # A typo, or FP8 on a GPU without it, fails before the weights are read.
        precision = _precision.prepare_precision(precision, device)
        if preset is None:
            model = cls.from_pretrained(weights, backend=backend, **overrides)
        else:
            model = cls.from_config(preset, backend=backend, **overrides)
            load_into(model, read_checkpoint(weights)[0])
        return _precision.apply_prepared(model.to(device).eval(), precision)

    @torch.no_grad()
    def init_weights(self) -> None:
        self.backbone.init_weights()
        self.keypoint_head.init_weights()
        for h in self.associate_keypoint_heads:
            h.init_weights()

    # ------------------------------------------------------------------------------------------------ backend
    def set_backend(self, backend: str) -> "ViTPose":
        self.backend = ops.check_backend(backend)
        return self

    def quantize_fp8(self) -> "ViTPose":
        """FP8 inference (in place): the backbone's qkv, proj, fc1, fc2 and ViTPose+ expert weights become
        float8_e4m3fn codes with one fp32 scale per output channel; their inputs are quantized per token at run
        time and the GEMMs run on ``torch._scaled_mm`` (bf16 out). Attention, patch embedding, LayerNorm and the
        heads keep the model's dtype: cast to bf16 first (``optimize(batch_size, precision="fp8")`` or
        ``vitpose_fast.model.precision.apply_precision(model, "fp8")`` do both). Inference only; a quantized
        model cannot be saved (save it before). Raises
        :class:`vitpose_fast.model.fp8.Fp8UnavailableError` on a GPU without FP8 tensor cores (before sm_89) or a
        torch without ``_scaled_mm``, naming the fallback (bf16)."""
        fp8.check_fp8_support(self.backbone.pos_embed.device)
        if self.training:
            raise RuntimeError("quantize_fp8 is for inference: call model.eval() first (FP8 layers have no gradients)")
        fp8.quantize_backbone(self.backbone)
        return self

    @property
    def is_fp8(self) -> bool:
        return fp8.is_quantized(self.backbone)

    def _check_not_fp8(self, what: str) -> None:
        if self.is_fp8:
            raise ValueError(f"{what}: this model's GEMM weights are FP8 codes (quantize_fp8 is an inference-time "
                             "form); save the model before quantizing it")

    def resolved_backend(self, device: Optional[torch.device] = None) -> str:
        if device is None:
            device = self.backbone.pos_embed.device
        return ops.resolve(self.backend, device)

    def freeze(self, part: str) -> "ViTPose":
        """Partial fine-tuning with the official meanings (``freeze_attn`` / ``freeze_ffn`` of ``vit.py``):
        ``"attn"`` freezes attention and norm1 of every block; ``"ffn"`` freezes the MLP, norm2, the patch
        embedding and pos_embed. Frozen parameters get ``requires_grad=False``, so autograd neither computes nor
        stores what only their gradients would need, and optimisers built from trainable parameters skip them."""
        if part not in ("attn", "ffn"):
            raise ValueError(f"freeze expects 'attn' or 'ffn', got {part!r}")
        modules = []
        for blk in self.backbone.blocks:
            modules += [blk.attn, blk.norm1] if part == "attn" else [blk.mlp, blk.norm2]
        if part == "ffn":
            modules.append(self.backbone.patch_embed)
            self.backbone.pos_embed.requires_grad_(False)
        for m in modules:
            m.requires_grad_(False)
        return self

    def split_datasets(self) -> list:
        """A ViTPose+ (MoE) model -> one plain model per dataset (the official ``tools/model_split.py``, done
        right): block i's ``fc2`` becomes cat([fc2, experts[d]]) and the head is dataset d's; expert keys are
        dropped. Each split model predicts exactly as this one with ``dataset_index=d``."""
        from vitpose_fast.model.checkpoint import split_moe_state_dict

        return [
            type(self)(cfg, backend=self.backend).eval().requires_grad_(False)._loaded(sd)
            for cfg, sd in split_moe_state_dict(self.config, self.state_dict())
        ]

    def _loaded(self, sd) -> "ViTPose":
        self.load_state_dict(sd)
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> "ViTPose":
        self.backbone.grad_checkpointing = enable
        return self

    # ------------------------------------------------------------------------------------------------ forward
    def head_for(self, dataset_index: int) -> nn.Module:
        """The head of a dataset index; indices without a head of their own use ``keypoint_head`` (as the
        Hugging Face ViTPose+ models, which ship the COCO head only)."""
        if 0 < dataset_index <= len(self.associate_keypoint_heads):
            return self.associate_keypoint_heads[dataset_index - 1]
        return self.keypoint_head

    def forward_features(self, pixel_values: torch.Tensor, dataset_index: DatasetIndex = None) -> torch.Tensor:
        """pixels -> backbone features [B, C, Hp, Wp]."""
        self._check_input(pixel_values, dataset_index)
        return self.backbone(pixel_values, dataset_index, self.resolved_backend(pixel_values.device))

    def forward(self, pixel_values: torch.Tensor, dataset_index: DatasetIndex = None) -> torch.Tensor:
        if self._optimized is not None and not self.training and not torch.compiler.is_compiling():
            return self._forward_optimized(pixel_values, dataset_index)
        return self._forward_eager(pixel_values, dataset_index)

    def _forward_eager(self, pixel_values: torch.Tensor, dataset_index: DatasetIndex = None) -> torch.Tensor:
        backend = self.resolved_backend(pixel_values.device)
        feats = self.forward_features(pixel_values, dataset_index)
        return self.head_for(self._single_dataset(dataset_index)).forward(feats, backend)

    def _forward_optimized(self, pixel_values: torch.Tensor, dataset_index: DatasetIndex) -> torch.Tensor:
        self._check_input(pixel_values, dataset_index)
        x = pixel_values.to(self.backbone.pos_embed.dtype)
        graphs = self._optimized.graphs
        if graphs is not None and _optimize.cuda_graphs_available(x.device) and (
            dataset_index is None or isinstance(dataset_index, int)
        ):
            return graphs(x, dataset_index)
        # Per-sample dataset tensors pick experts on the host: they run eagerly.
        with torch.no_grad():
            return self._forward_eager(x, dataset_index)

    # ------------------------------------------------------------------------------------------------ inference
    def optimize(self, batch_size: int, precision: Optional[str] = None, cuda_graphs: bool = True, *,
                 dtype=_UNSET) -> "ViTPose":
        """Set the model up for inference (returns it): eval mode, the weights at ``precision``, the classic head's
        BatchNorms folded into its deconvolutions, and on CUDA (``cuda_graphs``) forward replayed from
        static-shape CUDA graphs: one per batch size up to ``batch_size`` (a few sizes; others run zero-padded in
        the ``batch_size`` graph; larger batches in ``batch_size`` chunks). Inputs are cast to the weights'
        dtype; outputs are fresh tensors in that dtype. The backend is kept (``auto``: the fused Triton block on
        CUDA, the fused torch composition elsewhere). ``train()`` returns to the eager training path; moving or
        casting the model re-captures on the next call. See :mod:`vitpose_fast.model.optimize`.

        ``precision`` (:mod:`vitpose_fast.model.precision`): ``"fp32"``, ``"bf16"``, ``"fp8"`` (bf16 with the
        backbone GEMMs on FP8 operands, :meth:`quantize_fp8`) or None / ``"auto"``: the precision this model was
        given before (:meth:`load`, ``apply_precision``, an earlier ``optimize``), else the weights' dtype if
        they were cast away from fp32 (bf16, or fp16 kept as it is), else the device's default (bf16 where it
        is native: sm_80+ GPUs, CPUs with AVX512-BF16 or AMX; fp32 elsewhere). The choice and its reason are
        logged (logger ``vitpose_fast``). FP8 where it cannot run raises
        :class:`vitpose_fast.model.fp8.Fp8UnavailableError` before anything changes.

        ``dtype`` is deprecated (one release): ``torch.float32`` / ``torch.bfloat16`` mean ``precision="fp32"`` /
        ``"bf16"``, None keeps the weights' dtype, any other floating dtype casts to it."""
        if isinstance(precision, torch.dtype):  # the old positional optimize(batch_size, dtype)
            dtype, precision = precision, None
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = self.backbone.pos_embed.device
        if dtype is not _UNSET:
            warnings.warn("Model.optimize(dtype=...) is deprecated: pass precision='fp32' | 'bf16' | 'fp8' "
                          "(None: the device's default)", DeprecationWarning, stacklevel=2)
            if precision in (None, "bf16"):  # the old precision="bf16" meant "not fp8": dtype decides
                want = self.backbone.pos_embed.dtype if dtype is None else dtype
                if not want.is_floating_point:
                    raise ValueError(f"optimize casts the weights to a floating dtype, got {want}")
                precision = {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(want)
                if precision is None:  # fp16, fp64: cast and kept as they are
                    self.to(want)
                    self.precision = None
        chosen, why = self._chosen_precision(precision, device)
        if chosen in _precision.PRECISIONS:
            _precision.apply_precision(self, chosen)
        logger.info("precision %s on %s (%s)", chosen, device, why)
        self._optimized = _optimize.optimize_model(self, batch_size, cuda_graphs)
        return self

    def _chosen_precision(self, precision: Optional[str], device: torch.device):
        """(precision, why); for None, a precision given before, else the weights' dtype where someone cast
        them (a dtype outside the vocabulary, e.g. fp16, is returned as its name and kept), else the default."""
        precision = _precision.check_precision(precision)
        if precision == _precision.AUTO:
            if self.precision is not None:
                return self.precision, "the precision this model was given before"
            dtype = self.backbone.pos_embed.dtype
            if dtype != torch.float32:
                kept = {torch.bfloat16: "bf16"}.get(dtype, str(dtype).replace("torch.", ""))
                return kept, "the weights' dtype (cast before optimize), kept"
        return _precision.choose_precision(precision, device)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half() reallocate the weights the captured graphs point at.
        if getattr(self, "_optimized", None) is not None:
            self._optimized.reset()
        return super()._apply(fn, *args, **kwargs)

    def _single_dataset(self, dataset_index: DatasetIndex) -> int:
        if dataset_index is None:
            return 0
        if isinstance(dataset_index, int):
            return dataset_index
        if not len(self.associate_keypoint_heads):
            return 0  # one head: no need to look at (or sync on) the indices
        values = torch.unique(dataset_index).tolist()
        if len(values) != 1:
            raise ValueError(
                f"this model has one head per dataset and the batch mixes dataset indices {values}; run "
                "forward_features once and head_for(i) on each dataset's samples"
            )
        return int(values[0])

    def _check_input(self, x: torch.Tensor, dataset_index: DatasetIndex) -> None:
        cfg = self.config.backbone
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor [B, 3, H, W], got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"pixel_values must have shape [B, 3, H, W] (3 RGB channels), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(
                f"pixel_values must be a normalised floating-point tensor, got {x.dtype}; "
                "use Model.predict for uint8 images"
            )
        h, w = x.shape[-2:]
        if h % cfg.patch_stride or w % cfg.patch_stride:
            raise ValueError(
                f"input size {h}x{w} is not divisible by the patch stride {cfg.patch_stride}"
            )
        if (h, w) != cfg.img_size:
            raise ValueError(
                f"input size {h}x{w} does not match the model's {cfg.img_size[0]}x{cfg.img_size[1]} (its position "
                "embedding is resized once, when the model is built or loaded, not per call); build or load the "
                "model with res=(H, W)"
            )
        if cfg.num_experts > 1:
            if dataset_index is None:
                raise ValueError(
                    f"this is a ViTPose+ model with {cfg.num_experts} experts: pass dataset_index (an int or a [B] "
                    f"tensor; {vitpose_plus_order()})"
                )
            if isinstance(dataset_index, int):
                bad = not 0 <= dataset_index < cfg.num_experts
            else:
                if dataset_index.numel() not in (1, x.shape[0]):
                    raise ValueError(
                        f"dataset_index must be an int or have one entry per sample ({x.shape[0]}), "
                        f"got shape {tuple(dataset_index.shape)}"
                    )
                bad = False  # checked on the host only where it is already needed (no device sync here)
            if bad:
                raise ValueError(f"dataset_index {dataset_index} out of range 0..{cfg.num_experts - 1}")

    # ------------------------------------------------------------------------------------------------ I/O
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Save in our own format: ``{"format": "vitpose_fast", "version": 1, "config": dict, "state_dict"}``,
        loadable with ``torch.load(weights_only=True)``."""
        from vitpose_fast.model.checkpoint import save_own

        self._check_not_fp8("save")
        save_own(self, path)

    def export_official(self, path: Union[str, os.PathLike]) -> None:
        """Write an official mmpose-layout ``.pth`` (``{"state_dict", "meta"}``)."""
        from vitpose_fast.model.checkpoint import save_official

        self._check_not_fp8("export_official")
        save_official(self, path)

    def save_pretrained_hf(self, folder: Union[str, os.PathLike]) -> None:
        """Write a Hugging Face ``save_pretrained``-layout folder (config.json + model.safetensors)."""
        from vitpose_fast.model.checkpoint import save_hf

        self._check_not_fp8("save_pretrained_hf")
        save_hf(self, folder)

    def export_onnx(self, path: Union[str, os.PathLike], batch: Optional[int] = None, opset: int = 18,
                    dataset_index: Optional[int] = None, external_data: Optional[bool] = None) -> str:
        """Write the plain-PyTorch path as ONNX (pixel_values [B, 3, H, W] -> heatmaps; dynamic batch unless
        ``batch`` is given; ViTPose+ with ``dataset_index`` fixed; ``external_data``: weights beside the graph,
        None: when over 2 GiB). See :mod:`vitpose_fast.model.onnx_export`."""
        from vitpose_fast.model.onnx_export import export_onnx

        return export_onnx(self, path, batch=batch, opset=opset, dataset_index=dataset_index,
                           external_data=external_data)

