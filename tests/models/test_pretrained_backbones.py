"""ImageNet backbone files (``model.backbone.weights``): every source loads by its own names,
the trunk equals the file, the input convention is the file's, wrong files fail clearly, and a
training run starts from the file.

Files are built here with each source's own key names: torchvision's real models; timm's
names written from ``timm/models/vovnet.py`` (checked against timm itself when it is
installed); the official centermask2 layouts recorded with the authors' code
(``tests/convert/reference/layouts``, see ``benchmarks/official_reference``); Caffe2 (MSRA
``.pkl``) names from detectron2's ``c2_model_loading.convert_basic_c2_names``, inverted.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from maskkit.config import InputConvention
from maskkit.errors import CheckpointError, MaskkitError
from maskkit.models.backbones import build_backbone
from maskkit.models.backbones.pretrained import load_backbone_weights
from maskkit.models.centermask.config import BackboneConfig

LAYOUTS = Path(__file__).resolve().parents[1] / "convert" / "reference" / "layouts"
PREFIX = "backbone.bottom_up."


def _randomise(sd: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values of the same shapes (positive variances), independent contiguous tensors."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif k.endswith(("running_var", "_riv")):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g) * 0.1
    return out


def _backbone(name: str, variant: str, **kw):
    """An uninitialised backbone (built on the meta device, then given CPU storage: random
    init of the big trunks would dominate the test time); loading must fill every tensor."""
    with torch.device("meta"):
        bb = build_backbone(BackboneConfig(name=name, variant=variant, **kw))
    return bb.to_empty(device="cpu")


def _meta_state_dict(ctor) -> dict[str, torch.Tensor]:
    """Names and shapes of a torchvision model's state dict, without initialising it."""
    with torch.device("meta"):
        return ctor(weights=None).state_dict()


def _layout(config_name: str) -> dict[str, list[int]]:
    path = LAYOUTS / f"{config_name}.json"
    if not path.is_file():
        pytest.skip(f"official layout {path} not found")
    tensors = json.loads(path.read_text())["tensors"]
    return {k: v for k, v in tensors.items() if k.startswith(PREFIX)}


def _official_file(config_name: str, seed: int = 0, prefix: bool = True) -> dict[str, torch.Tensor]:
    """A state dict with the official backbone names of ``config_name`` and random values."""
    sd = _randomise({k: torch.empty(shape) for k, shape in _layout(config_name).items()}, seed)
    return sd if prefix else {k[len(PREFIX) :]: v for k, v in sd.items()}


def _assert_trunk_equals(backbone, sd: dict[str, torch.Tensor], name_of) -> None:
    """Every backbone tensor (counters aside) equals the file's tensor ``name_of(key)``."""
    own = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert own
    for k, v in own.items():
        assert torch.equal(v, sd[name_of(k)].to(v.dtype)), k


# --------------------------------------------------------------------------- torchvision


TV = {  # maskkit backbone (name, variant) -> torchvision constructor
    "resnet50": ("resnet", torchvision.models.resnet50),
    "resnet101": ("resnet", torchvision.models.resnet101),
    "resnext101_32x8d": ("resnet", torchvision.models.resnext101_32x8d),
    "mobilenet_v2": ("mobilenet_v2", torchvision.models.mobilenet_v2),
}


