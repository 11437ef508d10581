"""Train a model preset on a COCO-format dataset (one process, or many with torchrun).

maskkit train --model centermask_lite_v19 --data DIR [--out RUN] [--resume] [--set k=v ...]
torchrun --nproc_per_node=N -m maskkit train --model ... --data DIR
"""

from __future__ import annotations

import argparse
import sys

from maskkit.cli.common import add_device_argument, add_set_argument
from maskkit.engine.training import train
from maskkit.engine.training.signals import exit_code
from maskkit.evaluation import format_table


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a model preset on a COCO-format dataset. Defaults follow each paper (see "
        "`maskkit models`); --set train.x=y changes any setting.\n\n"
        "Batch and learning rate: train.batch_size is the GLOBAL batch (images, or windows for "
        "SharpMask, per optimiser step, summed over processes and accumulation steps). "
        "--batch N applies the linear scaling rule lr = base_lr x N / base_batch (base_* = the "
        "preset's values) unless train.lr is set explicitly.\n\n"
        "Distributed: torchrun --nproc_per_node=N -m maskkit train ... (NCCL on GPUs, Gloo on CPUs)."
    )
    parser.add_argument("--model", required=True, help="preset name (see `maskkit models`)")
    parser.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="COCO-style root with annotations/instances_<split>*.json and image folders; the "
        "splits are data.train_split / data.val_split (default train / val)",
    )
    parser.add_argument(
        "--ann",
        metavar="FILE",
        default=None,
        help="explicit training instances JSON (with --images; no periodic evaluation)",
    )
    parser.add_argument("--images", metavar="DIR", default=None, help="image folder for --ann")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<model>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint of <out> (model_last.safetensors + state_last.pt)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out folder that holds another run, deleting its model files, "
        "training state and metrics (without it, such a folder is refused)",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--batch", type=int, default=None, help="global batch; scales train.lr linearly unless train.lr is --set"
    )
    parser.add_argument("--iters", type=int, default=None, help="shortcut for --set train.max_iter=N")
    parser.add_argument("--workers", type=int, default=None, help="data-loading workers per process")
    add_set_argument(parser, "config override, repeatable (e.g. --set train.lr=0.005 --set train.amp=bf16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    summary = train(
        args.model,
        data=args.data,
        ann=args.ann,
        images=args.images,
        out=args.out,
        resume=args.resume,
        device=args.device,
        overrides=args.overrides,
        batch=args.batch,
        iters=args.iters,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    if summary["signal"] is not None:
        if summary["main"]:
            print(
                f"\nmaskkit: stopped by signal {summary['signal']} at step {summary['step']}; checkpoint saved to "
                f"{summary['model_last']} (continue with --resume)",
                file=sys.stderr,
            )
        return exit_code(summary["signal"])
    if summary["main"]:
        if summary["last_eval"]:
            print(format_table(summary["last_eval"]))
        print(
            f"maskkit: model files in {summary['out']} (model_last.safetensors"
            + (", model_best.safetensors" if summary["best"] else "")
            + ")"
        )
    return 0
