"""ImageNet weights for the CenterMask backbones (``model.backbone.weights=PATH``).

``load_backbone_weights(backbone, path, spec_name)`` copies an ImageNet classification file
into a maskkit backbone built by ``build_backbone`` and returns a :class:`BackboneWeights`
report, including the input convention the weights were trained with. Loading is strict:
every backbone tensor is filled and every file tensor is used, except the ImageNet
classifier (listed in the report as ``ignored``); otherwise one :class:`CheckpointError`
lists the missing, unexpected and mis-shaped names. Sources, each by its own key names:

- **centermask2's VoVNet files** (``vovnet19_ese_detectron2.pth``, ``vovnet39_ese_...``,
  ``vovnet57_...``, ``vovnet99_...``, ``vovnet19_ese_slim_...``, ``vovnet19_ese_slim_dw_...``):
  detectron2 names of ``centermask/modeling/backbone/vovnet.py`` (``stem.stem_1/conv.weight``,
  ``stage2.OSA2_1.layers.0.OSA2_1_0/conv.weight``, ``...concat.OSA2_1_concat/norm.bias``,
  ``...ese.fc.weight``), optionally prefixed ``backbone.bottom_up.``. Input: BGR 0-255,
  detectron2's default mean (103.53, 116.28, 123.675), std 1 (the official configs set none).
- **timm** ``ese_vovnet19b_dw`` / ``ese_vovnet39b`` (and the other ``*vovnet*`` state dicts of
  ``timm/models/vovnet.py``): ``stem.0.conv.weight``, ``stages.1.blocks.0.conv_mid.2.bn.weight``,
  ``...conv_concat.conv.weight``, ``...attn.fc.bias``, ``head.fc.*`` (ignored). timm places eSE
  only in the *last* block of each stage; maskkit (as the official CenterMask code) has one in
  every block, so the other blocks' eSE are set to an exact identity (see ``_identity_ese``).
  Input: RGB 0-1, ImageNet mean/std (timm's ``IMAGENET_DEFAULT_MEAN/STD``).
- **torchvision** ResNet-50/101, ResNeXt-101 32x8d and MobileNetV2 state dicts (``conv1``,
  ``bn1``, ``layer1..4``, ``fc`` ignored; ``features.0..17``, ``features.18`` and
  ``classifier`` ignored: the trunk ends before the 1280-channel conv). Input: RGB 0-1,
  ImageNet mean/std.
- **detectron2's ResNet files** (what the official R-50/R-101/X-101 configs use as
  ``MODEL.WEIGHTS``): the Caffe2 names of ``ImageNetPretrained/MSRA/R-50.pkl`` / ``R-101.pkl``
  and ``X-101-32x8d.pkl`` (``conv1_w``, ``res_conv1_bn_s``, ``res2_0_branch2a_w``,
  ``res2_0_branch1_bn_b``, ``fc1000_*`` ignored), and detectron2 names (``stem.conv1.weight``,
  ``res2.0.conv1.norm.weight``, ``res2.0.shortcut.weight``, e.g. from
  ``tools/convert-torchvision-to-d2.py``). Caffe2 BatchNorm is a folded affine (scale ``_s``,
  bias ``_b``, no statistics): the running mean is set to 0 and the running variance to
  ``1 - eps``, so the frozen norm computes exactly ``x * s + b``. Input: MSRA R-50/R-101 BGR
  0-255 with std 1; X-101-32x8d (grouped convs) BGR 0-255 with its std (57.375, 57.120,
  58.395) (``centermask_X_101_FPN_ms_3x.yaml``); detectron2-named files *with* running
  statistics are torchvision conversions: RGB with ImageNet mean/std. MSRA's R-50/R-101 put
  the stride-2 in the first 1x1 conv of a block (detectron2 ``STRIDE_IN_1X1=True``); they
  need ``model.backbone.stride_in_1x1=true``, all other ResNet files ``false``: a mismatch is
  refused rather than loaded into a network that computes something else.
- **centermask2's MobileNetV2 file** (``mobilenet_v2_detectron2.pth``, tonylins' layout
  ``features.1.conv.0.weight`` .. ``features.17.conv.7.running_var``). Input: detectron2's
  default BGR 0-255, std 1 (``centermask_lite_Mv2_FPN_ms_4x.yaml`` sets none).

The DeepMask/SharpMask trunk (``model.trunk_weights``, ``apply_trunk_weights``) takes
torchvision's ResNet-50/18 files: its ``conv1`` .. ``layer3`` keep torchvision's names;
``layer4`` and ``fc`` are unused. The SharpMask demo's ``resnet_tiny`` (width 16) takes
``maskkit:resnet_tiny_shapes12``, pretrained in that layout and convention.

Files: ``.safetensors``, ``.pth``/``.pt`` (``torch.load(weights_only=True)``) and ``.pkl``
(restricted unpickler), both through ``maskkit.safe_load.read_state_dict``.
``num_batches_tracked`` counters and Caffe2 ``_momentum`` blobs carry no weights and are dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from maskkit.config import InputConvention
from maskkit.errors import CheckpointError, MaskkitError, first_line
from maskkit.models.backbones.resnet import RESNET_VARIANTS
from maskkit.models.backbones.vovnet import VOVNET_SPECS, official_names
from maskkit.safe_load import read_state_dict

__all__ = [
    "BackboneWeights",
    "load_backbone_weights",
    "apply_backbone_weights",
    "apply_trunk_weights",
    "read_weights_file",
    "resolve_weights_path",
    "PACKAGED_WEIGHTS",
    "IMAGENET_RGB",
    "DETECTRON2_BGR",
]

# (input_format, pixel_mean, pixel_std) as CenterMaskConfig reads them.
IMAGENET_RGB = ("RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DETECTRON2_BGR = ("BGR255", (103.53, 116.28, 123.675), (1.0, 1.0, 1.0))
DETECTRON2_BGR_X101 = ("BGR255", (103.53, 116.28, 123.675), (57.375, 57.120, 58.395))

# SharpMask trunks (SharpMaskConfig.trunk) that take torchvision-layout files: stem + layer1..3
# with torchvision's names; ImageNet ResNet-50/18 fit only at trunk_width 64, the packaged
# maskkit:resnet_tiny_shapes12 the demo's resnet_tiny at width 16 (shapes are checked strictly).
SHARPMASK_TRUNKS = ("resnet50", "resnet18", "resnet_tiny")

_PREFIXES = ("module.", "backbone.bottom_up.")  # DataParallel / detectron2 model wrappers


@dataclass
class BackboneWeights:
    """What :func:`load_backbone_weights` did."""

    path: Path
    source: str  # e.g. "torchvision ResNet", "timm VoVNet", "centermask2 VoVNet (detectron2)"
    loaded: int  # tensors copied from the file
    input_format: str  # "RGB" (0-1) | "BGR255" -> CenterMaskConfig.input_format
    pixel_mean: tuple[float, ...]
    pixel_std: tuple[float, ...]
    ignored: list[str] = field(default_factory=list)  # the file's ImageNet classifier tensors
    identity_ese: list[str] = field(default_factory=list)  # blocks whose eSE was set to identity
    filled_stats: int = 0  # Caffe2 affine norms whose running statistics were set to (0, 1 - eps)

    @property
    def convention(self) -> InputConvention:
        """The input convention the weights were trained with."""
        return InputConvention(self.input_format, tuple(self.pixel_mean), tuple(self.pixel_std))


# --------------------------------------------------------------------------- reading


# Trunks shipped inside the package, named ``maskkit:NAME`` in ``model.backbone.weights`` or
# ``model.trunk_weights`` (portable across installs, unlike an absolute path): NAME.safetensors
# in this folder. Only the demos' trunks, pretrained on 12 procedural shapes that are not the demo's categories
# (benchmarks/pretrain_demo_trunk.py): ``vovnet19_micro_shapes12`` (CenterMask, centermask2's
# VoVNet layout) and ``resnet_tiny_shapes12`` (SharpMask, torchvision's ResNet layout).
PACKAGED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """``path`` as a file: ``maskkit:NAME`` is the packaged ``NAME.safetensors``."""
    text = str(path)
    if not text.startswith("maskkit:"):
        return Path(path)
    name = text.split(":", 1)[1]
    found = PACKAGED_WEIGHTS / f"{name}.safetensors"
    if not name or "/" in name or "\\" in name or not found.is_file():
        known = ", ".join(f"maskkit:{f.stem}" for f in sorted(PACKAGED_WEIGHTS.glob("*.safetensors"))) or "none"
        raise CheckpointError(f"{text}: no such packaged weights (packaged: {known})")
    return found


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``{name: Tensor}`` of a ``.safetensors``, ``.pth``/``.pt`` or ``.pkl`` file (or a packaged
    ``maskkit:NAME`` trunk), never running pickled code; wrapper prefixes, counters and Caffe2
    momenta removed."""
    path = resolve_weights_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file (model.backbone.weights / model.trunk_weights)")
    if path.suffix.lower() == ".safetensors":
        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a safetensors file ({first_line(e)})") from None
    else:
        sd = read_state_dict(path)  # the same safe .pth/.pkl reading as `maskkit convert`
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked") or k.endswith("_momentum"):
            continue
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


