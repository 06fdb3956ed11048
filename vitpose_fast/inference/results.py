"""Writing predictions: COCO keypoint results of one image, a JSON list kept valid record by record, and the
per-frame JSON of a video."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np

from vitpose_fast.inference.evaluation import results_to_coco

__all__ = ["JsonListWriter", "coco_records", "person_json"]


class JsonListWriter:
    """Writes a JSON list record by record; the file is a complete JSON list after every :meth:`add`, so an
    interrupted run leaves every finished image's records readable with ``json.load``."""

    def __init__(self, path: Union[str, os.PathLike]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "wb")
        self._f.write(b"[]\n")
        self._f.flush()
        self._end = 1  # offset of the closing bracket
        self.count = 0

    def add(self, records: List[dict]) -> None:
        if not records:
            return
        text = ",\n".join(json.dumps(r) for r in records)
        self._f.seek(self._end)
        self._f.write((("\n" if self.count == 0 else ",\n") + text + "\n]\n").encode())
        self._f.flush()
        self._end = self._f.tell() - 2
        self.count += len(records)

    def close(self) -> None:
        self._f.close()


def coco_records(image_id: int, file_name: str, persons: List[dict]) -> List[dict]:
    """One image's persons (``ImageResult.persons``) as COCO keypoint results, with each person's ``bbox`` (xywh
    of its inclusive xyxy box) and the image's ``file_name``."""
    if not persons:
        return []
    kps = np.stack([p["keypoints"] for p in persons])
    entries = results_to_coco([image_id] * len(persons), kps, [p["score"] for p in persons])
    for entry, p in zip(entries, persons):
        x1, y1, x2, y2 = (float(v) for v in p["box"])
        entry["bbox"] = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
        entry["file_name"] = file_name
    return entries


def person_json(p: Dict[str, Any]) -> Dict[str, Any]:
    """One person of a video frame: ``{["track_id",] "box": [x1, y1, x2, y2], "score", "keypoints": [[x, y, s],
    ...]}``."""
    out = {"track_id": int(p["track_id"])} if "track_id" in p else {}
    out.update({"box": [round(float(v), 3) for v in p["box"]], "score": float(p["score"]),
                "keypoints": np.round(p["keypoints"].astype(np.float64), 3).tolist()})
    return out
