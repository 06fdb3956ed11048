"""Keypoint dataset metadata (names, flip pairs, skeleton, OKS sigmas, target encoding), as in the official mmpose
0.x dataset configs (``configs/_base_/datasets/{coco,aic,mpii,crowdpose,ap10k,coco_wholebody}.py``) and ViTPose's
copies of them (``configs/_base_/datasets/{aic,mpii,ap10k,coco_wholebody}_info.py``).

``encoding`` is the heatmap target each dataset's ViTPose(+) training pipeline uses, per ViTPose's
``configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/vitPose+_*_coco+aic+mpii+ap10k+apt36k+wholebody_256x192_udp``
and the single-dataset ``ViTPose_*_{coco,mpii,aic,crowdpose,ap10k,apt36k,wholebody}_256x192.py`` configs: COCO and
MPII use UDP (``TopDownAffine(use_udp=True)`` + ``TopDownGenerateTarget(encoding='UDP')``); AIC, AP-10K, APT-36K,
COCO-WholeBody and CrowdPose use the plain ``TopDownAffine`` with default (MSRA) targets. (The ViTPose+ config's
``test_cfg`` sets ``use_udp=True`` for its COCO validation; that is about decoding, not these training targets.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["DatasetInfo", "COCO", "AIC", "MPII", "CROWDPOSE", "AP10K", "APT36K", "COCO_WHOLEBODY",
           "DATASETS", "VITPOSE_PLUS_DATASETS", "get_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset's keypoint definition. Pairs and links are index pairs into ``keypoint_names``."""

    name: str
    keypoint_names: Tuple[str, ...]
    flip_pairs: Tuple[Tuple[int, int], ...]
    skeleton: Tuple[Tuple[int, int], ...]
    sigmas: Optional[Tuple[float, ...]]  # OKS per-keypoint sigmas; None if the dataset has none
    encoding: str  # 'udp' or 'msra'
    # Drawing only: links drawn besides ``skeleton`` (a face's contours, wrist to hand), and the keypoints' body
    # parts as (name, first index, end index) ranges, drawn with their own colours and joint sizes.
    draw_links: Tuple[Tuple[int, int], ...] = ()
    parts: Tuple[Tuple[str, int, int], ...] = ()

    def __post_init__(self):
        k = len(self.keypoint_names)
        if len(set(self.keypoint_names)) != k:
            raise ValueError(f"{self.name}: keypoint names are not unique")
        if self.encoding not in ("udp", "msra"):
            raise ValueError(f"{self.name}: encoding must be 'udp' or 'msra', got {self.encoding!r}")
        if self.sigmas is not None and len(self.sigmas) != k:
            raise ValueError(f"{self.name}: {len(self.sigmas)} sigmas for {k} keypoints")
        for a, b in self.flip_pairs + self.skeleton + self.draw_links:
            if not (0 <= a < k and 0 <= b < k and a != b):
                raise ValueError(f"{self.name}: bad index pair ({a}, {b}) for {k} keypoints")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)


def _info(name, names, swaps, links, sigmas, encoding) -> DatasetInfo:
    """Build from names, (name, name) swap pairs and (name, name) skeleton links, as the configs list them."""
    index = {n: i for i, n in enumerate(names)}
    pairs = tuple((index[a], index[b]) for a, b in swaps)
    skeleton = tuple((index[a], index[b]) for a, b in links)
    return DatasetInfo(name, tuple(names), pairs, skeleton, None if sigmas is None else tuple(sigmas), encoding)


def _lr(parts):
    return [f"{side}_{p}" for p in parts for side in ("left", "right")]


# COCO: mmpose configs/_base_/datasets/coco.py; identical to the first 17 keypoints, first 19 links and first 17
# sigmas of ViTPose configs/_base_/datasets/coco_wholebody_info.py, against which it was checked.
_COCO_NAMES = ["nose"] + _lr(["eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"])
_COCO_SWAPS = [(f"left_{p}", f"right_{p}") for p in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee",
                                                     "ankle")]
_COCO_LINKS = [
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"),
    ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
    ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
]
_COCO_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
                0.087, 0.087, 0.089, 0.089]

COCO = _info("coco", _COCO_NAMES, _COCO_SWAPS, _COCO_LINKS, _COCO_SIGMAS, "udp")

