"""Proposal AR@10/100/1000 of DeepMask (stage 1) and SharpMask (stage 2) model files on a
synthetic val split, with ``top_n`` raised to 1000 (the demo trains and evaluates with 100).

    python benchmarks/sharpmask_synthetic_ar.py --data RUN/data \
        RUN/stage1/model_last.safetensors RUN/model_best.safetensors

Prints one markdown row per model file: segm and box AR@10/100/1000 and AUC (class-agnostic
COCOeval, the same ``evaluate_model`` path as ``maskkit eval``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskkit.checkpoint import load_model
from maskkit.data.coco import CocoDataset
from maskkit.engine.inference.evaluate import evaluate_model

KEYS = (
    "proposals/segm/AR@10",
    "proposals/segm/AR@100",
    "proposals/segm/AR@1000",
    "proposals/segm/AUC",
    "proposals/bbox/AR@10",
    "proposals/bbox/AR@100",
    "proposals/bbox/AR@1000",
    "proposals/bbox/AUC",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset root with annotations/instances_val.json and val/")
    ap.add_argument("--top-n", type=int, default=1000)
    ap.add_argument("weights", nargs="+")
    args = ap.parse_args()
    root = Path(args.data)
    ds = CocoDataset(root / "annotations" / "instances_val.json", root / "val")
    print("| model file | stage | " + " | ".join(k.replace("proposals/", "") for k in KEYS) + " | s/img |")
    print("|---|---|" + "---|" * (len(KEYS) + 1))
    for path in args.weights:
        model = load_model(path)
        model.cfg.top_n = args.top_n
        t0 = time.time()
        metrics = evaluate_model(model, ds, progress=False)  # max_dets (10, 100, 1000) without a cfg
        per_image = (time.time() - t0) / len(ds)
        stage = "SharpMask (refined)" if model.cfg.refine else "DeepMask"
        cells = [f"{100 * metrics[k]:.1f}" if k in metrics else "" for k in KEYS]
        print(f"| {path} | {stage} | " + " | ".join(cells) + f" | {per_image:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