# --------------------------------------------------------------------------- name tables
# Each table maps a backbone state-dict key (maskkit) to the key the source file uses.


def _vovnet_timm_names(backbone: nn.Module) -> dict[str, str]:
    """maskkit VoVNet -> timm ``VovNet`` names (timm/models/vovnet.py: ConvNormAct ``conv``/``bn``,
    SeparableConvNormAct ``conv_dw``/``conv_pw``/``bn``, OsaBlock ``conv_reduction``,
    ``conv_mid.N``, ``conv_concat``, ``attn``)."""
    names: dict[str, str] = {}

    def unit(mine: str, seq: nn.Sequential, theirs: str) -> None:
        parts = ("conv_dw", "conv_pw", "bn") if isinstance(seq[1], nn.Conv2d) else ("conv", "bn")
        for idx, part in enumerate(parts):
            for key in seq[idx].state_dict():
                if not key.endswith("num_batches_tracked"):
                    names[f"{mine}.{idx}.{key}"] = f"{theirs}.{part}.{key}"

    for j, seq in enumerate(backbone.stem):
        unit(f"stem.{j}", seq, f"stem.{j}")
    for i, stage in enumerate(backbone.stages):
        for b, block in enumerate(stage.blocks):
            p = f"stages.{i}.blocks.{b}"
            if isinstance(block.reduce, nn.Sequential):
                unit(f"{p}.reduce", block.reduce, f"{p}.conv_reduction")
            for n, seq in enumerate(block.convs):
                unit(f"{p}.convs.{n}", seq, f"{p}.conv_mid.{n}")
            unit(f"{p}.aggregate", block.aggregate, f"{p}.conv_concat")
            for key in block.attention.state_dict():
                names[f"{p}.attention.{key}"] = f"{p}.attn.{key}"
    return names


