"""The official DeepMask / SharpMask Torch7 models (``model.t7``) -> maskkit ``deepmask_r50`` /
``sharpmask_r50`` (facebookresearch/deepmask, the files its README links).

What such a file holds (``TrainerDeepMask.lua``/``TrainerSharpMask.lua`` save
``{model = model:clone('weight', 'bias'), config = config}``):

- ``nn.DeepMask`` (``DeepMask.lua``): ``trunk`` = fb.resnet.torch's ResNet-50 with its last four
  modules removed (conv1, BN, ReLU, max-pool, layer1..layer3), every BatchNorm folded by
  ``inn.utils.BNtoFixed`` into an ``inn.ConstAffine`` (``y = a * x + b``), every 3x3/7x7 conv
  wrapped as ``nn.Sequential(nn.SpatialSymmetricPadding, conv)`` with the conv's own padding
  set to 0 (``modelUtils.lua: updatePadding``), then ``SpatialZeroPadding(-1)`` (the centre
  crop), 1x1 conv 1024->128, ReLU, View, ``Linear(128*10*10 -> 512)``; ``maskBranch`` =
  ``Sequential(Sequential(Linear(512 -> 56*56)), upsampling to 112)``; ``scoreBranch`` =
  Dropout, Linear(512->1024), Threshold, Dropout, Linear(1024->1).
- ``nn.SharpMask`` (``SharpMask.lua``): the DeepMask parts (``trunk``, ``maskBranchDM``,
  ``scoreBranch``) and ``refs``: ``refs[0]`` = ``Sequential(Linear(512 -> km*10*10), View)``,
  ``refs[i]`` (i = 1..4) = ``Sequential(ParallelTable(neths[i], netvs[i]), CAddTable, ReLU,
  SpatialUpSamplingNearest(2))``; the horizontal net is [crop], 3 padded 3x3 convs (two with
  ReLU), the vertical net 2 padded 3x3 convs (the first with ReLU: ``refine_mask_convs = 2``);
  ``refs[4]`` ends with a padded 3x3 conv to 1 channel.

Parametric modules are paired in order with maskkit's (``Conv2d``, ``FrozenBatchNorm2d``,
``Linear`` in ``named_modules`` order, which follows the official order); kernel, stride and
padding of every conv are compared too. The architecture sizes (widths, window, head sizes,
km/ks) are read from the file, so the same code converts smaller models of the same layout
(the tests). Strict: anything that does not pair up is one :class:`CheckpointError` listing
the missing, unexpected and mis-shaped names.

Safety: the file is read by the ``torchfile`` package, pure Python. It builds only numbers,
strings, tables, numpy arrays and ``TorchObject`` records; serialised Lua functions are kept as
bytes and never run, so a ``.t7`` file cannot execute anything. Its tensors are
``numpy.lib.stride_tricks.as_strided`` views whose sizes/strides come from the file
unchecked; every tensor used here is checked to lie inside its storage before it is read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from maskkit.errors import CheckpointError
from maskkit.models.sharpmask.padding import conv_padding
from maskkit.models.zoo import build, get_config

__all__ = ["convert_torch7", "read_torch7"]

_CONV = {b"nn.SpatialConvolution", b"cudnn.SpatialConvolution", b"nn.SpatialConvolutionMM"}
_AFFINE = {b"inn.ConstAffine", b"nn.SpatialConstDiagonal"}  # BNtoFixed output (modelUtils.lua)
_BN = {b"nn.SpatialBatchNormalization", b"cudnn.SpatialBatchNormalization"}  # unfolded, if any
_LINEAR = {b"nn.Linear"}
_SYM_PAD = b"nn.SpatialSymmetricPadding"
_PRESETS = {
    b"nn.DeepMask": ("deepmask_r50",),
    b"nn.SharpMask": ("sharpmask_r50", "sharpmask_zoom_r50", "sharpmask_zoom2_r50"),
}
_RESNET50_BLOCKS = (3, 4, 6)  # layer1..layer3 of ResNet-50


@dataclass
class _Leaf:
    """One parametric Torch7 module: ``kind`` conv | affine | linear, its arrays (maskkit
    names ``weight``/``bias`` or ``a``/``b``), the official tensor names, conv geometry."""

    path: str
    kind: str
    arrays: dict[str, np.ndarray]
    names: list[str] = field(default_factory=list)
    geometry: tuple | None = None  # conv: ((kH, kW), (dH, dW), (padH, padW), mode)


def _type(obj) -> bytes:
    return obj.torch_typename() if hasattr(obj, "torch_typename") else b""


def read_torch7(path: str | os.PathLike):
    """The object stored in a Torch7 file, read by ``torchfile`` (bytes keys and strings;
    modules as ``TorchObject``; a ``modules`` list as a Python list). One
    :class:`CheckpointError` naming the file for anything unreadable."""
    try:
        import torchfile  # optional: pip install 'maskkit[torch7]'
    except ImportError:
        raise CheckpointError(
            f"{path}: reading Torch7 files needs the torchfile package: pip install 'maskkit[torch7]'"
        ) from None
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such Torch7 file")
    try:
        return torchfile.load(str(path))
    except Exception as e:  # noqa: BLE001 -- a malformed file can raise struct/Value/NotImplemented/Recursion errors
        raise CheckpointError(f"{path}: not a readable Torch7 file ({type(e).__name__}: {e})") from None


try:  # numpy >= 2
    from numpy.lib.array_utils import byte_bounds as _byte_bounds
except ImportError:  # numpy 1.x
    _byte_bounds = np.byte_bounds


def _array(a, what: str, path: Path) -> np.ndarray:
    """A float32 copy of a tensor read by torchfile, after checking that its strided view lies
    inside its storage (torchfile's ``as_strided`` does not check)."""
    if not isinstance(a, np.ndarray) or a.size == 0:
        raise CheckpointError(f"{path}: {what} is not a tensor")
    root = a  # the storage array owning the memory: as_strided's view -> DummyArray -> storage[offset:] -> storage
    while getattr(root, "base", None) is not None:
        root = root.base
    if not isinstance(root, np.ndarray):
        raise CheckpointError(f"{path}: {what} has no storage")
    lo, hi = _byte_bounds(a)
    rlo, rhi = _byte_bounds(root)
    if lo < rlo or hi > rhi:
        raise CheckpointError(f"{path}: {what} points outside its storage (corrupt file)")
    return np.array(a, dtype=np.float32)


class _Walker:
    """Collects the parametric leaves of a Torch7 module tree in forward order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: set[int] = set()

    def leaves(self, obj, name: str) -> list[_Leaf]:
        out: list[_Leaf] = []
        self._walk(obj, name, out, [None])
        return out

    def _walk(self, obj, name: str, out: list[_Leaf], pad: list) -> None:
        if id(obj) in self.seen:  # SharpMask: refs[i] holds neths[i] / netvs[i] themselves
            return
        self.seen.add(id(obj))
        mods = obj.modules if hasattr(obj, "torch_typename") else None
        if isinstance(mods, list):
            for i, m in enumerate(mods):
                self._walk(m, f"{name}.modules[{i + 1}]", out, pad)  # Lua's 1-based index
            return
        t = _type(obj)
        try:
            if t == _SYM_PAD:  # applies to the conv that follows it (updatePadding's Sequential)
                pad[0] = (int(obj.pad_t), int(obj.pad_l))
                if (obj.pad_t, obj.pad_l) != (obj.pad_b, obj.pad_r):
                    raise CheckpointError(f"{self.path}: {name}: asymmetric padding is not supported")
                return
            leaf = self._leaf(obj, t, name, pad[0])
        except CheckpointError:
            raise
        except (TypeError, ValueError) as e:  # a field missing (None) or of the wrong kind
            raise CheckpointError(f"{self.path}: {name}: malformed {t.decode(errors='replace')} module ({e})") from None
        if leaf is not None:
            out.append(leaf)
        pad[0] = None

    def _leaf(self, obj, t: bytes, name: str, sym_pad) -> _Leaf | None:
        get = lambda k: _array(obj[k], f"{name}.{k}", self.path)  # noqa: E731
        has = lambda k: isinstance(obj[k], np.ndarray) and obj[k].size > 0  # noqa: E731
        if t in _CONV:
            shape = (int(obj.nOutputPlane), int(obj.nInputPlane), int(obj.kH), int(obj.kW))
            w = get("weight")
            if w.size != math.prod(shape):
                raise CheckpointError(f"{self.path}: {name}.weight has {w.size} values, the conv needs {shape}")
            arrays = {"weight": w.reshape(shape)}
            if has("bias"):
                arrays["bias"] = get("bias")
            pad, mode = (sym_pad, "symmetric") if sym_pad else ((int(obj.padH), int(obj.padW)), "zeros")
            geo = ((shape[2], shape[3]), (int(obj.dH), int(obj.dW)), pad, mode)
            return _Leaf(name, "conv", arrays, [f"{name}.{k}" for k in arrays], geo)
        if t in _AFFINE:
            return _Leaf(name, "affine", {"a": get("a"), "b": get("b")}, [f"{name}.a", f"{name}.b"])
        if t in _BN:  # y = (x - mean) / sqrt(var + eps) * weight + bias, as a, b (in float64)
            inv = 1.0 / np.sqrt(get("running_var").astype(np.float64) + float(obj.eps))
            a = inv * (get("weight") if has("weight") else 1.0)
            b = (get("bias") if has("bias") else 0.0) - get("running_mean") * a
            names = [f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var") if has(k)]
            return _Leaf(name, "affine", {"a": a.astype(np.float32), "b": np.asarray(b, np.float32)}, names)
        if t in _LINEAR:
            arrays = {"weight": get("weight")}
            if has("bias"):
                arrays["bias"] = get("bias")
            return _Leaf(name, "linear", arrays, [f"{name}.{k}" for k in arrays])
        return None


# --------------------------------------------------------------------------- reading the model object


def _model_object(root, path: Path):
    """The ``nn.DeepMask`` / ``nn.SharpMask`` object of a file (``{model=..., config=...}``)."""
    obj = root.model if isinstance(root, dict) and _type(root.model) else root
    if _type(obj) not in _PRESETS:
        found = _type(obj).decode(errors="replace") or type(obj).__name__
        raise CheckpointError(
            f"{path}: not an official DeepMask/SharpMask model file "
            f"(found {found}; expected nn.DeepMask or nn.SharpMask)"
        )
    return obj


def _container(obj, name: str, path: Path):
    """``obj`` when it is a Torch7 container module (with a ``modules`` list), else an error."""
    if not (_type(obj) and isinstance(obj.modules, list)):
        raise CheckpointError(
            f"{path}: {name} is not a module container (found "
            f"{_type(obj).decode(errors='replace') or type(obj).__name__})"
        )
    return obj


def _official_leaves(obj, path: Path) -> tuple[list[_Leaf], dict]:
    """The parametric leaves in the order of maskkit's modules, and the per-part leaf lists
    (part ``extra``: leaves of ``neths``/``netvs`` entries that ``refs`` does not use)."""
    w = _Walker(path)
    sharp = _type(obj) == b"nn.SharpMask"
    mask = "maskBranchDM" if sharp else "maskBranch"
    parts = {
        k: w.leaves(_container(obj[name], name, path), name)
        for k, name in (("trunk", "trunk"), ("mask", mask), ("score", "scoreBranch"))
    }
    if sharp:
        refs = obj.refs
        if not isinstance(refs, dict) or sorted(refs) != [0, 1, 2, 3, 4]:
            raise CheckpointError(f"{path}: SharpMask file without refs[0..4] (the refinement modules)")
        parts["m1"] = w.leaves(_container(refs[0], "refs[0]", path), "refs[0]")
        for i in range(1, 5):
            par = _container(refs[i], f"refs[{i}]", path).modules[0] if refs[i].modules else None
            if _type(par) != b"nn.ParallelTable" or not isinstance(par.modules, list) or len(par.modules) != 2:
                raise CheckpointError(f"{path}: refs[{i}] does not start with ParallelTable(horizontal, vertical)")
            parts[f"h{i}"] = w.leaves(par.modules[0], f"refs[{i}].modules[1].modules[1]")
            parts[f"v{i}"] = w.leaves(par.modules[1], f"refs[{i}].modules[1].modules[2]")
        parts["out"] = w.leaves(refs[4], "refs[4]")  # the parallel part was walked above
        for k in ("neths", "netvs"):  # entries not reachable from refs would be unexpected tensors
            table = obj[k]
            for j, m in (
                table.items() if isinstance(table, dict) else enumerate(table if isinstance(table, list) else [], 1)
            ):
                parts.setdefault("extra", []).extend(w.leaves(m, f"{k}[{j}]"))
    return [leaf for k, p in parts.items() if k != "extra" for leaf in p], parts


def _find(obj, typename: bytes):
    """First module of ``typename`` in a Torch7 module tree (depth first), or None."""
    if _type(obj) == typename:
        return obj
    mods = obj.modules if _type(obj) else None
    for m in mods if isinstance(mods, list) else []:
        hit = _find(m, typename)
        if hit is not None:
            return hit
    return None


def _side(n: int, what: str, path: Path) -> int:
    s = math.isqrt(max(n, 0))
    if s * s != n:
        raise CheckpointError(f"{path}: {what} has {n} outputs, not a square")
    return s


def _sizes(obj, parts: dict, path: Path) -> dict:
    """SharpMaskConfig fields read from the file's layer sizes (the real file gives the preset's)."""
    trunk_mods = obj.trunk.modules
    blocks = tuple(len(m.modules) if isinstance(m.modules, list) else 0 for m in trunk_mods[4:7])
    if blocks != _RESNET50_BLOCKS:
        raise CheckpointError(
            f"{path}: trunk stages with {blocks} blocks; the official ResNet-50 trunk "
            f"(maskkit's resnet50) has {_RESNET50_BLOCKS}"
        )
    convs = [leaf for leaf in parts["trunk"] if leaf.kind == "conv"]
    linears = [leaf for leaf in parts["trunk"] + parts["mask"] + parts["score"] if leaf.kind == "linear"]
    if not convs or len(linears) != 4:
        raise CheckpointError(
            f"{path}: expected the trunk's Linear, the mask Linear and two score Linears, "
            f"found {len(linears)} Linear layers"
        )
    reduce = convs[-1].arrays["weight"].shape[0]
    fc, mask, score = linears[0].arrays["weight"], linears[1].arrays["weight"], linears[2].arrays["weight"]
    sizes = dict(
        trunk_width=convs[0].arrays["weight"].shape[0],
        reduce_channels=reduce,
        feature_size=_side(fc.shape[1] // max(reduce, 1), "the trunk's Linear input / 128", path),
        hidden_dim=fc.shape[0],
        mask_size=_side(mask.shape[0], "the mask Linear", path),
        score_hidden=score.shape[0],
    )
    up = _find(obj.maskBranchDM if _type(obj) == b"nn.SharpMask" else obj.maskBranch, b"nn.SpatialReSamplingEx")
    sizes["mask_loss_size"] = int(up.owidth) if up is not None and up.owidth else sizes["mask_size"]
    drop = _find(obj.scoreBranch, b"nn.Dropout")
    if drop is not None and drop.p is not None:
        sizes["score_dropout"] = float(drop.p)
    if _type(obj) == b"nn.SharpMask":
        km, ks = int(obj.km), int(obj.ks)
        if km != ks or km < 16 or km % 16:
            raise CheckpointError(
                f"{path}: SharpMask with km={km}, ks={ks}; maskkit's refinement needs "
                "km == ks, a multiple of 16 (the released model: 32)"
            )
        sizes["refine_channels"] = tuple(km >> i for i in range(4))
        sizes["skip_channels"] = tuple(
            parts[f"h{i}"][0].arrays["weight"].shape[0] if parts[f"h{i}"] else 0 for i in range(1, 5)
        )
        sizes["refine_mask_convs"] = len(parts["v1"])
        if sizes["refine_mask_convs"] not in (1, 2) or min(sizes["skip_channels"]) < 1:
            raise CheckpointError(
                f"{path}: refinement with {len(parts['v1'])} vertical convs / skip widths "
                f"{sizes['skip_channels']}; the official layout has 2 convs on each path"
            )
    return sizes


def _padding_mode(leaves: list[_Leaf], path: Path) -> str:
    """``symmetric`` (official) or ``zeros``: the one padding of every conv with a kernel > 1."""
    modes = {leaf.geometry[3] for leaf in leaves if leaf.kind == "conv" and max(leaf.geometry[2]) > 0}
    if len(modes) != 1:
        raise CheckpointError(f"{path}: convs padded in several ways ({sorted(modes)}); expected all symmetric")
    return modes.pop()


def _config(obj, leaves: list[_Leaf], parts: dict, preset: str | None, path: Path):
    """The maskkit Config: the preset's, with the file's sizes, padding and the official
    refinement details (nearest upsampling, two vertical convs)."""
    allowed = _PRESETS[_type(obj)]
    name = preset or allowed[0]
    if name not in allowed:
        kind = _type(obj).decode()
        raise CheckpointError(f"{path}: a {kind} model converts to {' / '.join(allowed)}, not {name!r}")
    cfg = get_config(name)
    m = cfg.model
    for k, v in _sizes(obj, parts, path).items():
        setattr(m, k, v)
    m.sampler.window = m.stride * m.feature_size
    m.padding = _padding_mode(leaves, path)
    if m.refine:
        m.upsample = "nearest"  # SharpMask.lua: SpatialUpSamplingNearest(2)
    # full-image inference as InferDeepMask.lua / InferSharpMask.lua: corner-aligned bilinear
    # pyramid, image border filled with 0.5 (0..1 RGB) before the ImageNet mean/std
    m.pyramid, m.border_fill = "official", 0.5
    return cfg


# --------------------------------------------------------------------------- pairing with maskkit


def _targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """maskkit's parametric modules in forward order (trunk, head C, refinement)."""
    kinds = (nn.Conv2d, nn.Linear, FrozenBatchNorm2d)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def _kind(module: nn.Module) -> str:
    return {nn.Conv2d: "conv", nn.Linear: "linear", FrozenBatchNorm2d: "affine"}[type(module)]


