"""CenterMask backbones: VoVNet V1/V2, ResNet/ResNeXt and MobileNetV2.

``build_backbone(cfg)`` returns a module with ``forward(x [B, 3, H, W] normalised) ->
[C3, C4, C5]`` (strides 8, 16, 32), and the attributes ``out_channels: list[int]``,
``strides: list[int] = [8, 16, 32]``, ``stem: nn.Module`` and ``stages: nn.ModuleList``
(stages 2-5, strides 4, 8, 16, 32). :func:`include_c2` makes it return ``[C2, C3, C4, C5]``
(a P2 level for the mask branch, ``mask.k_min=2``).

Freezing (``cfg.freeze_at``, detectron2's convention): 0 freezes nothing; ``k >= 1`` freezes the
stem and the first ``k - 1`` stages (1: stem; 2: stem + stage 2, the official default for
ImageNet-initialised backbones; 5: everything). Frozen parts get ``requires_grad=False`` and
their BatchNorm layers become FrozenBatchNorm2d, so ``model.train()`` cannot change them.
"""

from __future__ import annotations

from torch import nn

from maskkit.errors import MaskkitError
from maskkit.models.backbones.mobilenet import build_mobilenet_v2
from maskkit.models.backbones.resnet import build_resnet
from maskkit.models.backbones.vovnet import build_vovnet
from maskkit.models.norm import NORM_NAMES, freeze_module

__all__ = ["build_backbone", "freeze_stages", "include_c2", "BACKBONE_NAMES"]

BACKBONE_NAMES = ("vovnet", "resnet", "mobilenet_v2")


def freeze_stages(backbone: nn.Module, freeze_at: int) -> nn.Module:
    """Freeze ``backbone.stem`` and ``backbone.stages[:freeze_at - 1]`` (nothing when 0)."""
    n = len(backbone.stages)
    if not 0 <= freeze_at <= n + 1:
        raise MaskkitError(f"backbone.freeze_at must be in 0..{n + 1}, got {freeze_at}")
    if freeze_at >= 1:
        backbone.stem = freeze_module(backbone.stem)
        for i in range(freeze_at - 1):
            backbone.stages[i] = freeze_module(backbone.stages[i])
    return backbone


def build_backbone(cfg) -> nn.Module:
    """Backbone for a ``maskkit.models.centermask.config.BackboneConfig``.

    ``residual``/``attention`` apply to VoVNet only (V2: True/"eSE"; V1: False/"none";
    Table 4 "+SE": False/"SE"); ResNet and MobileNetV2 ignore them.
    """
    if cfg.norm not in NORM_NAMES:
        raise MaskkitError(f"unknown backbone.norm {cfg.norm!r}; choose one of FrozenBN, BN, GN")
    if cfg.name == "vovnet":
        backbone = build_vovnet(cfg.variant, norm=cfg.norm, attention=cfg.attention, residual=cfg.residual)
    elif cfg.name == "resnet":
        backbone = build_resnet(cfg.variant, norm=cfg.norm, stride_in_1x1=getattr(cfg, "stride_in_1x1", False))
    elif cfg.name == "mobilenet_v2":
        if cfg.variant not in ("", "mobilenet_v2"):
            raise MaskkitError(f"unknown MobileNetV2 variant {cfg.variant!r}; use 'mobilenet_v2' (width 1.0)")
        backbone = build_mobilenet_v2(norm=cfg.norm)
    else:
        raise MaskkitError(f"unknown backbone.name {cfg.name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
    return freeze_stages(backbone, cfg.freeze_at)


def include_c2(backbone: nn.Module) -> nn.Module:
    """Let ``backbone`` also return C2, stage 2's output at stride 4: ``forward`` -> ``[C2, C3,
    C4, C5]``, ``out_channels`` and ``strides`` (4, 8, 16, 32) to match. No weights change."""
    if not hasattr(backbone, "c2_channels") or getattr(backbone, "first_stage", None) not in (0, 1):
        raise MaskkitError(f"{type(backbone).__name__} cannot return C2 (stride 4): mask.k_min=2 needs a maskkit trunk")
    if backbone.first_stage == 1:
        backbone.first_stage = 0
        backbone.out_channels = [backbone.c2_channels, *backbone.out_channels]
        backbone.strides = [4, *backbone.strides]
    return backbone
