"""Checkpoints: official mmpose, Hugging Face, MAE/timm, our own format and our sharded (DCP) training
checkpoints, in and out.

Our state-dict keys are the official ones, so "official" conversion is only packaging; Hugging Face conversion
renames keys and splits/joins qkv (``convert_vitpose_to_hf.py``'s mapping). Loading follows the official loader
(``mmcv_custom/checkpoint.py``): the state dict is taken from ``state_dict``, else ``model`` (MAE), else
``module``; ``module.``/``encoder.`` prefixes are stripped; 14x14 patch kernels are zero-padded to 16x16;
``pos_embed`` is resized bicubically (align_corners=False) when the grids differ, the cls slot kept as is.
Everything is read with ``torch.load(weights_only=True)``: no arbitrary unpickling. Sharded training checkpoints
(``OUT/last.dcp`` of ``train.py --fsdp``, written by :func:`vitpose_fast.training.distributed.save_sharded`) are
read here, below the training layer, so that ``Model.from_pretrained`` and the training code share one reader.

Where we knowingly differ: the official resize assumes a square source grid; we take the source grid from the
checkpoint's own config when it has one, else square, else 4:3 (the ViTPose aspect).

Sapiens (facebookresearch/sapiens pose ``.pth``, mmengine ``{"state_dict", "meta"}``): mmpretrain
``VisionTransformer`` + ``HeatmapHead`` keys (``backbone.patch_embed.projection``, ``backbone.layers.{i}.ln1``,
``attn.qkv``, ``attn.proj``, ``ln2``, ``ffn.layers.0.0`` / ``ffn.layers.1``, ``backbone.ln1``, a [1, Hp*Wp, C]
``pos_embed`` without cls slot; ``head.deconv_layers`` / ``head.conv_layers`` / ``head.final_layer``) are renamed
to ours on reading and back on :func:`save_sapiens`. Their ``meta`` holds numpy arrays (mmpose's dataset
metainfo: float32 sigmas and joint weights, uint8 colours), which ``weights_only=True`` refuses by default; we
allow exactly the numpy globals those need (:func:`numpy_meta_globals`) and nothing else. The Sapiens-Lite
TorchScript and bf16 ``torch.export`` files (``.pt2``) are programs, not state dicts: refused with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from vitpose_fast.config import BackboneConfig, HeadConfig, ModelConfig, with_overrides
from vitpose_fast.model.errors import CheckpointError

StateDict = Dict[str, torch.Tensor]
FORMAT = "vitpose_fast"
VERSION = 1
# A sharded training checkpoint: DCP's files plus this file of everything but the tensors (config included).
TRAIN_STATE = "train_state.pt"
SHARDED_FORMAT = "vitpose_fast-train-sharded"
# Heads per width of the official presets (head counts are not recoverable from tensor shapes).
_HEADS_BY_WIDTH = {384: 12, 768: 12, 1024: 16, 1280: 16, 1408: 16}


# ------------------------------------------------------------------------------------------------ reading files
def _torch_load(path: Path) -> dict:
    _check_not_program(path)
    try:
        with torch.serialization.safe_globals(numpy_meta_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign pickles
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} with torch.load(weights_only=True): "
            f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}. Expected an official "
            "mmpose .pth, a vitpose_fast checkpoint or a state dict saved with torch.save (a truncated download "
            "or a pickled foreign object fails here)"
        ) from e


def _safetensors_load(path: Path) -> StateDict:
    try:
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover
        raise CheckpointError("reading .safetensors needs the safetensors package (pip install safetensors)") from e
    try:
        return load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {e}") from e


def read_checkpoint(src) -> Tuple[StateDict, Optional[ModelConfig], dict]:
    """Any supported source -> (state dict in official/our key layout, config if the file names one, hf config).

    ``src``: a path (file or HF folder) or an in-memory dict (a state dict or a checkpoint dict).
    """
    hf_config: dict = {}
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if isinstance(src, str) and not path.exists():
            from vitpose_fast.model.hub import is_hub_id, resolve_hub_id

            if is_hub_id(src):
                path = resolve_hub_id(src)
        if path.is_dir() and is_sharded_checkpoint(path):
            sd, config = read_sharded_checkpoint(path)
            return sd, config, {}
        if path.is_dir():
            cfg_file = path / "config.json"
            if cfg_file.exists():
                hf_config = json.loads(cfg_file.read_text())
            for name in ("model.safetensors", "pytorch_model.bin"):
                if (path / name).exists():
                    path = path / name
                    break
            else:
                found = [n for n in ("final.pth", "best.pth", "last.dcp") if (path / n).exists()]
                raise CheckpointError(
                    f"folder {str(src)!r} has no model.safetensors or pytorch_model.bin and no DCP .metadata "
                    "(expected a Hugging Face save_pretrained folder or a sharded training checkpoint such as "
                    "OUT/last.dcp)" + (f"; it holds {', '.join(found)}: pass one of those" if found else "")
                )
        elif not path.exists():
            raise CheckpointError(
                f"checkpoint {str(src)!r} does not exist (expected a local file or folder, or a Hugging Face Hub "
                "id 'org/name')"
            )
        if path.suffix == ".safetensors":
            obj: dict = _safetensors_load(path)
            if not hf_config and (path.parent / "config.json").exists():
                hf_config = json.loads((path.parent / "config.json").read_text())
        else:
            obj = _torch_load(path)
    elif isinstance(src, dict):
        obj = src
    else:
        raise TypeError(f"cannot load a checkpoint from {type(src).__name__}; expected a path or a dict")
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, expected a dict of tensors")

    config = None
    if obj.get("format") == FORMAT:
        config = ModelConfig.from_dict(obj["config"])
        sd = obj["state_dict"]
    else:
        for key in ("state_dict", "model", "module"):
            if key in obj and isinstance(obj[key], dict):
                sd = obj[key]
                meta = obj.get("meta")
                if isinstance(meta, dict) and isinstance(meta.get(FORMAT), dict):
                    config = ModelConfig.from_dict(meta[FORMAT])
                break
        else:
            sd = obj
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError("checkpoint holds no tensors (expected a ViTPose state dict)")
    sd = {_strip_prefix(k): v for k, v in sd.items()}
    if is_sapiens_state_dict(sd):
        sd = sapiens_to_ours(sd)
        if config is None:
            config = infer_sapiens_config(sd)
    elif any(k.startswith(("backbone.embeddings.", "backbone.encoder.")) or k.startswith("head.") for k in sd):
        sd = hf_to_official(sd)
    elif any(k.startswith(("blocks.", "patch_embed.")) for k in sd):
        sd = _mae_to_official(sd)
    if not any(k.startswith("backbone.") for k in sd):
        sample = ", ".join(sorted(sd)[:6])
        raise CheckpointError(
            f"not a ViTPose checkpoint: no backbone keys found (first keys: {sample}); expected official "
            "(backbone.*, keypoint_head.*), Hugging Face (backbone.embeddings.*, head.*) or MAE/timm (blocks.*) keys"
        )
    return sd, config, hf_config


def is_sharded_checkpoint(path: os.PathLike) -> bool:
    """A DCP checkpoint folder (``OUT/last.dcp`` or one of its ``OUT/sharded/step_*`` targets)."""
    path = Path(path)
    return path.is_dir() and (path / ".metadata").exists()


def read_train_state(path: os.PathLike) -> dict:
    """The non-tensor part of a sharded training checkpoint (position, schedule, RNGs, config, run metadata)."""
    path = Path(path)
    if not is_sharded_checkpoint(path):
        raise CheckpointError(f"{str(path)!r} is not a sharded training checkpoint (expected a directory with "
                              f"DCP's .metadata and {TRAIN_STATE}, e.g. OUT/last.dcp)")
    state_file = path / TRAIN_STATE
    if not state_file.exists():
        raise CheckpointError(f"sharded checkpoint {str(path)!r} has no {TRAIN_STATE} (not written by vitpose_fast "
                              "training, or a write that did not finish)")
    state = _torch_load(state_file)
    if not isinstance(state, dict) or state.get("format") != SHARDED_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{str(state_file)!r} is not a {SHARDED_FORMAT} state (format {found!r})")
    return state


def read_sharded_checkpoint(path: os.PathLike) -> Tuple[StateDict, ModelConfig]:
    """The full model weights and config of a sharded training checkpoint, on the CPU, in this process alone (no
    process group, no collectives, whatever process count wrote it); the optimizer states are not read."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    state = read_train_state(path)
    config = ModelConfig.from_dict(state["config"])
    # DCP fills tensors the caller allocates: their names, shapes and dtypes come from the checkpoint's metadata.
    metadata = dcp.FileSystemReader(str(path)).read_metadata()
    prefix = "model."  # save_sharded's {"model": ..., "optim": ...}, flattened
    sd = {k[len(prefix):]: torch.empty(m.size, dtype=m.properties.dtype)
          for k, m in metadata.state_dict_metadata.items()
          if k.startswith(prefix) and isinstance(m, TensorStorageMetadata)}
    if not sd:
        raise CheckpointError(f"sharded checkpoint {str(path)!r} holds no model tensors")
    with warnings.catch_warnings():  # DCP warns about no_dist even when asked for it: one process is the point
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": sd}, checkpoint_id=str(path), no_dist=True)
    return sd, config