def _pair(leaf: _Leaf, name: str, module: nn.Module, carry: dict, problems: dict) -> dict[str, torch.Tensor]:
    """State-dict entries of ``module`` from ``leaf``; problems go to ``problems``."""
    if leaf.kind != _kind(module):
        problems["mismatch"].append(f"{leaf.path} ({leaf.kind}) vs {name} ({_kind(module)})")
        return {}
    arrays = dict(leaf.arrays)
    if leaf.kind == "affine":  # FrozenBN(x) = (x - 0) * weight / sqrt((1 - eps) + eps) + bias = a x + b
        a, b = arrays["a"], arrays["b"] + carry.pop("bias", 0.0) * arrays["a"]  # fold a trunk conv bias
        arrays = {
            "weight": a,
            "bias": b,
            "running_mean": np.zeros_like(a),
            "running_var": np.full_like(a, 1.0 - module.eps),
        }
    elif leaf.kind == "conv":
        mode, pad = conv_padding(module)
        geo = (tuple(module.kernel_size), tuple(module.stride), tuple(pad), mode)
        if max(geo[0]) == 1:  # a 1x1 conv is unpadded whatever the mode
            geo, leaf_geo = geo[:3], leaf.geometry[:3]
        else:
            leaf_geo = leaf.geometry
        if leaf_geo != geo:
            problems["mismatch"].append(f"{leaf.path} kernel/stride/padding {leaf_geo} vs {name} {geo}")
        if "bias" in arrays and module.bias is None:
            carry["bias"] = arrays.pop("bias")  # ResNet convs: folded into the next affine
    out = {}
    for k, v in arrays.items():
        out[f"{name}.{k}"] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    return out


