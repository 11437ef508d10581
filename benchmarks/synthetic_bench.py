"""Run the synthetic-shapes protocol (benchmarks/synthetic_protocol.md) and print its table.

    python benchmarks/synthetic_bench.py [--out runs/bench] [--only demo,sharpmask,lite_v19]

Each entry is one CLI command on the demo's synthetic dataset; its metrics.json, wall time and
process CPU time are collected into <out>/results.json and printed as a markdown table.
Nothing is downloaded; every model trains from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def entries(out: Path) -> dict[str, list[str]]:
    data = out / "demo" / "data"  # written by the demo entry (600 train / 50 val, 192 px, seed 0)
    return {
        "demo": ["demo", "--out", str(out / "demo"), "--no-progress"],
        "sharpmask": ["demo", "--system", "sharpmask", "--out", str(out / "sharpmask"), "--no-progress"],
        # CenterMask-Lite V-19 from scratch: no ImageNet weights offline, so trainable BN instead of
        # FrozenBN; the demo's image sizes and optimiser (AdamW 3e-3, cosine), 400 steps (recorded run).
        "lite_v19": [
            "train",
            "--model",
            "centermask_lite_v19",
            "--data",
            str(data),
            "--out",
            str(out / "lite_v19"),
            "--no-progress",
            "--batch",
            "8",
            "--iters",
            "400",
            "--set",
            "model.backbone.norm=BN",
            "--set",
            "model.backbone.freeze_at=0",
            "--set",
            "data.min_size_train=[160,176,192,208]",
            "--set",
            "data.max_size_train=256",
            "--set",
            "data.min_size_test=192",
            "--set",
            "data.max_size_test=256",
            "--set",
            "model.min_size_test=192",
            "--set",
            "model.max_size_test=256",
            "--set",
            "train.optimizer=adamw",
            "--set",
            "train.lr=0.003",
            "--set",
            "train.clip_grad_norm=10",
            "--set",
            "train.warmup_iters=50",
            "--set",
            "train.schedule=cosine",
            "--set",
            "train.eval_period=0",
            "--set",
            "data.num_workers=0",
        ],
    }


KEYS = (
    "bbox/AP",
    "bbox/AP50",
    "segm/AP",
    "segm/AP50",
    "segm/APs",
    "segm/APm",
    "segm/APl",
    "proposals/segm/AR@10",
    "proposals/segm/AR@100",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--only", default="demo,sharpmask,lite_v19")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = entries(out)
    record = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        },
        "runs": {},
    }
    for name in args.only.split(","):
        cmd = [sys.executable, "-m", "maskkit", *table[name]]
        print("$", " ".join(cmd[2:]), flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        run_dir = Path(table[name][table[name].index("--out") + 1])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        record["runs"][name] = {
            "command": "maskkit " + " ".join(table[name]),
            "wall_s": round(time.time() - t0, 1),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "metrics": {k: metrics.get(k) for k in KEYS if k in metrics},
        }
        (out / "results.json").write_text(json.dumps(record, indent=2))
    print("| run | wall (min) | CPU (min) | " + " | ".join(KEYS) + " |")
    print("|---|---|---|" + "---|" * len(KEYS))
    for name, r in record["runs"].items():
        cells = [f"{100 * r['metrics'][k]:.1f}" if r["metrics"].get(k) is not None else "" for k in KEYS]
        print(f"| {name} | {r['wall_s'] / 60:.1f} | {r['cpu_s'] / 60:.1f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