def _resnet_d2_name(key: str) -> str:
    """maskkit ResNet key -> detectron2 ResNet key (``stem.conv1``, ``res2.0.conv1.norm``, ``shortcut``)."""
    key = re.sub(r"^stem\.0\.", "stem.conv1.", key)
    key = re.sub(r"^stem\.1\.", "stem.conv1.norm.", key)
    m = re.match(r"^stages\.(\d+)\.(\d+)\.(.*)$", key)
    if not m:
        return key
    rest = m.group(3)
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    return f"res{int(m.group(1)) + 2}.{m.group(2)}.{rest}"


_C2_PARAM = {"weight": "w", "bias": "b"}
_C2_NORM = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}


def _resnet_c2_name(key: str) -> str:
    """maskkit ResNet key -> Caffe2 (Detectron / MSRA .pkl) blob name, the inverse of
    detectron2's ``convert_basic_c2_names`` for the backbone (``conv1_w``, ``res_conv1_bn_s``,
    ``res2_0_branch2a_w``, ``res2_0_branch1_bn_b``)."""
    d2 = _resnet_d2_name(key)
    if d2.startswith("stem.conv1.norm."):
        return f"res_conv1_bn_{_C2_NORM[d2.rsplit('.', 1)[1]]}"
    if d2.startswith("stem.conv1."):
        return f"conv1_{_C2_PARAM[d2.rsplit('.', 1)[1]]}"
    m = re.match(r"^res(\d)\.(\d+)\.(conv\d|shortcut)\.(norm\.)?(\w+)$", d2)
    if not m:
        return d2
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[m.group(3)]
    base = f"res{m.group(1)}_{m.group(2)}_{branch}"
    return f"{base}_bn_{_C2_NORM[m.group(5)]}" if m.group(4) else f"{base}_{_C2_PARAM[m.group(5)]}"