def _strip_prefix(k: str) -> str:
    for p in ("module.", "encoder."):
        if k.startswith(p):
            k = k[len(p):]
    return k


def _mae_to_official(sd: StateDict) -> StateDict:
    """MAE/timm ViT keys -> ``backbone.*``. As the official loader: the encoder's final ``norm`` does not map
    to ``last_norm`` (it starts from the LN init), and cls/mask tokens and the MAE decoder are dropped."""
    out = {}
    for k, v in sd.items():
        if k.startswith(("blocks.", "patch_embed.")) or k == "pos_embed":
            out["backbone." + k] = v
    return out


# ------------------------------------------------------------------------------------------------ HF mapping
_HF_BLOCK = [
    ("attention.output.dense.", "attn.proj."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("mlp.", "mlp."),
]
_HF_HEAD = [("deconv1.", "deconv_layers.0."), ("batchnorm1.", "deconv_layers.1."),
            ("deconv2.", "deconv_layers.3."), ("batchnorm2.", "deconv_layers.4."), ("conv.", "final_layer.")]


def hf_to_official(sd: StateDict) -> StateDict:
    out: StateDict = {}
    qkv: Dict[Tuple[int, str], Dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k == "backbone.embeddings.position_embeddings":
            out["backbone.pos_embed"] = v
        elif k.startswith("backbone.embeddings.patch_embeddings.projection."):
            out["backbone.patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.layernorm."):
            out["backbone.last_norm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.encoder.layer."):
            i, rest = re.match(r"backbone\.encoder\.layer\.(\d+)\.(.*)", k).groups()
            m = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)", rest)
            if m:
                qkv.setdefault((int(i), m.group(2)), {})[m.group(1)] = v
                continue
            for a, b in _HF_BLOCK:
                if rest.startswith(a):
                    out[f"backbone.blocks.{i}.{b}{rest[len(a):]}"] = v
                    break
            else:
                out[k] = v  # unknown: reported as unexpected by the strict load
        elif k.startswith("head.") or k.startswith("associate_heads."):
            if k.startswith("head."):
                prefix, rest = "keypoint_head.", k[len("head."):]
            else:
                j, rest = re.match(r"associate_heads\.(\d+)\.(.*)", k).groups()
                prefix = f"associate_keypoint_heads.{j}."
            for a, b in _HF_HEAD:
                if rest.startswith(a):
                    out[prefix + b + rest[len(a):]] = v
                    break
            else:
                out[k] = v
        else:
            out[k] = v
    for (i, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"block {i}: {kind} of query/key/value incomplete (found {sorted(parts)})")
        out[f"backbone.blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def official_to_hf(sd: StateDict) -> StateDict:
    out: StateDict = {}
    for k, v in sd.items():
        if k == "backbone.cls_token":
            continue
        if k == "backbone.pos_embed":
            out["backbone.embeddings.position_embeddings"] = v
        elif k.startswith("backbone.patch_embed.proj."):
            out["backbone.embeddings.patch_embeddings.projection." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.last_norm."):
            out["backbone.layernorm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.blocks."):
            i, rest = re.match(r"backbone\.blocks\.(\d+)\.(.*)", k).groups()
            pre = f"backbone.encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                q, kk, vv = v.chunk(3)
                kind = rest.rsplit(".", 1)[1]
                for name, t in (("query", q), ("key", kk), ("value", vv)):
                    out[f"{pre}attention.attention.{name}.{kind}"] = t.clone()
                continue
            for b, a in _HF_BLOCK:
                if rest.startswith(a):
                    out[pre + b + rest[len(a):]] = v
                    break
            else:
                raise CheckpointError(f"{k} has no Hugging Face equivalent (attention specs other than global?)")
        elif k.startswith(("keypoint_head.", "associate_keypoint_heads.")):
            if k.startswith("keypoint_head."):
                prefix, rest = "head.", k[len("keypoint_head."):]
            else:
                j, rest = re.match(r"associate_keypoint_heads\.(\d+)\.(.*)", k).groups()
                # Not part of HF's model (it keeps the COCO head only); kept so that our round trip is exact.
                prefix = f"associate_heads.{j}."
            for b, a in _HF_HEAD:
                if rest.startswith(a):
                    out[prefix + b + rest[len(a):]] = v
                    break
            else:
                raise CheckpointError(f"{k} has no Hugging Face equivalent")
        else:
            raise CheckpointError(f"{k} has no Hugging Face equivalent")
    return out


# ------------------------------------------------------------------------------------------------ config inference
def infer_config(sd: StateDict, hf_config: Optional[dict] = None, **overrides) -> ModelConfig:
    """The model config a state dict implies. Head counts come from the HF config when there is one, else from
    the official presets' width -> heads table, else head_dim 64; ``overrides`` win over everything."""
    hf_b = (hf_config or {}).get("backbone_config", {}) or {}
    try:
        w = sd["backbone.patch_embed.proj.weight"]
    except KeyError:
        raise CheckpointError("checkpoint has no backbone.patch_embed.proj.weight: cannot infer the model") from None
    dim = w.shape[0]
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))), default=-1)
    fc1 = sd.get("backbone.blocks.0.mlp.fc1.weight")
    experts = {int(m.group(1)) for k in sd if (m := re.match(r"backbone\.blocks\.0\.mlp\.experts\.(\d+)\.weight", k))}
    part = sd["backbone.blocks.0.mlp.experts.0.weight"].shape[0] if experts else 0
    heads = hf_b.get("num_attention_heads") or _HEADS_BY_WIDTH.get(dim) or max(dim // 64, 1)
    bkw = dict(
        embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=(fc1.shape[0] / dim) if fc1 is not None else 4.0,
        qkv_bias="backbone.blocks.0.attn.qkv.bias" in sd or depth == 0,
        num_experts=max(len(experts), 1), part_features=part,
    )
    if "backbone.knowledge_token" in sd:
        bkw["num_knowledge_tokens"] = sd["backbone.knowledge_token"].shape[1]
    pos = sd.get("backbone.pos_embed")
    stride = overrides.get("patch_stride", 16)
    if hf_b.get("image_size"):
        bkw["img_size"] = tuple(hf_b["image_size"])
    elif pos is not None:
        hp, wp = _guess_grid(pos.shape[1] - 1)
        bkw["img_size"] = (hp * stride, wp * stride)
    head = _infer_head(sd, "keypoint_head.")
    if head is None:
        head = HeadConfig()
    extra = []
    j = 0
    while (h := _infer_head(sd, f"associate_keypoint_heads.{j}.")) is not None:
        extra.append(h.num_keypoints)
        j += 1
    cfg = ModelConfig(backbone=BackboneConfig(**bkw), head=head, extra_heads=tuple(extra), name="pretrained")
    return with_overrides(cfg, **overrides) if overrides else cfg


def _infer_head(sd: StateDict, prefix: str) -> Optional[HeadConfig]:
    w = sd.get(prefix + "final_layer.weight")
    if w is None:
        return None
    if w.shape[-1] == 3:
        return HeadConfig(kind="simple", num_keypoints=w.shape[0])
    chans = []
    i = 0
    while (d := sd.get(f"{prefix}deconv_layers.{i}.weight")) is not None:
        chans.append(d.shape[1])
        i += 3
    return HeadConfig(kind="classic", num_keypoints=w.shape[0], deconv_channels=tuple(chans) or (256, 256))


def _guess_grid(n: int) -> Tuple[int, int]:
    """A token count -> (Hp, Wp): 4:3 (the ViTPose aspect: 16x12, 24x18, 36x27), else square, else 1 x n."""
    k = math.isqrt(n // 12) if n % 12 == 0 else 0
    if k and 12 * k * k == n:
        return 4 * k, 3 * k
    r = math.isqrt(n)
    if r * r == n:
        return r, r
    return 1, n


# ------------------------------------------------------------------------------------------------ adapting
def adapt_state_dict(sd: StateDict, config: ModelConfig, source_grid: Optional[Tuple[int, int]] = None) -> StateDict:
    """The official loader's adaptations to a model config: 14->16 patch kernels, pos_embed resize, cls dropped."""
    sd = dict(sd)
    sd.pop("backbone.cls_token", None)
    k = config.backbone.patch_size
    w = sd.get("backbone.patch_embed.proj.weight")
    if w is not None and w.shape[-1] != k:
        if w.shape[-1] > k or (k - w.shape[-1]) % 2:
            raise CheckpointError(f"patch kernel {tuple(w.shape[-2:])} cannot be zero-padded to {k}x{k}")
        p = (k - w.shape[-1]) // 2
        sd["backbone.patch_embed.proj.weight"] = F.pad(w, (p, p, p, p))
    pos = sd.get("backbone.pos_embed")
    hp, wp = config.backbone.grid
    cls = int(config.backbone.pos_embed_cls)  # Sapiens: no cls slot
    if pos is not None and pos.shape[1] - cls != hp * wp:
        sh, sw = source_grid or _guess_grid(pos.shape[1] - cls)
        if sh * sw != pos.shape[1] - cls:
            raise CheckpointError(f"pos_embed has {pos.shape[1] - cls} tokens, not a {sh}x{sw} grid")
        grid = pos[:, cls:].reshape(1, sh, sw, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(hp, wp), mode="bicubic", align_corners=False)
        sd["backbone.pos_embed"] = torch.cat(
            [pos[:, :cls], grid.permute(0, 2, 3, 1).reshape(1, hp * wp, -1).to(pos.dtype)], dim=1
        )
    return sd


def load_into(model, sd: StateDict, strict: bool = True, source_grid=None) -> None:
    """Copy an official-layout state dict into ``model``; with ``strict`` a mismatch lists every missing and
    unexpected key and every shape difference."""
    check_family(sd, model.config)
    sd = adapt_state_dict(sd, model.config, source_grid)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(sd) & set(own)) if sd[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_listing(shapes)}")
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(parts))
    if missing or unexpected:  # strict=False: say what was left out
        import logging

        logging.getLogger("vitpose_fast").warning(
            "non-strict load: %s%s%s",
            f"{len(unexpected)} checkpoint tensors not in the model were dropped ({_listing(unexpected)})"
            if unexpected else "", "; " if missing and unexpected else "",
            f"{len(missing)} model tensors not in the checkpoint keep their initial values ({_listing(missing)})"
            if missing else "")
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


