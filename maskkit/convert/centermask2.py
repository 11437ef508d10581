"""centermask2 (detectron2-format) checkpoints -> maskkit CenterMask models.

The official code (github.com/youngwanLEE/centermask2, on detectron2) names its tensors
``backbone.bottom_up.*`` (VoVNet ``stem.stem_1/conv``, ``stage3.OSA3_1...``; detectron2 ResNet
``res2.0.conv1`` + ``.norm``; MobileNetV2 ``features.N.conv.M``), ``backbone.fpn_lateral3``,
``backbone.fpn_output3``, ``backbone.top_block.p6``, ``proposal_generator.fcos_head.*``
(``cls_tower``, ``bbox_tower``, ``cls_logits``, ``bbox_pred``, ``ctrness``, one
``scales.L.scale`` per level) and ``roi_heads.mask_head.*`` / ``roi_heads.maskiou_head.*``.
:func:`official_names` lists, for a maskkit model, the official name(s) of every one of its
tensors; the conversion is that table, applied strictly:

- the architecture is detected from names and shapes (:func:`detect_preset`), or forced;
- every official tensor must map and every maskkit tensor must be filled, with equal shapes,
  otherwise ONE :class:`CheckpointError` lists the missing, unexpected and mis-shaped names;
- deformable-convolution checkpoints (``STAGE_WITH_DCN``; ``conv_offset`` tensors) are
  refused: maskkit has no DCN presets (see README "What is refused and why");
- the converted config carries the official preprocessing (BGR 0-255, detectron2's
  ``PIXEL_MEAN``/``PIXEL_STD``, X-101's own std), test threshold 0.05, 50 detections, the
  official post-processing (``postprocess="centermask2"``) and COCO's classes.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from maskkit.config import Config
from maskkit.errors import CheckpointError, MaskkitError
from maskkit.models.backbones.vovnet import VOVNET_SPECS
from maskkit.models.backbones.vovnet import official_names as vov
from maskkit.models.zoo import build_model, get_config, presets

__all__ = [
    "OFFICIAL_CONFIGS",
    "official_config",
    "official_names",
    "detect_preset",
    "convert_state_dict",
    "is_centermask2_state_dict",
]

BU = "backbone.bottom_up."
FCOS = "proposal_generator.fcos_head."
MASK = "roi_heads.mask_head."
MASKIOU = "roi_heads.maskiou_head."

# Official model-zoo config (configs/centermask/*.yaml) -> maskkit preset.
OFFICIAL_CONFIGS: dict[str, str] = {
    "centermask_lite_V_19_eSE_FPN_ms_4x": "centermask_lite_v19",
    "centermask_lite_V_19_slim_eSE_FPN_ms_4x": "centermask_lite_v19_slim",
    "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x": "centermask_lite_v19_slim_dw",
    "centermask_lite_V_39_eSE_FPN_ms_4x": "centermask_lite_v39",
    "centermask_lite_Mv2_FPN_ms_4x": "centermask_lite_mnv2",
    "centermask_R_50_FPN_ms_3x": "centermask_r50",
    "centermask_R_101_FPN_ms_3x": "centermask_r101",
    "centermask_X_101_FPN_ms_3x": "centermask_x101",
    "centermask_V_39_eSE_FPN_ms_3x": "centermask_v39",
    "centermask_V_57_eSE_FPN_ms_3x": "centermask_v57",
    "centermask_V_99_eSE_FPN_ms_3x": "centermask_v99",
}

# detectron2 defaults (config/defaults.py): BGR images in 0-255, PIXEL_MEAN, PIXEL_STD = 1;
# centermask_X_101_FPN_ms_3x.yaml sets its own PIXEL_STD (a torchvision-style X-101 trunk).
PIXEL_MEAN = (103.53, 116.28, 123.675)
PIXEL_STD = {"resnext101_32x8d": (57.375, 57.120, 58.395)}
# RESNETS.STRIDE_IN_1X1: True (detectron2 default, MSRA) except the X-101 config.
STRIDE_IN_1X1 = {"resnet50": True, "resnet101": True, "resnext101_32x8d": False}
# Keys a 2020 checkpoint may hold besides the weights: detectron2's pixel_mean/pixel_std were
# persistent buffers until 2021. They are read for the config, never loaded as weights.
EXTRA_KEYS = ("pixel_mean", "pixel_std")


# --------------------------------------------------------------------------- config


def official_config(
    preset: str, pixel_mean: tuple[float, ...] | None = None, pixel_std: tuple[float, ...] | None = None
) -> Config:
    """Preset ``preset`` as the official code runs it: 80 COCO classes, BGR 0-255 input
    normalised with detectron2's mean/std, FCOS ``INFERENCE_TH_TEST`` 0.05 and
    ``POST_NMS_TOPK_TEST`` 50, the official post-processing, ``FREEZE_AT`` and ResNet stride."""
    cfg = get_config(preset, num_classes=80)
    m = cfg.model
    if m.system != "centermask":
        raise MaskkitError(f"--model {preset}: centermask2 checkpoints convert to CenterMask presets only")
    bb = m.backbone
    m.input_format = "BGR255"
    m.pixel_mean = tuple(float(v) for v in (pixel_mean or PIXEL_MEAN))
    m.pixel_std = tuple(float(v) for v in (pixel_std or PIXEL_STD.get(bb.variant, (1.0, 1.0, 1.0))))
    m.fcos.score_thresh = 0.05
    m.fcos.detections_per_image = 50
    m.postprocess = "centermask2"
    bb.norm = "FrozenBN"
    # Base-CenterMask-VoVNet / -Lite / Mv2: FREEZE_AT 0; Base-CenterMask-ResNet: detectron2's 2.
    bb.freeze_at = 2 if bb.name == "resnet" else 0
    if bb.name == "resnet":
        bb.stride_in_1x1 = STRIDE_IN_1X1[bb.variant]
    return cfg


# --------------------------------------------------------------------------- name table


def _vovnet_names(backbone) -> dict[str, tuple[str, ...]]:
    return {f"backbone.{k}": (BU + v,) for k, v in vov(backbone).items()}


def _resnet_names(keys: list[str]) -> dict[str, tuple[str, ...]]:
    """torchvision ResNet trunk keys -> detectron2 ``ResNet`` keys (``modeling/backbone/resnet.py``)."""
    out = {}
    for k in keys:
        rest = k[len("backbone.") :]
        m = re.fullmatch(r"stem\.0\.weight", rest) or re.fullmatch(r"stem\.1\.(\w+)", rest)
        if m:
            out[k] = (BU + ("stem.conv1.weight" if rest == "stem.0.weight" else f"stem.conv1.norm.{m.group(1)}"),)
            continue
        m = re.fullmatch(r"stages\.(\d)\.(\d+)\.(.+)", rest)
        if not m:
            continue
        stage, block, leaf = int(m.group(1)) + 2, m.group(2), m.group(3)
        leaf = re.sub(r"^bn(\d)\.", r"conv\1.norm.", leaf)
        leaf = re.sub(r"^downsample\.0\.", "shortcut.", leaf)
        leaf = re.sub(r"^downsample\.1\.", "shortcut.norm.", leaf)
        out[k] = (f"{BU}res{stage}.{block}.{leaf}",)
    return out


# torchvision InvertedResidual leaf -> official (centermask2 mobilenet.py) Sequential index,
# with (expand_ratio 6) and without (the first block, expand_ratio 1) the 1x1 expansion.
_MNV2_EXPAND = {
    "conv.0.0": "conv.0",
    "conv.0.1": "conv.1",
    "conv.1.0": "conv.3",
    "conv.1.1": "conv.4",
    "conv.2": "conv.6",
    "conv.3": "conv.7",
}
_MNV2_NO_EXPAND = {"conv.0.0": "conv.0", "conv.0.1": "conv.1", "conv.1": "conv.3", "conv.2": "conv.4"}


def _mobilenet_names(keys: list[str]) -> dict[str, tuple[str, ...]]:
    out = {}
    for k in keys:
        m = re.fullmatch(r"backbone\.(?:stem|stages\.\d)\.(\d+)\.(.+)", k)
        if not m:
            continue
        j, rest = int(m.group(1)), m.group(2)
        if j == 0:  # conv_bn: the same two-module Sequential in both
            out[k] = (f"{BU}features.0.{rest}",)
            continue
        table = _MNV2_NO_EXPAND if j == 1 else _MNV2_EXPAND
        leaf, tail = next(
            (a, rest[len(a) + 1 :]) for a in sorted(table, key=len, reverse=True) if rest.startswith(a + ".")
        )
        out[k] = (f"{BU}features.{j}.{table[leaf]}.{tail}",)
    return out


def _head_names(keys: list[str], num_levels: int) -> dict[str, tuple[str, ...]]:
    """FPN, FCOS head, SAG-Mask head and MaskIoU head."""
    rules = [
        (r"fpn\.fpn\.inner_blocks\.(\d)\.0\.(\w+)", lambda m: f"backbone.fpn_lateral{int(m[1]) + 3}.{m[2]}"),
        (r"fpn\.fpn\.layer_blocks\.(\d)\.0\.(\w+)", lambda m: f"backbone.fpn_output{int(m[1]) + 3}.{m[2]}"),
        (r"fpn\.fpn\.extra_blocks\.(p6|p7)\.(\w+)", lambda m: f"backbone.top_block.{m[1]}.{m[2]}"),
        (r"fcos\.cls_tower\.(\d+)\.(\w+)", lambda m: f"{FCOS}cls_tower.{m[1]}.{m[2]}"),
        (r"fcos\.box_tower\.(\d+)\.(\w+)", lambda m: f"{FCOS}bbox_tower.{m[1]}.{m[2]}"),
        (r"fcos\.cls_logits\.(\w+)", lambda m: f"{FCOS}cls_logits.{m[1]}"),
        (r"fcos\.box_pred\.(\w+)", lambda m: f"{FCOS}bbox_pred.{m[1]}"),
        (r"fcos\.centerness\.(\w+)", lambda m: f"{FCOS}ctrness.{m[1]}"),
        (r"mask_head\.convs\.(\d+)\.(\w+)", lambda m: f"{MASK}mask_fcn{int(m[1]) // 2 + 1}.{m[2]}"),
        (r"mask_head\.sam\.conv\.weight", lambda m: f"{MASK}spatialAtt.conv.weight"),
        (r"mask_head\.(deconv|predictor)\.(\w+)", lambda m: f"{MASK}{m[1]}.{m[2]}"),
        (r"maskiou\.convs\.(\d+)\.(\w+)", lambda m: f"{MASKIOU}maskiou_fcn{int(m[1]) // 2 + 1}.{m[2]}"),
        (r"maskiou\.(fc1|fc2)\.(\w+)", lambda m: f"{MASKIOU}maskiou_{m[1]}.{m[2]}"),
        (r"maskiou\.predictor\.(\w+)", lambda m: f"{MASKIOU}maskiou.{m[1]}"),
    ]
    out: dict[str, tuple[str, ...]] = {}
    for k in keys:
        if k == "fcos.scales":  # one [num_levels] tensor here, one Scale module per level there
            out[k] = tuple(f"{FCOS}scales.{i}.scale" for i in range(num_levels))
            continue
        for pattern, name in rules:
            m = re.fullmatch(pattern, k)
            if m:
                out[k] = (name(m),)
                break
    return out


def official_names(model) -> dict[str, tuple[str, ...]]:
    """maskkit state-dict key -> the official key(s) holding it (several only for the FCOS
    scales, concatenated in level order), for a :class:`~maskkit.models.centermask.model.CenterMask`.
    Covers every key of ``model.state_dict()``; a key left over is a maskkit bug."""
    keys = list(model.state_dict())
    family = model.cfg.backbone.name
    if family == "vovnet":
        names = _vovnet_names(model.backbone)
    elif family == "resnet":
        names = _resnet_names(keys)
    elif family == "mobilenet_v2":
        names = _mobilenet_names(keys)
    else:
        raise MaskkitError(f"the official code has no {family!r} backbone")
    names.update(_head_names(keys, len(model.strides)))
    left = [k for k in keys if k not in names]
    if left:
        raise RuntimeError(f"maskkit bug: no official name for {left[:5]}")
    return names


# --------------------------------------------------------------------------- detection


def is_centermask2_state_dict(sd: dict) -> bool:
    """Whether ``sd`` looks like a detectron2/centermask2 CenterMask state dict."""
    return any(k.startswith(FCOS) for k in sd) and any(k.startswith(BU) for k in sd)


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def _detect_backbone(sd: dict) -> tuple[str, str] | None:
    """(BackboneConfig.name, variant) from the official names and shapes, or None."""
    if BU + "stem.stem_1/conv.weight" in sd:
        concat = sd.get(BU + "stage2.OSA2_1.concat.OSA2_1_concat/conv.weight")
        stem3 = sd.get(BU + "stem.stem_3/conv.weight", sd.get(BU + "stem.stem_3/pw_conv1x1.weight"))
        if concat is None or stem3 is None:
            return None
        sig = dict(
            depthwise=BU + "stem.stem_2/dw_conv3x3.weight" in sd,
            out2=concat.shape[0],
            stem3=stem3.shape[0],
            layers=_count(sd, re.escape(BU) + r"stage2\.OSA2_1\.layers\.(\d+)\."),
            blocks=tuple(_count(sd, re.escape(BU) + rf"stage{s}\.OSA{s}_(\d+)\.") for s in range(2, 6)),
        )
        for variant, spec in VOVNET_SPECS.items():
            if (spec["depthwise"], spec["out_ch"][0], spec["stem"][2], spec["layers"], spec["blocks"]) == (
                sig["depthwise"],
                sig["out2"],
                sig["stem3"],
                sig["layers"],
                sig["blocks"],
            ):
                return "vovnet", variant
        return None
    if BU + "stem.conv1.weight" in sd:
        conv2 = sd.get(BU + "res2.0.conv2.weight")
        if conv2 is None:
            return None
        groups = conv2.shape[0] // max(conv2.shape[1], 1)
        depth = {6: 50, 23: 101}.get(_count(sd, re.escape(BU) + r"res4\.(\d+)\."))
        if depth == 101 and groups == 32:
            return "resnet", "resnext101_32x8d"
        if depth and groups == 1:
            return "resnet", f"resnet{depth}"
        return None
    if BU + "features.0.0.weight" in sd:
        return "mobilenet_v2", "mobilenet_v2"
    return None


def detect_preset(sd: dict, source: str = "?") -> str:
    """The maskkit preset of a centermask2 state dict: backbone from its names and shapes, FPN
    width from ``fpn_output3``, tower depth from ``cls_tower`` (Lite: 128 / 2; full: 256 / 4)."""
    bb = _detect_backbone(sd)
    fpn = sd.get("backbone.fpn_output3.weight")
    if bb is None or fpn is None:
        raise CheckpointError(
            f"{source}: not a centermask2 CenterMask checkpoint maskkit knows (backbone not "
            "recognised); name the architecture with --model PRESET to see what does not match"
        )
    towers = _count(sd, re.escape(FCOS) + r"cls_tower\.(\d+)\.weight") // 2  # conv + GroupNorm per level
    found = []
    for name, make in presets().items():
        m = make().model
        if (
            m.system == "centermask"
            and (m.backbone.name, m.backbone.variant) == bb
            and m.fpn_channels == fpn.shape[0]
            and m.fcos.num_convs == towers
            and m.backbone.norm == "FrozenBN"
        ):
            found.append(name)
    if not found:
        raise CheckpointError(
            f"{source}: no maskkit preset for a {bb[1]} CenterMask with FPN width {fpn.shape[0]} "
            f"and {towers} tower convs"
        )
    return sorted(found)[0]


# --------------------------------------------------------------------------- conversion


def _list(names: list[str], limit: int = 25) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _check(
    sd: dict, table: dict[str, tuple[str, ...]], shapes: dict[str, torch.Size], preset: str, source: str
) -> None:
    """Raise ONE CheckpointError naming every missing, unexpected and mis-shaped tensor."""
    expected = {o for offs in table.values() for o in offs}
    missing = [o for offs in table.values() for o in offs if o not in sd]
    unexpected = sorted(k for k in sd if k not in expected and k not in EXTRA_KEYS)
    wrong = []
    for mk, offs in table.items():
        if all(o in sd for o in offs):
            got = [tuple(sd[o].shape) for o in offs]
            numel = sum(sd[o].numel() for o in offs)
            if (len(offs) == 1 and got[0] != tuple(shapes[mk])) or numel != shapes[mk].numel():
                wrong.append(f"{offs[0]} {got[0] if len(offs) == 1 else got} (maskkit {tuple(shapes[mk])})")
    if missing or unexpected or wrong:
        parts = [
            f"{len(missing)} missing: {_list(missing)}" if missing else "",
            f"{len(unexpected)} unexpected: {_list(unexpected)}" if unexpected else "",
            f"{len(wrong)} with another shape: {_list(wrong)}" if wrong else "",
        ]
        raise CheckpointError(
            f"{source}: does not match {preset} (nothing converted): " + "; ".join(p for p in parts if p)
        )


def _refuse_panoptic(sd: dict, source: str) -> None:
    """panoptic_centermask_*.yaml (detectron2 PanopticFPN): a semantic-segmentation head and a P2
    level that maskkit's CenterMask does not have."""
    sem = [k for k in sd if k.startswith("sem_seg_head.")]
    if sem:
        raise CheckpointError(
            f"{source}: panoptic CenterMask checkpoint ({len(sem)} sem_seg_head tensors): maskkit has "
            "no panoptic model; refused rather than converted without its semantic-segmentation head"
        )


