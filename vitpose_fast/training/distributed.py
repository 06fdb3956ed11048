"""Training past one device's memory: FSDP2 wrapping, sharded training checkpoints and consolidated weights.

- :func:`shard_model`: ``torch.distributed.fsdp.fully_shard`` on every backbone block, then on the root (patch
  embedding, position embedding, last norm and heads form the root unit); with ``param_dtype=bf16`` a
  ``MixedPrecisionPolicy`` gathers bf16 parameters for compute and reduces gradients in fp32. Parameters stay
  per-parameter DTensors under their official names, so the layer-decay groups of
  :func:`vitpose_fast.training.core.param_groups` and frozen parameters (``requires_grad=False``, no gradient
  reduced) work unchanged. The same code runs on CPU (gloo) and CUDA (NCCL).
- :func:`save_sharded` / :func:`load_sharded`: ``torch.distributed.checkpoint`` (DCP) directories. Each rank
  writes its shards into ``sharded/step_NNNNNNNN.tmp``; once every rank has written, rank 0 adds
  ``train_state.pt`` (schedule, position, RNGs, run metadata incl. the world size and global batch), renames the
  folder to ``sharded/step_NNNNNNNN`` and atomically repoints the ``last.dcp`` symlink at it. A crash at any
  point leaves ``last.dcp`` at a complete checkpoint. DCP reshards on load: a checkpoint resumes on any number of
  processes, with or without FSDP.
- :func:`consolidate`: one process, no process group: a sharded checkpoint -> a ``Model.save`` file.
  ``python -m vitpose_fast.training.distributed consolidate DIR OUT.pth``. ``Model.from_pretrained(DIR)`` loads
  the folder directly (the reader, :func:`vitpose_fast.model.checkpoint.read_sharded_checkpoint`, is shared).

The per-rank memory estimate is :mod:`vitpose_fast.training.memory`.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

# The reading side lives in the model layer (Model.from_pretrained loads these folders too).
from vitpose_fast.model.checkpoint import (
    SHARDED_FORMAT,
    TRAIN_STATE,
    is_sharded_checkpoint,
    read_sharded_checkpoint,
    read_train_state,
)

__all__ = [
    "ensure_process_group",
    "shard_model",
    "is_sharded",
    "full_state_dict",
    "local_copy",
    "is_sharded_checkpoint",
    "save_sharded",
    "load_sharded",
    "read_train_state",
    "consolidate",
]


# ------------------------------------------------------------------------------------------------ wrapping
def ensure_process_group(device: torch.device) -> bool:
    """A process group for FSDP even in a single process (fully_shard needs a device mesh). Returns whether
    one was created here (the caller destroys it)."""
    if dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if "MASTER_ADDR" in os.environ:  # torchrun with one process
        dist.init_process_group(backend)
    else:  # a plain `python train.py` or an in-process call
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return True


def shard_model(model: nn.Module, device: torch.device, param_dtype: Optional[torch.dtype] = None) -> nn.Module:
    """FSDP2 in place: one unit per backbone block (gathered just before the block runs, freed after it; again
    in backward, also under activation checkpointing), then the root. ``param_dtype`` (bf16): the blocks'
    parameters are gathered in that dtype and their gradients reduced in fp32; the root (embeddings, last norm,
    heads: BatchNorm needs fp32 parameters next to its fp32 statistics) stays fp32 under the caller's autocast,
    as without FSDP. The sharded master weights are fp32. As DDP does, rank 0's weights and buffers are
    broadcast first (ranks may have initialised differently) and its buffers (BatchNorm running statistics)
    again before every training forward, so all ranks hold, save and evaluate the same ones."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if dist.get_world_size() > 1:
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                dist.broadcast(t.data, 0)

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    inner = model.module if hasattr(model, "module") else model
    for block in inner.backbone.blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp)
        # Ahead of FSDP's own post-forward hook, which checks the outputs for views.
        block.register_forward_hook(_fresh_outputs, prepend=True)
    fully_shard(model, mesh=mesh)
    buffers = list(model.buffers())
    if dist.get_world_size() > 1 and buffers:
        def broadcast_buffers(module: nn.Module, args: Any) -> None:
            if module.training:
                for b in buffers:
                    dist.broadcast(b, 0)

        model.register_forward_pre_hook(broadcast_buffers)
    return model