def _mnv2_names(backbone: nn.Module, official: bool) -> dict[str, str]:
    """maskkit MobileNetV2 -> torchvision ``features.I....`` names, or (``official``) the
    tonylins/centermask2 layout: ``features.0.{0,1}`` then ``features.I.conv.J`` over the
    flat [conv, bn, relu6, conv, bn, (relu6, conv, bn)] list of each inverted residual."""
    names = {}
    for key in backbone.state_dict():
        if key.endswith("num_batches_tracked"):
            continue
        # Slicing torchvision's ``features`` keeps its indices: "stem.I.rest", "stages.S.I.rest".
        n = 3 if key.startswith("stages.") else 2
        parts = key.split(".", n)
        i, rest = int(parts[n - 1]), parts[n]
        if official and rest.startswith("conv."):
            # torchvision nests Conv2dNormActivation (conv.K.0 conv, conv.K.1 bn); flatten it.
            flat = (
                {"0.0": 0, "0.1": 1, "1.0": 3, "1.1": 4, "2": 6, "3": 7}
                if i > 1
                else {"0.0": 0, "0.1": 1, "1": 3, "2": 4}
            )
            m = re.match(r"^conv\.(\d(?:\.\d)?)\.(\w+)$", rest)
            rest = f"conv.{flat[m.group(1)]}.{m.group(2)}"
        names[key] = f"features.{i}.{rest}"
    return names


# --------------------------------------------------------------------------- source detection


def _detect(sd: dict[str, torch.Tensor], family: str, path: Path) -> str:
    """The source layout of a state dict, from its names."""
    keys = set(sd)
    if family == "vovnet":
        if "stem.stem_1/conv.weight" in keys:
            return "centermask2 VoVNet (detectron2)"
        if "stem.0.conv.weight" in keys:
            return "timm VoVNet"
    elif family == "resnet":
        if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
            return "torchvision ResNet"
        if "conv1_w" in keys and "res2_0_branch2a_w" in keys:
            return "Caffe2 ResNet (detectron2 .pkl)"
        if "stem.conv1.weight" in keys and "res2.0.conv1.weight" in keys:
            return "detectron2 ResNet"
    elif family == "resnet_c4":  # SharpMask's trunk keeps torchvision's names
        if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
            return "torchvision ResNet"
    elif family == "mobilenet_v2":
        if "features.1.conv.0.0.weight" in keys:
            return "torchvision MobileNetV2"
        if "features.1.conv.0.weight" in keys and sd["features.1.conv.0.weight"].dim() == 4:
            return "centermask2 MobileNetV2 (detectron2)"
    sample = ", ".join(sorted(keys)[:3])
    raise CheckpointError(
        f"{path}: not a known ImageNet {family} weights layout (first names: {sample}); "
        "see README 'ImageNet backbones for training' for the supported files"
    )


