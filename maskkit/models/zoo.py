"""The systems' model records, the one flat name -> preset table, and model construction.

Each system (CenterMask, DeepMask/SharpMask) is one :class:`ModelSpec` record in :data:`SPECS`:
its config class, model class, presets, ImageNet weight loader and fine-tuning facts, so a
saved config finds its model again and nothing below the engine asks which system it builds
(the engine's per-system behaviour is :mod:`maskkit.engine.systems`, one record per system that
holds this one). A preset is a function returning a complete :class:`maskkit.config.Config`;
each system keeps its presets as one-line functions in ``models/<system>/presets.py``.
``build_model(cfg.model)`` builds the network for a model config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from maskkit.config import (
    Config,
    InputConvention,
    ModelInfo,
    apply_overrides,
    config_from_json,
    validate_config,
    validate_model_config,
)
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
    "ModelSpec",
    "SPECS",
    "spec_of",
    "use_input_convention",
    "input_convention_of",
    "MODEL_CONFIGS",
    "presets",
    "list_models",
    "preset_config",
    "get_config",
    "read_config",
    "build_model",
    "build",
    "create_model",
    "describe_preset",
]


@dataclass(frozen=True)
class ModelSpec:
    """One system's record at the model layer."""

    name: str  # the model config's ``system`` field
    config_class: type
    model_class: type
    presets: dict[str, Callable[[], Config]]
    # the ImageNet file a config names for the trunk (None: random init), and its loader: loads
    # the file into the model's trunk and returns a report with the weights' input convention
    pretrained: Callable[[Any], str | None]
    load_pretrained: Callable[[nn.Module, Any], Any]
    # fine-tuning (``train.init_weights``): layers whose shape follows the class count (left at
    # their initialisation when it differs), settings that change what the weights compute
    # without changing a shape (they must agree with the file's), and the layers a model file of
    # this config may lack (they start fresh: a DeepMask file starting a SharpMask)
    class_layers: tuple[str, ...]
    shapeless_settings: tuple[str, ...]
    optional_layers: Callable[[Any], tuple[str, ...]]
    gflops: Callable[[nn.Module, int, int], float] | None  # GFLOPs at an input size (None: not counted)


SPECS: dict[str, ModelSpec] = {
    "centermask": ModelSpec(
        name="centermask",
        config_class=CenterMaskConfig,
        model_class=CenterMask,
        presets=CENTERMASK_PRESETS,
        pretrained=lambda m: m.backbone.weights,
        load_pretrained=apply_backbone_weights,
        class_layers=("fcos.cls_logits", "mask_head.predictor", "maskiou.predictor"),
        shapeless_settings=("backbone.residual", "backbone.attention", "backbone.stride_in_1x1"),
        optional_layers=lambda file_cfg: (),
        gflops=centermask_gflops,
    ),
    "sharpmask": ModelSpec(
        name="sharpmask",
        config_class=SharpMaskConfig,
        model_class=SharpMask,
        presets=SHARPMASK_PRESETS,
        pretrained=lambda m: m.trunk_weights,
        load_pretrained=apply_trunk_weights,
        class_layers=(),  # class-agnostic proposals
        shapeless_settings=("padding",),
        optional_layers=lambda file_cfg: () if file_cfg.refine else ("refinement.",),
        gflops=None,
    ),
}

# ``model.system`` -> its config dataclass: how a saved config finds its model part again.
MODEL_CONFIGS: dict[str, type] = {name: spec.config_class for name, spec in SPECS.items()}


def spec_of(model_cfg) -> ModelSpec:
    """The record of a model config's system (``model_cfg.system``)."""
    if model_cfg.system not in SPECS:
        raise MaskkitError(f"unknown model system {model_cfg.system!r}; known: {', '.join(SPECS)}")
    return SPECS[model_cfg.system]


def presets() -> dict[str, Callable[[], Config]]:
    """All presets by name (every system)."""
    return {name: make for spec in SPECS.values() for name, make in spec.presets.items()}


def input_convention_of(model: nn.Module, model_cfg) -> InputConvention:
    """``model.input_convention`` (a maskkit model), else the config's (a module of the user's)."""
    return getattr(getattr(model, "module", model), "input_convention", None) or InputConvention.of(model_cfg)


def use_input_convention(model: nn.Module, convention: InputConvention) -> None:
    """Make ``model`` normalise its input as ``convention`` says (the weights it holds were
    trained so: an ImageNet trunk file, a fine-tuning start, a model file); its config is left
    as configured, the convention is recorded as ``model.input_convention`` (and so in
    ``model.info`` and the model file)."""
    model.input_convention = convention
    with torch.no_grad():
        model.pixel_mean.copy_(torch.tensor(convention.pixel_mean, dtype=torch.float32).view(3, 1, 1))
        model.pixel_std.copy_(torch.tensor(convention.pixel_std, dtype=torch.float32).view(3, 1, 1))


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` and ``maskkit train --model``."""
    return sorted(presets())


def preset_config(name: str) -> Config:
    """The config of preset ``name`` as its function writes it (named ``name``)."""
    table = presets()
    if name not in table:
        raise MaskkitError(f"unknown model {name!r}; known models: {', '.join(sorted(table))}")
    cfg = table[name]()
    cfg.name = name
    return cfg


def get_config(name: str, num_classes: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The full config of preset ``name`` with ``num_classes`` and ``--set``-style overrides applied."""
    cfg = preset_config(name)
    if num_classes is not None:
        if num_classes < 1:
            raise MaskkitError(f"num_classes must be >= 1, got {num_classes}")
        cfg.model.num_classes = int(num_classes)
    apply_overrides(cfg, list(overrides))
    validate_config(cfg)
    return cfg


def build_model(model_cfg, backbone_weights: bool = True) -> nn.Module:
    """Network for a model config (any system's, :data:`SPECS`).

    With an ImageNet file named for the trunk (``model.backbone.weights`` for CenterMask,
    ``model.trunk_weights`` for DeepMask/SharpMask) and ``backbone_weights``, the trunk starts
    from that file and the model uses the file's input convention (``model.input_convention``;
    the config is not changed). Pass ``backbone_weights=False`` when the whole state dict is
    loaded next (model files, resume): the ImageNet file is then not read. The config's
    choices and ranges are checked first (:func:`maskkit.config.validate_model_config`), also
    for a config changed in code.
    """
    validate_model_config(model_cfg)
    spec = spec_of(model_cfg)
    model = spec.model_class(model_cfg)
    if backbone_weights and spec.pretrained(model_cfg):
        use_input_convention(model, spec.load_pretrained(model, model_cfg).convention)
    return model


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
    model.info = ModelInfo(cfg, names, [int(c) for c in (cat_ids or range(1, len(names) + 1))], model.input_convention)
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
    gflops = spec_of(cfg.model).gflops
    if gflops is not None:
        h, w = bench_image_size(cfg.model.min_size_test, cfg.model.max_size_test)
        row["test_size"] = f"{h}x{w}"
        if flops:
            row["gflops"] = gflops(model, h, w)
    return row
