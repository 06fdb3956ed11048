"""Inference past one process: a results folder that several processes (torchrun ranks, Ray workers) fill,
resumable, and merged into one COCO results file.

A results folder ``DIR`` holds ``DIR/parts/`` and, once merged, ``DIR/results.json``:

- ``parts/shard-RRRRR-of-WWWWW.jsonl``: torchrun rank R's share, one JSON line per finished image;
- ``parts/*.parquet`` / ``parts/*.json``: the files Ray's own writers wrote (``vitpose_fast.ray``).

Every part has the same row schema, the columns of :class:`vitpose_fast.ray.PosePredictor`'s output: ``path``,
``keypoints`` ([P, K, 3] x, y, score in image pixels), ``boxes`` ([P, 4] xyxy), ``scores`` ([P], the box
scores) and, in Ray's parts, ``error`` (why an unreadable image has no persons; empty otherwise).

A row is written only once its image is finished, so a process killed part-way loses only the images it had not
written (at most a torn last line, dropped on reading). A rerun skips every path that has a row in any part
(:func:`done_paths`), whatever the number of processes of either run, and :func:`merge` keeps one row per path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

__all__ = ["PARTS", "RESULTS", "torchrun_rank", "shard_indices", "ShardWriter", "TorchrunShard", "read_rows",
           "done_paths", "persons_to_row", "row_to_persons", "coco_records", "merge"]

PARTS = "parts"
RESULTS = "results.json"


def torchrun_rank() -> Optional[Tuple[int, int]]:
    """(rank, world size) when started by torchrun (or any launcher that sets ``RANK``/``WORLD_SIZE``), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def shard_indices(paths: Sequence[str], rank: int, world_size: int) -> List[int]:
    """Positions in ``paths`` of rank ``rank``'s share: every ``world_size``-th path in sorted order, from the
    ``rank``-th. The same on every rank and every run; interleaved, so that a folder whose image sizes grow with
    their names still splits evenly."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    order = sorted(range(len(paths)), key=lambda i: paths[i])
    return order[rank::world_size]


def persons_to_row(path: str, persons: List[Dict[str, Any]], num_keypoints: int) -> Dict[str, Any]:
    """One image's persons (as :func:`~vitpose_fast.inference.pipeline.predict_iter` gives them) -> a row."""
    if persons:
        kps = np.stack([p["keypoints"] for p in persons]).astype(np.float32)
        boxes = np.stack([p["box"] for p in persons]).astype(np.float32)
    else:
        kps, boxes = np.zeros((0, num_keypoints, 3), np.float32), np.zeros((0, 4), np.float32)
    scores = np.array([p["score"] for p in persons], dtype=np.float64)
    return {"path": path, "keypoints": kps, "boxes": boxes, "scores": scores}


def row_to_persons(row: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Inverse of :func:`persons_to_row` (also for rows read back from JSON, where an empty array lost its shape)."""
    scores = np.asarray(row["scores"], dtype=np.float64).reshape(-1)
    if not len(scores):
        return []
    kps = np.asarray(row["keypoints"], dtype=np.float32).reshape(len(scores), -1, 3)
    boxes = np.asarray(row["boxes"], dtype=np.float32).reshape(len(scores), 4)
    return [{"keypoints": kps[j], "box": boxes[j], "score": float(scores[j])} for j in range(len(scores))]


def coco_records(image_id: int, file_name: str, persons: List[Dict[str, Any]]) -> List[dict]:
    """COCO keypoint results of one image's persons, plus each person's ``bbox`` (xywh) and the ``file_name``."""
    from vitpose_fast.inference.evaluation import results_to_coco

    if not persons:
        return []
    kps = np.stack([p["keypoints"] for p in persons])
    entries = results_to_coco([image_id] * len(persons), kps, [p["score"] for p in persons])
    for entry, p in zip(entries, persons):
        x1, y1, x2, y2 = (float(v) for v in p["box"])
        entry["bbox"] = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
        entry["file_name"] = file_name
    return entries


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a process killed while writing it)."""
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)


class ShardWriter:
    """Appends one JSON line per finished image to ``DIR/parts/shard-RRRRR-of-WWWWW.jsonl`` (flushed per image,
    so a killed process keeps every image it finished)."""

    def __init__(self, folder: os.PathLike, rank: int, world_size: int, num_keypoints: int):
        parts = Path(folder) / PARTS
        parts.mkdir(parents=True, exist_ok=True)
        self.path = parts / f"shard-{rank:05d}-of-{world_size:05d}.jsonl"
        if self.path.exists():
            _drop_torn_tail(self.path)
        self._f = open(self.path, "ab")
        self._k = num_keypoints
        self.images = self.persons = 0

    def add(self, path: str, persons: List[Dict[str, Any]]) -> None:
        row = persons_to_row(path, persons, self._k)
        line = json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in row.items()})
        self._f.write(line.encode() + b"\n")
        self._f.flush()
        self.images += 1
        self.persons += len(persons)

    def close(self) -> None:
        self._f.close()


def _json_rows(path: Path, warn: Callable[[str], None]) -> Iterator[Dict[str, Any]]:
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                if line.endswith(b"\n"):  # else a torn last line of a killed writer: its image is not done
                    warn(f"{path}: line {n} is not valid JSON; skipped")


