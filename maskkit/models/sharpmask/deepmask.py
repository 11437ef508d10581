"""DeepMask-ours: the ResNet trunk (W160-P4-D39-F128) and head C (SharpMask paper Sec. 4).

The trunk is a ResNet truncated after ``layer3`` (stride 16). It returns the four
features the refinement uses, one per pooling stage (Sec. 3.2: "the last convolutional layer
prior to pooling"): ``conv1+bn+relu`` (stride 2), ``layer1`` (4), ``layer2`` (8), ``layer3`` (16).

Head C (Fig. 3d): 1x1 conv to ``reduce_channels`` + ReLU, flatten the ``feature_size^2`` cells,
``Linear(-> hidden_dim)``: one shared vector per window from which both the mask
(``Linear(hidden -> mask_size^2)``) and the score (Dropout, Linear, ReLU, Dropout, Linear) are
predicted. Two equivalent ways to run it:

- per window (training): trunk features of a crop, centre-cropped to ``feature_size`` cells;
- convolutionally (inference, Sec. 3.3 / [22]): the flatten + Linear is a
  ``feature_size x feature_size`` convolution with the same weights, one vector per stride-16
  position; the score MLP is applied to every position's vector (a 1x1 convolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.vgg import make_layers

from maskkit.errors import MaskkitError
from maskkit.models.norm import norm_layer
from maskkit.models.sharpmask.config import SharpMaskConfig
from maskkit.models.sharpmask.padding import set_conv_padding

__all__ = ["TRUNKS", "ResNetTrunk", "VGGTrunk", "HeadC", "HeadOriginal", "build_trunk", "build_head", "center_crop"]

# Architectures as data: block type and blocks per stage (layer1..layer3; layer4 is dropped).
TRUNKS: dict[str, dict] = {
    "resnet50": {"block": Bottleneck, "layers": (3, 4, 6)},
    "resnet18": {"block": BasicBlock, "layers": (2, 2, 2)},
    "resnet_tiny": {"block": BasicBlock, "layers": (1, 1, 1)},
    # VGG-A (original DeepMask, [22]): conv layers of torchvision's vgg11 without the last pool
    "vgg_a": {"cfg": (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8)},
}


class ResNetTrunk(nn.Module):
    """ResNet stem + layer1..layer3 built from torchvision's blocks.

    Module names follow torchvision's ``ResNet`` (``conv1``, ``bn1``, ``layer1`` ...), so an
    ImageNet ``resnet50`` state dict loads into it (its ``layer4``/``fc`` keys are unused).
    torchvision's ``ResNet`` class is not used directly because its widths are fixed at 64
    (the demo trunk is narrower). Border padding (``padding.py``): every conv with a kernel > 1
    gets the configured mode after construction — symmetric in the official code
    (``SpatialSymmetricPadding``), or reflect / zeros; the weights and padding amounts are
    unchanged, only what the border is filled with.

    Input ``[B, 3, H, W]`` normalised, H and W multiples of 16. Output: list of 4 tensors
    ``[B, C_l, H/s, W/s]`` for strides ``s = 2, 4, 8, 16`` (attribute ``channels``).
    """

    def __init__(self, block: type, layers: tuple[int, ...], width: int, norm: str, padding: str) -> None:
        super().__init__()
        make_norm = lambda c: norm_layer(norm, c)  # noqa: E731
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._inplanes = width
        self.layer1 = self._make_layer(block, width, layers[0], 1, make_norm)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2, make_norm)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2, make_norm)
        e = block.expansion
        self.channels = [width, width * e, width * 2 * e, width * 4 * e]  # strides 2, 4, 8, 16
        set_conv_padding(self, padding)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int, make_norm) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                make_norm(planes * block.expansion),
            )
        mods = [block(self._inplanes, planes, stride, downsample, norm_layer=make_norm)]
        self._inplanes = planes * block.expansion
        mods += [block(self._inplanes, planes, norm_layer=make_norm) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f2 = self.relu(self.bn1(self.conv1(x)))  # [B, w, H/2, W/2]
        f4 = self.layer1(self.maxpool(f2))  # [B, w*e, H/4, W/4]
        f8 = self.layer2(f4)  # [B, 2w*e, H/8, W/8]
        f16 = self.layer3(f8)  # [B, 4w*e, H/16, W/16]
        return [f2, f4, f8, f16]


class VGGTrunk(nn.Module):
    """VGG-A conv layers (original DeepMask: 4 poolings, stride 16), built by torchvision's
    ``make_layers`` so ``features.*`` match ``vgg11`` (``norm="none"``) or ``vgg11_bn``
    (``norm="BN"``) state dicts. Output: the last conv (+ReLU) before each pooling from
    stride 2 on and the final one: ``[f2, f4, f8, f16]`` (attribute ``channels``)."""

    def __init__(self, spec: tuple, width: int, norm: str, padding: str) -> None:
        super().__init__()
        if norm not in ("none", "", "BN"):
            raise MaskkitError(f"the VGG trunk supports trunk_norm 'none' (original) or 'BN', got {norm!r}")
        self.features = make_layers([c if c == "M" else c * width for c in spec], batch_norm=norm == "BN")
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.taps = pools[1:] + [len(self.features)]  # outputs just before pools 2, 3, 4 and the end
        self.channels = [[m for m in self.features[:t] if isinstance(m, nn.Conv2d)][-1].out_channels for t in self.taps]
        set_conv_padding(self.features, padding)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, start = [], 0
        for tap in self.taps:
            for m in self.features[start:tap]:
                x = m(x)
            feats.append(x)  # strides 2, 4, 8, 16
            start = tap
        return feats


def build_trunk(cfg: SharpMaskConfig) -> nn.Module:
    if cfg.trunk not in TRUNKS:
        raise MaskkitError(f"unknown sharpmask trunk {cfg.trunk!r}; choose one of {sorted(TRUNKS)}")
    spec = TRUNKS[cfg.trunk]
    if "cfg" in spec:
        return VGGTrunk(spec["cfg"], cfg.trunk_width, cfg.trunk_norm, cfg.padding)
    return ResNetTrunk(spec["block"], spec["layers"], cfg.trunk_width, cfg.trunk_norm, cfg.padding)


def build_head(in_channels: int, cfg: SharpMaskConfig) -> nn.Module:
    if cfg.head == "C":
        return HeadC(in_channels, cfg)
    if cfg.head == "original":
        return HeadOriginal(in_channels, cfg)
    raise MaskkitError(f"unknown sharpmask head {cfg.head!r}; choose 'C' (DeepMask-ours) or 'original' (DeepMask)")


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size x size`` part of ``[B, C, h, w]`` (the border must be whole cells)."""
    h, w = x.shape[-2:]
    if (h - size) % 2 or (w - size) % 2 or h < size or w < size:
        raise MaskkitError(f"cannot centre-crop a {h}x{w} feature map to {size}x{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


class HeadC(nn.Module):
    """Head C: the shared ``hidden_dim`` vector, the mask branch and the score branch.

    Parameters (DeepMask-ours): reduce 1024*128+128 = 131,200; fc 12800*512+512 = 6,554,112;
    mask 512*3136+3136 = 1,608,768; score 512*1024+1024 + 1024+1 = 526,337.
    """

    def __init__(self, in_channels: int, cfg: SharpMaskConfig) -> None:
        super().__init__()
        self.feature_size = cfg.feature_size
        self.mask_size = cfg.mask_size
        self.reduce = nn.Conv2d(in_channels, cfg.reduce_channels, kernel_size=1)  # F128
        self.fc = nn.Linear(cfg.reduce_channels * cfg.feature_size**2, cfg.hidden_dim)
        self.mask = nn.Linear(cfg.hidden_dim, cfg.mask_size**2)
        self.score = nn.Sequential(
            nn.Dropout(cfg.score_dropout),
            nn.Linear(cfg.hidden_dim, cfg.score_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.score_dropout),
            nn.Linear(cfg.score_hidden, 1),
        )

    # -- per-window path (training)
    def vector(self, f16: torch.Tensor) -> torch.Tensor:
        """Window features ``[B, C, s, s]`` (s >= feature_size, centred) -> shared vector ``[B, hidden]``."""
        x = F.relu(self.reduce(center_crop(f16, self.feature_size)))  # [B, 128, 10, 10]
        return self.fc(x.flatten(1))  # [B, 512]

    # -- convolutional path (inference)
    def vector_map(self, f16: torch.Tensor) -> torch.Tensor:
        """Whole-image features ``[B, C, h, w]`` -> one vector per window position
        ``[B, hidden, h - s + 1, w - s + 1]``: the Linear run as an ``s x s`` convolution."""
        x = F.relu(self.reduce(f16))  # [B, 128, h, w]
        weight = self.fc.weight.view(self.fc.out_features, -1, self.feature_size, self.feature_size)
        return F.conv2d(x, weight, self.fc.bias)  # [B, 512, h-9, w-9]

    # -- branches on vectors (the last dim is the vector: a 1x1 convolution on a map)
    def mask_logits(self, vec: torch.Tensor) -> torch.Tensor:
        """``[..., hidden]`` -> mask logits ``[..., mask_size, mask_size]``."""
        return self.mask(vec).unflatten(-1, (self.mask_size, self.mask_size))

    def score_logits(self, vec: torch.Tensor) -> torch.Tensor:
        """``[..., hidden]`` -> objectness logits ``[...]``."""
        return self.score(vec).squeeze(-1)

    def window_score(self, f16: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """Per-window score logits ``[B]``: head C scores the shared vector."""
        return self.score_logits(vec)

    def score_map(self, f16: torch.Tensor, vmap: torch.Tensor) -> torch.Tensor:
        """Score logits at every window position ``[B, gh, gw]`` from the vector map ``[B, hidden, gh, gw]``."""
        return self.score_logits(vmap.permute(0, 2, 3, 1))


class HeadOriginal(nn.Module):
    """The original DeepMask head (Fig. 3a; DeepMask [22] Sec. 3.1), for the VGG baseline.

    Mask branch: 1x1 conv + ReLU, then the pixel classifier factorised into two linear layers
    without a non-linearity in between (``s*s*512 -> 512 -> 56*56``). Score branch, separate:
    2x2 max-pool, ``Linear(512*7*7 -> 512)``, ReLU, Dropout, ``Linear(512 -> 1024)``, ReLU,
    Dropout, ``Linear(1024 -> 1)``. Convolutionally, the pool+Linear becomes a stride-1 2x2
    max-pool and a 7x7 convolution with dilation 2 (the paper's "interleaving" for stride 16).
    """

    def __init__(self, in_channels: int, cfg: SharpMaskConfig) -> None:
        super().__init__()
        if cfg.feature_size % 2:
            raise MaskkitError(f"the original DeepMask head needs an even feature_size, got {cfg.feature_size}")
        self.feature_size = cfg.feature_size
        self.mask_size = cfg.mask_size
        self.reduce = nn.Conv2d(in_channels, cfg.reduce_channels, kernel_size=1)
        self.fc = nn.Linear(cfg.reduce_channels * cfg.feature_size**2, cfg.hidden_dim)
        self.mask = nn.Linear(cfg.hidden_dim, cfg.mask_size**2)
        self.score_fc = nn.Linear(in_channels * (cfg.feature_size // 2) ** 2, cfg.score_pool_hidden)
        self.score = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.score_dropout),
            nn.Linear(cfg.score_pool_hidden, cfg.score_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.score_dropout),
            nn.Linear(cfg.score_hidden, 1),
        )

    vector = HeadC.vector
    vector_map = HeadC.vector_map
    mask_logits = HeadC.mask_logits

    def window_score(self, f16: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """Per-window score logits ``[B]`` from the window's features (not the mask vector)."""
        x = F.max_pool2d(center_crop(f16, self.feature_size), 2)  # [B, 512, 7, 7]
        return self.score(self.score_fc(x.flatten(1))).squeeze(-1)

    def score_map(self, f16: torch.Tensor, vmap: torch.Tensor) -> torch.Tensor:
        """Score logits ``[B, gh, gw]`` at every stride-16 window position."""
        x = F.max_pool2d(f16, 2, stride=1)  # [B, 512, h-1, w-1]: pools at every offset
        k = self.feature_size // 2
        weight = self.score_fc.weight.view(self.score_fc.out_features, -1, k, k)
        x = F.conv2d(x, weight, self.score_fc.bias, dilation=2)  # [B, 512, h-s+1, w-s+1]
        return self.score(x.permute(0, 2, 3, 1)).squeeze(-1)
