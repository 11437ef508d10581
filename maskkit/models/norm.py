"""Normalisation-layer factory shared by the backbones and the heads, and stage freezing.

Names (``BackboneConfig.norm`` and the head configs):

- ``"FrozenBN"``: ``torchvision.ops.FrozenBatchNorm2d``, a fixed affine transform whose
  weight/bias/running statistics are *buffers*, not parameters (as the official CenterMask
  code, which starts from ImageNet weights). It has nothing to train, so models trained from
  scratch must not use it.
- ``"BN"``: ``nn.BatchNorm2d`` (trainable; statistics update in train mode).
- ``"GN"``: ``nn.GroupNorm`` with 32 groups, or ``gcd(32, channels)`` groups when the channel
  count is not a multiple of 32 (e.g. 112 channels -> 16 groups).
- ``""`` / ``"none"``: ``nn.Identity``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from maskkit.errors import MaskkitError

NORM_NAMES = ("FrozenBN", "BN", "GN", "none", "")


def norm_layer(name: str, channels: int) -> nn.Module:
    """A normalisation layer over ``channels`` feature channels (input/output [B, C, H, W])."""
    if name == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if name == "BN":
        return nn.BatchNorm2d(channels)
    if name == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if name in ("", "none"):
        return nn.Identity()
    raise MaskkitError(f"unknown norm layer {name!r}; choose one of FrozenBN, BN, GN, none")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a ``FrozenBatchNorm2d`` holding the
    same statistics and affine terms; returns the converted module (a new object when
    ``module`` itself is a BatchNorm2d). torchvision has no such converter, hence this one."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats and module.running_mean is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for child_name, child in module.named_children():
        new_child = freeze_batchnorm(child)
        if new_child is not child:
            setattr(module, child_name, new_child)
    return module


def freeze_module(module: nn.Module) -> nn.Module:
    """Freeze ``module`` for fine-tuning: every parameter gets ``requires_grad=False`` and every
    BatchNorm2d becomes a FrozenBatchNorm2d (so train mode cannot update its statistics).
    GroupNorm has no running statistics; freezing it only stops its affine terms training."""
    module = freeze_batchnorm(module)
    for p in module.parameters():
        p.requires_grad_(False)
    return module