def _parquet_rows(path: Path, warn: Callable[[str], None]) -> Iterator[Dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
        import ray.data  # noqa: F401  registers Ray's tensor column types, so they read back as numpy arrays
    except ImportError as e:
        raise ImportError(f"reading {path} needs Ray Data: pip install 'vitpose-fast[ray]' ({e})") from e
    try:
        table = pq.read_table(path)
    except Exception as exc:  # a file Ray had not finished writing when its job was killed
        warn(f"{path}: unreadable Parquet file ({exc}); its images count as not done")
        return
    yield from table.to_pylist()


def read_rows(folder: os.PathLike, warn: Callable[[str], None] = lambda m: None) -> Iterator[Dict[str, Any]]:
    """Every row of every part in ``folder/parts`` (file by file, in name order)."""
    parts = Path(folder) / PARTS
    if not parts.is_dir():
        return
    for f in sorted(parts.iterdir()):
        if f.suffix in (".jsonl", ".json"):
            yield from _json_rows(f, warn)
        elif f.suffix == ".parquet":
            yield from _parquet_rows(f, warn)


def done_paths(folder: os.PathLike, warn: Callable[[str], None] = lambda m: None) -> Set[str]:
    """Paths that already have results in ``folder`` (rows with an error do not count: they are retried)."""
    return {r["path"] for r in read_rows(folder, warn) if not r.get("error")}


def merge(folder: os.PathLike, image_ids: Callable[[List[str]], Sequence[int]],
          warn: Callable[[str], None] = lambda m: None) -> Dict[str, Any]:
    """Write ``folder/results.json``: the COCO keypoint results (with ``bbox`` and ``file_name``, as ``vitpose-fast
    predict`` writes) of every part, one row per path, in path order. ``image_ids`` maps the sorted paths to
    their image ids. Replaces the file atomically. Returns ``{"images", "persons", "failed": {path: error}}``;
    ``failed`` lists the images whose only rows are errors."""
    rows: Dict[str, Dict[str, Any]] = {}
    failed: Dict[str, str] = {}
    for r in read_rows(folder, warn):
        if r.get("error"):
            failed.setdefault(r["path"], r["error"])
        else:
            rows.setdefault(r["path"], r)
    for p in rows:
        failed.pop(p, None)
    paths = sorted(rows)
    ids = list(image_ids(paths)) if paths else []
    out = Path(folder) / RESULTS
    tmp = out.with_name(out.name + ".tmp")
    persons = 0
    with open(tmp, "w") as f:
        f.write("[")
        for i, p in enumerate(paths):
            records = coco_records(ids[i], Path(p).name, row_to_persons(rows[p]))
            for rec in records:
                f.write(("\n" if persons == 0 else ",\n") + json.dumps(rec))
                persons += 1
        f.write("\n]\n")
    os.replace(tmp, out)
    return {"images": len(paths), "persons": persons, "failed": failed}


class TorchrunShard:
    """One torchrun rank's part of a sharded run into a results folder.

    ``TorchrunShard(out_dir, paths, num_keypoints)`` joins the ranks (a gloo group: only for the final barrier,
    so it works beside any device), drops duplicate paths and those already done, and keeps this rank's share
    in :attr:`todo` (positions in ``paths``); :attr:`writer` appends its rows. :meth:`finish` waits for every
    rank, sums the failures, and rank 0 merges the folder (``image_ids`` as in :func:`merge`).
    """

    def __init__(self, out_dir: os.PathLike, paths: Sequence[str], num_keypoints: int, warn=lambda m: None):
        import datetime

        import torch.distributed as dist

        self.rank, self.world_size = torchrun_rank() or (0, 1)
        self.out_dir = Path(out_dir)
        self._group = False
        if self.world_size > 1 and not dist.is_initialized():
            # A rank that finished its share waits at the barrier for the slowest: as long as a share takes.
            dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
            self._group = True
        self.paths = [os.path.abspath(p) for p in paths]
        first: Dict[str, int] = {}
        for i, p in enumerate(self.paths):
            first.setdefault(p, i)
        unique = sorted(first)
        mine = [first[unique[j]] for j in shard_indices(unique, self.rank, self.world_size)]
        done = done_paths(self.out_dir, warn)
        self.skipped = sum(self.paths[i] in done for i in mine)
        self.todo = [i for i in mine if self.paths[i] not in done]
        self.writer = ShardWriter(self.out_dir, self.rank, self.world_size, num_keypoints)

    def finish(self, failed: int, image_ids: Callable[[List[str]], Sequence[int]], warn=lambda m: None
               ) -> Tuple[int, Optional[Dict[str, Any]]]:
        """(failed images summed over ranks, :func:`merge`'s summary on rank 0 / None elsewhere)."""
        import torch
        import torch.distributed as dist

        self.writer.close()
        summary = None
        if self.world_size > 1:
            total = torch.tensor([failed])
            dist.all_reduce(total)  # also the barrier: every shard is complete after it
            failed = int(total)
        if self.rank == 0:
            parts = self.writer.path.parent
            missing = [r for r in range(self.world_size)
                       if not (parts / f"shard-{r:05d}-of-{self.world_size:05d}.jsonl").exists()]
            if missing:
                warn(f"the shards of ranks {missing} are not in {parts}: with several machines, --out must be on a "
                     "filesystem they all see (rerun there; finished images are kept)")
            summary = merge(self.out_dir, image_ids, warn)
        if self.world_size > 1:
            dist.barrier()  # no rank exits (which torchrun may answer by stopping the others) before the merge
            if self._group:
                dist.destroy_process_group()
        return failed, summary
