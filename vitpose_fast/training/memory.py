"""Per-rank training memory: bytes of parameters, gradients, optimizer states and activations for DDP and FSDP
on N ranks, from a meta-device model (nothing is allocated) and the saved tensors of one meta forward.

    python -m vitpose_fast.training.memory --model vitpose_h --res 576 432 --batch 64 --ranks 1 8 64
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["MemoryEstimate", "estimate_memory", "memory_table"]

# The builtin itself (what a torch function mode receives), whatever F's attribute is bound to later.
_SDPA = torch._C._nn.scaled_dot_product_attention


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank. ``params``: fp32 master weights (DDP: all, plus autocast's bf16 copies with bf16; FSDP:
    1/N of them plus the gathered root in fp32 and two gathered blocks in the compute dtype, the one running and
    the one prefetched); ``grads``: fp32 gradients of trainable parameters (FSDP: 1/N plus one gathered block's);
    ``optimizer``: AdamW's two fp32 moments (FSDP: 1/N); ``activations``: what autograd saves for backward at
    the per-rank batch (the same for DDP and FSDP)."""

    mode: str
    ranks: int
    params: int
    grads: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations


class _FlashLike(torch.autograd.Function):
    """Shapes only (meta): the tensors a flash-attention forward keeps for its backward."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - the estimate runs forward only
        raise NotImplementedError


class _FlashLikeAttention(torch.overrides.TorchFunctionMode):
    """Within the estimate only: ``F.scaled_dot_product_attention`` saves what flash attention saves (a torch
    function mode is scoped to its ``with`` block and this thread, so nothing else sees the replacement)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is _SDPA:
            q, k, v = args[:3]
            return _FlashLike.apply(q, k, v)
        return func(*args, **(kwargs or {}))


def _saved_activation_bytes(config, batch: int, dtype: torch.dtype) -> Dict[str, int]:
    """Bytes autograd keeps for backward after one training forward on the meta device: ``total``, ``blocks``
    (list, per block), ``block_input`` (one block's input, what checkpointing keeps per block). Saved tensors are
    counted once per storage (views and tensors saved by several ops share one); saved weights are not
    activations and are left out. Attention saves what flash attention saves (q, k, v, the output and an fp32
    log-sum-exp per query), not the probabilities of SDPA's math path (the meta device's choice)."""
    from vitpose_fast.inference.model import Model

    with torch.device("meta"):
        model = Model(config, backend="torch").to(dtype).train()
    seen: Dict[int, int] = {p.untyped_storage()._cdata: 0 for p in model.parameters()}
    current: List[Optional[int]] = [None]
    per_block = [0] * len(model.backbone.blocks)

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        key = s._cdata
        if key not in seen:
            seen[key] = s.nbytes()
            if current[0] is not None:
                per_block[current[0]] += s.nbytes()
        return t

    hooks = []
    for i, blk in enumerate(model.backbone.blocks):
        hooks.append(blk.register_forward_pre_hook(lambda m, a, i=i: current.__setitem__(0, i)))
        hooks.append(blk.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))
    h, w = config.backbone.img_size
    x = torch.empty(batch, 3, h, w, device="meta", dtype=dtype)
    with _FlashLikeAttention(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    for hk in hooks:
        hk.remove()
    hp, wp = config.backbone.grid
    tokens = hp * wp + config.backbone.num_knowledge_tokens
    block_input = batch * tokens * config.backbone.embed_dim * torch.finfo(dtype).bits // 8
    return {"total": sum(seen.values()), "blocks": per_block, "block_input": block_input}


def estimate_memory(config, batch: int, ranks: Sequence[int], amp: str = "bf16", checkpointing: bool = False,
                    freeze: Optional[str] = None) -> List[MemoryEstimate]:
    """Per-rank memory of DDP (any number of ranks) and FSDP on each of ``ranks`` for ``config`` at ``batch``
    images per rank, AdamW, ``amp`` "bf16" (FSDP: bf16 parameters, fp32 reductions; DDP: autocast) or "none"."""
    from vitpose_fast.inference.model import Model

    with torch.device("meta"):
        model = Model(config, backend="torch")
    if freeze:
        model.freeze(freeze)
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    blocks = model.backbone.blocks
    block_all = max(sum(p.numel() for p in b.parameters()) for b in blocks)
    block_train = max(sum(p.numel() for p in b.parameters() if p.requires_grad) for b in blocks)
    root = n_all - sum(p.numel() for b in blocks for p in b.parameters())
    compute = torch.bfloat16 if amp == "bf16" else torch.float32
    cbytes = torch.finfo(compute).bits // 8
    acts = _saved_activation_bytes(config, batch, compute)
    if checkpointing:  # block inputs kept, one block's activations alive at a time (its recomputation)
        rest = acts["total"] - sum(acts["blocks"])
        act = rest + len(blocks) * acts["block_input"] + max(acts["blocks"])
    else:
        act = acts["total"]
    out = [MemoryEstimate("DDP", 1, params=4 * n_all + (cbytes * n_all if amp == "bf16" else 0), grads=4 * n_train,
                          optimizer=8 * n_train, activations=act)]
    for n in ranks:
        gathered = 4 * root + cbytes * 2 * block_all
        out.append(MemoryEstimate("FSDP", n, params=-(-4 * n_all // n) + gathered,
                                  grads=-(-4 * n_train // n) + cbytes * block_train, optimizer=-(-8 * n_train // n),
                                  activations=act))
    return out


def memory_table(estimates: Sequence[MemoryEstimate]) -> str:
    """A Markdown table (GiB per rank) of :func:`estimate_memory`'s result."""
    gib = 2.0 ** 30
    lines = ["| mode | ranks | params | grads | optimizer | activations | total |", "|---|---|---|---|---|---|---|"]
    for e in estimates:
        ranks = "any" if e.mode == "DDP" else str(e.ranks)
        lines.append(f"| {e.mode} | {ranks} | {e.params / gib:.2f} | {e.grads / gib:.2f} | {e.optimizer / gib:.2f} | "
                     f"{e.activations / gib:.2f} | {e.total / gib:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    from vitpose_fast.config import preset

    p = argparse.ArgumentParser(prog="python -m vitpose_fast.training.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model preset (vitpose_s|b|l|h|g)")
    p.add_argument("--res", type=int, nargs=2, default=(256, 192), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=64, help="images per rank")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--amp", choices=("bf16", "none"), default="bf16")
    p.add_argument("--checkpointing", action="store_true")
    args = p.parse_args(argv)
    cfg = preset(args.model, res=tuple(args.res))
    print(memory_table(estimate_memory(cfg, args.batch, args.ranks, args.amp, args.checkpointing)))


if __name__ == "__main__":
    main()
