"""Train ViTPose on COCO-format keypoints with the official recipe: one process, or many through torchrun.

The code is `vitpose_fast.training.train`, whose docstring lists the options."""

from vitpose_fast.training.train import run

if __name__ == "__main__":
    run()
