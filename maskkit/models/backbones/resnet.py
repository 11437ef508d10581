"""ResNet-50/101 and ResNeXt-101 32x8d trunks from torchvision (CenterMask Table 3 baselines).

torchvision's architectures are used as they are (``weights=None``: nothing is downloaded);
only the classifier (avgpool + fc) is dropped and the stages are regrouped as stem (conv1, bn1,
relu, maxpool; stride 4) + stages 2-5 (layer1..layer4, strides 4, 8, 16, 32). The outputs are
C3-C5 of layer2..layer4: 512, 1024, 2048 channels.
"""

from __future__ import annotations

from functools import partial

import torch
import torchvision
from torch import nn

from maskkit.errors import MaskkitError
from maskkit.models.norm import norm_layer

RESNET_VARIANTS = ("resnet50", "resnet101", "resnext101_32x8d")


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its classifier. ``forward(x [B, 3, H, W])`` returns
    ``[C3, C4, C5]`` with ``out_channels`` channels at ``strides`` [8, 16, 32]."""

    def __init__(self, net: torchvision.models.ResNet) -> None:
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels: list[int] = [stage[-1].conv3.out_channels for stage in self.stages[1:]]
        self.strides: list[int] = [8, 16, 32]
        self.c2_channels: int = self.stages[0][-1].conv3.out_channels  # returned after include_c2()
        self.first_stage = 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # [B, 64, H/4, W/4]
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[self.first_stage :]  # [B, 512, H/8, W/8], [B, 1024, H/16, W/16], [B, 2048, H/32, W/32]


def build_resnet(variant: str, norm: str = "FrozenBN", stride_in_1x1: bool = False) -> ResNetTrunk:
    """torchvision ``variant`` (resnet50 | resnet101 | resnext101_32x8d), random init, with the
    normalisation from ``maskkit.models.norm.norm_layer``.

    ``stride_in_1x1``: the stride-2 of each stage's first bottleneck sits in its 1x1 ``conv1``
    instead of the 3x3 ``conv2`` (detectron2 ``BottleneckBlock(stride_in_1x1=True)``, the MSRA
    ResNets of the official CenterMask R-50/R-101 configs). Same weights' shapes either way."""
    if variant not in RESNET_VARIANTS:
        raise MaskkitError(f"unknown ResNet variant {variant!r}; known: {', '.join(RESNET_VARIANTS)}")
    net = getattr(torchvision.models, variant)(weights=None, norm_layer=partial(norm_layer, norm))
    if stride_in_1x1:
        for layer in (net.layer2, net.layer3, net.layer4):
            layer[0].conv1.stride, layer[0].conv2.stride = layer[0].conv2.stride, (1, 1)
    return ResNetTrunk(net)
