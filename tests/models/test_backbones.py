"""Backbones (VoVNet V1/V2, ResNet/ResNeXt, MobileNetV2), the norm factory and freezing.

Parameter counts are checked against CenterMask Tables 3-4: the backbone counts here plus an
arithmetic estimate of the rest of the detector (FPN, FCOS head, SAG-Mask, MaskIoU; see
``detector_rest_params``), truncated to 0.1M as the paper prints them.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, SqueezeExcitation

from maskkit.errors import MaskkitError
from maskkit.models.backbones import build_backbone
from maskkit.models.backbones.vovnet import VOVNET_SPECS, EffectiveSE, OsaModule, official_names
from maskkit.models.centermask.config import BackboneConfig
from maskkit.models.norm import freeze_module, norm_layer

VOVNETS = list(VOVNET_SPECS)
OTHERS = [("resnet", "resnet50"), ("resnet", "resnet101"), ("resnet", "resnext101_32x8d"), ("mobilenet_v2", "")]
ALL = [("vovnet", v) for v in VOVNETS] + OTHERS
CHANNELS = {
    "V-19-micro": [96, 144, 192],
    "V-19-slim-dw": [256, 384, 512],
    "V-19-slim": [256, 384, 512],
    "V-19-dw": [512, 768, 1024],
    "V-19": [512, 768, 1024],
    "V-39": [512, 768, 1024],
    "V-57": [512, 768, 1024],
    "V-99": [512, 768, 1024],
    "resnet50": [512, 1024, 2048],
    "resnet101": [512, 1024, 2048],
    "resnext101_32x8d": [512, 1024, 2048],
    "": [32, 96, 320],
}


def n_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_backbone(name: str, variant: str, **kw) -> int:
    """Parameter count without allocating or initialising weights (meta device)."""
    with torch.device("meta"):
        return n_params(build_backbone(BackboneConfig(name=name, variant=variant, **kw)))


# ----------------------------------------------------------------------------- shapes

# The largest trunks run on the meta device (shapes only, no weights) to keep the suite fast;
# their building blocks run for real in the smaller variants.
META = {"V-57", "V-99", "resnet101", "resnext101_32x8d"}


@pytest.mark.parametrize("name,variant", ALL)
def test_every_backbone_returns_c3_c5_with_declared_channels_and_strides(name, variant, device):
    device = torch.device("meta") if variant in META else device
    with device:
        model = build_backbone(BackboneConfig(name=name, variant=variant)).eval()
        x = torch.rand(1, 3, 64, 96)
    assert model.out_channels == CHANNELS[variant]
    assert model.strides == [8, 16, 32]
    with torch.no_grad():
        feats = model(x)
    assert len(feats) == 3
    for f, c, s in zip(feats, model.out_channels, model.strides):
        assert tuple(f.shape) == (1, c, 64 // s, 96 // s)
        assert device.type == "meta" or torch.isfinite(f).all()


def test_batched_equals_one_by_one(device):
    model = build_backbone(BackboneConfig(variant="V-19-slim-dw")).to(device).eval()
    x = torch.rand(2, 3, 64, 64, device=device)
    with torch.no_grad():
        batched = model(x)
        single = model(x[1:])
    for b, s in zip(batched, single):
        torch.testing.assert_close(b[1:], s, rtol=1e-4, atol=1e-5)


def test_trainable_norm_backbone_trains_end_to_end(device):
    model = build_backbone(BackboneConfig(variant="V-19-slim-dw", norm="GN")).to(device).train()
    feats = model(torch.rand(2, 3, 64, 64, device=device))
    sum(f.mean() for f in feats).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.stem[0][0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- VoVNet switches


def _blocks(model) -> list[OsaModule]:
    return [m for m in model.modules() if isinstance(m, OsaModule)]


def test_v2_has_ese_in_every_block_and_residual_only_from_second_block():
    model = build_backbone(BackboneConfig(variant="V-57"))
    blocks = _blocks(model)
    assert len(blocks) == sum(VOVNET_SPECS["V-57"]["blocks"]) == 9
    assert all(isinstance(b.attention, EffectiveSE) for b in blocks)
    for stage, n in zip(model.stages, VOVNET_SPECS["V-57"]["blocks"]):
        assert [b.residual for b in stage.blocks] == [False] + [True] * (n - 1)
    # eSE is one FC C->C with bias, hard sigmoid gate
    ese = blocks[-1].attention
    assert ese.fc.weight.shape == (1024, 1024, 1, 1) and ese.fc.bias is not None
    assert isinstance(ese.gate, nn.Hardsigmoid)


def test_v19_has_no_effective_residual():
    model = build_backbone(BackboneConfig(variant="V-19", residual=True))
    assert not any(b.residual for b in _blocks(model))


def test_v1_has_no_attention_no_residual_and_se_is_two_fcs_reduction_4():
    v1 = build_backbone(BackboneConfig(variant="V-39", residual=False, attention="none"))
    assert all(isinstance(b.attention, nn.Identity) and not b.residual for b in _blocks(v1))
    se = build_backbone(BackboneConfig(variant="V-39", residual=False, attention="SE"))
    for b in _blocks(se):
        assert isinstance(b.attention, SqueezeExcitation)
        c = b.aggregate[0].out_channels
        assert b.attention.fc1.weight.shape == (c // 4, c, 1, 1)
        assert b.attention.fc2.weight.shape == (c, c // 4, 1, 1)


def test_residual_adds_the_block_input():
    torch.manual_seed(0)
    block = OsaModule(32, 16, 32, 2, "BN", "eSE", residual=True, depthwise=False).eval()
    x = torch.rand(1, 32, 8, 8)
    with torch.no_grad():
        block.residual = False
        plain = block(x)
        block.residual = True
        res = block(x)
    torch.testing.assert_close(res, plain + x)


def test_ese_matches_eq6_by_hand():
    ese = EffectiveSE(4)
    x = torch.rand(2, 4, 5, 5)
    w, b = ese.fc.weight[:, :, 0, 0], ese.fc.bias
    gate = torch.clamp(x.mean((2, 3)) @ w.T + b + 3, 0, 6) / 6  # relu6(x+3)/6
    torch.testing.assert_close(ese(x), x * gate[:, :, None, None])


def test_dw_variants_use_depthwise_stem_and_osa_convs():
    dw = build_backbone(BackboneConfig(variant="V-19-dw"))
    stem_convs = [m for m in dw.stem.modules() if isinstance(m, nn.Conv2d)]
    # conv3x3 s2, then (dw 3x3 + pw 1x1) twice; stem stride 4 overall
    assert [(c.kernel_size[0], c.groups, c.stride[0]) for c in stem_convs] == [
        (3, 1, 2),
        (3, 64, 1),
        (1, 1, 1),
        (3, 64, 2),
        (1, 1, 1),
    ]
    first = dw.stages[1].blocks[0]  # 256 in, 160 conv width: 1x1 reduction first
    assert isinstance(first.reduce, nn.Sequential) and first.reduce[0].out_channels == 160
    assert all(c[0].groups == 160 for c in first.convs)
    plain = build_backbone(BackboneConfig(variant="V-19"))
    assert all(m.groups == 1 for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert plain.stem[2][0].out_channels == 128  # non-dw stems end at 128 channels


def test_stage_pooling_only_from_stage3():
    model = build_backbone(BackboneConfig(variant="V-19-slim"))
    assert isinstance(model.stages[0].pool, nn.Identity)
    for stage in model.stages[1:]:
        assert isinstance(stage.pool, nn.MaxPool2d) and stage.pool.ceil_mode


def test_vovnet_convs_followed_by_norm_have_no_bias():
    model = build_backbone(BackboneConfig(variant="V-19-dw"))
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            assert m.kernel_size == (1, 1) and m.in_channels == m.out_channels  # the eSE FC only


@pytest.mark.parametrize("variant", ["V-19-slim-dw", "V-39"])
def test_official_names_cover_the_state_dict_one_to_one(variant):
    model = build_backbone(BackboneConfig(variant=variant))
    names = official_names(model)
    assert set(names) == set(model.state_dict())
    assert len(set(names.values())) == len(names)
    expected = {  # key patterns of the official (centermask2) VoVNet, REFERENCE.md
        "stem.0.0.weight": "stem.stem_1/conv.weight",
        "stages.3.blocks.0.attention.fc.bias": "stage5.OSA5_1.ese.fc.bias",
        "stages.0.blocks.0.aggregate.1.running_mean": "stage2.OSA2_1.concat.OSA2_1_concat/norm.running_mean",
    }
    if variant == "V-39":
        expected["stages.2.blocks.1.convs.4.0.weight"] = "stage4.OSA4_2.layers.4.OSA4_2_4/conv.weight"
    else:
        expected["stem.2.1.weight"] = "stem.stem_3/pw_conv1x1.weight"
        expected["stages.1.blocks.0.reduce.0.weight"] = "stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/conv.weight"
        expected["stages.1.blocks.0.convs.2.2.bias"] = "stage3.OSA3_1.layers.2.OSA3_1_2/pw_norm.bias"
    for mine, official in expected.items():
        assert names[mine] == official
    with pytest.raises(MaskkitError, match="SE"):
        official_names(build_backbone(BackboneConfig(variant="V-19-slim", attention="SE")))


# ----------------------------------------------------------------------------- norms and freezing


def test_norm_factory():
    frozen = norm_layer("FrozenBN", 64)
    assert isinstance(frozen, FrozenBatchNorm2d) and n_params(frozen) == 0
    assert {"weight", "bias", "running_mean", "running_var"} <= dict(frozen.named_buffers()).keys()
    bn = norm_layer("BN", 64)
    assert isinstance(bn, nn.BatchNorm2d) and n_params(bn, trainable_only=True) == 128
    assert norm_layer("GN", 64).num_groups == 32
    assert norm_layer("GN", 112).num_groups == 16 and norm_layer("GN", 24).num_groups == 8
    assert isinstance(norm_layer("none", 8), nn.Identity)
    with pytest.raises(MaskkitError, match="unknown norm"):
        norm_layer("SyncBatchNorm", 8)


@pytest.mark.parametrize("name,variant", [("vovnet", "V-19-slim-dw"), ("resnet", "resnet50"), ("mobilenet_v2", "")])
def test_frozen_bn_backbone_has_no_norm_parameters(name, variant):
    model = build_backbone(BackboneConfig(name=name, variant=variant, norm="FrozenBN"))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules())
    bn = count_backbone(name, variant, norm="BN")
    gn = count_backbone(name, variant, norm="GN")
    n_norm_channels = sum(m.weight.numel() for m in model.modules() if isinstance(m, FrozenBatchNorm2d))
    assert bn == gn == n_params(model) + 2 * n_norm_channels


@pytest.mark.parametrize("name,variant", [("vovnet", "V-19-slim"), ("resnet", "resnet50"), ("mobilenet_v2", "")])
def test_freeze_at_freezes_stem_and_first_k_minus_1_stages(name, variant):
    cfg = BackboneConfig(name=name, variant=variant, norm="BN", freeze_at=2)
    model = build_backbone(cfg)
    for part, frozen in [
        (model.stem, True),
        (model.stages[0], True),
        (model.stages[1], False),
        (model.stages[2], False),
        (model.stages[3], False),
    ]:
        assert all(p.requires_grad != frozen for p in part.parameters())
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in part.modules())
        has_frozen = any(isinstance(m, FrozenBatchNorm2d) for m in part.modules())
        assert (has_bn, has_frozen) == ((False, True) if frozen else (True, False))
    # train mode updates only the unfrozen statistics
    frozen_stats = [b.clone() for b in model.stem.buffers()]
    live_bn = next(m for m in model.stages[1].modules() if isinstance(m, nn.BatchNorm2d))
    before = live_bn.running_mean.clone()
    model.train()(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(a, b) for a, b in zip(frozen_stats, model.stem.buffers()))
    assert not torch.equal(before, live_bn.running_mean)


def test_freeze_at_zero_and_all():
    assert all(p.requires_grad for p in build_backbone(BackboneConfig(variant="V-19-slim", norm="GN")).parameters())
    everything = build_backbone(BackboneConfig(variant="V-19-slim", norm="GN", freeze_at=5))
    assert not any(p.requires_grad for p in everything.parameters())
    one = build_backbone(BackboneConfig(variant="V-19-slim", norm="GN", freeze_at=1))
    assert not any(p.requires_grad for p in one.stem.parameters())
    assert all(p.requires_grad for p in one.stages.parameters())


def test_freeze_module_keeps_batchnorm_statistics():
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 5.0, 6.0]))
        bn.weight.copy_(torch.tensor([0.5, 1.5, 2.0]))
    seq = nn.Sequential(nn.Identity(), bn)
    x = torch.rand(1, 3, 4, 4)
    expected = seq.eval()(x)
    frozen = freeze_module(seq)
    assert isinstance(frozen[1], FrozenBatchNorm2d)
    torch.testing.assert_close(frozen.train()(x), expected)


def test_bad_backbone_config_raises_one_clear_error():
    with pytest.raises(MaskkitError, match="V-42"):
        build_backbone(BackboneConfig(variant="V-42"))
    with pytest.raises(MaskkitError, match="resnet18"):
        build_backbone(BackboneConfig(name="resnet", variant="resnet18"))
    with pytest.raises(MaskkitError, match="MobileNetV2 variant"):
        build_backbone(BackboneConfig(name="mobilenet_v2", variant="mobilenet_v3"))
    with pytest.raises(MaskkitError, match="backbone.name"):
        build_backbone(BackboneConfig(name="hrnet"))
    with pytest.raises(MaskkitError, match="attention"):
        build_backbone(BackboneConfig(attention="CBAM"))
    with pytest.raises(MaskkitError, match="freeze_at"):
        build_backbone(BackboneConfig(variant="V-19-slim", freeze_at=6))
    with pytest.raises(MaskkitError, match="norm"):
        build_backbone(BackboneConfig(norm="LN"))


# ----------------------------------------------------------------------------- parameter counts

# Backbone-only counts with FrozenBN (affine terms are buffers) and, for the VoVNets, with
# trainable norm (BN or GN: + 2 affine terms per norm channel). Derived by these modules; the
# Table 3/4 tests below are what ties them to the paper.
BACKBONE_PARAMS = {
    # variant: (FrozenBN, BN)
    "V-19-micro": (483_984, 486_080),  # maskkit's demo trunk (not in the paper)
    "V-19-slim-dw": (1_379_152, None),
    "V-19-dw": (5_506_944, None),
    "V-19-slim": (2_647_984, None),
    "V-19": (10_170_560, 10_180_416),
    "V-39": (25_163_712, 25_184_128),
    "V-57": (41_423_296, 41_454_912),
    "V-99": (69_469_376, 69_523_520),
    "resnet50": (23_454_912, 23_508_032),
    "resnet101": (42_394_816, 42_500_160),
    "resnext101_32x8d": (86_539_456, 86_742_336),
    "": (1_780_160, 1_811_712),
}


@pytest.mark.parametrize("name,variant", ALL)
def test_backbone_param_counts(name, variant):
    frozen, bn = BACKBONE_PARAMS[variant]
    assert count_backbone(name, variant) == frozen
    if bn is not None:
        assert count_backbone(name, variant, norm="BN") == bn


def test_table4_se_and_ese_deltas_v39():
    v1 = count_backbone("vovnet", "V-39", residual=False, attention="none")
    res = count_backbone("vovnet", "V-39", residual=True, attention="none")
    se = count_backbone("vovnet", "V-39", residual=False, attention="SE")
    ese = count_backbone("vovnet", "V-39")
    assert res == v1  # the identity mapping adds no parameters (Table 4: 49.0M both)
    assert abs((se - v1) / 1e6 - 1.8) <= 0.1  # 50.8 - 49.0
    assert abs((ese - se) / 1e6 - 1.8) <= 0.1  # 52.6 - 50.8


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def detector_rest_params(in_channels: list[int], num_classes: int = 80, ch: int = 256) -> int:
    """Parameters of CenterMask outside the backbone (REFERENCE.md 'FPN and FCOS', 'SAG-Mask').

    FPN: 1x1 laterals + 3x3 outputs on C3-C5, P6 = 3x3/2 conv on P5, P7 on ReLU(P6).
    FCOS: cls and box towers of 4 x (3x3 conv + GN), cls (K) / box (4) / centerness (1) 3x3
    convs, one scale per level P3-P7. SAG-Mask: 4 x 3x3 conv, SAM 3x3 conv 2->1 without bias,
    2x2 deconv, 1x1 conv to K. MaskIoU: 4 x 3x3 conv (257 in), FC 256*7*7->1024, FC 1024, FC K.
    """
    fpn = sum(_conv(c, ch, 1) for c in in_channels) + 3 * _conv(ch, ch, 3) + 2 * _conv(ch, ch, 3)
    fcos = 8 * (_conv(ch, ch, 3) + 2 * ch) + _conv(ch, num_classes, 3) + _conv(ch, 4, 3) + _conv(ch, 1, 3) + 5
    sag = 4 * _conv(ch, ch, 3) + _conv(2, 1, 3, bias=False) + _conv(ch, ch, 2) + _conv(ch, num_classes, 1)
    maskiou = (
        _conv(ch + 1, ch, 3)
        + 3 * _conv(ch, ch, 3)
        + (ch * 7 * 7 * 1024 + 1024)
        + (1024 * 1024 + 1024)
        + (1024 * num_classes + num_classes)
    )
    return fpn + fcos + sag + maskiou


def _trunc(n: int) -> float:
    return math.floor(n / 1e5) / 10  # the paper prints millions truncated to one decimal


def test_detector_rest_estimate_by_parts():
    # V-39 channels: FPN 3,540,992 + FCOS 4,920,666 + SAG-Mask 2,643,298 + MaskIoU 16,340,304
    assert detector_rest_params([512, 768, 1024]) == 27_445_260


# (name, variant, paper Table 3 total in M). All match with FrozenBN except V-57: 68.87M -> 68.8.
TABLE3 = [
    ("mobilenet_v2", "", 28.7),
    ("vovnet", "V-19", 37.6),
    ("resnet", "resnet50", 51.2),
    ("vovnet", "V-39", 52.6),
    ("resnet", "resnet101", 70.1),
    ("vovnet", "V-57", 68.9),
    ("vovnet", "V-99", 96.9),
    ("resnet", "resnext101_32x8d", 114.3),
]


@pytest.mark.parametrize("name,variant,paper", TABLE3)
def test_table3_totals_with_frozen_bn(name, variant, paper):
    total = count_backbone(name, variant) + detector_rest_params(CHANNELS[variant])
    if variant == "V-57":
        # 41,423,296 + 27,445,260 = 68,868,556: 0.03M short of 68.9 (rounding would give 68.9
        # but then MobileNetV2 28.75 -> 28.8 and R-101 70.17 -> 70.2 break). The VoVNet rows
        # all match when the VoVNet norm affine terms are counted (next test).
        assert _trunc(total) == 68.8
    else:
        assert _trunc(total) == paper


@pytest.mark.parametrize("variant,paper", [("V-19", 37.6), ("V-39", 52.6), ("V-57", 68.9), ("V-99", 96.9)])
def test_table3_vovnet_totals_with_trainable_norm_affine(variant, paper):
    total = count_backbone("vovnet", variant, norm="BN") + detector_rest_params(CHANNELS[variant])
    assert _trunc(total) == paper


@pytest.mark.parametrize(
    "variant,residual,attention,norm,paper",
    [
        ("V-39", False, "none", "FrozenBN", 49.0),
        ("V-39", True, "none", "FrozenBN", 49.0),
        ("V-39", False, "SE", "FrozenBN", 50.8),
        ("V-39", True, "eSE", "FrozenBN", 52.6),
        ("V-57", False, "none", "BN", 63.0),
        ("V-57", True, "none", "BN", 63.0),
        ("V-57", False, "SE", "BN", 65.9),
        ("V-57", True, "eSE", "BN", 68.9),
    ],
)
def test_table4_totals(variant, residual, attention, norm, paper):
    bb = count_backbone("vovnet", variant, residual=residual, attention=attention, norm=norm)
    assert _trunc(bb + detector_rest_params(CHANNELS[variant])) == paper
