"""Seconds per training step (forward + backward + AdamW) of the CenterMask demo recipe.

    python benchmarks/demo_step_time.py --data RUN/data --batch 2 4 8 16 [--set KEY=VALUE ...]

``RUN/data`` is a demo run's synthetic dataset (``maskkit demo --out RUN``). The model, data
sizes and transforms are the demo's (``maskkit/engine/demo.py``); ``--set`` adds overrides.
Each batch size runs 25 steps from a fresh model on the same images; the median of the last 20
is printed, with the time per image.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from maskkit.engine.demo import plan
from maskkit.engine.loader import collate_pairs
from maskkit.engine.train import load_datasets
from maskkit.models.zoo import build_model, get_config


def step_time(data: str, batch: int, overrides: list[str], steps: int = 25) -> float:
    cfg = get_config(
        "centermask_lite_demo",
        None,
        list(plan("centermask", False).overrides) + overrides + [f"train.batch_size={batch}"],
    )
    train, _ = load_datasets(cfg, data)
    cfg.model.num_classes = len(train.class_names)
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for k in range(steps):
        images, targets = collate_pairs([train[(k * batch + i) % len(train)] for i in range(batch)])
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[5:])  # the first 5 steps warm up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    print(f"{torch.get_num_threads()} threads")
    print("| batch | s / step | s / image |")
    print("|---|---|---|")
    for b in args.batch:
        t = step_time(args.data, b, args.overrides)
        print(f"| {b} | {t:.3f} | {t / b:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