def _listing(items, n: int = 12) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def load_model(cls, src, backend: str = "auto", strict: bool = True, **overrides):
    sd, config, hf_config = read_checkpoint(src)
    source_grid = None
    if config is None:
        inferred = infer_config(sd, hf_config)
        source_grid = inferred.backbone.grid
        config = with_overrides(inferred, **overrides) if overrides else inferred
    else:
        source_grid = config.backbone.grid
        if overrides:
            config = with_overrides(config, **overrides)
    model = cls(config, backend=backend)
    load_into(model, sd, strict=strict, source_grid=source_grid)
    return model.eval()  # as transformers' from_pretrained: inference mode until .train()


# ------------------------------------------------------------------------------------------------ writing
def atomic_save(obj, path) -> None:
    """``torch.save`` to ``path.tmp``, then ``os.replace`` (a killed run never leaves a torn file where a good
    one was); creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_own(model, path) -> None:
    atomic_save({"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
                  "state_dict": model.state_dict()}, path)


def official_state_dict(model) -> StateDict:
    if model.config.backbone.num_knowledge_tokens:
        raise CheckpointError(
            "the official ViTPose has no knowledge token (backbone.knowledge_token); save with Model.save instead"
        )
    if any(k.endswith((".rel_pos_h", ".rel_pos_w")) for k in model.state_dict()):
        raise CheckpointError("the official ViTPose has no relative-position tables; save with Model.save instead")
    sd = dict(model.state_dict())
    # Released official files carry an (unused) cls token; keep the layout identical.
    sd["backbone.cls_token"] = torch.zeros(1, 1, model.config.backbone.embed_dim)
    return sd


def save_official(model, path) -> None:
    if not model.config.backbone.pos_embed_cls:
        return save_sapiens(model, path)
    atomic_save({"state_dict": official_state_dict(model), "meta": {FORMAT: model.config.to_dict()}}, path)


def hf_config_dict(config: ModelConfig) -> dict:
    b = config.backbone
    if not b.pos_embed_cls or config.head.conv_channels or config.head.norm_act != "bn_relu":
        raise CheckpointError("the Hugging Face VitPose port has no Sapiens model (position embedding without cls "
                              "slot, InstanceNorm + SiLU head); use export_official for the Sapiens layout")
    if b.patch_stride != b.patch_size:
        raise CheckpointError("the Hugging Face port supports patch stride == patch size (16) only")
    if config.head_upsample != 4:
        raise CheckpointError("the Hugging Face port supports x4 heads only")
    k = config.head.num_keypoints
    return {
        "architectures": ["VitPoseForPoseEstimation"],
        "model_type": "vitpose",
        "use_simple_decoder": config.head.kind == "simple",
        "scale_factor": 4,
        "initializer_range": 0.02,
        "id2label": {str(i): f"LABEL_{i}" for i in range(k)},
        "label2id": {f"LABEL_{i}": i for i in range(k)},
        "backbone_config": {
            "model_type": "vitpose_backbone",
            "image_size": list(b.img_size),
            "patch_size": [b.patch_size, b.patch_size],
            "num_channels": 3,
            "hidden_size": b.embed_dim,
            "num_hidden_layers": b.depth,
            "num_attention_heads": b.num_heads,
            "mlp_ratio": int(b.mlp_ratio) if float(b.mlp_ratio).is_integer() else b.mlp_ratio,
            "num_experts": b.num_experts,
            "part_features": b.part_features or 256,
            "hidden_act": "gelu",
            "layer_norm_eps": b.layer_norm_eps,
            "qkv_bias": b.qkv_bias,
            "out_indices": [b.depth],
        },
    }


def save_hf(model, folder) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = hf_config_dict(model.config)
    sd = {k: v.detach().contiguous() for k, v in official_to_hf(model.state_dict()).items()}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))


def split_moe_state_dict(config: ModelConfig, sd: StateDict):
    """ViTPose+ -> [(plain config, state dict)] per dataset index (see ``Model.split_datasets``)."""
    import dataclasses

    b = config.backbone
    if b.num_experts <= 1:
        raise ValueError("split_datasets needs a ViTPose+ model (num_experts > 1)")
    out = []
    heads = [config.head.num_keypoints] + list(config.extra_heads)
    for d in range(b.num_experts):
        head_idx = d if d < len(heads) else 0
        cfg = dataclasses.replace(
            config,
            backbone=dataclasses.replace(b, num_experts=1, part_features=0),
            head=dataclasses.replace(config.head, num_keypoints=heads[head_idx]),
            extra_heads=(),
            name=f"{config.name}_dataset{d}",
        )
        new: StateDict = {}
        src_head = "keypoint_head." if head_idx == 0 else f"associate_keypoint_heads.{head_idx - 1}."
        for k, v in sd.items():
            if ".mlp.experts." in k or k.startswith("associate_keypoint_heads."):
                continue
            if k.startswith("keypoint_head."):
                continue
            m = re.match(r"(backbone\.blocks\.\d+\.mlp)\.fc2\.(weight|bias)$", k)
            if m:
                v = torch.cat([v, sd[f"{m.group(1)}.experts.{d}.{m.group(2)}"]])
            new[k] = v.clone()
        for k, v in sd.items():
            if k.startswith(src_head):
                new["keypoint_head." + k[len(src_head):]] = v.clone()
        out.append((cfg, new))
    return out


# ------------------------------------------------------------------------------------------------ Sapiens layout
# (official key prefix, ours) inside ``backbone.layers.{i}.`` / ``backbone.blocks.{i}.``.
_SAPIENS_BLOCK = [("ln1.", "norm1."), ("ln2.", "norm2."), ("attn.qkv.", "attn.qkv."), ("attn.proj.", "attn.proj."),
                  ("ffn.layers.0.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.fc2.")]
_SAPIENS_TOP = [("backbone.patch_embed.projection.", "backbone.patch_embed.proj."),
                ("backbone.ln1.", "backbone.last_norm."), ("head.", "keypoint_head.")]
# mmpretrain arch_zoo: heads per width (not recoverable from tensor shapes) and the preset of each size.
_SAPIENS_HEADS = {1024: 16, 1280: 16, 1536: 24, 1920: 32}
_SAPIENS_SIZES = {(1024, 24): "sapiens_0.3b", (1280, 32): "sapiens_0.6b", (1536, 40): "sapiens_1b",
                  (1920, 48): "sapiens_2b"}


def numpy_meta_globals() -> list:
    """The allow-list under which every checkpoint is read with ``torch.load(weights_only=True)``: exactly the
    numpy globals that rebuild the float32 / uint8 arrays of an mmengine checkpoint's ``meta`` (mmpose's
    ``parse_pose_metainfo``: sigmas, joint weights, keypoint and link colours), as the official Sapiens pose files
    carry them. ``_reconstruct`` and ``ndarray`` build an array, ``dtype`` (and, numpy >= 1.25, its
    ``Float32DType`` / ``UInt8DType`` classes) its element type. Files written under numpy 1.x name
    ``numpy.core.multiarray._reconstruct``, under numpy 2 ``numpy._core.multiarray._reconstruct``: both names map
    to the installed function. Anything else (another dtype, a numpy scalar, any other class) is still refused."""
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    allowed: list = [np.ndarray, np.dtype]
    allowed += [(multiarray._reconstruct, f"{mod}._reconstruct")
                for mod in ("numpy.core.multiarray", "numpy._core.multiarray")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [dtypes.Float32DType, dtypes.UInt8DType]
    return allowed


def _check_not_program(path: Path) -> None:
    """Refuse the Sapiens-Lite exports by name: a TorchScript archive (``code/``, ``constants.pkl``) or a
    ``torch.export`` program (the bf16 ``.pt2``) holds a compiled graph, not weights we could map."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        kind = "a TorchScript archive (Sapiens-Lite 'torchscript' .pt2)"
    elif any(n.endswith(("serialized_exported_program.json", "/archive_format")) or "/models/" in n
             for n in names):
        kind = "a torch.export program (Sapiens-Lite 'bfloat16' .pt2)"
    else:
        return
    raise CheckpointError(
        f"{str(path)!r} is {kind}, which is not supported: it holds a compiled program, not a state dict. Load "
        "the official Sapiens pose .pth checkpoint instead (e.g. sapiens_1b_coco_best_coco_AP_821.pth)"
    )


