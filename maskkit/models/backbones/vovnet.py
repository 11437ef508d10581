"""VoVNet V1/V2 backbones (CenterMask Sec. 2.5, Fig. 3; REFERENCE.md "VoVNetV2 backbone").

Architectures are data (``VOVNET_SPECS``); ``OsaModule -> OsaStage -> VoVNet`` by composition.

- OSA module (Fig. 3a): L chained 3x3 conv-norm-ReLU layers; the module input and all L outputs
  are concatenated once ("one-shot aggregation"), then a 1x1 conv-norm-ReLU to the stage width.
- VoVNetV2 (Fig. 3b/c): channel attention after the 1x1 conv (eSE, Eq. 6-7), then the identity
  added. Attention sits in EVERY OSA block (the official CenterMask code; timm only puts it in
  the last block of a stage). The identity is only added from the 2nd block of a stage on (the
  1st changes the width), so V-19 (one block per stage) has no effective residual.
- ``attention="SE"`` is the original Squeeze-Excitation of Eq. 5 for the Table 4 ablation;
  ``residual=False, attention="none"`` is VoVNetV1.
- Depthwise ("dw") variants: the 2nd/3rd stem convs and the OSA 3x3 convs are a depthwise 3x3
  followed by a pointwise 1x1 and one norm + ReLU; a 1x1 conv first reduces the block input to
  the conv width when they differ.
- Stage 2 has no pooling; stages 3-5 start with MaxPool 3x3 stride 2 (ceil_mode), so an input
  that is a multiple of 32 gives maps at exactly 1/8, 1/16, 1/32.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from maskkit.errors import MaskkitError
from maskkit.models.norm import norm_layer

# REFERENCE.md table. stem: widths of the three stem convs; conv_ch: width of the 3x3 convs
# inside the OSA modules of stages 2-5; out_ch: width after the 1x1 aggregation conv.
VOVNET_SPECS: dict[str, dict] = {
    "V-19-slim-dw": dict(
        stem=(64, 64, 64),
        conv_ch=(64, 80, 96, 112),
        out_ch=(112, 256, 384, 512),
        layers=3,
        blocks=(1, 1, 1, 1),
        depthwise=True,
    ),
    # maskkit's CPU demo trunk (not in the paper): V-19's layout (3 layers per OSA module, one module
    # per stage) with plain 3x3 convs (depthwise convs train slowly on CPUs) and about a third of
    # V-19-slim's widths: a training step of the demo model costs half of V-19-slim-dw's
    # (benchmarks/demo_training_cost.md).
    "V-19-micro": dict(
        stem=(16, 16, 32),
        conv_ch=(24, 32, 48, 64),
        out_ch=(48, 96, 144, 192),
        layers=3,
        blocks=(1, 1, 1, 1),
        depthwise=False,
    ),
    "V-19-dw": dict(
        stem=(64, 64, 64),
        conv_ch=(128, 160, 192, 224),
        out_ch=(256, 512, 768, 1024),
        layers=3,
        blocks=(1, 1, 1, 1),
        depthwise=True,
    ),
    "V-19-slim": dict(
        stem=(64, 64, 128),
        conv_ch=(64, 80, 96, 112),
        out_ch=(112, 256, 384, 512),
        layers=3,
        blocks=(1, 1, 1, 1),
        depthwise=False,
    ),
    "V-19": dict(
        stem=(64, 64, 128),
        conv_ch=(128, 160, 192, 224),
        out_ch=(256, 512, 768, 1024),
        layers=3,
        blocks=(1, 1, 1, 1),
        depthwise=False,
    ),
    "V-39": dict(
        stem=(64, 64, 128),
        conv_ch=(128, 160, 192, 224),
        out_ch=(256, 512, 768, 1024),
        layers=5,
        blocks=(1, 1, 2, 2),
        depthwise=False,
    ),
    "V-57": dict(
        stem=(64, 64, 128),
        conv_ch=(128, 160, 192, 224),
        out_ch=(256, 512, 768, 1024),
        layers=5,
        blocks=(1, 1, 4, 3),
        depthwise=False,
    ),
    "V-99": dict(
        stem=(64, 64, 128),
        conv_ch=(128, 160, 192, 224),
        out_ch=(256, 512, 768, 1024),
        layers=5,
        blocks=(1, 3, 9, 3),
        depthwise=False,
    ),
}

ATTENTIONS = ("eSE", "SE", "none")

# Original SE reduction r of Eq. 5. The paper does not print r; r = 4 is what reproduces its
# Table 4 parameter delta (V1-39 49.0M -> +SE 50.8M: two FCs with C*C/r weights each add
# 2C^2/r = C^2/2 per block, half of eSE's C^2, i.e. +1.8M vs +3.6M); r = 16 would add only
# ~0.45M. (The official eSEModule also carries an unused ``reduction=4`` argument.)
SE_REDUCTION = 4


def conv_norm_relu(in_ch: int, out_ch: int, kernel_size: int, stride: int, norm: str) -> nn.Sequential:
    """Conv (no bias: the norm follows) -> norm -> ReLU. [B, in_ch, H, W] -> [B, out_ch, H/s, W/s]."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        norm_layer(norm, out_ch),
        nn.ReLU(inplace=True),
    )


