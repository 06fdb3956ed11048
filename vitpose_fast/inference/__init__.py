"""The inference layer: crops -> model -> heatmap decoding -> keypoints, detectors, video, drawing, COCO evaluation."""
