"""Start training from a maskkit model file with another class count (``train.init_weights``).

The commonest workflow: take a converted official CenterMask model (80 COCO classes) or one
of your own runs, and fine-tune it on your classes. ``load_init_weights(model, path)`` copies
every tensor of the file whose name and shape fit the new model; the only tensors allowed not
to fit are the class-specific layers, which keep the initialisation the model was built with
(their constructors' normal init):

- ``fcos.cls_logits`` - FCOS class logits, ``[K, C, 3, 3]`` (normal std 0.01, bias at the
  focal-loss prior ``-log((1 - p) / p)``),
- ``mask_head.predictor`` - the class-specific mask predictor, ``[K, C, 1, 1]`` (normal std
  0.001, bias 0; class-agnostic heads have one channel and load),
- ``maskiou.predictor`` - the MaskIoU output layer, ``[K, fc_dim]`` (normal std 0.01, bias 0).

DeepMask / SharpMask are class-agnostic: everything loads; a DeepMask file (stage 1) may
start a SharpMask (stage 2), whose refinement modules then keep their initialisation. Any
other tensor that does not fit (another backbone, missing or unexpected names, another
system) is one :class:`CheckpointError` listing them: never a silent partial load. Settings
that change what the weights compute without changing a shape (VoVNet identity/attention,
ResNet stride placement, SharpMask padding) must agree with the file's, and the model takes
over the file's input convention (``input_format``, ``pixel_mean``, ``pixel_std``): a converted
official model keeps its BGR 0-255 input.
"""

from __future__ import annotations

import os

from torch import nn

from maskkit.checkpoint import read_model_file
from maskkit.errors import CheckpointError
from maskkit.models.zoo import spec_of, use_input_convention

__all__ = ["load_init_weights"]


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


def _check_and_adopt_settings(target: nn.Module, mf) -> None:
    """Refuse shape-invisible architecture differences (the system's ``shapeless_settings``: a
    stride-in-1x1 R-50 in a stride-in-3x3 trunk would load and silently compute something else);
    take over the file's input convention, as the weights were trained with it."""
    own_cfg = getattr(target, "cfg", None)
    if own_cfg is None:
        return
    diff = [
        f"{k}={_get(mf.config.model, k)!r} in the file vs {_get(own_cfg, k)!r}"
        for k in spec_of(mf.config.model).shapeless_settings
        if _get(mf.config.model, k) != _get(own_cfg, k)
    ]
    if diff:
        raise CheckpointError(
            f"{mf.path}: train.init_weights was trained with other settings: {'; '.join(diff)} "
            "(set them with --set model.<key>=<value>)"
        )
    use_input_convention(target, mf.input)
    if getattr(target, "info", None) is not None:
        target.info.input = mf.input


def _layer(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _listing(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def load_init_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Copy the maskkit model file ``path`` into ``model`` for fine-tuning; returns the
    class-specific layers that were left at their initialisation (empty when everything fit).

    ``model`` is a freshly built model (its ``cfg.system`` must be the file's system).
    BatchNorm ``num_batches_tracked`` counters are not weights and are not compared.
    """
    mf = read_model_file(path)
    system = mf.config.model.system
    target = getattr(model, "module", model)  # DDP wrapper
    own_system = getattr(getattr(target, "cfg", None), "system", system)
    if own_system != system:
        raise CheckpointError(f"{mf.path}: train.init_weights is a {system} model file, this run trains a {own_system}")
    _check_and_adopt_settings(target, mf)
    own = {k: v for k, v in target.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = {k: v for k, v in mf.state_dict.items() if not k.endswith("num_batches_tracked")}
    spec = spec_of(mf.config.model)
    class_layers = spec.class_layers
    # e.g. a DeepMask file (no refinement) may start a SharpMask: the refinement starts fresh
    fresh_ok = spec.optional_layers(mf.config.model)
    unexpected = sorted(k for k in theirs if k not in own)
    missing = sorted(k for k in own if k not in theirs and not k.startswith(fresh_ok))
    misfit = sorted(k for k in own if k in theirs and tuple(own[k].shape) != tuple(theirs[k].shape))
    reinit = sorted({_layer(k) for k in misfit if _layer(k) in class_layers})
    bad = [
        f"{k} {tuple(theirs[k].shape)} in file vs {tuple(own[k].shape)} in model"
        for k in misfit
        if _layer(k) not in class_layers
    ]
    if unexpected or missing or bad:
        parts = [
            f"{what}: {_listing(items)}"
            for what, items in (
                ("shape mismatch", bad),
                ("missing from the file", missing),
                ("not in the model", unexpected),
            )
            if items
        ]
        raise CheckpointError(
            f"{mf.path}: train.init_weights does not fit this model beyond its class-specific "
            f"layers ({', '.join(class_layers) or 'none'}): {'; '.join(parts)}"
        )
    load = {k: v for k, v in theirs.items() if _layer(k) not in reinit}
    result = target.load_state_dict(load, strict=False)
    left = [
        k
        for k in result.missing_keys
        if not k.endswith("num_batches_tracked") and _layer(k) not in reinit and not k.startswith(fresh_ok)
    ]
    if left or result.unexpected_keys:  # cannot happen after the checks above; never a silent gap
        raise CheckpointError(f"{mf.path}: internal mismatch while loading ({_listing(left + result.unexpected_keys)})")
    return reinit