def _state_dict(leaves: list[_Leaf], extra: list[_Leaf], model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Pair the official leaves with maskkit's modules; one CheckpointError for any problem."""
    targets = _targets(model)
    problems: dict[str, list[str]] = {"mismatch": [], "unexpected": [], "missing": [], "shape": []}
    state: dict[str, torch.Tensor] = {}
    carry: dict = {}
    for leaf, (name, module) in zip(leaves, targets):
        if carry and leaf.kind != "affine":
            problems["unexpected"].append(f"{leaf.path}: a conv bias with no BatchNorm affine after it")
            carry.clear()
        state.update(_pair(leaf, name, module, carry, problems))
    problems["unexpected"] += [n for leaf in leaves[len(targets) :] + extra for n in leaf.names]
    expected = model.state_dict()
    problems["missing"] = [k for k in expected if k not in state]
    problems["unexpected"] += [k for k in state if k not in expected]
    problems["shape"] = [
        f"{k} {tuple(v.shape)} in file vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if any(problems.values()):
        text = "; ".join(
            f"{len(v)} {k}: {', '.join(v[:8])}{' ...' if len(v) > 8 else ''}" for k, v in problems.items() if v
        )
        raise CheckpointError(f"{path}: the Torch7 model does not match maskkit's layout: {text}")
    return state


def convert_torch7(path: str | os.PathLike, preset: str | None = None) -> nn.Module:
    """Official DeepMask / SharpMask ``model.t7`` -> the maskkit model, eval mode.

    ``preset``: ``deepmask_r50`` for an ``nn.DeepMask`` file; ``sharpmask_r50`` (default),
    ``sharpmask_zoom_r50`` or ``sharpmask_zoom2_r50`` for an ``nn.SharpMask`` file (same
    weights, more scales); None picks the first. The returned module carries
    ``model.info`` (:class:`maskkit.config.ModelInfo`) with the Config (the preset's, with the
    file's sizes, symmetric padding, the official image pyramid and border
    (``pyramid="official"``, ``border_fill=0.5``) and for SharpMask nearest upsampling and
    ``refine_mask_convs = 2``), class names ``["object"]`` and category ids ``[1]``
    (class-agnostic proposals, as maskkit's own SharpMask files), as
    :func:`maskkit.checkpoint.load_model` gives.
    """
    path = Path(path)
    obj = _model_object(read_torch7(path), path)
    leaves, parts = _official_leaves(obj, path)
    cfg = _config(obj, leaves, parts, preset, path)
    model = build(cfg, ["object"], [1])
    state = _state_dict(leaves, parts.get("extra", []), model, path)
    model.load_state_dict(state, strict=True)
    return model.eval()