def _family(spec_name: str) -> str:
    if spec_name in VOVNET_SPECS:
        return "vovnet"
    if spec_name in RESNET_VARIANTS:
        return "resnet"
    if spec_name in ("mobilenet_v2", ""):
        return "mobilenet_v2"
    if spec_name.startswith("sharpmask:") and spec_name.split(":", 1)[1] in SHARPMASK_TRUNKS:
        return "resnet_c4"
    raise MaskkitError(f"no ImageNet weights layout for backbone variant {spec_name!r}")


_IGNORED = {  # the ImageNet classifier of each source
    "centermask2 VoVNet (detectron2)": r"^(classifier|fc)\.",
    "timm VoVNet": r"^head\.",
    "torchvision ResNet": r"^fc\.",
    "Caffe2 ResNet (detectron2 .pkl)": r"^(fc1000|pred)_",
    "detectron2 ResNet": r"^(fc|linear)\.",
    "torchvision MobileNetV2": r"^(classifier\.|features\.18\.)",
    "centermask2 MobileNetV2 (detectron2)": r"^(classifier\.|features\.18\.)",
}


def _name_table(backbone: nn.Module, source: str) -> dict[str, str]:
    """maskkit key -> file key for ``source`` (BatchNorm counters left out)."""
    return {k: v for k, v in _full_name_table(backbone, source).items() if not k.endswith("num_batches_tracked")}


def _full_name_table(backbone: nn.Module, source: str) -> dict[str, str]:
    own = [k for k in backbone.state_dict() if not k.endswith("num_batches_tracked")]
    if source == "centermask2 VoVNet (detectron2)":
        return official_names(backbone)
    if source == "timm VoVNet":
        return _vovnet_timm_names(backbone)
    if source == "torchvision ResNet" and hasattr(backbone, "layer1"):
        return {k: k for k in own}  # SharpMask trunk: torchvision's own module names
    if source == "torchvision ResNet":
        table = {"stem.0.": "conv1.", "stem.1.": "bn1."}
        out = {}
        for k in own:
            m = re.match(r"^stages\.(\d)\.(.*)$", k)
            out[k] = f"layer{int(m.group(1)) + 1}.{m.group(2)}" if m else table[k[:7]] + k[7:]
        return out
    if source == "detectron2 ResNet":
        return {k: _resnet_d2_name(k) for k in own}
    if source == "Caffe2 ResNet (detectron2 .pkl)":
        return {k: _resnet_c2_name(k) for k in own}
    return _mnv2_names(backbone, official=source.startswith("centermask2"))


# --------------------------------------------------------------------------- conventions


def _identity_ese(block: nn.Module) -> None:
    """Make a block's eSE an exact identity. maskkit's eSE computes ``x * hsigmoid(W @
    avgpool(x) + b)`` with ``hsigmoid(z) = relu6(z + 3) / 6``; with ``W = 0`` and ``b = 6``
    the gate is ``relu6(9) / 6 = 1.0`` exactly for every input (finite x), so ``x * 1 == x``
    bit for bit, as timm's blocks without eSE. The gate sits in hsigmoid's flat region, so
    its gradient is 0 and training keeps it an identity (weight decay would need millions of
    steps to bring ``b`` down to 3)."""
    with torch.no_grad():
        block.attention.fc.weight.zero_()
        block.attention.fc.bias.fill_(6.0)


def _stride_in_1x1(backbone: nn.Module) -> bool:
    """True when the first block of stage 3 strides in its 1x1 conv (MSRA/detectron2 style)."""
    return tuple(backbone.stages[1][0].conv1.stride) == (2, 2)


