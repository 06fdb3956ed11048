"""``vitpose-fast export --onnx OUT.onnx --weights W [--res HxW] [--dataset-index I] [--batch N] [--check]``

ONNX export of the plain-PyTorch path (:mod:`vitpose_fast.model.onnx_export`); ``--check`` compares ONNX
Runtime with PyTorch.
"""

from __future__ import annotations

from vitpose_fast.cli import common
from vitpose_fast.config import parse_res


def add_parser(sub) -> None:
    x = sub.add_parser("export", parents=[common.weights_options()],
                       help="export the model to ONNX (plain-PyTorch path, dynamic batch)")
    x.add_argument("--onnx", required=True, help="output .onnx file")
    x.add_argument("--res", type=parse_res, help="input HxW (e.g. 384x288; the position embedding is resized)")
    x.add_argument("--dataset-index", type=common.non_negative_int, default=None,
                   help="ViTPose+: the dataset fixed in the graph")
    x.add_argument("--batch", type=common.positive_int, default=None, help="fixed batch size (default: dynamic)")
    x.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    x.add_argument("--check", action="store_true", help="compare with PyTorch in ONNX Runtime (batch 1 and 3)")
    x.set_defaults(func=run)


def run(args) -> int:
    from vitpose_fast.model.onnx_export import check_onnx, export_onnx

    common.check_output_file(args.onnx, "--onnx", "vitpose.onnx")
    overrides = {"res": args.res} if args.res else {}
    model = common.load_model(args, "fp32", **overrides)
    path = export_onnx(model.float(), args.onnx, batch=args.batch, opset=args.opset, dataset_index=args.dataset_index)
    h, w = model.config.backbone.img_size
    batch = "dynamic batch" if args.batch is None else f"batch {args.batch}"
    print(f"wrote {path}: pixel_values [{batch}, 3, {h}, {w}] -> heatmaps, opset {args.opset}")
    if args.check:
        errors = check_onnx(model, path, batches=(1, 3) if args.batch is None else (args.batch,),
                            dataset_index=args.dataset_index)
        print("ONNX Runtime vs PyTorch (fp32), max |diff| / max |heatmap|: "
              + ", ".join(f"batch {b}: {e:.2e}" for b, e in errors.items()))
    return 0
