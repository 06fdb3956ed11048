"""What the commands share: the error and warning lines, output-path checks, the model options and the model
set-up they describe (loading, device, precision), and the keypoint metadata of the selected head."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from tqdm import tqdm

from vitpose_fast.config import PRESET_NAMES
from vitpose_fast.data.datasets import DATASETS
from vitpose_fast.inference.decode import DECODE_METHODS

PROG = "vitpose-fast"
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp8")


class CliError(Exception):
    """A user mistake: :func:`vitpose_fast.cli.main` prints it as one line on stderr and exits with status 1."""


def warn(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)


def check_output_file(path: str, flag: str, example: str = "preds.json") -> None:
    """Fail now (before loading anything) when ``path`` cannot be written as a file."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{flag} {path} is a directory; expected a file name such as {p / example}")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CliError(f"{flag} {path}: cannot create a file there ({parent} is not a writable directory)")
    if p.exists() and not os.access(p, os.W_OK):
        raise CliError(f"{flag} {path}: the file exists and is not writable")


def check_output_dir(path: str, flag: str) -> None:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CliError(f"{flag} {path} exists and is not a directory")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CliError(f"{flag} {path}: {parent} is not a writable directory")


def non_negative_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def positive_int(value: str) -> int:
    n = non_negative_int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got 0")
    return n


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------ options
def weights_options() -> argparse.ArgumentParser:
    """``--weights`` and ``--model`` (every command that loads a model)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--weights", required=True,
                   help="checkpoint file (a training run's best.pth/final.pth, an official .pth), Hugging Face "
                        "folder or Hub id (org/name)")
    p.add_argument("--model", choices=PRESET_NAMES, help="build this preset and load the weights into it")
    return p


def inference_options() -> argparse.ArgumentParser:
    """The options of the commands that run the model on images (predict, eval)."""
    p = argparse.ArgumentParser(add_help=False, parents=[weights_options()])
    p.add_argument("--device", default=default_device(), help="torch device (default: cuda if available)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="crops per forward (flipped copies included); bounds the memory of every step")
    p.add_argument("--no-flip", action="store_true", help="disable the flip test")
    p.add_argument("--decode", choices=DECODE_METHODS, default="udp")
    p.add_argument("--dataset-index", type=non_negative_int, default=None,
                   help="ViTPose+ expert/head (" + ", ".join(f"{i} {d.name}" for i, d in _plus_datasets()) + ")")
    p.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="keypoint metadata: flip pairs, skeleton, OKS sigmas (default: the head's dataset)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (default: "
                                                         "report it, skip it, exit with status 1)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="auto (default: bf16 where the hardware computes it natively, else fp32), fp32, bf16, or "
                        "fp8: bf16 with the backbone GEMMs in FP8 (sm_89+ GPUs, CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _plus_datasets():
    from vitpose_fast.data.datasets import VITPOSE_PLUS_DATASETS

    return list(enumerate(VITPOSE_PLUS_DATASETS))


# ------------------------------------------------------------------------------------------------ the model
def check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise CliError(f"--device {device}: not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {device}: this torch has no usable CUDA device (torch {torch.__version__}, "
                       f"CUDA build {torch.version.cuda or 'none'}); use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CliError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices")
    return dev


def resolve_precision(precision: Optional[str], device: torch.device) -> str:
    """``auto`` -> the hardware's default precision (:mod:`vitpose_fast.model.precision`)."""
    from vitpose_fast.model.precision import resolve_precision as resolve

    return resolve(precision, device)


