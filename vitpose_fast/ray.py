"""Batch inference with Ray Data: :class:`PosePredictor` for ``Dataset.map_batches``.

```python
import ray
from vitpose_fast.ray import PosePredictor

ds = ray.data.read_images(folder, include_paths=True, mode="RGB")
out = ds.map_batches(PosePredictor, fn_constructor_kwargs=dict(weights="vitpose_b.pth", batch_size=64),
                     batch_size=16, concurrency=4, num_gpus=1)   # num_gpus only on GPU nodes
out.write_parquet("poses/")
```

Input columns: ``image`` (HxWx3 uint8 per row), optional ``path``, optional ``boxes`` ([N, 4] xyxy, or [N, 5] with
scores, per row; else the constructor's ``detector``, else one box covering the image) and optional ``error``
(set by :func:`decode_images`: that row's image could not be read). Output columns: ``path`` (passed through),
``keypoints`` ([P, K, 3]: x, y, score in image pixels), ``boxes`` ([P, 4] xyxy), ``scores`` ([P], the box
scores) and ``error`` (empty, or why the row has no persons). The model is loaded once per actor and runs through
:meth:`vitpose_fast.Model.predict_iter`, like ``predict``.

``ray.data.read_images`` stops the whole job at an unreadable file and ignores EXIF orientation;
``read_binary_files(..., include_paths=True).map_batches(decode_images)`` decodes as ``predict`` does
(:func:`~vitpose_fast.inference.pipeline.load_image`) and marks bad files in ``error`` instead, which is what
:func:`predict_folder` (``vitpose-fast predict FOLDER --engine ray``) runs.

Ray is optional: ``pip install "vitpose-fast[ray]"``; it is imported only by the functions that need it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["PosePredictor", "decode_images", "predict_folder"]


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the Ray engine needs Ray Data: pip install 'vitpose-fast[ray]' ({e})") from e
    return ray


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` as they are (``np.array`` would stack arrays of equal shapes)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def decode_images(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``map_batches`` function: the ``bytes`` column of ``ray.data.read_binary_files`` -> ``image`` (HxWx3
    uint8 RGB, upright as EXIF says, as :func:`~vitpose_fast.inference.pipeline.load_image`) and ``error``
    (empty, or why the file could not be decoded; its ``image`` is then a 1x1 placeholder). Other columns pass
    through."""
    from vitpose_fast.inference.pipeline import decode_image

    data = batch["bytes"]
    paths = batch.get("path")
    images, errors = [], []
    for i in range(len(data)):
        try:
            images.append(decode_image(data[i], str(paths[i]) if paths is not None else f"row {i}"))
            errors.append("")
        except ValueError as exc:
            images.append(np.zeros((1, 1, 3), np.uint8))
            errors.append(str(exc))
    out = {k: v for k, v in batch.items() if k != "bytes"}
    out["image"] = _objects(images)
    out["error"] = np.array(errors, dtype=object)
    return out


def _load_model(weights: Any, preset: Optional[str], device: str, precision: str):
    from vitpose_fast.inference.model import Model

    return Model.load(weights, preset, device=device, precision=precision)


