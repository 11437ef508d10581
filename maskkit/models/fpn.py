"""Feature Pyramid Network P3-P7 as used by FCOS / CenterMask (paper Fig. 2, Sec. 2.6).

P3-P5 come from the backbone's C3-C5 (1x1 lateral + top-down nearest upsampling + 3x3
output conv); P6 is a stride-2 3x3 conv on **P5** (not C5, as the official FCOS/CenterMask
code) and P7 = stride-2 3x3 conv on ReLU(P6). Everything is torchvision's
``FeaturePyramidNetwork`` + ``LastLevelP6P7``; this module only adapts it to lists.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

__all__ = ["FPN"]


class FPN(nn.Module):
    """``[C3, C4, C5]`` (strides 8, 16, 32) -> ``[P3, P4, P5, P6, P7]`` (strides 8..128),
    each ``[B, out_channels, H/s, W/s]``."""

    def __init__(self, in_channels: list[int], out_channels: int, in_strides: list[int] | None = None):
        super().__init__()
        self.fpn = FeaturePyramidNetwork(
            list(in_channels), out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels)
        )
        in_strides = list(in_strides or [8, 16, 32])
        self.out_channels = out_channels
        self.strides = in_strides + [in_strides[-1] * 2, in_strides[-1] * 4]

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        named = OrderedDict((f"c{i}", f) for i, f in enumerate(feats))
        return list(self.fpn(named).values())
