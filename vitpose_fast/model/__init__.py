"""The model layer: ViT backbone, heads, ``Model``, checkpoints in every layout, FP8 and the inference set-up."""
