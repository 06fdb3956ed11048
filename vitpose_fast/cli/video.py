"""``vitpose-fast predict --weights W CLIP.mp4 [--detector SPEC | --boxes PER_FRAME.json] --out poses.jsonl [--vis out.mp4]``

A video file, webcam index or stream URL: one JSON line per frame (:mod:`vitpose_fast.inference.video`), the
persons from a detector, a per-frame boxes file or the whole frame. Called by ``predict`` when its single input
is a video.
"""

from __future__ import annotations

from vitpose_fast.cli import common
from vitpose_fast.cli.common import CliError


def run(args) -> int:
    from vitpose_fast.inference.detectors import load_detector
    from vitpose_fast.inference.video import load_frame_boxes, predict_video

    if args.boxes and args.detector:
        raise CliError("pass either --boxes or --detector, not both")
    if args.ann:
        raise CliError("--ann gives image ids to image files; a video's frames are numbered (drop --ann)")
    common.check_output_file(args.out, "--out", "poses.jsonl")
    if args.vis:
        common.check_output_file(args.vis, "--vis", "out.mp4")
    try:
        frame_boxes = load_frame_boxes(args.boxes) if args.boxes else None
    except (OSError, ValueError) as e:
        raise CliError(f"--boxes: {e}") from None
    detector = load_detector(args.detector, device=args.device) if args.detector else None
    model = common.inference_model(args, "video")
    info, k = common.resolve_dataset(model, args)
    common.fail_unknown_keypoints(info, k, args)
    stats = predict_video(
        model, args.images[0], args.out, vis=args.vis, detector=detector, boxes=frame_boxes,
        det_thr=args.det_thr, det_classes=args.det_classes, box_thr=args.box_thr,
        frames_per_batch=args.frames_per_batch, max_frames=args.max_frames, kpt_thr=args.kpt_thr,
        progress=not args.quiet, track=args.track, smooth=args.smooth, detect_every=args.detect_every,
        **common.predict_options(args, info),
    )
    print(f"wrote {stats['persons']} persons in {stats['frames']} frames to {args.out} "
          f"({stats['fps']:.1f} frames/s, {stats['persons_per_s']:.1f} persons/s)")
    return 0
