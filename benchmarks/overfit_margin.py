"""Margin of the CenterMask overfit test (tests/models/test_centermask_model.py) across model seeds,
thread counts and torch versions (issue #14 item 11).

The test failed on another machine (AMD EPYC, torch 2.14.1: one GT at mask IoU 0.68 < 0.8) although
it passed here: a 140-step run from scratch is a chaotic trajectory, and float reduction order (CPU
kind, thread count, torch version) moves it like a different seed does. This script runs the test's
own recipe for several seeds and thread counts and prints, per run, the worst GT mask IoU among the
best-scored masks, the loss ratios the test asserts and the wall time, as one JSON line each.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/overfit_margin.py --seeds 0 1 2 3 --threads 1 2 \
        --steps 140 >> benchmarks/overfit_margin.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import platform
import time

import torch
import torchvision

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _test_module():
    spec = importlib.util.spec_from_file_location("tcm", ROOT / "tests/models/test_centermask_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--steps", type=int, default=None, help="default: the test's OVERFIT_STEPS")
    ap.add_argument("--warmup", type=int, default=None, help="linear warmup steps (default: the test's OVERFIT_WARMUP)")
    args = ap.parse_args()
    tcm = _test_module()
    for threads in args.threads:
        for seed in args.seeds:
            torch.set_num_threads(threads)
            start = time.time()
            r = tcm.overfit_run(
                seed=seed, steps=args.steps, warmup=tcm.OVERFIT_WARMUP if args.warmup is None else args.warmup
            )
            print(
                json.dumps(
                    {
                        "torch": torch.__version__,
                        "torchvision": torchvision.__version__,
                        "cpu": platform.processor() or platform.machine(),
                        "threads": threads,
                        "seed": seed,
                        "steps": r["steps"],
                        "warmup": r["warmup"],
                        "min_mask_iou": round(r["min_mask_iou"], 4),
                        "min_box_iou": round(r["min_box_iou"], 4),
                        "labels_ok": r["labels_ok"],
                        "ratios": {k: round(v, 4) for k, v in r["ratios"].items()},
                        "seconds": round(time.time() - start, 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