def dw_separable(in_ch: int, out_ch: int, stride: int, norm: str) -> nn.Sequential:
    """Depthwise 3x3 -> pointwise 1x1 -> norm -> ReLU (the official dw variants have no norm
    between the two convs). Needs in_ch == out_ch for the depthwise conv."""
    if in_ch != out_ch:
        raise MaskkitError(f"depthwise conv needs equal widths, got {in_ch} -> {out_ch}")
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride=stride, padding=1, groups=in_ch, bias=False),
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        norm_layer(norm, out_ch),
        nn.ReLU(inplace=True),
    )


class EffectiveSE(nn.Module):
    """eSE (Eq. 6-7): global average pool -> ONE 1x1 conv C->C (an FC, with bias) -> hard
    sigmoid relu6(x+3)/6 (official code) -> rescale the input. [B, C, H, W] -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gate(self.fc(x.mean(dim=(2, 3), keepdim=True)))  # [B, C, 1, 1]
        return x * a


def channel_attention(kind: str, channels: int) -> nn.Module:
    """The attention after an OSA module's 1x1 conv: eSE, original SE (Eq. 5) or none."""
    if kind == "eSE":
        return EffectiveSE(channels)
    if kind == "SE":
        # Eq. 5: avgpool -> FC C->C/r + ReLU -> FC C/r->C -> sigmoid -> scale (torchvision's SE).
        return SqueezeExcitation(channels, channels // SE_REDUCTION)
    if kind == "none":
        return nn.Identity()
    raise MaskkitError(f"unknown VoVNet attention {kind!r}; choose one of {', '.join(ATTENTIONS)}")


class OsaModule(nn.Module):
    """One-shot aggregation block (Fig. 3). [B, in_ch, H, W] -> [B, out_ch, H, W]."""

    def __init__(
        self,
        in_ch: int,
        conv_ch: int,
        out_ch: int,
        layers: int,
        norm: str,
        attention: str,
        residual: bool,
        depthwise: bool,
    ) -> None:
        super().__init__()
        if residual and in_ch != out_ch:
            raise MaskkitError(f"OSA identity needs in_ch == out_ch, got {in_ch} != {out_ch}")
        self.residual = residual
        # dw variants: 1x1 reduction so the depthwise convs keep one width.
        self.reduce = conv_norm_relu(in_ch, conv_ch, 1, 1, norm) if depthwise and in_ch != conv_ch else nn.Identity()
        convs = []
        ch = in_ch
        for _ in range(layers):
            if depthwise:
                convs.append(dw_separable(conv_ch, conv_ch, 1, norm))
            else:
                convs.append(conv_norm_relu(ch, conv_ch, 3, 1, norm))
            ch = conv_ch
        self.convs = nn.ModuleList(convs)
        self.aggregate = conv_norm_relu(in_ch + layers * conv_ch, out_ch, 1, 1, norm)
        self.attention = channel_attention(attention, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        y = self.reduce(x)
        for conv in self.convs:
            y = conv(y)
            feats.append(y)
        out = self.attention(self.aggregate(torch.cat(feats, dim=1)))  # X_refine, Eq. 7
        return out + x if self.residual else out


class OsaStage(nn.Module):
    """Optional MaxPool 3x3/2 (ceil) then ``blocks`` OSA modules; identity from block 2 on."""

    def __init__(
        self,
        in_ch: int,
        conv_ch: int,
        out_ch: int,
        blocks: int,
        layers: int,
        pool: bool,
        norm: str,
        attention: str,
        residual: bool,
        depthwise: bool,
    ) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True) if pool else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                OsaModule(
                    in_ch if i == 0 else out_ch,
                    conv_ch,
                    out_ch,
                    layers,
                    norm,
                    attention,
                    residual=residual and i > 0,
                    depthwise=depthwise,
                )
                for i in range(blocks)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pool(x))


