"""Run a model on images, folders, globs or videos -> COCO results JSON and overlays.

maskkit predict --weights run/model_best.safetensors photo.jpg folder/ 'shots/*.png' clip.mp4
"""

from __future__ import annotations

import argparse
import math
import sys

from maskkit.cli.common import add_device_argument, add_precision_arguments
from maskkit.engine.distributed import resolve_device
from maskkit.engine.inference.files import expand_inputs, predict_files
from maskkit.engine.inference.predictor import Predictor
from maskkit.errors import MaskkitError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="model file (model_best.safetensors / model_last.safetensors)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders, globs or video files")
    parser.add_argument("--out", default="runs/predict", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--score-thr",
        type=float,
        default=0.3,
        help="keep instances scoring at least this, in the JSON and the pictures (default: %(default)s)",
    )
    parser.add_argument("--batch", type=int, default=2, help="images per forward pass (default: %(default)s)")
    add_device_argument(parser)
    add_precision_arguments(parser, "Default: the file's own precision (float32, or int8 for an INT8 file).")
    parser.add_argument("--no-draw", action="store_true", help="write the JSON only, no overlay pictures/videos")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise MaskkitError(f"--batch must be >= 1, got {args.batch}")
    if not (math.isfinite(args.score_thr) and args.score_thr >= 0):  # above 1 keeps nothing (allowed)
        raise MaskkitError(f"--score-thr must be a finite number >= 0, got {args.score_thr}")
    paths = expand_inputs(args.inputs)
    predictor = Predictor(
        args.weights,
        device=str(resolve_device(args.device)),
        score_thresh=args.score_thr,
        batch_size=max(1, args.batch),
        precision=args.precision,
        runtime=args.runtime,
    )
    if args.precision is not None or predictor.precision.precision != "fp32":
        print(f"maskkit: {predictor.precision.reason} on {predictor.precision.runtime}", file=sys.stderr)
    done = predict_files(predictor, paths, args.out, draw=not args.no_draw, progress=not args.no_progress)
    print(
        f"{done['images']} image(s), {done['videos']} video(s), {done['instances']} instance(s) >= {args.score_thr}: "
        f"wrote {done['out']}/results.json" + ("" if args.no_draw else f" and overlays in {done['out']}")
    )
    if done["failed"]:  # each was reported as it was skipped; the others' results are written
        raise MaskkitError(
            f"{len(done['failed'])} of {len(paths)} input(s) could not be read (first: "
            f"{done['failed'][0][0]}); the results of the others are in {done['out']}/results.json"
        )
    return 0
