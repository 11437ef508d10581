"""Convert a published weight file into a maskkit model file.

Sources: centermask2 checkpoints (.pth / .pkl, detectron2 format), the official DeepMask /
SharpMask Torch7 models (.t7), and ImageNet backbone files (with --model PRESET). The output is
a normal maskkit model file (config, class names and category ids embedded) for
`maskkit eval`, `maskkit predict`, `maskkit.load_model` and `maskkit.Predictor`.
"""

from __future__ import annotations

import argparse

from maskkit.convert import convert_source


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src", help="the published file: .pth / .pkl (centermask2, ImageNet backbone) or .t7 (DeepMask/SharpMask)"
    )
    parser.add_argument("--out", required=True, help="maskkit model file to write (.safetensors)")
    parser.add_argument(
        "--model",
        default=None,
        metavar="PRESET",
        help="force the maskkit preset (default: detected from the file's names and shapes; "
        "required for ImageNet backbone files)",
    )
    parser.epilog = (
        "Loading is strict (every tensor maps, every model tensor is filled, or one error lists the\n"
        "missing and unexpected names) and safe (no pickled code runs). Deformable-convolution (DCN)\n"
        "centermask2 checkpoints are refused. See README 'Pretrained weights'."
    )


def run(args: argparse.Namespace) -> int:
    result = convert_source(args.src, args.model)
    for line in result.notes:
        print(line)
    print(f"wrote {result.save(args.out)}")
    return 0
