"""CPU latency of CenterMask-Lite V-19 at 600 px vs torchvision's Mask R-CNN R50-FPN.

Runs ``maskkit.bench.run_bench`` (the code behind ``maskkit bench``) and appends the result,
the exact command, the machine (``lscpu`` model name, cores/threads) and its load
(``uptime``) before and after to ``benchmarks/centermask_cpu_latency.md`` (one section per run).

    python benchmarks/centermask_latency.py [--model centermask_lite_v19] [--size 600] [--iters 10] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from maskkit.engine.bench import format_rows, run_bench

OUT = Path(__file__).resolve().parent / "centermask_cpu_latency.md"


def _sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="centermask_lite_v19")
    p.add_argument("--size", type=int, default=600)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = _sh("uptime")
    rows = run_bench(args.model, args.size, "maskrcnn_r50", args.iters, args.warmup, "cpu", 50, 80)
    load_after = _sh("uptime")
    cpu = _sh("lscpu | grep 'Model name' | sed 's/.*: *//'")
    topo = _sh("lscpu | grep -E '^CPU\\(s\\)|Thread\\(s\\) per core|Core\\(s\\) per socket' | tr -s ' '")
    table = format_rows(rows)
    cmd = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    text = f"""## {args.model} at {args.size} px, {torch.get_num_threads()} thread(s)

Measured {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} with

```
{cmd}
```

(equivalently `maskkit bench --model {args.model} --size {args.size} --vs maskrcnn_r50 --iters {args.iters}`).
Random weights, 80 classes, one {rows[0]["input"]} image, batch 1, eval mode, `torch.inference_mode`;
both models send exactly 50 detections through their mask branch (score thresholds 0, detection caps 50).
Latency = median of {args.iters} timed runs after {args.warmup} warm-up runs, the whole `model([image])`
call including resizing, decoding and pasting masks at image size.

```
{table}
```

Machine: {cpu}; {topo.replace(chr(10), "; ")}; torch {torch.__version__}, {torch.get_num_threads()} threads,
Python {platform.python_version()}.
Load (`uptime`) before: `{load_before}`; after: `{load_after}`.
The machine is shared with other jobs while this runs: treat the numbers as an upper bound
and re-run on a quiet machine for a clean measurement.
"""
    header = "# CenterMask CPU latency\n\nEach run of `benchmarks/centermask_latency.py` appends one section.\n\n"
    previous = args.out.read_text() if args.out.exists() else header
    args.out.write_text(previous.rstrip("\n") + "\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
