"""The model layer: ViT backbone, heads, the ``ViTPose`` network, checkpoints in every layout, precision, FP8 and
the inference set-up."""