def _refuse_dcn(sd: dict, source: str) -> None:
    dcn = sorted(k for k in sd if "conv_offset" in k)
    if dcn:
        stages = sorted({m.group(1) for k in dcn for m in [re.search(r"\.(stage\d)\.", k)] if m})
        raise CheckpointError(
            f"{source}: deformable-convolution (DCN) checkpoint ({len(dcn)} conv_offset tensors in "
            f"{', '.join(stages) or 'the model'}): maskkit has no DCN presets, refused rather than converted "
            "without its deformable layers; use the checkpoint of the same backbone without DCN"
        )


def convert_state_dict(
    sd: dict[str, Tensor], preset: str | None = None, source: str = "?"
) -> tuple[Config, dict[str, Tensor]]:
    """Official ``sd`` -> (maskkit Config, maskkit state dict). ``preset`` forces the
    architecture (else :func:`detect_preset`). Strict: see :func:`_check`."""
    _refuse_panoptic(sd, source)
    _refuse_dcn(sd, source)
    if preset:
        if get_config(preset).model.system != "centermask":
            raise CheckpointError(f"{source}: a centermask2 checkpoint converts to a CenterMask preset, not {preset}")
    preset = preset or detect_preset(sd, source)
    for key in EXTRA_KEYS:
        if key in sd and sd[key].numel() != 3:
            raise CheckpointError(f"{source}: {key} has {sd[key].numel()} values, expected 3 (B, G, R)")
    mean = tuple(sd["pixel_mean"].flatten().tolist()) if "pixel_mean" in sd else None
    std = tuple(sd["pixel_std"].flatten().tolist()) if "pixel_std" in sd else None
    cfg = official_config(preset, mean, std)
    cfg.name = preset
    with torch.device("meta"):  # shapes only: no memory, instant even for X-101
        model = build_model(cfg.model)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    table = official_names(model)
    _check(sd, table, shapes, preset, source)
    state = {
        mk: torch.cat([sd[o].reshape(-1) for o in offs]).reshape(shapes[mk]).to(dtypes[mk])
        if len(offs) > 1
        else sd[offs[0]].to(dtypes[mk]).contiguous()
        for mk, offs in table.items()
    }
    return cfg, state