def is_sapiens_state_dict(sd: StateDict) -> bool:
    """Official Sapiens (mmpretrain ViT + mmpose HeatmapHead) key layout."""
    return any(k.startswith(("backbone.layers.", "backbone.patch_embed.projection.", "backbone.ln1.")) for k in sd)


def _rename(k: str, pairs, block_from: str, block_to: str, block_pairs) -> Optional[str]:
    if k.startswith(block_from):
        m = re.match(re.escape(block_from) + r"(\d+)\.(.*)", k)
        if m:
            for a, b in block_pairs:
                if m.group(2).startswith(a):
                    return f"{block_to}{m.group(1)}.{b}{m.group(2)[len(a):]}"
        return None
    for a, b in pairs:
        if k.startswith(a):
            return b + k[len(a):]
    return k if k == "backbone.pos_embed" else None


def sapiens_to_ours(sd: StateDict) -> StateDict:
    """Official Sapiens keys -> ours. Unknown keys are kept as they are (the strict load reports them)."""
    out: StateDict = {}
    for k, v in sd.items():
        new = _rename(k, _SAPIENS_TOP, "backbone.layers.", "backbone.blocks.", _SAPIENS_BLOCK)
        out[new if new is not None else k] = v
    return out


def ours_to_sapiens(sd: StateDict) -> StateDict:
    swap = [(b, a) for a, b in _SAPIENS_TOP]
    out: StateDict = {}
    for k, v in sd.items():
        new = _rename(k, swap, "backbone.blocks.", "backbone.layers.", [(b, a) for a, b in _SAPIENS_BLOCK])
        if new is None:
            raise CheckpointError(f"{k} has no equivalent in the official Sapiens layout")
        out[new] = v
    return out


