"""The one flat name -> preset table, and model construction.

A preset is a function returning a complete :class:`maskkit.config.Config`; each system keeps
its presets as one-line functions in ``models/<system>/presets.py`` (``PRESETS`` dict), and
this module merges them. ``build_model(cfg.model)`` builds the network for a model config.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from maskkit.config import Config, apply_overrides
from maskkit.errors import MaskkitError

__all__ = ["presets", "list_models", "get_config", "build_model", "create_model"]


def presets() -> dict[str, Callable[[], Config]]:
    """All presets by name (both systems)."""
    from maskkit.models.centermask.presets import PRESETS as CM
    from maskkit.models.sharpmask.presets import PRESETS as SM

    return {**CM, **SM}


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
    return cfg


def build_model(model_cfg, backbone_weights: bool = True) -> nn.Module:
    """Network for a model config (``CenterMaskConfig`` or ``SharpMaskConfig``).

    With ``model.backbone.weights`` (CenterMask) or ``model.trunk_weights`` (DeepMask/SharpMask)
    set, and ``backbone_weights``, the trunk starts from that ImageNet file and ``model_cfg``'s
    input normalisation becomes the file's own (``maskkit.models.backbones.pretrained``).
    Pass ``backbone_weights=False`` when the whole state dict is loaded next (model files,
    resume): the ImageNet file is then not read.
    """
    if model_cfg.system == "centermask":
        from maskkit.models.centermask.model import CenterMask

        model = CenterMask(model_cfg)
        if backbone_weights and getattr(model_cfg.backbone, "weights", None):
            from maskkit.models.backbones.pretrained import apply_backbone_weights

            apply_backbone_weights(model, model_cfg)
        return model
    if model_cfg.system == "sharpmask":
        from maskkit.models.sharpmask.model import SharpMask

        model = SharpMask(model_cfg)
        if backbone_weights and getattr(model_cfg, "trunk_weights", None):
            from maskkit.models.backbones.pretrained import apply_trunk_weights

            apply_trunk_weights(model, model_cfg)
        return model
    raise MaskkitError(f"unknown model system {model_cfg.system!r}")


def create_model(name: str, num_classes: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> nn.Module:
    """Build preset ``name`` (randomly initialised; no weights are downloaded).

    ``num_classes`` sets K (labels 1..K); ``overrides`` are ``model.x=y`` strings. The
    returned module keeps its model config as ``model.cfg``.
    """
    return build_model(get_config(name, num_classes, overrides).model)


# --------------------------------------------------------------------------- `maskkit models`


def _describe(name: str, num_classes: int | None, flops: bool) -> dict:
    """Parameters (and CenterMask GFLOPs at the preset's test size) of preset ``name``. The
    model is built on the ``meta`` device: shapes only, so even the largest preset is instant."""
    import torch

    cfg = get_config(name, num_classes)
    with torch.device("meta"):
        model = build_model(cfg.model)
    row = {"name": name, "system": cfg.model.system, "params": sum(p.numel() for p in model.parameters()),
           "test_size": "", "gflops": None}
    if cfg.model.system == "centermask":
        from maskkit.bench import bench_image_size, centermask_gflops

        h, w = bench_image_size(cfg.model.min_size_test, cfg.model.max_size_test)
        row["test_size"] = f"{h}x{w}"
        if flops:
            row["gflops"] = centermask_gflops(model, h, w)
    return row


def configure_parser(parser) -> None:
    parser.add_argument("names", nargs="*", help="presets to describe (default: all)")
    parser.add_argument("--num-classes", type=int, default=80, help="number of classes K (default 80, as COCO)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting GFLOPs")
    parser.description = "List model presets with their parameters (M) and GFLOPs at the preset's test size."
    parser.epilog = ("GFLOPs count one multiply-add as one FLOP (as the paper and detectron2), for one 4:3 image\n"
                     "at the preset's test size with 50 detections through the mask branch (CenterMask presets;\n"
                     "'-' for SharpMask presets). Models are built on the meta device: no memory, no weights.")


def run_cli(args) -> int:
    from tqdm import tqdm

    names = args.names or list_models()
    rows = [_describe(n, args.num_classes, not args.no_flops) for n in tqdm(names, desc="models", leave=False, disable=len(names) < 4)]
    print(f"{'name':<30} {'system':<11} {'params (M)':>10} {'test size':>10} {'GFLOPs':>8}")
    for r in rows:
        g = f"{r['gflops']:.1f}" if r["gflops"] is not None else "-"
        print(f"{r['name']:<30} {r['system']:<11} {r['params'] / 1e6:>10.2f} {r['test_size']:>10} {g:>8}")
    return 0
