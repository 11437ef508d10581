"""MobileNetV2 trunk from torchvision (CenterMask Table 3's lightest baseline).

As the official CenterMask MobileNetV2-FPN: the trunk ends before torchvision's final 1x1 conv
to 1280 channels (``features[18]``) and the C3-C5 outputs are the last maps at strides 8, 16
and 32: ``features[6]`` (32 ch), ``features[13]`` (96 ch) and ``features[17]`` (320 ch).
Stages for freezing: stem = ``features[0:2]`` (stride 2), stage 2 = ``features[2:4]``
(stride 4, 24 ch), stage 3 = ``features[4:7]``, stage 4 = ``features[7:14]``, stage 5 =
``features[14:18]``.
"""

from __future__ import annotations

from functools import partial

import torch
import torchvision
from torch import nn

from maskkit.models.norm import norm_layer

# End index (exclusive) in torchvision's ``features`` of the stem and of stages 2-5.
_STAGE_ENDS = (2, 4, 7, 14, 18)


class MobileNetV2Trunk(nn.Module):
    """``forward(x [B, 3, H, W])`` -> ``[C3 [B, 32, H/8, W/8], C4 [B, 96, H/16, W/16],
    C5 [B, 320, H/32, W/32]]``; ``out_channels`` = [32, 96, 320], ``strides`` = [8, 16, 32]."""

    def __init__(self, net: torchvision.models.MobileNetV2) -> None:
        super().__init__()
        f = net.features
        self.stem = f[: _STAGE_ENDS[0]]
        self.stages = nn.ModuleList([f[a:b] for a, b in zip(_STAGE_ENDS[:-1], _STAGE_ENDS[1:])])
        self.out_channels: list[int] = [stage[-1].out_channels for stage in self.stages[1:]]
        self.strides: list[int] = [8, 16, 32]
        self.c2_channels: int = self.stages[0][-1].out_channels  # returned after include_c2()
        self.first_stage = 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # [B, 16, H/2, W/2]
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[self.first_stage :]


def build_mobilenet_v2(norm: str = "FrozenBN") -> MobileNetV2Trunk:
    """torchvision MobileNetV2 (width 1.0), random init, normalisation from the factory."""
    return MobileNetV2Trunk(torchvision.models.mobilenet_v2(weights=None, norm_layer=partial(norm_layer, norm)))
