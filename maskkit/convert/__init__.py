"""Loading the authors' published weights (``maskkit convert``): safe readers and per-source
name mappings. See README "Pretrained weights".

``convert_file(src, out, model=None)`` writes a normal maskkit model file (safetensors with the
config, class names and category ids embedded) from

- a centermask2 / detectron2 checkpoint (``.pth`` with a ``model`` state dict, or ``.pkl`` of
  numpy arrays): :mod:`maskkit.convert.centermask2`, COCO's 80 classes;
- an official DeepMask / SharpMask Torch7 file (``.t7``): :mod:`maskkit.convert.torch7`;
- an ImageNet backbone file (torchvision, timm, centermask2's VoVNet/MobileNetV2, detectron2's
  ResNets; needs ``model=PRESET``): :mod:`maskkit.models.backbones.pretrained` loads it into
  the preset's trunk, strictly; the heads stay randomly initialised. The file written is a
  starting point for ``train.init_weights`` and the way to inspect what the file holds.

``convert_source`` does the same without writing, returning the model and what was done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from maskkit.checkpoint import save_model
from maskkit.convert.centermask2 import convert_state_dict, is_centermask2_state_dict
from maskkit.convert.torch7 import convert_torch7
from maskkit.data.coco_classes import COCO_CAT_IDS, COCO_CLASSES
from maskkit.errors import CheckpointError
from maskkit.models.backbones.pretrained import load_backbone_weights
from maskkit.models.centermask.config import CenterMaskConfig
from maskkit.models.zoo import build, get_config, use_input_convention
from maskkit.safe_load import read_state_dict

__all__ = ["Converted", "convert_source", "convert_file"]


@dataclass
class Converted:
    """A converted model with its config and label mapping, and one line per fact worth telling."""

    model: nn.Module
    config: object  # maskkit.config.Config
    class_names: list[str]
    cat_ids: list[int]
    notes: list[str] = field(default_factory=list)

    def save(self, out: str | os.PathLike) -> Path:
        """Write the maskkit model file (atomically); returns its path."""
        return save_model(out, self.model, self.config, self.class_names, self.cat_ids)


def _centermask2(path: Path, sd: dict, preset: str | None) -> Converted:
    cfg, state = convert_state_dict(sd, preset, str(path))
    model = build(cfg, list(COCO_CLASSES), list(COCO_CAT_IDS))
    model.load_state_dict(state, strict=True)  # convert_state_dict checked every name and shape
    m = cfg.model
    notes = [
        f"centermask2 checkpoint -> {cfg.name}: {len(state)} tensors, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters",
        f"input {m.input_format}, mean {list(m.pixel_mean)}, std {list(m.pixel_std)}; "
        f"post-processing {m.postprocess!r}, score threshold {m.fcos.score_thresh}; COCO's 80 classes",
    ]
    return Converted(model.eval(), cfg, list(COCO_CLASSES), list(COCO_CAT_IDS), notes)


def _torch7(path: Path, preset: str | None) -> Converted:
    model = convert_torch7(path, preset)
    cfg = model.info.config
    return Converted(
        model,
        cfg,
        list(model.info.class_names),
        list(model.info.cat_ids),
        [
            f"Torch7 model -> {cfg.name or cfg.model.system}: "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
        ],
    )


def _backbone(path: Path, preset: str | None) -> Converted:
    if not preset:
        raise CheckpointError(
            f"{path}: neither a centermask2 checkpoint nor a Torch7 model; if it is an ImageNet "
            "backbone file, name the preset to load it into with --model PRESET"
        )
    cfg = get_config(preset)
    if not isinstance(cfg.model, CenterMaskConfig):
        raise CheckpointError(f"{path}: ImageNet backbone files load into CenterMask presets, not {preset}")
    model = build(cfg, list(COCO_CLASSES), list(COCO_CAT_IDS))
    bb = cfg.model.backbone
    report = load_backbone_weights(model.backbone, path, "mobilenet_v2" if bb.name == "mobilenet_v2" else bb.variant)
    use_input_convention(model, report.convention)
    model.info.input = c = report.convention
    notes = [
        f"{report.source} -> backbone of {preset}: {report.loaded} tensors loaded; FPN and heads randomly "
        "initialised (a starting point for train.init_weights)",
        f"input {c.format}, mean {list(c.pixel_mean)}, std {list(c.pixel_std)} (the weights' own)",
    ]
    if report.ignored:
        notes.append(f"ignored the ImageNet classifier: {', '.join(report.ignored)}")
    if report.identity_ese:
        notes.append(
            f"eSE set to an exact identity in {len(report.identity_ese)} blocks (timm has eSE in the last "
            "block of each stage only)"
        )
    return Converted(model.eval(), cfg, list(COCO_CLASSES), list(COCO_CAT_IDS), notes)


def convert_source(src: str | os.PathLike, model: str | None = None) -> Converted:
    """Read a published weight file and build the maskkit model it describes (see the module
    docstring for the sources). ``model`` forces a preset. Errors are one
    :class:`CheckpointError` line naming the file."""
    path = Path(src)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix.lower() == ".t7":
        return _torch7(path, model)
    if path.suffix.lower() == ".safetensors":
        return _backbone(path, model)  # timm / torchvision files saved as safetensors
    sd = read_state_dict(path)
    if is_centermask2_state_dict(sd):
        return _centermask2(path, sd, model)
    return _backbone(path, model)


def convert_file(src: str | os.PathLike, out: str | os.PathLike, model: str | None = None) -> Path:
    """Convert ``src`` (see :func:`convert_source`) and write the maskkit model file ``out``."""
    return convert_source(src, model).save(out)
