"""Draw the loss/lr and val AP curves of a training run (``metrics.jsonl`` from ``train/train.py``) to a PNG.

The code is `vitpose_fast.training.plot`, whose docstring lists the options."""

from vitpose_fast.training.plot import run

if __name__ == "__main__":
    run()
