"""ONNX export of the plain-PyTorch path: ``model.export_onnx("vitpose.onnx")``, run with ONNX Runtime.

The graph is ``pixel_values`` float [B, 3, H, W] (normalised crops, as :meth:`Model.forward`) -> ``heatmaps``
[B, K, H/4, W/4], with a dynamic batch axis unless ``batch`` fixes it. The export traces the ``torch`` backend
(SDPA and the decoder reorder decompose into standard ONNX ops: MatMul, Softmax, Conv, Einsum, ...) whatever
the model's backend or ``VITPOSE_FAST_BACKEND`` say, so no Triton op reaches the graph; the model's backend is
restored afterwards. ViTPose+ (several experts, or one head per dataset) is exported for one dataset, fixed in
the graph: ``dataset_index`` picks the expert and the head as in ``forward``.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript); the TorchScript one
bakes the batch size into reshapes. Crop and decode stay outside the graph (the ``Model.predict`` steps).
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

from vitpose_fast.config import vitpose_plus_order

__all__ = ["export_onnx", "check_onnx", "OnnxExportError", "DEFAULT_OPSET"]

DEFAULT_OPSET = 18


class OnnxExportError(ValueError):
    """A model or an option that cannot be exported to ONNX."""


class _FixedDataset(nn.Module):
    """``forward(pixel_values)`` of a model with its dataset index fixed (the graph's only input)."""

    def __init__(self, model: nn.Module, dataset_index: Optional[int]):
        super().__init__()
        self.model, self.dataset_index = model, dataset_index

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values, self.dataset_index)


def _check(model: nn.Module, batch: Optional[int], dataset_index: Optional[int]) -> None:
    cfg = model.config
    multi = cfg.backbone.num_experts > 1 or len(cfg.extra_heads) > 0
    if dataset_index is not None and not isinstance(dataset_index, int):
        raise OnnxExportError(
            f"dataset_index must be an int (one dataset is fixed in the exported graph), got "
            f"{type(dataset_index).__name__}; per-sample dataset indices cannot be exported"
        )
    if multi and dataset_index is None:
        raise OnnxExportError(
            f"this ViTPose+ model has {cfg.num_datasets} datasets (experts / heads): pass dataset_index "
            f"({vitpose_plus_order()}); the exported graph serves that dataset only"
        )
    if dataset_index is not None and not 0 <= dataset_index < max(cfg.num_datasets, 1):
        raise OnnxExportError(f"dataset_index {dataset_index} out of range 0..{max(cfg.num_datasets, 1) - 1}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise OnnxExportError(f"batch must be None (dynamic) or a positive int, got {batch!r}")


def export_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    batch: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    dataset_index: Optional[int] = None,
    external_data: Optional[bool] = None,
) -> str:
    """Write ``model`` as an ONNX file; returns the path. See the module docstring.

    batch: None for a dynamic batch axis (named ``batch``), or a fixed batch size. opset: the ONNX opset
    (>= 18, what the exporter's op library targets). dataset_index: the ViTPose+ dataset fixed in the graph.
    external_data: weights in a ``<path>.data`` file beside the graph (ONNX protobufs stop at 2 GiB: Sapiens-1B
    and -2B, ViTPose-G in fp32 need it); None decides by size, as the exporter does.
    """
    _check(model, batch, dataset_index)
    if opset < 18:
        raise OnnxExportError(f"opset {opset} is too old: torch.onnx's exporter targets opset 18 and later")
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs the onnx and onnxscript packages (pip install onnx onnxscript; add onnxruntime to "
            f"run the file): {e}"
        ) from None

    param = next(model.parameters())
    h, w = model.config.backbone.img_size
    example = torch.randn(2 if batch is None else batch, 3, h, w, device=param.device, dtype=param.dtype)
    dynamic = {"pixel_values": {0: torch.export.Dim("batch", min=1, max=4096)}} if batch is None else None
    old_backend, was_training = model.backend, model.training
    model.set_backend("torch").eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                _FixedDataset(model, dataset_index).eval(), (example,), input_names=["pixel_values"],
                output_names=["heatmaps"], dynamic_shapes=dynamic, opset_version=opset, dynamo=True, verbose=False,
            )
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxExportError(
            f"cannot export this model ({model.config.name}, {type(e).__name__}: {first}); the export traces the "
            "plain-PyTorch path with torch.export: set TORCH_LOGS=+export for the full trace"
        ) from e
    finally:
        model.set_backend(old_backend).train(was_training)
    foreign = sorted({n.domain for n in program.model_proto.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise OnnxExportError(f"the exported graph uses non-standard ONNX op domains {foreign}; ONNX Runtime "
                              "could not run it")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    program.save(path, external_data=external_data)
    onnx.checker.check_model(path)  # by path: the checker reads external data from beside the file
    return path


def check_onnx(
    model: nn.Module, path: Union[str, os.PathLike], batches: Sequence[int] = (1, 3),
    dataset_index: Optional[int] = None, seed: int = 0,
) -> Dict[int, float]:
    """Run the ONNX file with ONNX Runtime (CPU) and the model on the same random fp32 inputs ->
    {batch: max |onnx - torch| / max |torch|} (relative to the heatmaps' scale: elementwise ratios are
    meaningless where heatmaps are ~0)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("checking an ONNX file needs onnxruntime (pip install onnxruntime)") from None
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    h, w = model.config.backbone.img_size
    gen = torch.Generator().manual_seed(seed)
    param = next(model.parameters())
    out = {}
    was_training = model.training
    model.eval()
    try:
        for b in batches:
            x = torch.randn(b, 3, h, w, generator=gen)
            with torch.no_grad():
                ref = model(x.to(param.device, param.dtype), dataset_index).float().cpu().numpy()
            got = session.run(["heatmaps"], {"pixel_values": x.to(param.dtype).numpy()})[0]
            if got.shape != ref.shape:
                raise OnnxExportError(f"ONNX output shape {got.shape} differs from the model's {ref.shape}")
            out[b] = float(abs(got - ref).max() / max(abs(ref).max(), 1e-30))
    finally:
        model.train(was_training)
    return out