# mmpose configs/_base_/datasets/aic.py == ViTPose configs/_base_/datasets/aic_info.py.
AIC = _info(
    "aic",
    ["right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist", "right_hip",
     "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "head_top", "neck"],
    [("right_shoulder", "left_shoulder"), ("right_elbow", "left_elbow"), ("right_wrist", "left_wrist"),
     ("right_hip", "left_hip"), ("right_knee", "left_knee"), ("right_ankle", "left_ankle")],
    [("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"), ("right_shoulder", "neck"),
     ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
     ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "left_hip"),
     ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("head_top", "neck"),
     ("right_shoulder", "right_hip"), ("left_shoulder", "left_hip")],
    [0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642, 0.03686941,
     0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173],
    "msra",
)

# mmpose configs/_base_/datasets/mpii.py == ViTPose configs/_base_/datasets/mpii_info.py.
MPII = _info(
    "mpii",
    ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
     "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
     "left_wrist"],
    [("right_ankle", "left_ankle"), ("right_knee", "left_knee"), ("right_hip", "left_hip"),
     ("right_wrist", "left_wrist"), ("right_elbow", "left_elbow"), ("right_shoulder", "left_shoulder")],
    [("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"), ("pelvis", "left_hip"),
     ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("pelvis", "thorax"), ("thorax", "upper_neck"),
     ("upper_neck", "head_top"), ("upper_neck", "right_shoulder"), ("right_shoulder", "right_elbow"),
     ("right_elbow", "right_wrist"), ("upper_neck", "left_shoulder"), ("left_shoulder", "left_elbow"),
     ("left_elbow", "left_wrist")],
    # MPII is scored with PCKh; these config sigmas ("Adapted from COCO dataset") only serve OKS-NMS.
    [0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072, 0.179, 0.179, 0.072,
     0.062],
    "udp",
)

