"""Seconds per demo training step of a checkout, from a trained demo model (for comparing two
trees on the same machine in turn, e.g. before/after a change):

    PYTHONPATH=TREE python benchmarks/demo_step_time_compare.py RUN/data LABEL [KEY=VALUE ...]

RUN is a finished demo run (its data and model_last.safetensors are read); 10 steps at the demo's
batch 8, median of the last 8. Overrides after LABEL are applied to the config.
"""

import statistics
import sys
import time

import torch

from maskkit.models.zoo import get_config

data = sys.argv[1]
try:
    from maskkit.engine.demo import plan
    from maskkit.engine.train import load_datasets

    ov = list(plan("centermask", False).overrides)
    cfg = get_config(
        "centermask_lite_demo", None, [o for o in ov if "data.min_size_test" not in o and "data.max_size_test" not in o]
    )
    import argparse
    import inspect

    if list(inspect.signature(load_datasets).parameters)[0] == "args":
        train, _ = load_datasets(argparse.Namespace(data=data, ann=None, images=None), cfg)
    else:
        train, _ = load_datasets(cfg, data)
except Exception:
    raise
from maskkit.models.zoo import build_model

cfg.model.num_classes = len(train.class_names)
torch.manual_seed(0)
model = build_model(cfg.model).train()
from safetensors.torch import load_file

sd = load_file(str(__import__("pathlib").Path(data).parent / "model_last.safetensors"))
missing = model.load_state_dict(sd, strict=False)
extra = sys.argv[3:]
if extra:
    from maskkit.config import apply_overrides

    apply_overrides(cfg, extra)
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
print(sys.argv[2], "median s/step (last 8):", round(statistics.median(times[2:]), 3))
