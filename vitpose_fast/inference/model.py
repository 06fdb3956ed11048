"""``vitpose_fast.Model``: the network (:class:`vitpose_fast.model.model.ViTPose`) plus top-down inference.

The class lives here, in the inference layer, because ``predict`` needs what sits above the network (cropping,
decoding, detectors): defining it where it sees both keeps every import pointing down, with no lazy import of
a higher layer from the model package.
"""

from __future__ import annotations

from typing import Optional

from vitpose_fast.inference import pipeline
from vitpose_fast.model.model import ViTPose
from vitpose_fast.model.precision import precision_of


class Model(ViTPose):
    """ViTPose, the users' class: everything of :class:`~vitpose_fast.model.model.ViTPose` (``from_pretrained``,
    ``load``, ``forward``, ``optimize``, saving and exporting) plus :meth:`predict` and :meth:`predict_iter`."""

    def predict(self, images, boxes=None, box_format: str = "xyxy", flip_test: bool = True,
                decode: str = "udp", batch_size: int = 64, detector=None, det_thr: float = 0.3,
                det_classes=None, precision: Optional[str] = None, **kwargs):
        """Top-down inference: images + person boxes -> keypoints in image coordinates.
        See :func:`vitpose_fast.inference.pipeline.predict`. A model not yet optimized is first set up with
        ``optimize(batch_size, precision)``: ``precision`` None keeps a precision the model was given (by
        :meth:`load` or ``optimize``), else takes the device's default (bf16 on sm_80+ GPUs and on CPUs with
        AVX512-BF16 or AMX, fp32 elsewhere; pass ``precision="fp32"`` for fp32 anywhere). A precision other than
        the optimized model's re-optimizes it. A model in training mode keeps its weights' dtype unless
        ``precision`` is given: predicting during training never casts the weights being trained.

        ``detector``: instead of ``boxes``, a callable image (HxWx3 uint8 RGB) -> (boxes_xyxy [N, 4], scores [N]
        [, labels [N]]) run first; detections with score < ``det_thr`` (the official demo's 0.3) or a label not
        in ``det_classes`` (None: all) are dropped. See :mod:`vitpose_fast.inference.detectors`."""
        self._optimize_for(batch_size, precision)
        return pipeline.predict(self, images, boxes=boxes, box_format=box_format, flip_test=flip_test,
                                decode=decode, batch_size=batch_size, detector=detector, det_thr=det_thr,
                                det_classes=det_classes, **kwargs)

    def predict_iter(self, items, batch_size: int = 64, precision: Optional[str] = None, **kwargs):
        """Streaming top-down inference over any iterable of ``image`` / ``(image, boxes[, meta])``: one
        :class:`~vitpose_fast.inference.pipeline.ImageResult` per item as it is ready, memory bounded by
        ``batch_size`` (``detector=fn`` finds each image's boxes). Optimized once, at ``precision``, as
        :meth:`predict`. See :func:`vitpose_fast.inference.pipeline.predict_iter`."""
        self._optimize_for(batch_size, precision)
        return pipeline.predict_iter(self, items, batch_size=batch_size, **kwargs)

    def predict_video(self, source, out, track: bool = False, smooth=None, detect_every: int = 1, **kwargs):
        """Keypoints for every frame of a video file, webcam or stream as JSON lines in ``out`` (``vis=``: an
        annotated video). ``track=True``: a ``track_id`` per person; ``smooth="one_euro"``: smoothed keypoints;
        ``detect_every=N``: the detector on every N-th frame, boxes from the tracks' keypoints in between.
        Returns ``{"frames", "persons", "seconds", "fps", "persons_per_s"}``.
        See :func:`vitpose_fast.inference.video.predict_video` for the other arguments."""
        from vitpose_fast.inference.video import predict_video

        return predict_video(self, source, out, track=track, smooth=smooth, detect_every=detect_every, **kwargs)

    def _optimize_for(self, batch_size: int, precision: Optional[str]) -> None:
        if self._optimized is not None and (precision in (None, "auto") or precision == self.precision):
            return
        was_training = self.training
        if was_training and precision in (None, "auto") and self.precision is None:
            precision = precision_of(self)  # fp32 stays fp32; other dtypes are kept by optimize itself
        self.optimize(batch_size, precision).train(was_training)
