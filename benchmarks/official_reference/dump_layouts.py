"""Phase 1: the official state-dict layout of every centermask2 model-zoo configuration.

Builds each model with detectron2's ``build_model`` from the official yaml (CPU, no weights
loaded) and writes ``tests/convert/reference/layouts/<config_name>.json`` holding:

- ``tensors``: every state-dict key -> shape (in ``state_dict()`` order),
- ``dtypes``: key -> dtype for the keys that are not float32 (empty when all are),
- ``buffers``: the keys that are buffers (FrozenBN statistics/affine, BN running stats),
- ``num_parameters``: sum of ``numel`` over ``model.parameters()`` (buffers excluded),
  ``num_trainable``: the same over parameters with ``requires_grad`` (after FREEZE_AT),
- ``norm_modules``: module name -> class name for every normalisation layer,
- ``config``: the config facts a converter needs (PIXEL_MEAN/STD, INPUT, FCOS, heads, ...),
- ``checkpoint_extra_keys``: keys that released checkpoints may hold beyond ``tensors``
  (``pixel_mean``/``pixel_std`` were persistent buffers in detectron2 before 2021-02-25,
  commit 3c0509e6, i.e. in every 2020 centermask2 release),
- ``source``: the commits of detectron2 and centermask2 used.

Usage: see README.md in this folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import official_env as oe  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

OUT = HERE.parents[1] / "tests" / "convert" / "reference" / "layouts"

CFG_FACTS = {
    "MODEL": [
        "PIXEL_MEAN",
        "PIXEL_STD",
        "MASK_ON",
        "MASKIOU_ON",
        "MASKIOU_LOSS_WEIGHT",
        "BACKBONE",
        "FPN",
        "FCOS",
        "VOVNET",
        "RESNETS",
        "MOBILENET",
        "ROI_HEADS",
        "ROI_MASK_HEAD",
        "ROI_MASKIOU_HEAD",
        "PROPOSAL_GENERATOR",
        "META_ARCHITECTURE",
    ],
    "INPUT": [
        "FORMAT",
        "MIN_SIZE_TEST",
        "MAX_SIZE_TEST",
        "MIN_SIZE_TRAIN",
        "MAX_SIZE_TRAIN",
        "MIN_SIZE_TRAIN_SAMPLING",
        "MASK_FORMAT",
        "RANDOM_FLIP",
    ],
    "TEST": ["DETECTIONS_PER_IMAGE"],
    "DATALOADER": ["FILTER_EMPTY_ANNOTATIONS"],
    "SOLVER": [
        "BASE_LR",
        "WEIGHT_DECAY",
        "WEIGHT_DECAY_NORM",
        "WEIGHT_DECAY_BIAS",
        "BIAS_LR_FACTOR",
        "MOMENTUM",
        "STEPS",
        "MAX_ITER",
        "IMS_PER_BATCH",
        "WARMUP_ITERS",
        "WARMUP_FACTOR",
    ],
}
NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm, nn.LayerNorm)


def _plain(node):
    """CfgNode -> plain JSON types (tuples -> lists)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def config_facts(cfg) -> dict:
    out = {}
    for section, keys in CFG_FACTS.items():
        out[section] = {k: _plain(cfg[section][k]) for k in keys if k in cfg[section]}
    return out


def layout(config_name: str) -> dict:
    cfg, model = oe.build_official(config_name)
    sd = model.state_dict()
    buffer_names = {n for n, _ in model.named_buffers()}
    norm_modules = {
        name: type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, NORM_TYPES) or "BatchNorm" in type(m).__name__
    }
    return {
        "config_name": config_name,
        "zoo_name": oe.ZOO[config_name],
        "source": oe.repo_commits(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "num_tensors": len(sd),
        "tensors": {k: list(v.shape) for k, v in sd.items()},
        "dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in sd.items() if v.dtype != torch.float32},
        "buffers": [k for k in sd if k in buffer_names],
        "norm_modules": norm_modules,
        "checkpoint_extra_keys": {"pixel_mean": [3, 1, 1], "pixel_std": [3, 1, 1]},
        "config": config_facts(cfg),
    }


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or list(oe.ZOO):
        lay = layout(name)
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(lay, separators=(",", ":")) + "\n")
        print(
            f"{name}: {lay['num_tensors']} tensors, {lay['num_parameters']} parameters "
            f"({lay['num_trainable']} trainable), {len(lay['buffers'])} buffers -> {path.name}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
