"""Export a model file to ONNX: the whole inference pipeline, masks included.

    maskkit export --weights run/model_best.safetensors --format onnx --out model.onnx
    maskkit predict --weights model.onnx photo.jpg      # runs with ONNX Runtime (NumPy post-processing)

Any image size (dynamic height and width). See README 'Export and deployment (ONNX)'.
"""

from __future__ import annotations

import argparse

from maskkit.engine.export import DEFAULT_OPSET, export_file


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="model file (.safetensors) to export")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: %(default)s)")
    parser.add_argument("--out", default=None, help="file to write (default: the weights file with suffix .onnx)")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, >= 16 for aligned RoiAlign (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    out = export_file(args.weights, args.out, args.opset)
    print(f"wrote {out}")
    return 0
