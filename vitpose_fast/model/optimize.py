"""``Model.optimize``: inference set-up in one call (precision, folded head, static-shape CUDA graphs).

What it does (see :meth:`vitpose_fast.Model.optimize`):

- eval mode and the weights at the chosen precision (:mod:`vitpose_fast.model.precision`: bf16 by default where
  the hardware computes it natively, fp32 elsewhere);
- the classic head folds its BatchNorms into the deconvolution weights (:class:`vitpose_fast.model.heads.ClassicHead`,
  eval only, recomputed every call so it can never go stale) and applies ReLU in place;
- the model keeps its backend: ``auto`` runs the fused block (residual + LayerNorm, bias + GELU kernels) on CUDA
  and the fused torch composition elsewhere;
- on CUDA with ``cuda_graphs``, forward replays CUDA graphs (:class:`GraphedForward`).

CUDA graphs read their inputs, weights and buffers from fixed addresses at replay, so in-place weight updates
(``load_state_dict``, an optimiser step) are seen by the next replay; moving or casting the model (``.to``,
``.half``) reallocates the weights, so :meth:`ViTPose._apply` drops the graphs and the next call re-captures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Optional

import torch

MAX_GRAPHS = 4  # distinct batch sizes captured per model (each graph keeps its own activation memory pool)
WARMUP_CALLS = 2  # eager calls on a side stream before a capture (Triton compiles, cuBLAS picks its kernels)


def cuda_graphs_available(device: torch.device) -> bool:
    return device.type == "cuda"


@dataclass
class _Captured:
    graph: object
    static_in: torch.Tensor
    static_out: torch.Tensor


class GraphedForward:
    """``forward(x, key) -> y`` replayed from static-shape CUDA graphs, one per (batch size, trailing shape, dtype,
    device, key), at most ``max_graphs`` of them (``key``: a hashable host value the forward depends on, e.g.
    the ViTPose+ dataset index).

    A batch larger than ``batch_size`` runs as ``batch_size`` chunks; a batch size seen for the first time is
    captured while fewer than ``max_graphs`` graphs exist, and otherwise runs zero-padded in the ``batch_size``
    graph (samples are independent in eval mode, so padding changes nothing). The output is a fresh tensor
    (a copy of the static output): a later call never changes what an earlier one returned.
    """

    def __init__(self, forward: Callable[[torch.Tensor, Hashable], torch.Tensor], batch_size: int,
                 max_graphs: int = MAX_GRAPHS):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.forward = forward
        self.batch_size = batch_size
        self.max_graphs = max(1, max_graphs)
        self.graphs: Dict[Hashable, _Captured] = {}
        self.captures = 0  # total captures (tests and logs)

    def reset(self) -> None:
        self.graphs.clear()

    def __call__(self, x: torch.Tensor, key: Hashable = None) -> torch.Tensor:
        with torch.inference_mode():
            n = x.shape[0]
            if n > self.batch_size:
                return torch.cat([self(chunk, key) for chunk in x.split(self.batch_size)])
            rest = (tuple(x.shape[1:]), x.dtype, x.device, key)
            cap = self.graphs.get((n,) + rest)
            if cap is None:
                # Keep one slot for the full batch, which every other size can fall back to.
                full = (self.batch_size,) + rest
                free = self.max_graphs - len(self.graphs) - (full not in self.graphs)
                size = n if n == self.batch_size or free > 0 else self.batch_size
                cap = self.graphs.get((size,) + rest)
                if cap is None:
                    cap = self.graphs[(size,) + rest] = self._capture(x, size, key)
            cap.static_in[:n].copy_(x)
            cap.graph.replay()
            return cap.static_out[:n].clone()

    def _capture(self, x: torch.Tensor, size: int, key: Hashable) -> _Captured:
        static_in = x.new_zeros((size,) + tuple(x.shape[1:]))
        static_in[: x.shape[0]].copy_(x)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                self.forward(static_in, key)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.forward(static_in, key)
        self.captures += 1
        return _Captured(graph, static_in, static_out)


@dataclass
class Optimized:
    """The state ``Model.optimize`` leaves on a model (read by ``Model.forward`` in eval mode)."""

    batch_size: int
    graphs: Optional[GraphedForward]

    def reset(self) -> None:
        if self.graphs is not None:
            self.graphs.reset()


def optimize_model(model, batch_size: int, cuda_graphs: bool) -> Optimized:
    """The set-up of :meth:`vitpose_fast.model.model.ViTPose.optimize` after its precision is applied: eval mode,
    folded classic heads, CUDA graphs; returns the model's Optimized state."""
    from vitpose_fast.model.heads import ClassicHead

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    for head in [model.keypoint_head, *model.associate_keypoint_heads]:
        if isinstance(head, ClassicHead):
            head.fold_batchnorm = True
    device = model.backbone.pos_embed.device
    graphs = None
    if cuda_graphs and cuda_graphs_available(device):
        graphs = GraphedForward(model._forward_eager, batch_size)
    return Optimized(batch_size, graphs)
