"""``vitpose-fast train --preset NAME --data-root DIR ...``: the training script
(:mod:`vitpose_fast.training.train`; ``vitpose-fast train --help`` lists its options). The same command as
``python train/train.py`` and, under torchrun, ``torchrun ... -m vitpose_fast.cli train ...``.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("train", add_help=False, help="train a model (the options of train/train.py; --help lists them)")
    p.set_defaults(func=run, takes_extra_args=True)


def run(args) -> int:
    from vitpose_fast.training.train import run as train

    train(args.extra_args)
    return 0