def _convention(source: str, sd: dict[str, torch.Tensor], backbone: nn.Module, path: Path):
    """(input_format, mean, std) of ``source``; checks the ResNet stride placement it needs."""
    if hasattr(backbone, "layer1"):  # SharpMask trunk: torchvision files only
        return IMAGENET_RGB
    if "ResNet" not in source:
        return DETECTRON2_BGR if source.startswith("centermask2") else IMAGENET_RGB
    msra = False
    if source in ("Caffe2 ResNet (detectron2 .pkl)", "detectron2 ResNet"):
        # ResNeXt: the 3x3 conv is grouped, its weight [planes, planes / groups, 3, 3] is not square.
        grouped = any(
            k.endswith(("branch2b_w", "conv2.weight")) and v.dim() == 4 and v.shape[1] < v.shape[0]
            for k, v in sd.items()
        )
        has_stats = any(k.endswith(("_bn_rm", "norm.running_mean")) for k in sd)
        # MSRA: folded-affine norms, STRIDE_IN_1X1=True. FAIR X-101-32x8d (official
        # X-101 config: STRIDE_IN_1X1 False, its own std). With statistics: a torchvision
        # conversion (tools/convert-torchvision-to-d2.py: RGB, ImageNet mean/std).
        msra = not grouped and not has_stats
        convention = DETECTRON2_BGR_X101 if grouped else DETECTRON2_BGR if msra else IMAGENET_RGB
    else:
        convention = IMAGENET_RGB
    if _stride_in_1x1(backbone) != msra:
        want = "true" if msra else "false"
        where = "the 1x1 conv (MSRA, detectron2 STRIDE_IN_1X1=True)" if msra else "the 3x3 conv (torchvision)"
        raise CheckpointError(
            f"{path}: {source} weights have each stage's stride-2 in {where}; set model.backbone.stride_in_1x1={want}"
        )
    return convention


# --------------------------------------------------------------------------- loading


def _check_timm_residual(backbone: nn.Module, sd: dict[str, torch.Tensor], path: Path) -> None:
    """timm's ``ese_vovnet*b`` have eSE and the identity from a stage's 2nd block on; its
    ``vovnet39a/57a`` neither. The identity has no tensor, so compare the flags."""
    file_residual = any(".attn." in k for k in sd)
    multi = [s for s in backbone.stages if len(s.blocks) > 1]
    if multi and any(s.blocks[1].residual != file_residual for s in multi):
        want = "true" if file_residual else "false"
        raise CheckpointError(f"{path}: these timm VoVNet weights were trained with model.backbone.residual={want}")


def _check_norms(backbone: nn.Module, path: Path) -> None:
    if any(isinstance(m, nn.GroupNorm) for m in backbone.modules()):
        raise MaskkitError(
            f"{path}: ImageNet weights hold BatchNorm statistics; model.backbone.norm must be FrozenBN or BN, not GN"
        )


