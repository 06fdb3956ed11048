"""The inference layer: the users' ``Model`` (the network plus ``predict``), crops -> model -> heatmap decoding ->
keypoints, detectors, video, drawing, COCO evaluation."""
