"""Export a model file: the whole inference pipeline, masks included, as ONNX or OpenVINO IR;
optionally INT8, calibrated on your images, optionally within a bound on the AP it may lose.

    maskkit export --weights run/model_best.safetensors --out model.onnx
    maskkit export --weights run/model_best.safetensors --format openvino --out model.xml
    maskkit export --weights run/model_best.safetensors --quantize int8 --calibration data/train_images \\
        --out model.int8.onnx [--max-ap-drop 1.0 --validation data]
    maskkit predict --weights model.int8.onnx photo.jpg       # int8 under OpenVINO (or ONNX Runtime)

Any image size (dynamic height and width). See README 'Export and deployment'.
"""

from __future__ import annotations

import argparse
import sys

from maskkit.engine.export import DEFAULT_OPSET, export_file
from maskkit.errors import MaskkitError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="model file (.safetensors) to export")
    parser.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "openvino"],
        help="onnx (ONNX Runtime, OpenVINO) or openvino (OpenVINO IR: .xml + .bin) (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default=None, help="file to write (default: the weights file with suffix .onnx / .xml; .int8.*)"
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, >= 16 for aligned RoiAlign (default: %(default)s)"
    )
    q = parser.add_argument_group("INT8 quantization")
    q.add_argument("--quantize", choices=["int8"], default=None, help="post-training static INT8 quantization")
    q.add_argument(
        "--calibration",
        metavar="DATA",
        help="calibration images: a COCO-style root (its train split, as --data) or a folder of images",
    )
    q.add_argument(
        "--calibration-images",
        type=int,
        default=32,
        metavar="N",
        help="images used to calibrate (default: %(default)s)",
    )
    q.add_argument(
        "--quantizer",
        choices=["nncf", "onnxruntime"],
        default="nncf",
        help="NNCF (with bias correction) or ONNX Runtime's static quantization (default: %(default)s)",
    )
    q.add_argument(
        "--max-ap-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="accuracy-aware: keep the most sensitive model parts in float until the segm AP (proposals: "
        "segm AR@100) on --validation is within this many points of float32; the file records it",
    )
    q.add_argument("--validation", metavar="DATA", help="COCO-style root whose val split measures the drop")


def run(args: argparse.Namespace) -> int:
    if args.quantize is None:
        if args.calibration or args.max_ap_drop is not None or args.validation:
            raise MaskkitError("--calibration, --max-ap-drop and --validation go with --quantize int8")
        out = export_file(args.weights, args.out, args.opset, args.format)
        print(f"wrote {out}")
        return 0
    if not args.calibration:
        raise MaskkitError("--quantize int8 needs --calibration DATA (a COCO-style root or a folder of images)")
    from maskkit.engine.quantize import quantize_file

    out = quantize_file(
        args.weights,
        args.out,
        calibration=args.calibration,
        fmt=args.format,
        calibration_count=args.calibration_images,
        quantizer=args.quantizer,
        max_ap_drop=args.max_ap_drop,
        validation=args.validation,
        opset=args.opset,
    )
    print(f"wrote {out}", file=sys.stdout)
    return 0