def infer_sapiens_config(sd: StateDict) -> ModelConfig:
    """The config a Sapiens state dict (our keys) implies: the preset of its width and depth when it is one of
    the four (heads from mmpretrain's arch_zoo), else a custom size with the Sapiens settings (head dim 64)."""
    from vitpose_fast.config import preset

    try:
        dim = sd["backbone.patch_embed.proj.weight"].shape[0]
        pos = sd["backbone.pos_embed"]
        final = sd["keypoint_head.final_layer.weight"]
    except KeyError as e:
        raise CheckpointError(f"Sapiens checkpoint lacks {e.args[0]} (after renaming to our keys)") from None
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))), default=-1)
    fc1 = sd.get("backbone.blocks.0.mlp.fc1.weight")
    hp, wp = _guess_grid(pos.shape[1])
    deconv = tuple(sd[f"keypoint_head.deconv_layers.{i}.weight"].shape[1]
                   for i in range(0, 30, 3) if f"keypoint_head.deconv_layers.{i}.weight" in sd)
    conv = tuple(sd[f"keypoint_head.conv_layers.{i}.weight"].shape[0]
                 for i in range(0, 30, 3) if f"keypoint_head.conv_layers.{i}.weight" in sd)
    kw = dict(res=(hp * 16, wp * 16), num_keypoints=final.shape[0], deconv_channels=deconv or (768, 768),
              conv_channels=conv)
    name = _SAPIENS_SIZES.get((dim, depth))
    if name is not None and (fc1 is None or fc1.shape[0] == 4 * dim):
        return preset(name, **kw)
    custom = preset("sapiens_0.3b", embed_dim=dim, depth=depth, num_heads=_SAPIENS_HEADS.get(dim, max(dim // 64, 1)),
                    mlp_ratio=(fc1.shape[0] / dim) if fc1 is not None else 4.0, **kw)
    return with_overrides(custom, name="pretrained")


def _head_family(sd: StateDict) -> Optional[str]:
    """'sapiens' (InstanceNorm head: conv_layers, no BatchNorm tensors), 'vitpose' (BatchNorm or simple head) or
    None (no head: a backbone-only checkpoint)."""
    if "keypoint_head.final_layer.weight" not in sd:
        return None
    if any(k.startswith("keypoint_head.conv_layers.") for k in sd):
        return "sapiens"
    if "keypoint_head.deconv_layers.1.running_var" in sd or sd["keypoint_head.final_layer.weight"].shape[-1] == 3:
        return "vitpose"
    return "sapiens" if "keypoint_head.deconv_layers.0.weight" in sd else None


def check_family(sd: StateDict, config: ModelConfig) -> None:
    """A ViTPose checkpoint given to a Sapiens model, or the reverse, fails here with what each is."""
    found = _head_family(sd)
    sapiens_model = config.head.norm_act == "in_silu" or bool(config.head.conv_channels)
    if found is None or (found == "sapiens") == sapiens_model:
        return
    what = {"sapiens": "a Sapiens checkpoint (InstanceNorm + SiLU head with 1x1 conv_layers)",
            "vitpose": "a ViTPose checkpoint (BatchNorm + ReLU or simple head)"}[found]
    model = f"the {config.name!r} model is " + ("a Sapiens model" if sapiens_model else "a ViTPose model")
    raise CheckpointError(
        f"{what} does not fit: {model}. Load it without a preset (Model.from_pretrained(path); on the command "
        f"line, no --model), which builds the matching model from the checkpoint, or pick a "
        f"{'sapiens_*' if found == 'sapiens' else 'vitpose_*'} preset"
    )


def sapiens_state_dict(model) -> StateDict:
    """The model's tensors in the official Sapiens layout (the mmpose ``TopdownPoseEstimator`` state dict)."""
    if model.config.extra_heads or model.config.backbone.num_experts > 1 or model.config.backbone.num_knowledge_tokens:
        raise CheckpointError("the official Sapiens layout has one head, no experts and no knowledge tokens; "
                              "save with Model.save instead")
    if any(k.endswith((".rel_pos_h", ".rel_pos_w")) for k in model.state_dict()):
        raise CheckpointError("the official Sapiens layout has no relative-position tables; save with Model.save")
    return ours_to_sapiens(dict(model.state_dict()))


def save_sapiens(model, path) -> None:
    atomic_save({"state_dict": sapiens_state_dict(model), "meta": {FORMAT: model.config.to_dict()}}, path)
