"""MAE pretraining of a ViTPose backbone on person crops, whole images or an image folder (paper Table 3).

The code is `vitpose_fast.training.pretrain_mae`, whose docstring lists the options."""

from vitpose_fast.training.pretrain_mae import run

if __name__ == "__main__":
    run()