class VoVNet(nn.Module):
    """Stem (stride 4) + stages 2-5 (strides 4, 8, 16, 32).

    ``forward(x [B, 3, H, W])`` returns ``[C3, C4, C5]`` with ``out_channels`` channels at
    ``strides`` [8, 16, 32]. ``stem`` and ``stages`` are exposed for freezing.
    """

    def __init__(self, spec: dict, norm: str = "FrozenBN", attention: str = "eSE", residual: bool = True) -> None:
        super().__init__()
        s1, s2, s3 = spec["stem"]
        conv2 = (
            (lambda i, o, st: dw_separable(i, o, st, norm))
            if spec["depthwise"]
            else (lambda i, o, st: conv_norm_relu(i, o, 3, st, norm))
        )
        self.stem = nn.Sequential(conv_norm_relu(3, s1, 3, 2, norm), conv2(s1, s2, 1), conv2(s2, s3, 2))
        stages = []
        in_ch = s3
        for i, (conv_ch, out_ch, blocks) in enumerate(zip(spec["conv_ch"], spec["out_ch"], spec["blocks"])):
            stages.append(
                OsaStage(
                    in_ch,
                    conv_ch,
                    out_ch,
                    blocks,
                    spec["layers"],
                    pool=i > 0,
                    norm=norm,
                    attention=attention,
                    residual=residual,
                    depthwise=spec["depthwise"],
                )
            )
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.out_channels: list[int] = list(spec["out_ch"][1:])
        self.strides: list[int] = [8, 16, 32]
        self.c2_channels: int = spec["out_ch"][0]  # stage 2 (stride 4): returned after include_c2()
        self.first_stage = 1
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init on fan-in (as the official VoVNet): keeps the forward variance, also
                # through depthwise convs, whose fan-out would overstate their fan by C.
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # [B, stem[2], H/4, W/4]
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[self.first_stage :]  # C3 [B, out_ch[1], H/8, W/8], C4 .../16, C5 .../32


def official_names(model: VoVNet) -> dict[str, str]:
    """Map this model's state-dict keys to the official CenterMask code's VoVNet keys.

    Official names (centermask2; prefix them with ``backbone.bottom_up.``) look like
    ``stem.stem_1/conv.weight``, ``stage3.OSA3_1.layers.0.OSA3_1_0/conv.weight``,
    ``stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/conv.weight`` (dw variants),
    ``stage3.OSA3_1.layers.0.OSA3_1_0/dw_conv3x3.weight``, ``.../pw_conv1x1``, ``.../pw_norm``,
    ``stage3.OSA3_1.concat.OSA3_1_concat/norm.running_mean`` and ``stage3.OSA3_1.ese.fc.bias``.
    A checkpoint loader can rename with this table. Only eSE/no-attention models exist there.
    """
    names: dict[str, str] = {}

    def unit(mine: str, seq: nn.Sequential, official: str) -> None:
        # conv_norm_relu -> conv, norm; dw_separable -> dw_conv3x3, pw_conv1x1, pw_norm
        parts = ("dw_conv3x3", "pw_conv1x1", "pw_norm") if isinstance(seq[1], nn.Conv2d) else ("conv", "norm")
        for idx, part in enumerate(parts):
            for key in seq[idx].state_dict():
                names[f"{mine}.{idx}.{key}"] = f"{official}/{part}.{key}"

    for j, seq in enumerate(model.stem):
        unit(f"stem.{j}", seq, f"stem.stem_{j + 1}")
    for i, stage in enumerate(model.stages):
        s = i + 2
        for b, block in enumerate(stage.blocks):
            mine, osa = f"stages.{i}.blocks.{b}", f"OSA{s}_{b + 1}"
            official = f"stage{s}.{osa}"
            if isinstance(block.reduce, nn.Sequential):
                unit(f"{mine}.reduce", block.reduce, f"{official}.conv_reduction.{osa}_reduction_0")
            for n, seq in enumerate(block.convs):
                unit(f"{mine}.convs.{n}", seq, f"{official}.layers.{n}.{osa}_{n}")
            unit(f"{mine}.aggregate", block.aggregate, f"{official}.concat.{osa}_concat")
            if isinstance(block.attention, EffectiveSE):
                for key in ("weight", "bias"):
                    names[f"{mine}.attention.fc.{key}"] = f"{official}.ese.fc.{key}"
            elif not isinstance(block.attention, nn.Identity):
                raise MaskkitError("the official VoVNet code has no original-SE blocks to name")
    return names


def build_vovnet(variant: str, norm: str = "FrozenBN", attention: str = "eSE", residual: bool = True) -> VoVNet:
    """VoVNet ``variant`` (a key of ``VOVNET_SPECS``); V2 = residual + eSE, V1 = neither."""
    if variant not in VOVNET_SPECS:
        raise MaskkitError(f"unknown VoVNet variant {variant!r}; known: {', '.join(VOVNET_SPECS)}")
    return VoVNet(VOVNET_SPECS[variant], norm=norm, attention=attention, residual=residual)