def _fresh_outputs(module: nn.Module, args: Any, output: Any) -> Any:
    """A block's outputs that are views (the torch backend's Linear of a 3-D input returns one) as fresh tensors.
    FSDP2 hooks its pre-backward all-gather on each output; an in-place op on a view would drop that hook, so it
    warns about every view it is handed. A copy changes no value."""
    if isinstance(output, torch.Tensor):
        return output.clone() if output._base is not None else output
    if isinstance(output, (tuple, list)):  # (x, pending branch) with pending None or (branch, bias)
        return type(output)(_fresh_outputs(module, args, o) for o in output)
    return output


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: nn.Module, all_ranks: bool = False) -> Dict[str, torch.Tensor]:
    """The full (unsharded) weights under their official names: on rank 0 only, on the CPU (a collective: every
    rank calls it), or on every rank's device with ``all_ranks``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks))


def local_copy(model: nn.Module, backend: str = "auto") -> nn.Module:
    """A plain :class:`~vitpose_fast.Model` with the full weights of a sharded one, on every rank, in
    eval mode: evaluation then runs each rank's share of the images independently (a sharded forward would need
    every rank in every call, and ranks score different numbers of boxes)."""
    from vitpose_fast.inference.model import Model

    full = full_state_dict(model, all_ranks=True)
    device = next(iter(full.values())).device
    with torch.device("meta"):
        copy = Model(model.config, backend=backend)
    copy.load_state_dict(full, assign=True)
    return copy.to(device).eval()


# ------------------------------------------------------------------------------------------------ checkpoints
def _app_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def save_sharded(link: os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                 train_state: Dict[str, Any]) -> Path:
    """Write a sharded training checkpoint (every rank calls this) and point ``link`` (e.g. ``out/last.dcp``) at
    it once it is complete; returns the checkpoint folder. ``train_state`` (rank 0's is kept): everything but
    the weights and optimizer states, as :func:`vitpose_fast.training.core.training_state` with ``weights=False``.
    Older checkpoints under ``out/sharded`` are removed after the switch."""
    import torch.distributed.checkpoint as dcp

    link = Path(link)
    root = link.parent / "sharded"
    name = f"step_{int(train_state['step']):08d}"
    final = root / name
    if final.exists():  # the same step written again (a resumed run stopped at once): a fresh name
        name += f".{len(list(root.glob(name + '*')))}"
        final = root / name
    tmp = root / (name + ".tmp")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a torn write of an earlier, crashed run
    _barrier()
    dcp.save(_app_state(model, optimizer), checkpoint_id=str(tmp))
    if rank == 0:
        # dcp.save returns on rank 0 after every rank's shards and the .metadata are written.
        torch.save({**train_state, "format": SHARDED_FORMAT}, tmp / TRAIN_STATE)
        _commit(tmp, final)
        _repoint(link, final)
        for old in root.iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _commit(tmp: Path, final: Path) -> None:
    """The complete folder takes its final name (tests inject a crash here)."""
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _repoint(link: Path, target: Path) -> None:
    """Atomically make ``link`` a relative symlink to ``target`` (a new symlink renamed over the old one)."""
    tmp_link = link.with_name(link.name + ".new")
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(os.path.relpath(target, link.parent), tmp_link)
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{str(link)!r} exists and is not a checkpoint symlink; move it away")
    os.replace(tmp_link, link)
    _fsync_dir(link.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def load_sharded(path: os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    """Load weights and optimizer states of a :func:`save_sharded` checkpoint into ``model`` (FSDP, DDP or plain,
    any number of processes: DCP reshards) and ``optimizer``; returns the train state (:func:`read_train_state`)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = read_train_state(path)
    app = _app_state(model, optimizer)
    dcp.load(app, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=app["model"], optim_state_dict=app["optim"])
    return state


def consolidate(path: os.PathLike, out: os.PathLike) -> Path:
    """A sharded training checkpoint -> the project's own weights file (:meth:`Model.save` format), on one process
    without a process group. Returns ``out``."""
    from vitpose_fast.inference.model import Model

    sd, config = read_sharded_checkpoint(path)
    model = Model(config)
    model.load_state_dict(sd)
    model.save(out)
    return Path(out)


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m vitpose_fast.training.distributed", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("consolidate", help="sharded training checkpoint -> Model.save weights file")
    c.add_argument("checkpoint", type=Path, help="a sharded checkpoint folder (e.g. runs/x/last.dcp)")
    c.add_argument("out", type=Path, help="output .pth (Model.from_pretrained loads it)")
    args = p.parse_args(argv)
    print(consolidate(args.checkpoint, args.out))


if __name__ == "__main__":
    main()