class PosePredictor:
    """Callable class for ``Dataset.map_batches``: keypoints for a batch of rows (see the module's docstring).

    Args:
        weights: anything :meth:`vitpose_fast.Model.from_pretrained` loads; with ``model=PRESET``, a checkpoint
            loaded strictly into that preset.
        device: torch device (default: ``cuda`` when the actor sees a GPU, else ``cpu``).
        batch_size: crops per forward (flipped copies included), as ``predict``'s; independent of Ray's
            ``batch_size`` (rows per call).
        precision: ``fp32``, ``bf16`` or ``fp8`` (:mod:`vitpose_fast.model.precision`).
        box_format: of the ``boxes`` column, ``xyxy`` (inclusive corners) or ``xywh``.
        detector: a :func:`~vitpose_fast.inference.detectors.load_detector` spec (``module:callable``,
            ``yolo:PATH.pt``) or a callable, run on rows without ``boxes``.
        The others are :func:`~vitpose_fast.inference.pipeline.predict`'s.
    """

    def __init__(self, weights: Any, model: Optional[str] = None, device: Optional[str] = None,
                 batch_size: int = 64, precision: str = "fp32", flip_test: bool = True, decode: str = "udp",
                 dataset_index: Optional[int] = None, dataset: Any = None, box_format: str = "xyxy",
                 detector: Any = None, det_thr: float = 0.3, det_classes: Optional[Sequence[int]] = None):
        import torch

        from vitpose_fast.inference.pipeline import head_num_keypoints

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = _load_model(weights, model, device, precision)
        if isinstance(detector, str):
            from vitpose_fast.inference.detectors import load_detector

            detector = load_detector(detector, device=device)
        self.batch_size = batch_size
        self.num_keypoints = head_num_keypoints(self.model, dataset_index)
        self.options = dict(box_format=box_format, flip_test=flip_test, decode=decode, dataset_index=dataset_index,
                            dataset=dataset, detector=detector, det_thr=det_thr, det_classes=det_classes,
                            on_error="skip")

    def __call__(self, batch: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from vitpose_fast.inference.sharding import persons_to_row

        images = batch["image"]
        n = len(images)
        paths, boxes, errors = batch.get("path"), batch.get("boxes"), batch.get("error")
        error = ["" if errors is None else str(errors[i] or "") for i in range(n)]
        persons: List[list] = [[] for _ in range(n)]
        items = ((images[i], None if boxes is None else boxes[i], i) for i in range(n) if not error[i])
        for r in self.model.predict_iter(items, batch_size=self.batch_size, **self.options):
            if r.error is not None:
                error[r.meta] = f"{paths[r.meta]}: {r.error}" if paths is not None else str(r.error)
            else:
                persons[r.meta] = r.persons
        rows = [persons_to_row("", p, self.num_keypoints) for p in persons]
        out: Dict[str, np.ndarray] = {}
        if paths is not None:
            out["path"] = paths
        for col in ("keypoints", "boxes", "scores"):
            out[col] = _objects([row[col] for row in rows])
        out["error"] = np.array(error, dtype=object)
        return out


def predict_folder(paths: Sequence[str], out_dir: str, *, weights: str, workers: int = 1,
                   rows_per_batch: int = 16, gpus_per_worker: Optional[float] = None,
                   cpus_per_worker: Optional[float] = None, boxes: Optional[Mapping[str, np.ndarray]] = None,
                   output_format: str = "parquet", address: Optional[str] = None, **predictor_kwargs: Any) -> None:
    """Keypoints of every image file in ``paths`` written by Ray's own writer (``output_format`` ``parquet`` or
    ``json``) into ``out_dir/parts`` (see :mod:`vitpose_fast.inference.sharding`): read as bytes, decoded by
    :func:`decode_images` tasks, :class:`PosePredictor` on ``workers`` actors. Paths that already have results in
    ``out_dir`` are skipped, so a rerun finishes what a killed one left. ``boxes``: per path, an [N, 4|5] array in
    ``predictor_kwargs["box_format"]``. Connects to the cluster at ``address`` (``auto``: the running one)
    unless Ray is initialized already.

    Each actor holds ``gpus_per_worker`` GPUs (default: 1 when the cluster has GPUs, else 0) and
    ``cpus_per_worker`` CPUs (default: 1 with GPUs; on CPUs only, the cluster's CPUs less one, shared by the
    actors, so that reading and decoding always find a CPU: actors holding every CPU would wait forever)."""
    from vitpose_fast.inference.sharding import PARTS, done_paths

    if output_format not in ("parquet", "json"):
        raise ValueError(f"output_format must be 'parquet' or 'json', got {output_format!r}")
    ray = _require_ray()
    todo = sorted(set(os.path.abspath(p) for p in paths) - done_paths(out_dir))
    if not todo:
        return
    if not ray.is_initialized():
        ray.init(address=address)
    resources = ray.cluster_resources()
    cpus = resources.get("CPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    if cpus_per_worker is None:
        cpus_per_worker = 1.0 if gpus_per_worker else min(1.0, max(cpus - 1, 0.5) / workers)
    if workers * cpus_per_worker > cpus - 0.5:
        raise ValueError(f"{workers} workers x {cpus_per_worker} CPUs leave the cluster's {cpus:g} CPUs none for "
                         "reading and decoding: fewer workers or fewer CPUs per worker")
    # A block per batch of rows: Ray's default (few, large blocks for few files) would leave all but one actor idle.
    ds = ray.data.read_binary_files(todo, include_paths=True, override_num_blocks=-(-len(todo) // rows_per_batch))
    # Decoding in tasks of their own, beside the actors: resources unlike the actors' keep Ray from fusing it into
    # them (where it would run between the model's batches instead of during them).
    ds = ds.map_batches(decode_images, batch_size=rows_per_batch, num_cpus=0.25)
    if boxes is not None:
        table = {os.path.abspath(p): b for p, b in boxes.items()}

        def add_boxes(batch):
            batch["boxes"] = _objects([np.asarray(table[p], dtype=np.float64) for p in batch["path"]])
            return batch

        ds = ds.map_batches(add_boxes, batch_size=rows_per_batch, num_cpus=0.25)
    ds = ds.map_batches(PosePredictor, fn_constructor_kwargs=dict(weights=weights, **predictor_kwargs),
                        batch_size=rows_per_batch, compute=ray.data.ActorPoolStrategy(size=workers),
                        num_gpus=gpus_per_worker, num_cpus=cpus_per_worker)
    parts = os.path.join(out_dir, PARTS)
    if output_format == "parquet":
        ds.write_parquet(parts)
    else:  # JSON lines; floats with full precision (pandas' default keeps 10 digits)
        ds.write_json(parts, double_precision=15)
