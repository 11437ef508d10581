"""The embedded default: synthesise data, train a small model, evaluate it, draw the results.

    maskkit demo                       # CenterMask-Lite (demo recipe) on synthetic shapes, ~10 min on 2 CPU cores
    maskkit demo --system sharpmask    # DeepMask stage 1 + SharpMask refinement stage 2, proposals AR
    maskkit demo --quick               # a one-minute smoke run (tiny data, few steps; numbers meaningless)

Everything happens offline in the run folder (``--out``, default ``runs/demo``)::

    data/                      the synthetic COCO-format dataset (train + val splits)
    model_best.safetensors     the trained model (use it with `maskkit eval/predict/export`)
    metrics.json               the final evaluation, same keys as `maskkit eval` (bbox/segm AP, or proposal AR)
    results.json               COCO results of that evaluation on the validation split
    metrics.jsonl, curves.png  training curves (losses, learning rate, AP/AR)
    overlays/*.png             predictions drawn on validation images
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskkit.cli.common import add_device_argument, add_set_argument
from maskkit.engine.demo import run_demo
from maskkit.engine.distributed import resolve_device
from maskkit.evaluation import format_table


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (default: %(default)s)")
    parser.add_argument(
        "--system",
        default="centermask",
        choices=["centermask", "sharpmask"],
        help="centermask (instance segmentation, COCO AP) or sharpmask (proposals, AR@k)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny smoke run (under a minute; numbers are meaningless)"
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help="training steps (default: 1500 for centermask, fewer if its 8.5-minute training budget "
        "runs out first (train.time_budget_min); up to 2000 + 600 for sharpmask's two stages, in "
        "that proportion, within 5.9 + 2.5-minute budgets); the cosine schedule stretches to fit",
    )
    add_device_argument(parser, default="cpu")
    add_set_argument(parser, "extra config override on top of the demo's (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    done = run_demo(
        args.out,
        args.system,
        args.quick,
        str(resolve_device(args.device)),
        args.iters,
        args.overrides,
        not args.no_progress,
    )
    out = Path(done["out"])
    if done.get("interrupted"):
        print(
            f"maskkit: demo stopped by signal {done['interrupted']} at step {done['step']} after "
            f"{done['seconds'] / 60:.1f} min; the last checkpoint is {done['model']}",
            file=sys.stderr,
        )
        return 128 + int(done["interrupted"])  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    print(format_table(done["metrics"]))
    print(
        f"\ndemo finished in {done['seconds'] / 60:.1f} min. Run folder: {out}\n"
        f"  model:    {out / 'model_best.safetensors'}\n"
        f"  metrics:  {out / 'metrics.json'}\n"
        f"  curves:   {out / 'curves.png'}\n"
        f"  overlays: {out / 'overlays'} ({len(done['overlays'])} images)\n"
        f"next: maskkit predict --weights {out / 'model_best.safetensors'} {Path(done['data']) / 'val'} "
        f"--out {out / 'predict'}"
    )
    return 0