# mmpose configs/_base_/datasets/crowdpose.py.
CROWDPOSE = _info(
    "crowdpose",
    _lr(["shoulder", "elbow", "wrist", "hip", "knee", "ankle"]) + ["top_head", "neck"],
    [(f"left_{p}", f"right_{p}") for p in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")],
    _COCO_LINKS[:12] + [("top_head", "neck"), ("right_shoulder", "neck"), ("left_shoulder", "neck")],
    [0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079],
    # Not a ViTPose+ dataset; ViTPose's crowdpose/ViTPose_*_crowdpose_256x192.py trains with plain TopDownAffine
    # and default MSRA targets (test_cfg shift_heatmap=True, no use_udp).
    "msra",
)

# ViTPose configs/_base_/datasets/ap10k_info.py (what the ViTPose+ config uses for both AP-10K and APT-36K). The
# sigmas follow the keypoint order here (eyes, nose, neck, tail, shoulder/elbow/paw per limb); an older revision of
# mmpose's configs/_base_/datasets/ap10k.py listed them in COCO's paired order instead, later mmpose uses these.
_AP10K_NAMES = ["L_Eye", "R_Eye", "Nose", "Neck", "Root of tail", "L_Shoulder", "L_Elbow", "L_F_Paw",
                "R_Shoulder", "R_Elbow", "R_F_Paw", "L_Hip", "L_Knee", "L_B_Paw", "R_Hip", "R_Knee", "R_B_Paw"]
_AP10K_SWAPS = [("L_Eye", "R_Eye"), ("L_Shoulder", "R_Shoulder"), ("L_Elbow", "R_Elbow"), ("L_F_Paw", "R_F_Paw"),
                ("L_Hip", "R_Hip"), ("L_Knee", "R_Knee"), ("L_B_Paw", "R_B_Paw")]
_AP10K_LINKS = [("L_Eye", "R_Eye"), ("L_Eye", "Nose"), ("R_Eye", "Nose"), ("Nose", "Neck"),
                ("Neck", "Root of tail"), ("Neck", "L_Shoulder"), ("L_Shoulder", "L_Elbow"),
                ("L_Elbow", "L_F_Paw"), ("Neck", "R_Shoulder"), ("R_Shoulder", "R_Elbow"), ("R_Elbow", "R_F_Paw"),
                ("Root of tail", "L_Hip"), ("L_Hip", "L_Knee"), ("L_Knee", "L_B_Paw"), ("Root of tail", "R_Hip"),
                ("R_Hip", "R_Knee"), ("R_Knee", "R_B_Paw")]
_AP10K_SIGMAS = [0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087,
                 0.089, 0.107, 0.087, 0.089]
AP10K = _info("ap10k", _AP10K_NAMES, _AP10K_SWAPS, _AP10K_LINKS, _AP10K_SIGMAS, "msra")
# APT-36K uses AP-10K's 17-keypoint definition: ViTPose's apt36k/ViTPose_*_apt36k_256x192.py trains it as an
# AnimalAP10KDataset with ap10k.py, and the ViTPose+ config with ap10k_info and the AP-10K pipeline.
APT36K = _info("apt36k", _AP10K_NAMES, _AP10K_SWAPS, _AP10K_LINKS, _AP10K_SIGMAS, "msra")


def _wholebody() -> DatasetInfo:
    """COCO-WholeBody: 17 body + 6 foot + 68 face (iBUG-68 order) + 21 left hand + 21 right hand.

    Per ViTPose configs/_base_/datasets/coco_wholebody_info.py (mmpose's coco_wholebody.py): 133 names, 61 swap
    pairs, 65 links (COCO's 19, ankle-to-foot, then root-to-fingertip chains per hand), sigmas from COCO-WholeBody's
    evaluation/myeval_wholebody.py.
    """
    feet = ["big_toe", "small_toe", "heel"]
    foot_names = [f"left_{p}" for p in feet] + [f"right_{p}" for p in feet]
    fingers = [f"{f}{j}" for f in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
               for j in range(1, 5)]
    hand = ["hand_root"] + fingers
    names = (_COCO_NAMES + foot_names + [f"face-{i}" for i in range(68)] + [f"left_{p}" for p in hand]
             + [f"right_{p}" for p in hand])
    # Mirror pairs of the 68 face landmarks: jaw, eyebrows, nose base, eyes, outer and inner lips.
    face_pairs = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
                  + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
                  + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
    swaps = (_COCO_SWAPS + [(f"left_{p}", f"right_{p}") for p in feet]
             + [(f"face-{a}", f"face-{b}") for a, b in face_pairs] + [(f"left_{p}", f"right_{p}") for p in hand])
    links = _COCO_LINKS + [(f"{s}_ankle", f"{s}_{p}") for s in ("left", "right") for p in feet]
    for side in ("left", "right"):
        for f in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger"):
            chain = [f"{side}_hand_root"] + [f"{side}_{f}{j}" for j in range(1, 5)]
            links += list(zip(chain[:-1], chain[1:]))
    sigmas = _COCO_SIGMAS + [
        0.068, 0.066, 0.066, 0.092, 0.094, 0.094, 0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031, 0.025, 0.020,
        0.023, 0.029, 0.032, 0.037, 0.038, 0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011,
        0.011, 0.013, 0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017, 0.011, 0.009,
        0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.010, 0.034, 0.008, 0.008, 0.009, 0.008, 0.008, 0.007,
        0.010, 0.008, 0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.01, 0.008, 0.029,
        0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021, 0.021,
        0.032, 0.02, 0.019, 0.022, 0.031, 0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018,
        0.024, 0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031,
    ]
    info = _info("coco_wholebody", names, swaps, links, sigmas, "msra")
    # iBUG-68 contours: jaw, both eyebrows, nose bridge and base, both eyes and both lips (closed loops).
    face = [(a, a + 1) for lo, hi in ((0, 16), (17, 21), (22, 26), (27, 30), (31, 35)) for a in range(lo, hi)]
    for lo, hi in ((36, 41), (42, 47), (48, 59), (60, 67)):
        face += [(a, a + 1) for a in range(lo, hi)] + [(hi, lo)]
    index = {n: i for i, n in enumerate(names)}
    draw = tuple((23 + a, 23 + b) for a, b in face) + tuple(
        (index[f"{s}_wrist"], index[f"{s}_hand_root"]) for s in ("left", "right"))
    parts = (("body", 0, 17), ("feet", 17, 23), ("face", 23, 91), ("left_hand", 91, 112), ("right_hand", 112, 133))
    return DatasetInfo(info.name, info.keypoint_names, info.flip_pairs, info.skeleton, info.sigmas, info.encoding,
                       draw, parts)


COCO_WHOLEBODY = _wholebody()

DATASETS: Dict[str, DatasetInfo] = {
    d.name: d for d in (COCO, AIC, MPII, CROWDPOSE, AP10K, APT36K, COCO_WHOLEBODY)
}
# ViTPose+ dataset index order: the expert / head index of each dataset in the multi-task checkpoints.
VITPOSE_PLUS_DATASETS: Tuple[DatasetInfo, ...] = (COCO, AIC, MPII, AP10K, APT36K, COCO_WHOLEBODY)


def get_dataset(name: str) -> DatasetInfo:
    """Look a dataset up by name (case-insensitive; 'wholebody' is accepted for 'coco_wholebody')."""
    key = name.lower().replace("-", "").replace(" ", "")
    key = {"wholebody": "coco_wholebody", "cocowholebody": "coco_wholebody"}.get(key, key)
    if key not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[key]