def load_model(args, precision: Optional[str] = None, **overrides):
    """The model of ``--weights``/``--model`` (built with ``overrides``) on ``--device`` in eval mode, at
    ``precision`` (a resolved one, or None: as loaded). An FP8 request on a GPU without FP8 fails before the
    weights are read."""
    from vitpose_fast.inference.model import Model
    from vitpose_fast.model.checkpoint import CheckpointError
    from vitpose_fast.model.fp8 import Fp8UnavailableError

    device = check_device(getattr(args, "device", "cpu"))
    try:
        return Model.load(args.weights, args.model, device=device, precision=precision, **overrides)
    except Fp8UnavailableError as e:
        raise CliError(f"--precision fp8: {e}") from None
    except CheckpointError as e:
        if args.model is None:
            raise
        raise CliError(f"{args.weights} does not fit the {args.model} preset ({e}); drop --model to infer the "
                       "model from the weights") from None


def inference_model(args, what: str):
    """Resolve ``--precision`` for ``--device`` (logged), load the model at it and set it up for inference
    (:meth:`vitpose_fast.Model.optimize`: cast, folded head, CUDA graphs on CUDA). Returns the model."""
    device = check_device(args.device)
    precision = resolve_precision(args.precision, device)
    how = "the default on this hardware; --precision fp32 to opt out" if args.precision == "auto" else "--precision"
    model = load_model(args, precision)
    if not args.quiet:
        warn(f"{what} in {precision} on {device} ({how})")
    model.optimize(args.batch_size, precision=precision)
    return model


def resolve_dataset(model, args):
    """(DatasetInfo of ``--dataset`` checked against the head, or the head's own (None if unknown), keypoints)."""
    from vitpose_fast.data.datasets import VITPOSE_PLUS_DATASETS, get_dataset
    from vitpose_fast.inference.pipeline import head_dataset, head_num_keypoints

    index = args.dataset_index
    experts = model.config.backbone.num_experts
    heads = 1 + len(model.config.extra_heads)
    if index is not None and index > 0 and experts <= index and heads <= index:
        order = ", ".join(f"{i} {d.name}" for i, d in enumerate(VITPOSE_PLUS_DATASETS))
        raise CliError(f"--dataset-index {index}: this model has {experts} expert(s) and {heads} head(s), so it "
                       f"predicts dataset index 0 only (ViTPose+ order: {order}); drop --dataset-index, or pass "
                       "--dataset NAME for another dataset's keypoint metadata")
    k = head_num_keypoints(model, index)
    if args.dataset is None:
        return head_dataset(model, index), k
    info = get_dataset(args.dataset)
    if info.num_keypoints != k:
        raise CliError(f"--dataset {args.dataset} has {info.num_keypoints} keypoints but the model's head "
                       f"{index or 0} predicts {k}")
    return info, k


def predict_options(args, info) -> dict:
    """The keyword arguments of :meth:`vitpose_fast.Model.predict_iter` that the options set."""
    return dict(flip_test=not args.no_flip, decode=args.decode, batch_size=args.batch_size,
                dataset_index=args.dataset_index, dataset=info)


def fail_unknown_keypoints(info, k: int, args) -> None:
    if info is None and not args.no_flip:
        raise CliError(f"the model's head predicts {k} keypoints of no known dataset: pass --dataset NAME "
                       f"({', '.join(sorted(DATASETS))}) for its flip pairs and skeleton, or --no-flip")


def stream(model, items, args, info, total: Optional[int], desc: str, detector=None) -> Iterator[Any]:
    """``Model.predict_iter`` over ``items`` with a per-person progress bar; failed images are reported (or
    fatal with --strict). Yields ImageResults."""
    with tqdm(total=total, unit="person", desc=desc, file=sys.stderr, disable=args.quiet) as bar:
        results = model.predict_iter(
            items, box_format="xywh", on_error="raise" if args.strict else "skip", progress=bar.update,
            detector=detector, det_thr=getattr(args, "det_thr", 0.3), det_classes=getattr(args, "det_classes", None),
            **predict_options(args, info),
        )
        try:
            for result in results:
                if result.error is not None:
                    bar.write(f"vitpose-fast: skipped an image: {result.error}", file=sys.stderr)
                yield result
        except (OSError, ValueError, TypeError) as exc:
            if args.strict:
                raise CliError(f"{exc} (--strict: stopping at the first failed image)") from exc
            raise
