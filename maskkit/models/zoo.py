"""The one flat name -> preset table, and model construction.

A preset is a function returning a complete :class:`maskkit.config.Config`; each system keeps
its presets as one-line functions in ``models/<system>/presets.py`` (``PRESETS`` dict), and
this module merges them. ``build_model(cfg.model)`` builds the network for a model config.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from maskkit.config import Config, ModelInfo, apply_overrides, config_from_json, validate_config, validate_model_config
from maskkit.errors import MaskkitError
from maskkit.models.backbones.pretrained import apply_backbone_weights, apply_trunk_weights
from maskkit.models.centermask.config import CenterMaskConfig
from maskkit.models.centermask.model import CenterMask
from maskkit.models.centermask.presets import PRESETS as CENTERMASK_PRESETS
from maskkit.models.flops import bench_image_size, centermask_gflops
from maskkit.models.sharpmask.config import SharpMaskConfig
from maskkit.models.sharpmask.model import SharpMask
from maskkit.models.sharpmask.presets import PRESETS as SHARPMASK_PRESETS

__all__ = [
    "MODEL_CONFIGS",
    "presets",
    "list_models",
    "get_config",
    "read_config",
    "build_model",
    "build",
    "create_model",
    "describe_preset",
]

# ``model.system`` -> its config dataclass: how a saved config finds its model part again.
MODEL_CONFIGS: dict[str, type] = {"centermask": CenterMaskConfig, "sharpmask": SharpMaskConfig}


def presets() -> dict[str, Callable[[], Config]]:
    """All presets by name (both systems)."""
    return {**CENTERMASK_PRESETS, **SHARPMASK_PRESETS}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` and ``maskkit train --model``."""
    return sorted(presets())


def get_config(name: str, num_classes: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The full config of preset ``name`` with ``num_classes`` and ``--set``-style overrides applied."""
    table = presets()
    if name not in table:
        raise MaskkitError(f"unknown model {name!r}; known models: {', '.join(sorted(table))}")
    cfg = table[name]()
    cfg.name = name
    if num_classes is not None:
        if num_classes < 1:
            raise MaskkitError(f"num_classes must be >= 1, got {num_classes}")
        cfg.model.num_classes = int(num_classes)
    apply_overrides(cfg, list(overrides))
    validate_config(cfg)
    return cfg


def build_model(model_cfg, backbone_weights: bool = True) -> nn.Module:
    """Network for a model config (``CenterMaskConfig`` or ``SharpMaskConfig``).

    With ``model.backbone.weights`` (CenterMask) or ``model.trunk_weights`` (DeepMask/SharpMask)
    set, and ``backbone_weights``, the trunk starts from that ImageNet file and ``model_cfg``'s
    input normalisation becomes the file's own (``maskkit.models.backbones.pretrained``).
    Pass ``backbone_weights=False`` when the whole state dict is loaded next (model files,
    resume): the ImageNet file is then not read. The config's choices and ranges are checked
    first (:func:`maskkit.config.validate_model_config`), also for a config changed in code.
    """
    validate_model_config(model_cfg)
    if model_cfg.system == "centermask":
        model = CenterMask(model_cfg)
        if backbone_weights and model_cfg.backbone.weights:
            apply_backbone_weights(model, model_cfg)
        return model
    if model_cfg.system == "sharpmask":
        model = SharpMask(model_cfg)
        if backbone_weights and model_cfg.trunk_weights:
            apply_trunk_weights(model, model_cfg)
        return model
    raise MaskkitError(f"unknown model system {model_cfg.system!r}")


def read_config(text: str) -> Config:
    """A saved config (JSON, as in model files) back to a :class:`Config`."""
    cfg = config_from_json(text, MODEL_CONFIGS)
    validate_model_config(cfg.model)  # before a head of 1e9 classes is built from a model file
    return cfg


def build(
    cfg: Config, class_names: list[str] | None = None, cat_ids: list[int] | None = None, backbone_weights: bool = True
) -> nn.Module:
    """The network for a full config, carrying ``model.info`` (:class:`maskkit.config.ModelInfo`:
    the config and the label mapping); randomly initialised except for an ImageNet trunk named
    in the config (see :func:`build_model`)."""
    model = build_model(cfg.model, backbone_weights)
    names = list(class_names or [])
    model.info = ModelInfo(cfg, names, [int(c) for c in (cat_ids or range(1, len(names) + 1))])
    return model


def create_model(name: str, num_classes: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> nn.Module:
    """Build preset ``name`` (randomly initialised; no weights are downloaded).

    ``num_classes`` sets K (labels 1..K); ``overrides`` are ``model.x=y`` strings. The
    returned module keeps its model config as ``model.cfg`` and the full config as
    ``model.info.config``.
    """
    return build(get_config(name, num_classes, overrides))


def describe_preset(name: str, num_classes: int | None = None, flops: bool = True) -> dict:
    """Parameters (and CenterMask GFLOPs at the preset's test size) of preset ``name``. The
    model is built on the ``meta`` device: shapes only, so even the largest preset is instant."""
    cfg = get_config(name, num_classes)
    with torch.device("meta"):
        model = build_model(cfg.model)
    row = {
        "name": name,
        "system": cfg.model.system,
        "params": sum(p.numel() for p in model.parameters()),
        "test_size": "",
        "gflops": None,
    }
    if cfg.model.system == "centermask":
        h, w = bench_image_size(cfg.model.min_size_test, cfg.model.max_size_test)
        row["test_size"] = f"{h}x{w}"
        if flops:
            row["gflops"] = centermask_gflops(model, h, w)
    return row
