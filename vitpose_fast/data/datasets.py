"""Keypoint dataset metadata (names, flip pairs, skeleton, OKS sigmas, target encoding), as in the official mmpose
0.x dataset configs (``configs/_base_/datasets/{coco,aic,mpii,crowdpose,ap10k,coco_wholebody}.py``) and ViTPose's
copies of them (``configs/_base_/datasets/{aic,mpii,ap10k,coco_wholebody}_info.py``); Goliath-308 from Sapiens'
``pose/configs/_base_/datasets/goliath.py`` (whose COCO-WholeBody copy matches ours: names, pairs, links, sigmas).

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

from vitpose_fast.config import VITPOSE_PLUS_DATASET_NAMES

__all__ = ["DatasetInfo", "COCO", "AIC", "MPII", "CROWDPOSE", "AP10K", "APT36K", "COCO_WHOLEBODY", "GOLIATH",
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

# Goliath-308 (Sapiens' 308-keypoint set): facebookresearch/sapiens pose/configs/_base_/datasets/goliath.py after
# its own post-processing, which we ran once to extract these facts: 344 keypoints minus the 36 teeth, swap
# pairs from each keypoint's ``swap``, the 65 skeleton links of ``skeleton_info`` (COCO-WholeBody's body and
# feet links, then wrist -> finger joint chains per hand; the face has none), sigmas 0.010 ("mostly face
# keypoints") except COCO-WholeBody's sigma for every keypoint it shares and the config's own values for the
# third finger joints, neck, olecranon, cubital fossa and acromion. Sapiens trains every keypoint set with UDP
# heatmaps (codec ``UDPHeatmap``).
_GOLIATH_NAMES = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder', 'left_elbow',
    'right_elbow', 'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle', 'left_big_toe',
    'left_small_toe', 'left_heel', 'right_big_toe', 'right_small_toe', 'right_heel', 'right_thumb4', 'right_thumb3',
    'right_thumb2', 'right_thumb_third_joint', 'right_forefinger4', 'right_forefinger3', 'right_forefinger2',
    'right_forefinger_third_joint', 'right_middle_finger4', 'right_middle_finger3', 'right_middle_finger2',
    'right_middle_finger_third_joint', 'right_ring_finger4', 'right_ring_finger3', 'right_ring_finger2',
    'right_ring_finger_third_joint', 'right_pinky_finger4', 'right_pinky_finger3', 'right_pinky_finger2',
    'right_pinky_finger_third_joint', 'right_wrist', 'left_thumb4', 'left_thumb3', 'left_thumb2',
    'left_thumb_third_joint', 'left_forefinger4', 'left_forefinger3', 'left_forefinger2',
    'left_forefinger_third_joint', 'left_middle_finger4', 'left_middle_finger3', 'left_middle_finger2',
    'left_middle_finger_third_joint', 'left_ring_finger4', 'left_ring_finger3', 'left_ring_finger2',
    'left_ring_finger_third_joint', 'left_pinky_finger4', 'left_pinky_finger3', 'left_pinky_finger2',
    'left_pinky_finger_third_joint', 'left_wrist', 'left_olecranon', 'right_olecranon', 'left_cubital_fossa',
    'right_cubital_fossa', 'left_acromion', 'right_acromion', 'neck', 'center_of_glabella', 'center_of_nose_root',
    'tip_of_nose_bridge', 'midpoint_1_of_nose_bridge', 'midpoint_2_of_nose_bridge', 'midpoint_3_of_nose_bridge',
    'center_of_labiomental_groove', 'tip_of_chin', 'upper_startpoint_of_r_eyebrow', 'lower_startpoint_of_r_eyebrow',
    'end_of_r_eyebrow', 'upper_midpoint_1_of_r_eyebrow', 'lower_midpoint_1_of_r_eyebrow',
    'upper_midpoint_2_of_r_eyebrow', 'upper_midpoint_3_of_r_eyebrow', 'lower_midpoint_2_of_r_eyebrow',
    'lower_midpoint_3_of_r_eyebrow', 'upper_startpoint_of_l_eyebrow', 'lower_startpoint_of_l_eyebrow',
    'end_of_l_eyebrow', 'upper_midpoint_1_of_l_eyebrow', 'lower_midpoint_1_of_l_eyebrow',
    'upper_midpoint_2_of_l_eyebrow', 'upper_midpoint_3_of_l_eyebrow', 'lower_midpoint_2_of_l_eyebrow',
    'lower_midpoint_3_of_l_eyebrow', 'l_inner_end_of_upper_lash_line', 'l_outer_end_of_upper_lash_line',
    'l_centerpoint_of_upper_lash_line', 'l_midpoint_2_of_upper_lash_line', 'l_midpoint_1_of_upper_lash_line',
    'l_midpoint_6_of_upper_lash_line', 'l_midpoint_5_of_upper_lash_line', 'l_midpoint_4_of_upper_lash_line',
    'l_midpoint_3_of_upper_lash_line', 'l_outer_end_of_upper_eyelid_line', 'l_midpoint_6_of_upper_eyelid_line',
    'l_midpoint_2_of_upper_eyelid_line', 'l_midpoint_5_of_upper_eyelid_line', 'l_centerpoint_of_upper_eyelid_line',
    'l_midpoint_4_of_upper_eyelid_line', 'l_midpoint_1_of_upper_eyelid_line', 'l_midpoint_3_of_upper_eyelid_line',
    'l_midpoint_6_of_upper_crease_line', 'l_midpoint_2_of_upper_crease_line', 'l_midpoint_5_of_upper_crease_line',
    'l_centerpoint_of_upper_crease_line', 'l_midpoint_4_of_upper_crease_line', 'l_midpoint_1_of_upper_crease_line',
    'l_midpoint_3_of_upper_crease_line', 'r_inner_end_of_upper_lash_line', 'r_outer_end_of_upper_lash_line',
    'r_centerpoint_of_upper_lash_line', 'r_midpoint_1_of_upper_lash_line', 'r_midpoint_2_of_upper_lash_line',
    'r_midpoint_3_of_upper_lash_line', 'r_midpoint_4_of_upper_lash_line', 'r_midpoint_5_of_upper_lash_line',
    'r_midpoint_6_of_upper_lash_line', 'r_outer_end_of_upper_eyelid_line', 'r_midpoint_3_of_upper_eyelid_line',
    'r_midpoint_1_of_upper_eyelid_line', 'r_midpoint_4_of_upper_eyelid_line', 'r_centerpoint_of_upper_eyelid_line',
    'r_midpoint_5_of_upper_eyelid_line', 'r_midpoint_2_of_upper_eyelid_line', 'r_midpoint_6_of_upper_eyelid_line',
    'r_midpoint_3_of_upper_crease_line', 'r_midpoint_1_of_upper_crease_line', 'r_midpoint_4_of_upper_crease_line',
    'r_centerpoint_of_upper_crease_line', 'r_midpoint_5_of_upper_crease_line', 'r_midpoint_2_of_upper_crease_line',
    'r_midpoint_6_of_upper_crease_line', 'l_inner_end_of_lower_lash_line', 'l_outer_end_of_lower_lash_line',
    'l_centerpoint_of_lower_lash_line', 'l_midpoint_2_of_lower_lash_line', 'l_midpoint_1_of_lower_lash_line',
    'l_midpoint_6_of_lower_lash_line', 'l_midpoint_5_of_lower_lash_line', 'l_midpoint_4_of_lower_lash_line',
    'l_midpoint_3_of_lower_lash_line', 'l_outer_end_of_lower_eyelid_line', 'l_midpoint_6_of_lower_eyelid_line',
    'l_midpoint_2_of_lower_eyelid_line', 'l_midpoint_5_of_lower_eyelid_line', 'l_centerpoint_of_lower_eyelid_line',
    'l_midpoint_4_of_lower_eyelid_line', 'l_midpoint_1_of_lower_eyelid_line', 'l_midpoint_3_of_lower_eyelid_line',
    'r_inner_end_of_lower_lash_line', 'r_outer_end_of_lower_lash_line', 'r_centerpoint_of_lower_lash_line',
    'r_midpoint_1_of_lower_lash_line', 'r_midpoint_2_of_lower_lash_line', 'r_midpoint_3_of_lower_lash_line',
    'r_midpoint_4_of_lower_lash_line', 'r_midpoint_5_of_lower_lash_line', 'r_midpoint_6_of_lower_lash_line',
    'r_outer_end_of_lower_eyelid_line', 'r_midpoint_3_of_lower_eyelid_line', 'r_midpoint_1_of_lower_eyelid_line',
    'r_midpoint_4_of_lower_eyelid_line', 'r_centerpoint_of_lower_eyelid_line', 'r_midpoint_5_of_lower_eyelid_line',
    'r_midpoint_2_of_lower_eyelid_line', 'r_midpoint_6_of_lower_eyelid_line', 'tip_of_nose',
    'bottom_center_of_nose', 'r_outer_corner_of_nose', 'l_outer_corner_of_nose', 'inner_corner_of_r_nostril',
    'outer_corner_of_r_nostril', 'upper_corner_of_r_nostril', 'inner_corner_of_l_nostril',
    'outer_corner_of_l_nostril', 'upper_corner_of_l_nostril', 'r_outer_corner_of_mouth', 'l_outer_corner_of_mouth',
    'center_of_cupid_bow', 'center_of_lower_outer_lip', 'midpoint_1_of_upper_outer_lip',
    'midpoint_2_of_upper_outer_lip', 'midpoint_1_of_lower_outer_lip', 'midpoint_2_of_lower_outer_lip',
    'midpoint_3_of_upper_outer_lip', 'midpoint_4_of_upper_outer_lip', 'midpoint_5_of_upper_outer_lip',
    'midpoint_6_of_upper_outer_lip', 'midpoint_3_of_lower_outer_lip', 'midpoint_4_of_lower_outer_lip',
    'midpoint_5_of_lower_outer_lip', 'midpoint_6_of_lower_outer_lip', 'r_inner_corner_of_mouth',
    'l_inner_corner_of_mouth', 'center_of_upper_inner_lip', 'center_of_lower_inner_lip',
    'midpoint_1_of_upper_inner_lip', 'midpoint_2_of_upper_inner_lip', 'midpoint_1_of_lower_inner_lip',
    'midpoint_2_of_lower_inner_lip', 'midpoint_3_of_upper_inner_lip', 'midpoint_4_of_upper_inner_lip',
    'midpoint_5_of_upper_inner_lip', 'midpoint_6_of_upper_inner_lip', 'midpoint_3_of_lower_inner_lip',
    'midpoint_4_of_lower_inner_lip', 'midpoint_5_of_lower_inner_lip', 'midpoint_6_of_lower_inner_lip',
    'l_top_end_of_inferior_crus', 'l_top_end_of_superior_crus', 'l_start_of_antihelix', 'l_end_of_antihelix',
    'l_midpoint_1_of_antihelix', 'l_midpoint_1_of_inferior_crus', 'l_midpoint_2_of_antihelix',
    'l_midpoint_3_of_antihelix', 'l_point_1_of_inner_helix', 'l_point_2_of_inner_helix', 'l_point_3_of_inner_helix',
    'l_point_4_of_inner_helix', 'l_point_5_of_inner_helix', 'l_point_6_of_inner_helix', 'l_point_7_of_inner_helix',
    'l_highest_point_of_antitragus', 'l_bottom_point_of_tragus', 'l_protruding_point_of_tragus',
    'l_top_point_of_tragus', 'l_start_point_of_crus_of_helix', 'l_deepest_point_of_concha', 'l_tip_of_ear_lobe',
    'l_midpoint_between_22_15', 'l_bottom_connecting_point_of_ear_lobe', 'l_top_connecting_point_of_helix',
    'l_point_8_of_inner_helix', 'r_top_end_of_inferior_crus', 'r_top_end_of_superior_crus', 'r_start_of_antihelix',
    'r_end_of_antihelix', 'r_midpoint_1_of_antihelix', 'r_midpoint_1_of_inferior_crus', 'r_midpoint_2_of_antihelix',
    'r_midpoint_3_of_antihelix', 'r_point_1_of_inner_helix', 'r_point_8_of_inner_helix', 'r_point_3_of_inner_helix',
    'r_point_4_of_inner_helix', 'r_point_5_of_inner_helix', 'r_point_6_of_inner_helix', 'r_point_7_of_inner_helix',
    'r_highest_point_of_antitragus', 'r_bottom_point_of_tragus', 'r_protruding_point_of_tragus',
    'r_top_point_of_tragus', 'r_start_point_of_crus_of_helix', 'r_deepest_point_of_concha', 'r_tip_of_ear_lobe',
    'r_midpoint_between_22_15', 'r_bottom_connecting_point_of_ear_lobe', 'r_top_connecting_point_of_helix',
    'r_point_2_of_inner_helix', 'l_center_of_iris', 'l_border_of_iris_3', 'l_border_of_iris_midpoint_1',
    'l_border_of_iris_12', 'l_border_of_iris_midpoint_4', 'l_border_of_iris_9', 'l_border_of_iris_midpoint_3',
    'l_border_of_iris_6', 'l_border_of_iris_midpoint_2', 'r_center_of_iris', 'r_border_of_iris_3',
    'r_border_of_iris_midpoint_1', 'r_border_of_iris_12', 'r_border_of_iris_midpoint_4', 'r_border_of_iris_9',
    'r_border_of_iris_midpoint_3', 'r_border_of_iris_6', 'r_border_of_iris_midpoint_2', 'l_center_of_pupil',
    'l_border_of_pupil_3', 'l_border_of_pupil_midpoint_1', 'l_border_of_pupil_12', 'l_border_of_pupil_midpoint_4',
    'l_border_of_pupil_9', 'l_border_of_pupil_midpoint_3', 'l_border_of_pupil_6', 'l_border_of_pupil_midpoint_2',
    'r_center_of_pupil', 'r_border_of_pupil_3', 'r_border_of_pupil_midpoint_1', 'r_border_of_pupil_12',
    'r_border_of_pupil_midpoint_4', 'r_border_of_pupil_9', 'r_border_of_pupil_midpoint_3', 'r_border_of_pupil_6',
    'r_border_of_pupil_midpoint_2',
)
_GOLIATH_FLIP_PAIRS = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 18), (16, 19), (17, 20), (21, 42), (22, 43),
    (23, 44), (24, 45), (25, 46), (26, 47), (27, 48), (28, 49), (29, 50), (30, 51), (31, 52), (32, 53), (33, 54),
    (34, 55), (35, 56), (36, 57), (37, 58), (38, 59), (39, 60), (40, 61), (41, 62), (63, 64), (65, 66), (67, 68),
    (78, 87), (79, 88), (80, 89), (81, 90), (82, 91), (83, 93), (84, 92), (85, 95), (86, 94), (96, 120), (97, 121),
    (98, 122), (99, 123), (100, 124), (101, 125), (102, 126), (103, 127), (104, 128), (105, 129), (106, 130), (107,
    131), (108, 132), (109, 133), (110, 134), (111, 135), (112, 136), (113, 137), (114, 138), (115, 139), (116,
    140), (117, 141), (118, 142), (119, 143), (144, 161), (145, 162), (146, 163), (147, 164), (148, 165), (149,
    166), (150, 167), (151, 168), (152, 169), (153, 170), (154, 171), (155, 172), (156, 173), (157, 174), (158,
    175), (159, 176), (160, 177), (180, 181), (182, 185), (183, 186), (184, 187), (188, 189), (192, 193), (194,
    195), (196, 199), (197, 198), (200, 203), (201, 202), (204, 205), (208, 209), (210, 211), (212, 215), (213,
    214), (216, 219), (217, 218), (220, 246), (221, 247), (222, 248), (223, 249), (224, 250), (225, 251), (226,
    252), (227, 253), (228, 254), (229, 255), (230, 256), (231, 257), (232, 258), (233, 259), (234, 260), (235,
    261), (236, 262), (237, 263), (238, 264), (239, 265), (240, 266), (241, 267), (242, 268), (243, 269), (244,
    270), (245, 271), (272, 281), (273, 286), (274, 285), (275, 284), (276, 283), (277, 282), (278, 289), (279,
    288), (280, 287), (290, 299), (291, 304), (292, 303), (293, 302), (294, 301), (295, 300), (296, 307), (297,
    306), (298, 305),
)
_GOLIATH_LINKS = (
    (13, 11), (11, 9), (14, 12), (12, 10), (9, 10), (5, 9), (6, 10), (5, 6), (5, 7), (6, 8), (7, 62), (8, 41), (1,
    2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (13, 15), (13, 16), (13, 17), (14, 18), (14, 19), (14, 20),
    (62, 45), (45, 44), (44, 43), (43, 42), (62, 49), (49, 48), (48, 47), (47, 46), (62, 53), (53, 52), (52, 51),
    (51, 50), (62, 57), (57, 56), (56, 55), (55, 54), (62, 61), (61, 60), (60, 59), (59, 58), (41, 24), (24, 23),
    (23, 22), (22, 21), (41, 28), (28, 27), (27, 26), (26, 25), (41, 32), (32, 31), (31, 30), (30, 29), (41, 36),
    (36, 35), (35, 34), (34, 33), (41, 40), (40, 39), (39, 38), (38, 37),
)
_GOLIATH_SIGMA_OVERRIDES = {
    0: 0.026, 1: 0.025, 2: 0.025, 3: 0.035, 4: 0.035, 5: 0.079, 6: 0.079, 7: 0.072, 8: 0.072, 9: 0.107, 10: 0.107,
    11: 0.087, 12: 0.087, 13: 0.089, 14: 0.089, 15: 0.068, 16: 0.066, 17: 0.066, 18: 0.092, 19: 0.094, 20: 0.094,
    21: 0.047, 22: 0.037, 23: 0.035, 24: 0.022, 25: 0.035, 26: 0.024, 27: 0.025, 28: 0.026, 29: 0.026, 30: 0.022,
    31: 0.024, 32: 0.018, 33: 0.032, 34: 0.021, 35: 0.021, 36: 0.017, 37: 0.031, 38: 0.022, 39: 0.019, 40: 0.02, 41:
    0.062, 42: 0.047, 43: 0.037, 44: 0.035, 45: 0.022, 46: 0.035, 47: 0.024, 48: 0.025, 49: 0.026, 50: 0.026, 51:
    0.022, 52: 0.024, 53: 0.018, 54: 0.032, 55: 0.021, 56: 0.021, 57: 0.017, 58: 0.031, 59: 0.022, 60: 0.019, 61:
    0.02, 62: 0.062, 63: 0.072, 64: 0.072, 65: 0.072, 66: 0.072, 67: 0.079, 68: 0.079, 69: 0.079,
}


def _goliath() -> DatasetInfo:
    sigmas = [_GOLIATH_SIGMA_OVERRIDES.get(i, 0.010) for i in range(len(_GOLIATH_NAMES))]
    return DatasetInfo("goliath", _GOLIATH_NAMES, _GOLIATH_FLIP_PAIRS, _GOLIATH_LINKS, tuple(sigmas), "udp")


GOLIATH = _goliath()

DATASETS: Dict[str, DatasetInfo] = {
    d.name: d for d in (COCO, AIC, MPII, CROWDPOSE, AP10K, APT36K, COCO_WHOLEBODY, GOLIATH)
}
# ViTPose+ dataset index order: the expert / head index of each dataset in the multi-task checkpoints.
VITPOSE_PLUS_DATASETS: Tuple[DatasetInfo, ...] = tuple(DATASETS[name] for name in VITPOSE_PLUS_DATASET_NAMES)


def get_dataset(name: str) -> DatasetInfo:
    """Look a dataset up by name (case-insensitive; 'wholebody' is accepted for 'coco_wholebody')."""
    key = name.lower().replace("-", "").replace(" ", "")
    key = {"wholebody": "coco_wholebody", "cocowholebody": "coco_wholebody"}.get(key, key)
    if key not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[key]