def _tv_name(variant: str, key: str) -> str:
    """maskkit trunk key -> torchvision key (the stages are torchvision's own modules; slicing
    ``features`` keeps its indices: ``stem.I.rest`` / ``stages.S.I.rest`` -> ``features.I.rest``)."""
    if variant == "mobilenet_v2":
        parts = key.split(".", 2 if key.startswith("stem.") else 3)
        return f"features.{parts[-2]}.{parts[-1]}"
    key = re.sub(r"^stem\.0\.", "conv1.", re.sub(r"^stem\.1\.", "bn1.", key))
    return re.sub(r"^stages\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)


@pytest.mark.parametrize("variant", list(TV))
def test_torchvision_state_dict_loads_and_trunk_equals_file(tmp_path, variant):
    family, ctor = TV[variant]
    sd = _randomise(_meta_state_dict(ctor))  # torchvision's own key names
    torch.save(sd, tmp_path / "tv.pth")
    bb = _backbone(family, variant)
    report = load_backbone_weights(bb, tmp_path / "tv.pth", variant)
    _assert_trunk_equals(bb, sd, lambda k: _tv_name(variant, k))
    assert report.input_format == "RGB" and report.pixel_mean == (0.485, 0.456, 0.406)
    assert report.pixel_std == (0.229, 0.224, 0.225)
    classifier = (
        {"fc.weight", "fc.bias"}
        if family == "resnet"
        else {k for k in sd if k.startswith(("classifier.", "features.18."))} - {"features.18.1.num_batches_tracked"}
    )
    assert set(report.ignored) == classifier


@pytest.mark.parametrize("variant", ["resnet50", "mobilenet_v2"])
def test_torchvision_trunk_computes_what_torchvision_computes(tmp_path, variant):
    """Not only equal tensors: the loaded trunk's C3-C5 are torchvision's own feature maps."""
    family, ctor = TV[variant]
    net = ctor(weights=None)
    net.load_state_dict(_randomise(net.state_dict(), seed=3))
    net.eval()
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    bb = _backbone(family, variant).eval()
    load_backbone_weights(bb, tmp_path / "tv.pth", variant)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        if family == "resnet":
            y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            ref = []
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
                y = layer(y)
                ref.append(y)
            ref = ref[1:]
        else:
            ref = [net.features[: i + 1](x) for i in (6, 13, 17)]
        for a, b in zip(bb(x), ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- timm

TIMM = {  # timm/models/vovnet.py model_cfgs -> maskkit variant
    "ese_vovnet19b_dw": (
        dict(
            stem=(64, 64, 64),
            conv=(128, 160, 192, 224),
            out=(256, 512, 768, 1024),
            layers=3,
            blocks=(1, 1, 1, 1),
            dw=True,
        ),
        "V-19-dw",
    ),
    "ese_vovnet19b_slim_dw": (
        dict(
            stem=(64, 64, 64), conv=(64, 80, 96, 112), out=(112, 256, 384, 512), layers=3, blocks=(1, 1, 1, 1), dw=True
        ),
        "V-19-slim-dw",
    ),
    "ese_vovnet39b": (
        dict(
            stem=(64, 64, 128),
            conv=(128, 160, 192, 224),
            out=(256, 512, 768, 1024),
            layers=5,
            blocks=(1, 1, 2, 2),
            dw=False,
        ),
        "V-39",
    ),
}


def timm_vovnet_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of timm's ``name`` state dict, written from timm's VovNet: ConvNormAct
    (``conv``, ``bn``), SeparableConvNormAct (``conv_dw``, ``conv_pw``, ``bn``), OsaBlock
    (``conv_reduction`` when depthwise and in != mid, ``conv_mid.N``, ``conv_concat``, ``attn``
    only in the last block of a stage), ``head.fc``."""
    c = TIMM[name][0]
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(p, ch):
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}.bn.{s}"] = (ch,)
        shapes[f"{p}.bn.num_batches_tracked"] = ()

    def cna(p, i, o, k):
        shapes[f"{p}.conv.weight"] = (o, i, k, k)
        bn(p, o)

    def sep(p, i, o):
        shapes[f"{p}.conv_dw.weight"] = (i, 1, 3, 3)
        shapes[f"{p}.conv_pw.weight"] = (o, i, 1, 1)
        bn(p, o)

    s = c["stem"]
    cna("stem.0", 3, s[0], 3)
    for j in (1, 2):
        sep(f"stem.{j}", s[j - 1], s[j]) if c["dw"] else cna(f"stem.{j}", s[j - 1], s[j], 3)
    in_ch = s[2]
    for i in range(4):
        mid, out = c["conv"][i], c["out"][i]
        for b in range(c["blocks"][i]):
            p, blk_in = f"stages.{i}.blocks.{b}", in_ch if b == 0 else out
            if c["dw"] and blk_in != mid:
                cna(f"{p}.conv_reduction", blk_in, mid, 1)
            for n in range(c["layers"]):
                sep(f"{p}.conv_mid.{n}", mid, mid) if c["dw"] else cna(
                    f"{p}.conv_mid.{n}", blk_in if n == 0 else mid, mid, 3
                )
            cna(f"{p}.conv_concat", blk_in + c["layers"] * mid, out, 1)
            if b == c["blocks"][i] - 1:
                shapes[f"{p}.attn.fc.weight"], shapes[f"{p}.attn.fc.bias"] = (out, out, 1, 1), (out,)
        in_ch = out
    shapes["head.fc.weight"], shapes["head.fc.bias"] = (1000, c["out"][-1]), (1000,)
    return shapes


def _timm_file(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    sd = {
        k: torch.zeros(s, dtype=torch.int64) if k.endswith("num_batches_tracked") else torch.empty(s)
        for k, s in timm_vovnet_shapes(name).items()
    }
    return _randomise(sd, seed)


def _timm_name(backbone, key: str) -> str:
    """maskkit VoVNet key -> timm key (a conv unit is [conv, norm, relu] -> conv/bn, a
    depthwise unit [dw conv, pw conv, norm, relu] -> conv_dw/conv_pw/bn)."""
    unit, idx, leaf = key.rsplit(".", 2)
    if ".attention." in key:
        return key.replace(".attention.", ".attn.")
    depthwise = isinstance(backbone.get_submodule(unit)[1], torch.nn.Conv2d)
    part = ("conv_dw", "conv_pw", "bn")[int(idx)] if depthwise else ("conv", "bn")[int(idx)]
    unit = re.sub(r"\.convs\.(\d+)$", r".conv_mid.\1", unit)
    unit = re.sub(r"\.reduce$", ".conv_reduction", re.sub(r"\.aggregate$", ".conv_concat", unit))
    return f"{unit}.{part}.{leaf}"


@pytest.mark.parametrize("name", ["ese_vovnet19b_dw", "ese_vovnet39b"])
def test_timm_state_dict_loads_and_ese_outside_last_block_is_exact_identity(tmp_path, name):
    sd = _timm_file(name)
    torch.save(sd, tmp_path / "timm.pth")
    variant = TIMM[name][1]
    bb = _backbone("vovnet", variant).eval()
    report = load_backbone_weights(bb, tmp_path / "timm.pth", variant)
    assert report.source == "timm VoVNet" and report.input_format == "RGB"
    assert report.pixel_mean == (0.485, 0.456, 0.406) and set(report.ignored) == {"head.fc.weight", "head.fc.bias"}
    last = {f"stages.{i}.blocks.{len(s.blocks) - 1}" for i, s in enumerate(bb.stages)}
    identity = sorted(
        f"stages.{i}.blocks.{b}"
        for i, s in enumerate(bb.stages)
        for b in range(len(s.blocks))
        if f"stages.{i}.blocks.{b}" not in last
    )
    assert (
        report.identity_ese
        == identity
        == (["stages.2.blocks.0", "stages.3.blocks.0"] if name == "ese_vovnet39b" else [])
    )
    own = {k: v for k, v in bb.state_dict().items() if not k.endswith("num_batches_tracked")}
    for k, v in own.items():
        block = k.split(".attention.")[0]
        if ".attention." in k and block in identity:
            continue
        assert torch.equal(v, sd[_timm_name(bb, k)]), k
    for b in identity:  # x * hsigmoid(0 @ mean(x) + 6) == x, bit for bit
        attention = bb.get_submodule(b).attention
        x = torch.randn(2, attention.fc.in_channels, 5, 7) * 100
        assert torch.equal(attention(x), x)


def test_timm_names_match_timm_itself_when_installed():
    timm = pytest.importorskip("timm")
    for name in TIMM:
        real = {k: tuple(v.shape) for k, v in timm.create_model(name, pretrained=False).state_dict().items()}
        assert real == timm_vovnet_shapes(name), name


# --------------------------------------------------------------------------- official (detectron2) files

OFFICIAL_VOVNET = [
    ("centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x", "V-19-slim-dw"),
    ("centermask_lite_V_19_slim_eSE_FPN_ms_4x", "V-19-slim"),
    ("centermask_lite_V_19_eSE_FPN_ms_4x", "V-19"),
    ("centermask_V_39_eSE_FPN_ms_3x", "V-39"),
    ("centermask_V_57_eSE_FPN_ms_3x", "V-57"),
    ("centermask_V_99_eSE_FPN_ms_3x", "V-99"),
]


@pytest.mark.parametrize("config_name,variant", OFFICIAL_VOVNET)
def test_official_vovnet_file_loads_with_detectron2_convention(tmp_path, config_name, variant):
    from maskkit.models.backbones.vovnet import official_names

    prefix = variant != "V-19"  # with and without detectron2's "backbone.bottom_up." prefix
    sd = _official_file(config_name, prefix=prefix)
    torch.save({"model": sd}, tmp_path / "vovnet_detectron2.pth")
    bb = _backbone("vovnet", variant)
    report = load_backbone_weights(bb, tmp_path / "vovnet_detectron2.pth", variant)
    names = official_names(bb)
    _assert_trunk_equals(bb, sd, lambda k: (PREFIX if prefix else "") + names[k])
    assert report.loaded == len(sd) and report.ignored == [] and report.identity_ese == []
    assert (report.input_format, report.pixel_mean, report.pixel_std) == (
        "BGR255",
        (103.53, 116.28, 123.675),
        (1.0, 1.0, 1.0),
    )


def test_official_mobilenet_v2_file_loads(tmp_path):
    sd = _official_file("centermask_lite_Mv2_FPN_ms_4x")
    torch.save(sd, tmp_path / "mobilenet_v2_detectron2.pth")
    bb = _backbone("mobilenet_v2", "mobilenet_v2")
    report = load_backbone_weights(bb, tmp_path / "mobilenet_v2_detectron2.pth", "mobilenet_v2")
    assert report.source == "centermask2 MobileNetV2 (detectron2)" and report.loaded == len(sd)
    assert report.input_format == "BGR255"
    # tonylins' flat InvertedResidual list: [conv, bn, relu6, conv, bn, (relu6, conv, bn)]
    state = bb.state_dict()
    assert torch.equal(state["stem.0.0.weight"], sd[PREFIX + "features.0.0.weight"])
    assert torch.equal(state["stem.1.conv.1.weight"], sd[PREFIX + "features.1.conv.3.weight"])
    assert torch.equal(state["stages.0.2.conv.1.0.weight"], sd[PREFIX + "features.2.conv.3.weight"])
    assert torch.equal(state["stages.3.17.conv.3.running_var"], sd[PREFIX + "features.17.conv.7.running_var"])


def c2_name(d2: str) -> str:
    """detectron2 ResNet name -> Caffe2 blob name (convert_basic_c2_names, inverted)."""
    d2 = d2[len(PREFIX) :] if d2.startswith(PREFIX) else d2
    d2 = d2.replace("stem.conv1.norm.", "res.conv1.norm.").replace("stem.conv1.", "conv1.")
    if re.match(r"^res\d", d2):
        for a, b in (
            (".shortcut.", ".branch1."),
            (".conv1.", ".branch2a."),
            (".conv2.", ".branch2b."),
            (".conv3.", ".branch2c."),
        ):
            d2 = d2.replace(a, b)
        d2 = d2.replace(".branch1.weight", ".branch1.w").replace("branch1.norm.", "branch1.bn.")
    d2 = re.sub(r"\.norm\.", ".bn.", d2)
    d2 = re.sub(r"\.bn\.weight$", ".bn.s", re.sub(r"\.bn\.bias$", ".bn.b", d2))
    d2 = re.sub(r"\.weight$", ".w", re.sub(r"\.bias$", ".b", d2))
    return d2.replace(".", "_")


def _c2_pkl(tmp_path: Path, config_name: str, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """An MSRA/FAIR-style ImageNet .pkl: Caffe2 names, folded BatchNorm (scale/bias only), the
    1000-class fc, numpy arrays (what detectron2's model-zoo R-50.pkl holds). Pickle protocol
    4: the Python-2 era protocol 2 is read as well (tests/convert/test_safe_load.py) but spells
    every array as a latin-1 string, 10x slower for 25-88M weights."""
    sd = _official_file(config_name, seed)
    blobs = {c2_name(k): v.numpy() for k, v in sd.items() if not k.endswith(("running_mean", "running_var"))}
    blobs["fc1000_w"], blobs["fc1000_b"] = np.zeros((1000, 2048), np.float32), np.zeros(1000, np.float32)
    path = tmp_path / "R.pkl"
    with open(path, "wb") as fh:
        pickle.dump(blobs, fh, protocol=4)
    return path, blobs


def test_caffe2_names_follow_detectron2():
    assert c2_name(PREFIX + "stem.conv1.weight") == "conv1_w"
    assert c2_name(PREFIX + "stem.conv1.norm.weight") == "res_conv1_bn_s"
    assert c2_name(PREFIX + "res2.0.conv1.norm.bias") == "res2_0_branch2a_bn_b"
    assert c2_name(PREFIX + "res5.0.shortcut.norm.weight") == "res5_0_branch1_bn_s"
    assert c2_name(PREFIX + "res4.5.conv3.weight") == "res4_5_branch2c_w"


def test_msra_resnet50_pkl_loads_as_folded_affine_with_stride_in_1x1(tmp_path):
    path, blobs = _c2_pkl(tmp_path, "centermask_R_50_FPN_ms_3x")
    with pytest.raises(CheckpointError, match="stride_in_1x1=true"):
        load_backbone_weights(_backbone("resnet", "resnet50"), path, "resnet50")
    bb = _backbone("resnet", "resnet50", stride_in_1x1=True).eval()
    report = load_backbone_weights(bb, path, "resnet50")
    assert report.source == "Caffe2 ResNet (detectron2 .pkl)" and set(report.ignored) == {"fc1000_w", "fc1000_b"}
    assert (report.input_format, report.pixel_std) == ("BGR255", (1.0, 1.0, 1.0))
    assert report.filled_stats == 53  # stem + 16 blocks x 3 convs + 4 shortcuts
    assert torch.equal(bb.stages[3][0].downsample[0].weight, torch.from_numpy(blobs["res5_0_branch1_w"]))
    # folded affine: the frozen norm computes x * s + b exactly
    norm = bb.stages[0][0].bn1
    x = torch.randn(1, norm.weight.shape[0], 3, 3)
    s, b = torch.from_numpy(blobs["res2_0_branch2a_bn_s"]), torch.from_numpy(blobs["res2_0_branch2a_bn_b"])
    torch.testing.assert_close(norm(x), x * s[:, None, None] + b[:, None, None], rtol=0, atol=1e-6)


def test_fair_x101_pkl_loads_with_its_own_std(tmp_path):
    path, _ = _c2_pkl(tmp_path, "centermask_X_101_FPN_ms_3x")
    bb = _backbone("resnet", "resnext101_32x8d")
    report = load_backbone_weights(bb, path, "resnext101_32x8d")
    assert (report.input_format, report.pixel_std) == ("BGR255", (57.375, 57.120, 58.395))


def test_detectron2_named_torchvision_conversion_loads(tmp_path):
    """tools/convert-torchvision-to-d2.py output: detectron2 names with BN statistics -> RGB."""
    sd = _official_file("centermask_R_101_FPN_ms_3x", prefix=False)
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save({"model": sd, "__author__": "torchvision"}, tmp_path / "r101.pth")
    bb = _backbone("resnet", "resnet101")
    report = load_backbone_weights(bb, tmp_path / "r101.pth", "resnet101")
    assert report.source == "detectron2 ResNet" and report.input_format == "RGB" and report.filled_stats == 0
    assert torch.equal(bb.stages[2][22].bn3.running_var, sd["res4.22.conv3.norm.running_var"])


# --------------------------------------------------------------------------- wrong files


def test_wrong_files_give_one_clear_error(tmp_path):
    sd = _randomise(_meta_state_dict(torchvision.models.resnet50))
    torch.save(sd, tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match=r"r50.pth: torchvision ResNet weights do not fit .*missing .*layer3\.6"):
        load_backbone_weights(_backbone("resnet", "resnet101"), tmp_path / "r50.pth", "resnet101")
    one_less = dict(sd)
    del one_less["layer2.1.bn2.running_var"]
    torch.save(one_less, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"1 missing \(layer2\.1\.bn2\.running_var\)"):
        load_backbone_weights(_backbone("resnet", "resnet50"), tmp_path / "cut.pth", "resnet50")
    renamed = {("layer2.1.bn2.var" if k == "layer2.1.bn2.running_var" else k): v for k, v in sd.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected \(layer2\.1\.bn2\.var\)"):
        load_backbone_weights(_backbone("resnet", "resnet50"), tmp_path / "renamed.pth", "resnet50")
    with pytest.raises(CheckpointError, match="not a known ImageNet vovnet weights layout"):
        load_backbone_weights(_backbone("vovnet", "V-19"), tmp_path / "r50.pth", "V-19")
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_backbone_weights(_backbone("resnet", "resnet50"), tmp_path / "absent.pth", "resnet50")
    with pytest.raises(MaskkitError, match="not GN"):
        load_backbone_weights(_backbone("resnet", "resnet50", norm="GN"), tmp_path / "r50.pth", "resnet50")


def test_vovnet_file_of_another_architecture_is_refused(tmp_path):
    torch.save(_timm_file("ese_vovnet39b"), tmp_path / "v39.pth")
    with pytest.raises(CheckpointError, match=r"timm VoVNet weights do not fit .*(unexpected|mis-shaped)"):
        load_backbone_weights(_backbone("vovnet", "V-19"), tmp_path / "v39.pth", "V-19")
    with pytest.raises(CheckpointError, match="unexpected .*attn"):  # eSE weights into a VoVNetV1
        load_backbone_weights(
            _backbone("vovnet", "V-39", residual=False, attention="none"), tmp_path / "v39.pth", "V-39"
        )
    torch.save(_official_file("centermask_V_39_eSE_FPN_ms_3x"), tmp_path / "official39.pth")
    with pytest.raises(CheckpointError, match=r"centermask2 VoVNet \(detectron2\) weights do not fit"):
        load_backbone_weights(_backbone("vovnet", "V-57"), tmp_path / "official39.pth", "V-57")


# --------------------------------------------------------------------------- builder and training


def test_set_backbone_weights_builds_model_from_file_with_its_convention(tmp_path):
    from maskkit.models.zoo import build_model, get_config

    sd = _official_file("centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x")
    torch.save({"model": sd}, tmp_path / "vovnet19_ese_slim_dw_detectron2.pth")
    cfg = get_config(
        "centermask_lite_v19_slim_dw", 3, [f"model.backbone.weights={tmp_path / 'vovnet19_ese_slim_dw_detectron2.pth'}"]
    )
    before = copy.deepcopy(cfg.model)
    model = build_model(cfg.model)
    from maskkit.models.backbones.vovnet import official_names

    names = official_names(model.backbone)
    _assert_trunk_equals(model.backbone, sd, lambda k: PREFIX + names[k])
    # the weights' convention is the model's, recorded with it; the config stays as configured
    assert model.input_convention == InputConvention("BGR255", (103.53, 116.28, 123.675), (1.0, 1.0, 1.0))
    assert cfg.model == before and cfg.model.input_format == "RGB"
    assert model.pixel_mean.flatten().tolist() == pytest.approx([103.53, 116.28, 123.675])
    assert model.pixel_std.flatten().tolist() == [1.0, 1.0, 1.0]


def test_training_run_starts_from_the_file_and_records_it(tmp_path):
    """`maskkit train --set model.backbone.weights=F`: with lr 0 and a frozen-BN trunk one step
    changes nothing, so the saved model's trunk is the file's trunk at step 0; the model file
    records the weights' convention and loads without the ImageNet file."""
    from maskkit.checkpoint import load_model, read_model_file
    from maskkit.cli import main
    from maskkit.data.synthetic import generate
    from maskkit.models.backbones.vovnet import official_names

    data = generate(tmp_path / "syn", num_train=2, num_val=1, seed=1, size=64, progress=False)
    sd = _official_file("centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x", prefix=False)
    weights = tmp_path / "vovnet19_ese_slim_dw_detectron2.pth"
    torch.save(sd, weights)
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            "centermask_lite_demo",
            "--data",
            str(data),
            "--out",
            str(out),
            "--iters",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--set",
            f"model.backbone.weights={weights}",
            "--set",
            "model.backbone.variant=V-19-slim-dw",  # the file's trunk (the demo preset's is V-19-micro)
            "--set",
            "model.backbone.norm=FrozenBN",
            "--set",
            "train.lr=0",
            "--set",
            "train.batch_size=2",
        ]
    )
    assert rc == 0
    mf = read_model_file(out / "model_last.safetensors")
    assert mf.step == 1 and mf.config.model.backbone.weights == str(weights)
    assert (mf.input.format, mf.input.pixel_std) == ("BGR255", (1.0, 1.0, 1.0))  # the weights' convention
    trunk = {k[len("backbone.") :]: v for k, v in mf.state_dict.items() if k.startswith("backbone.")}
    with torch.device("meta"):
        names = official_names(build_backbone(BackboneConfig(name="vovnet", variant="V-19-slim-dw")))
    assert set(trunk) == set(names)
    for k, v in trunk.items():
        assert torch.equal(v, sd[names[k]]), k
    weights.unlink()  # the model file holds every tensor: the ImageNet file is not read again
    model = load_model(out / "model_last.safetensors")
    assert torch.equal(model.backbone.state_dict()["stem.0.0.weight"], sd["stem.stem_1/conv.weight"])
    assert model.input_convention == model.info.input == mf.input
    assert model.pixel_mean.flatten().tolist() == pytest.approx([103.53, 116.28, 123.675])


def test_sharpmask_trunk_starts_from_torchvision_resnet50(tmp_path):
    """DeepMask/SharpMask: `--set model.trunk_weights=F` fills conv1..layer3 (layer4/fc unused)."""
    from maskkit.models.zoo import build_model, get_config

    sd = _randomise(_meta_state_dict(torchvision.models.resnet50))
    torch.save(sd, tmp_path / "resnet50.pth")
    cfg = get_config("deepmask_r50", None, [f"model.trunk_weights={tmp_path / 'resnet50.pth'}"])
    model = build_model(cfg.model)
    _assert_trunk_equals(model.trunk, sd, lambda k: k)
    assert cfg.model.pixel_mean == (0.485, 0.456, 0.406) and cfg.model.pixel_std == (0.229, 0.224, 0.225)
    with pytest.raises(MaskkitError, match="no ImageNet file fits trunk 'vgg_a'"):
        build_model(get_config("deepmask_vgg", None, [f"model.trunk_weights={tmp_path / 'resnet50.pth'}"]).model)
    with pytest.raises(CheckpointError, match=r"resnet50.pth: torchvision ResNet weights do not fit .*mis-shaped"):
        build_model(get_config("deepmask_demo", None, [f"model.trunk_weights={tmp_path / 'resnet50.pth'}"]).model)


def test_packaged_trunks_load_by_name_and_stay_small():
    """`model.backbone.weights=maskkit:NAME` reads a trunk shipped in the package (issue #12: the
    demo's trunk, pretrained by benchmarks/pretrain_demo_trunk.py on shapes that are not the demo's
    categories): <= 5 MB, its provenance in the file's metadata, strict loading into its variant."""
    from safetensors import safe_open

    from maskkit.models.backbones.pretrained import PACKAGED_WEIGHTS, resolve_weights_path

    files = sorted(PACKAGED_WEIGHTS.glob("*.safetensors"))
    assert files, "no packaged trunk"
    for f in files:
        assert f.stat().st_size <= 5 * 1024 * 1024
        with safe_open(str(f), "pt") as h:
            meta = h.metadata()
        assert (
            meta["task"].startswith("12 procedural shapes (not the demo") and "pretrain_demo_trunk.py" in meta["task"]
        )
        assert resolve_weights_path(f"maskkit:{f.stem}") == f
        if meta["variant"].startswith("resnet_tiny"):  # the SharpMask demo's, via model.trunk_weights
            from maskkit.models.zoo import build_model, get_config

            cfg = get_config("deepmask_demo", None, [f"model.trunk_weights=maskkit:{f.stem}"])
            model = build_model(cfg.model)
            assert meta["input"] == "RGB 0-1, ImageNet mean/std" and cfg.model.pixel_std == (0.229, 0.224, 0.225)
            assert torch.equal(model.trunk.conv1.weight, safe_open(str(f), "pt").get_tensor("conv1.weight"))
            continue
        backbone = build_backbone(BackboneConfig(name="vovnet", variant=meta["variant"], norm="BN"))
        report = load_backbone_weights(backbone, f"maskkit:{f.stem}", meta["variant"])
        assert report.source == "centermask2 VoVNet (detectron2)" and report.input_format == "BGR255"
        ref = safe_open(str(f), "pt").get_tensor("stem.stem_1/conv.weight")
        assert torch.equal(backbone.stem[0][0].weight, ref)


def test_unknown_packaged_trunk_is_one_clear_error():
    from maskkit.models.backbones.pretrained import resolve_weights_path

    for bad in ("maskkit:nope", "maskkit:", "maskkit:../zoo"):
        with pytest.raises(CheckpointError, match="no such packaged weights"):
            resolve_weights_path(bad)
