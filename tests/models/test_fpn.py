"""FPN P3-P7 (maskkit/models/fpn.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskkit.models.fpn import FPN


def test_levels_strides_and_channels():
    fpn = FPN([16, 24, 40], 32)
    feats = [torch.randn(2, 16, 40, 48), torch.randn(2, 24, 20, 24), torch.randn(2, 40, 10, 12)]
    out = fpn(feats)
    assert fpn.strides == [8, 16, 32, 64, 128]
    assert [tuple(o.shape) for o in out] == [
        (2, 32, 40, 48),
        (2, 32, 20, 24),
        (2, 32, 10, 12),
        (2, 32, 5, 6),
        (2, 32, 3, 3),
    ]


def test_p6_from_p5_and_p7_from_relu_p6():
    fpn = FPN([8, 8, 8], 16)
    feats = [torch.randn(1, 8, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)]
    p3, p4, p5, p6, p7 = fpn(feats)
    extra = fpn.fpn.extra_blocks
    assert extra.p6.in_channels == 16  # P5 (FPN width), not C5
    assert torch.allclose(p6, extra.p6(p5), atol=1e-6)
    assert torch.allclose(p7, extra.p7(F.relu(p6)), atol=1e-6)


def test_parameter_count_matches_the_official_layout():
    # 1x1 laterals + 3x3 outputs on C3-C5, and P6/P7 3x3 convs, all with bias (ResNet-50: C3-C5 = 512/1024/2048).
    fpn = FPN([512, 1024, 2048], 256)
    lateral = (512 + 1024 + 2048) * 256 + 3 * 256
    conv3 = 256 * 256 * 9 + 256
    assert sum(p.numel() for p in fpn.parameters()) == lateral + 5 * conv3
