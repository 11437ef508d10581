"""Seconds per training step (forward + backward + AdamW) of the CenterMask demo recipe.

    python benchmarks/demo_step_time.py --data RUN/data --batch 2 4 8 16 [--set KEY=VALUE ...]
    PYTHONPATH=TREE python benchmarks/demo_step_time.py --data RUN/data --init RUN/model_last.safetensors \\
        --steps 10 --warmup 2       # a trained model, for comparing two checkouts in turn

``RUN/data`` is a demo run's synthetic dataset (``maskkit demo --out RUN``). The model, data
sizes and transforms are the demo's (``maskkit/engine/demo.py``); ``--set`` adds overrides.
Each batch size runs ``--steps`` steps (default 25) from a fresh model (or from ``--init``, a
model file) on the same images; the median after ``--warmup`` steps (default 5) is printed,
with the time per image. Runs against trees before the engine redesign too (their
``load_datasets`` took an argparse namespace).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import torch
from safetensors.torch import load_file

from maskkit.engine.demo import plan
from maskkit.engine.training import load_datasets
from maskkit.models.zoo import build_model, get_config


def _datasets(cfg, data: str):
    if list(inspect.signature(load_datasets).parameters)[0] == "args":  # a tree before the redesign
        return load_datasets(argparse.Namespace(data=data, ann=None, images=None), cfg)
    return load_datasets(cfg, data)


def step_time(
    data: str, batch: int, overrides: list[str], steps: int = 25, warmup: int = 5, init: str | None = None
) -> float:
    cfg = get_config(
        "centermask_lite_demo",
        None,
        list(plan("centermask", False).overrides) + overrides + [f"train.batch_size={batch}"],
    )
    train, _ = _datasets(cfg, data)
    cfg.model.num_classes = len(train.class_names)
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    if init:
        model.load_state_dict(load_file(init), strict=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for k in range(steps):
        samples = [train[(k * batch + i) % len(train)] for i in range(batch)]
        images, targets = [s[0] for s in samples], [s[1] for s in samples]
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[warmup:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--init", default=None, help="model file to start from (e.g. RUN/model_last.safetensors)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    print(f"{torch.get_num_threads()} threads")
    print("| batch | s / step | s / image |")
    print("|---|---|---|")
    for b in args.batch:
        t = step_time(args.data, b, args.overrides, args.steps, args.warmup, args.init)
        print(f"| {b} | {t:.3f} | {t / b:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
