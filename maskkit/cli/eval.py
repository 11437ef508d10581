"""Score a model or a results file with the official COCO protocol.

    maskkit eval --weights run/model_best.safetensors --data DIR   # run the model, then score it
    maskkit eval --predictions results.json --data DIR            # score a COCO results JSON

CenterMask models: box and mask AP; SharpMask models (or ``--proposals``): class-agnostic AR@k.
Writes ``metrics.json`` (and ``results.json`` with ``--weights``) to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maskkit.cli.common import add_data_arguments, add_device_argument, add_precision_arguments
from maskkit.engine.inference.evaluate import evaluate_file, evaluate_results_file
from maskkit.errors import MaskkitError
from maskkit.evaluation import format_table


def configure_parser(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", metavar="FILE", help="COCO results JSON to score (no model needed)")
    src.add_argument("--weights", metavar="FILE", help="model file: run it on the split, then score it")
    add_data_arguments(parser, split_default="val")
    parser.add_argument(
        "--out", default="runs/eval", metavar="DIR", help="folder for metrics.json (default: %(default)s)"
    )
    parser.add_argument(
        "--iou-types",
        default=None,
        metavar="TYPES",
        help="with --predictions: comma-separated subset of bbox,segm (default: every type the results carry)",
    )
    parser.add_argument(
        "--proposals",
        action="store_true",
        help="with --predictions: class-agnostic proposal recall (AR@k, AUC; COCOeval useCats=0) "
        "instead of AP (with --weights a SharpMask model is always scored this way)",
    )
    parser.add_argument(
        "--max-dets",
        default="10,100,1000",
        metavar="K,K,K",
        help="proposal counts for AR with --proposals (default: %(default)s)",
    )
    add_device_argument(parser, help_prefix="with --weights: ")
    add_precision_arguments(
        parser, "With --weights; default: the file's own (float32, so the AP is the model's; int8 for an INT8 file)."
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="with --weights: images per forward pass (default: the model's eval.batch_size)",
    )


def run(args: argparse.Namespace) -> int:
    if args.weights:
        metrics = evaluate_file(
            args.weights,
            args.out,
            data=args.data,
            split=args.split,
            ann=args.ann,
            images=args.images,
            device=args.device,
            batch_size=args.batch,
            precision=args.precision,
            runtime=args.runtime,
        )
        out = Path(args.out)
        print(format_table(metrics))
        print(f"wrote {out / 'metrics.json'} and {out / 'results.json'}")
        return 0
    max_dets = (10, 100, 1000)
    if args.proposals:
        try:
            max_dets = tuple(int(k) for k in args.max_dets.split(",") if k.strip())
        except ValueError:
            raise MaskkitError(f"--max-dets: expected comma-separated integers, got {args.max_dets!r}") from None
    metrics = evaluate_results_file(
        args.predictions,
        args.out,
        data=args.data,
        split=args.split,
        ann=args.ann,
        images=args.images,
        iou_types=args.iou_types,
        proposals=args.proposals,
        max_dets=max_dets,
    )
    print(format_table(metrics))
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0
