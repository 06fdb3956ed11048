"""Training scripts: ``train/train.py`` (the official COCO recipe), ``train/presets.py``, ``train/plot.py``."""