def _mismatch_error(path: Path, source: str, missing, unexpected, shapes) -> CheckpointError:
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            parts.append(f"{len(items)} {what} ({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})")
    return CheckpointError(f"{path}: {source} weights do not fit this backbone: {'; '.join(parts)}")


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike, spec_name: str) -> BackboneWeights:
    """Copy the ImageNet weights in ``path`` into ``backbone`` (built by ``build_backbone`` for
    variant ``spec_name``: a ``VOVNET_SPECS`` key, a ``RESNET_VARIANTS`` name, ``mobilenet_v2``,
    or ``sharpmask:resnet50`` / ``sharpmask:resnet18`` for the DeepMask/SharpMask trunk).
    Strict; see the module docstring for the sources and conventions."""
    path = resolve_weights_path(path)
    _check_norms(backbone, path)
    sd = read_weights_file(path)
    source = _detect(sd, _family(spec_name), path)
    table = _name_table(backbone, source)
    used = set(table.values())
    # SharpMask's trunk ends after layer3 (stride 16): torchvision's layer4 is unused too.
    ignore = re.compile(_IGNORED[source] + (r"|^layer4\." if _family(spec_name) == "resnet_c4" else ""))
    ignored = sorted(k for k in sd if k not in used and ignore.search(k))
    unexpected = sorted(k for k in sd if k not in used and not ignore.search(k))
    # Caffe2 BatchNorm is a folded affine (scale, bias) without statistics.
    affine_only = source in ("Caffe2 ResNet (detectron2 .pkl)", "detectron2 ResNet") and not any(
        k.endswith(("_bn_rm", "norm.running_mean")) for k in sd
    )
    state = backbone.state_dict()
    mapped, missing, shapes, ese_fill, stat_fill = {}, [], [], [], []
    for mine, theirs in table.items():
        if theirs in sd:
            if tuple(sd[theirs].shape) != tuple(state[mine].shape):
                shapes.append(f"{theirs} {tuple(sd[theirs].shape)} vs {tuple(state[mine].shape)}")
            mapped[mine] = sd[theirs]
        elif source == "timm VoVNet" and ".attention.fc." in mine:
            ese_fill.append(mine)
        elif affine_only and mine.endswith(("running_mean", "running_var")):
            stat_fill.append(mine)
        else:
            missing.append(theirs)
    blocks = sorted({k.rsplit(".attention.", 1)[0] for k in ese_fill})
    if blocks:  # timm has eSE in the last block of each stage: only the others may lack it
        last = {f"stages.{i}.blocks.{len(s.blocks) - 1}" for i, s in enumerate(backbone.stages)}
        missing += [table[f"{b}.attention.fc.weight"] for b in blocks if b in last]
    if missing or unexpected or shapes:
        raise _mismatch_error(path, source, missing, unexpected, shapes)
    if source == "timm VoVNet":
        _check_timm_residual(backbone, sd, path)
    convention = _convention(source, sd, backbone, path)
    with torch.no_grad():
        for mine, t in mapped.items():
            state[mine].copy_(t.to(state[mine].dtype))
        for mine in stat_fill:  # Caffe2 folded affine: mean 0, var 1 - eps -> scale exactly s
            norm = backbone.get_submodule(mine.rsplit(".", 1)[0])
            state[mine].fill_(0.0 if mine.endswith("running_mean") else 1.0 - norm.eps)
    for b in blocks:
        _identity_ese(backbone.get_submodule(b))
    fmt, mean, std = convention
    return BackboneWeights(path, source, len(mapped), fmt, mean, std, ignored, blocks, len(stat_fill) // 2)


def apply_backbone_weights(model: nn.Module, model_cfg) -> BackboneWeights:
    """``model.backbone.weights`` of a CenterMask model: load the file into ``model.backbone``;
    the report's :attr:`BackboneWeights.convention` is the weights' input convention, which the
    builder records for the model (``maskkit.models.zoo.build_model``)."""
    bb = model_cfg.backbone
    return load_backbone_weights(
        model.backbone, bb.weights, bb.variant if bb.name != "mobilenet_v2" else "mobilenet_v2"
    )


def apply_trunk_weights(model: nn.Module, model_cfg) -> BackboneWeights:
    """``model.trunk_weights`` of a DeepMask/SharpMask model: torchvision's ImageNet ResNet-50
    (or -18), or the packaged ``maskkit:resnet_tiny_shapes12`` of the demo's ``resnet_tiny``, into
    the stride-16 trunk (``conv1`` .. ``layer3``; ``layer4`` and ``fc`` unused); the report's
    convention is the file's (RGB 0-1, ImageNet mean/std)."""
    if model_cfg.trunk not in SHARPMASK_TRUNKS:
        raise MaskkitError(
            f"model.trunk_weights: no ImageNet file fits trunk {model_cfg.trunk!r}; use trunk "
            f"{', '.join(SHARPMASK_TRUNKS)} (a file of another width is refused with its shapes)"
        )
    return load_backbone_weights(model.trunk, model_cfg.trunk_weights, f"sharpmask:{model_cfg.trunk}")
