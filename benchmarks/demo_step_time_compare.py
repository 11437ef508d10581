"""Seconds per demo training step of a checkout, from a trained demo model (for comparing two
trees on the same machine in turn, e.g. before/after a change):

    PYTHONPATH=TREE python benchmarks/demo_step_time_compare.py RUN/data LABEL [KEY=VALUE ...]

RUN is a finished demo run (its data and model_last.safetensors are read); 10 steps at the demo's
batch 8 from that model, median of the last 8. KEY=VALUE overrides are applied to the config.
Works with trees before and after the engine redesign (load_datasets changed its signature).
"""

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from maskkit.config import apply_overrides
from maskkit.engine.demo import plan
from maskkit.engine.train import load_datasets
from maskkit.models.zoo import build_model, get_config


def main() -> None:
    data, label, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    overrides = [o for o in plan("centermask", False).overrides if not o.startswith("data.m") or "train" in o]
    cfg = get_config("centermask_lite_demo", None, overrides + extra)
    if list(inspect.signature(load_datasets).parameters)[0] == "args":  # the tree before the redesign
        train, _ = load_datasets(argparse.Namespace(data=data, ann=None, images=None), cfg)
    else:
        train, _ = load_datasets(cfg, data)
    cfg.model.num_classes = len(train.class_names)
    apply_overrides(cfg, extra)
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    model.load_state_dict(load_file(str(Path(data).parent / "model_last.safetensors")), strict=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for k in range(10):
        batch = [train[(k * 8 + i) % len(train)] for i in range(8)]
        images, targets = [b[0] for b in batch], [b[1] for b in batch]
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    print(label, "median s/step (last 8):", round(statistics.median(times[2:]), 3))


if __name__ == "__main__":
    main()
