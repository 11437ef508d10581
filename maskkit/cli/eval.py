"""Score a model or a results file with the official COCO protocol.

    maskkit eval --weights run/model_best.safetensors --data DIR   # run the model, then score it
    maskkit eval --predictions results.json --data DIR            # score a COCO results JSON

CenterMask models: box and mask AP; SharpMask models (or ``--proposals``): class-agnostic AR@k.
Writes ``metrics.json`` (and ``results.json`` with ``--weights``) to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskkit.cli.common import add_data_arguments, add_device_argument
from maskkit.data.coco import resolve_data
from maskkit.engine.inference.evaluate import evaluate_file
from maskkit.errors import MaskkitError
from maskkit.evaluation import (
    IOU_TYPES,
    evaluate_coco,
    evaluate_proposals,
    format_table,
    load_coco_gt,
    load_results,
    write_metrics,
)


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
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="with --weights: images per forward pass (default: the model's eval.batch_size)",
    )


def _parse_iou_types(text: str | None, results: list[dict]) -> list[str]:
    if text is None:
        types = []
        for t, key in (("bbox", "bbox"), ("segm", "segmentation")):
            have = [isinstance(r, dict) and key in r for r in results]
            if any(have) and not all(have):  # one result without a mask would silently drop mask AP
                raise MaskkitError(
                    f"result {have.index(False)} has no '{key}' while others have one: every result "
                    f"needs it for {t} AP (or choose the IoU types with --iou-types)"
                )
            if have and all(have):
                types.append(t)
        return types or ["bbox"]
    types = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in types if t not in IOU_TYPES]
    if bad or not types:
        raise MaskkitError(f"--iou-types: expected a comma-separated subset of bbox,segm, got {text!r}")
    return types


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
        )
        out = Path(args.out)
        print(format_table(metrics))
        print(f"wrote {out / 'metrics.json'} and {out / 'results.json'}")
        return 0
    ann_file, _ = resolve_data(args.data, args.split, args.ann, args.images)
    coco_gt = load_coco_gt(ann_file)
    results = load_results(args.predictions)
    types = _parse_iou_types(args.iou_types, results)
    source = str(args.predictions)
    print(
        f"scoring {len(results)} results from {source} against {ann_file} ({len(coco_gt.imgs)} images)", file=sys.stderr
    )
    if args.proposals:
        try:
            max_dets = [int(k) for k in args.max_dets.split(",") if k.strip()]
        except ValueError:
            raise MaskkitError(f"--max-dets: expected comma-separated integers, got {args.max_dets!r}") from None
        metrics = evaluate_proposals(coco_gt, results, max_dets=max_dets, iou_types=types, source=source)
    else:
        metrics = evaluate_coco(coco_gt, results, iou_types=types, source=source)
    print(format_table(metrics))
    print(f"wrote {write_metrics(metrics, args.out)}")
    return 0
