"""Official DeepMask / SharpMask Torch7 files -> maskkit (maskkit/convert/torch7.py).

The files are written by ``t7_writer`` in the official module layout, small (trunk width 8,
a 2x2-cell window) but with the same module tree, and one at full size for the layout and
parameter counts. The converted networks are checked against an independent evaluation of the
written Torch7 module tree: each Torch7 module type run by its own semantics, in float64, from
the tensors that were written (``_run`` below), never through the converter or maskkit's
modules. Symmetric padding there is ``numpy.pad(mode="symmetric")``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from t7_writer import LuaFunction, T7Class, T7Tensor, conv, deepmask_file, seq, sharpmask_file, sym_padded, write_t7

import maskkit
from maskkit.checkpoint import save_model
from maskkit.convert.torch7 import convert_torch7, read_torch7
from maskkit.errors import CheckpointError
from maskkit.models.zoo import build_model, get_config

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # computeProposals.lua's meanstd


# --------------------------------------------------------------------------- independent reference


def _t(x: T7Tensor) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x.array, dtype=np.float64))


def _run(m: T7Class, x):
    """Evaluate one Torch7 module (evaluate mode) on ``x`` (a tensor or a list for tables)."""
    t, f = m.typename, m.fields
    if t == "nn.Sequential":
        for sub in f["modules"]:
            x = _run(sub, x)
        return x
    if t == "nn.ConcatTable":
        return [_run(sub, x) for sub in f["modules"]]
    if t == "nn.ParallelTable":
        return [_run(sub, xi) for sub, xi in zip(f["modules"], x)]
    if t == "nn.CAddTable":
        return sum(x)
    if t in ("cudnn.ReLU", "nn.ReLU"):
        return x.clamp(min=0)
    if t == "nn.Threshold":
        return torch.where(x > f["threshold"], x, torch.full_like(x, f["val"]))
    if t in ("nn.Dropout", "nn.Identity", "nn.Copy"):
        return x
    if t == "nn.SpatialSymmetricPadding":  # Matlab padarray 'symmetric'
        pads = ((0, 0), (0, 0), (f["pad_t"], f["pad_b"]), (f["pad_l"], f["pad_r"]))
        return torch.from_numpy(np.pad(x.numpy(), pads, mode="symmetric"))
    if t == "nn.SpatialZeroPadding":
        p = f["pad_t"]
        return x[..., -p : x.shape[-2] + p, -p : x.shape[-1] + p] if p < 0 else F.pad(x, [p] * 4)
    if t == "cudnn.SpatialConvolution":
        bias = _t(f["bias"]) if "bias" in f else None
        return F.conv2d(x, _t(f["weight"]), bias, (f["dH"], f["dW"]), (f["padH"], f["padW"]))
    if t == "inn.ConstAffine":
        return x * _t(f["a"])[None, :, None, None] + _t(f["b"])[None, :, None, None]
    if t == "cudnn.SpatialMaxPooling":
        return F.max_pool2d(x, (f["kH"], f["kW"]), (f["dH"], f["dW"]), (f["padH"], f["padW"]), ceil_mode=f["ceil_mode"])
    if t == "nn.View":
        return x.reshape(x.shape[0], *f["size"])
    if t == "nn.Linear":
        return x @ _t(f["weight"]).T + _t(f["bias"])
    if t == "nn.SpatialUpSamplingNearest":
        s = f["scale_factor"]
        return x.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
    raise AssertionError(f"no reference for {t}")


def _reference(model: T7Class, crops: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-window outputs of the official tree for crops ``[B, 3, S, S]`` (0..1; S = window + 32).

    Trunk, mask and score as the stored modules; the refinement as the official inference
    runs it (``SharpMask:inference`` replaces the trunk's crop and the skip nets'
    SpatialZeroPadding by Identity, ``Infer:getTopPatches`` cuts each skip map to the window)."""
    f = model.fields
    x = (crops.double() - torch.tensor(MEAN, dtype=torch.float64)[:, None, None]) / torch.tensor(
        STD, dtype=torch.float64
    )[:, None, None]
    outs = [x]
    for m in f["trunk"].fields["modules"]:
        outs.append(_run(m, outs[-1]))  # outs[k] = output of trunk.modules[k] (1-based)
    vec = outs[-1]
    mask_branch = f["maskBranchDM"] if "maskBranchDM" in f else f["maskBranch"]
    res = {
        "vector": vec,
        "score": _run(f["scoreBranch"], vec)[:, 0],
        "mask": _run(mask_branch.fields["modules"][0], vec),
    }
    if "refs" in f:
        refs, fsz = f["refs"], f["fSz"]
        m = _run(refs[0], vec)
        for i, k in enumerate((7, 6, 5, 3), start=1):  # skpos {8, 6, 5, 3}, module 8 (the crop) removed
            par, *rest = refs[i].fields["modules"]
            neth, netv = par.fields["modules"]
            h = outs[k]
            for sub in neth.fields["modules"]:
                h = h if sub.typename == "nn.SpatialZeroPadding" else _run(sub, h)
            c = 2 ** (i - 1)  # the context border: one stride-16 cell at this level's resolution
            m = [h[..., c : c + fsz * c, c : c + fsz * c], _run(netv, m)]
            for sub in rest:
                m = _run(sub, m)
        res["refined"] = m
    return res


def _crops(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    ref = ref.reshape(ours.shape).to(ours.dtype)
    torch.testing.assert_close(ours, ref, rtol=rel, atol=rel * float(ref.abs().max()))


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("bias", [False, True])
def test_deepmask_t7_outputs_equal_the_official_module_tree(tmp_path, bias):
    tree = deepmask_file(np.random.default_rng(0), bias=bias)  # bias: trunk conv biases folded into the affines
    write_t7(tmp_path / "model.t7", tree)
    model = convert_torch7(tmp_path / "model.t7")
    cfg = model.info.config
    assert (cfg.name, cfg.model.padding, cfg.model.refine) == ("deepmask_r50", "symmetric", False)
    assert (cfg.model.trunk_width, cfg.model.feature_size, cfg.model.mask_size, cfg.model.mask_loss_size) == (
        8,
        2,
        8,
        16,
    )
    assert model.info.class_names == ["object"] and model.info.label_to_cat_id == {1: 1} and not model.training
    crops = _crops(3, 64)
    ref = _reference(tree["model"], crops)
    with torch.no_grad():
        out = model.window_outputs(crops)
    _close(out["vector"], ref["vector"])
    _close(out["mask"], ref["mask"])  # [B, 8, 8] logits, row-major as the official View
    _close(out["score"], ref["score"])


def test_sharpmask_t7_refined_masks_equal_the_official_module_tree(tmp_path):
    tree = sharpmask_file(np.random.default_rng(1))
    write_t7(tmp_path / "model.t7", tree)
    model = convert_torch7(tmp_path / "model.t7")
    m = model.info.config.model
    assert (m.upsample, m.refine_mask_convs, m.refine_channels, m.skip_channels) == (
        "nearest",
        2,
        (16, 8, 4, 2),
        (16, 16, 16, 8),
    )
    crops = _crops(2, 64, seed=1)
    ref = _reference(tree["model"], crops)
    with torch.no_grad():
        out = model.window_outputs(crops, refined=True)
    for k in ("vector", "mask", "score", "refined"):
        _close(out[k], ref[k])  # refined: [B, 32, 32] logits for the 32 px window
    # the padding mode matters: the same weights with reflection padding give other masks
    other = build_model(m.__class__(**{**m.__dict__, "padding": "reflect"}))
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        refl = other.eval().window_outputs(crops, refined=True)["refined"]
    assert (refl - ref["refined"].reshape(refl.shape).float()).abs().max() > 1e-2 * ref["refined"].abs().max()


def _nnx_bilinear(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """nnx SpatialReSamplingEx 'bilinear' (generic/SpatialReSamplingEx.c): output pixel x samples
    input position x * (iw - 1) / (ow - 1), bilinear between the 4 neighbours."""
    ih, iw = img.shape[-2:]

    def axis(n_in, n_out):
        pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
        i0 = np.minimum(np.floor(pos).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), pos - i0

    y0, y1, wy = axis(ih, oh)
    x0, x1, wx = axis(iw, ow)
    top = img[..., y0, :][..., x0] * (1 - wx) + img[..., y0, :][..., x1] * wx
    bottom = img[..., y1, :][..., x0] * (1 - wx) + img[..., y1, :][..., x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def _reference_score_map(model: T7Class, image: torch.Tensor, scale: float) -> torch.Tensor:
    """Score logits over one pyramid level as InferSharpMask.lua computes them: resize, a
    half-window border of 0.5, mean/std, the trunk run convolutionally (``linear2convTrunk``:
    the crop and View become Identity, the Linear an fSz x fSz conv), the score branch as 1x1
    convs with ReLU for the Threshold (``linear2convHead``)."""
    f = model.fields
    h, w = (int(np.floor(s * scale + 0.5)) for s in image.shape[-2:])
    x = torch.from_numpy(_nnx_bilinear(image.double().numpy(), h, w))
    bw = 8 * f["fSz"]  # iSz / 2
    canvas = torch.full((1, 3, h + 2 * bw, w + 2 * bw), 0.5, dtype=torch.float64)
    canvas[0, :, bw : bw + h, bw : bw + w] = x
    x = (canvas - torch.tensor(MEAN, dtype=torch.float64)[:, None, None]) / torch.tensor(STD, dtype=torch.float64)[
        :, None, None
    ]
    trunk = f["trunk"].fields["modules"]
    for m in trunk[:7] + trunk[8:10]:  # modules 1-7, (8: crop removed), 9 conv, 10 ReLU
        x = _run(m, x)
    lin = trunk[11].fields
    fsz = f["fSz"]
    x = F.conv2d(x, _t(lin["weight"]).reshape(-1, x.shape[1], fsz, fsz), _t(lin["bias"]))  # [1, 512, gh, gw]
    for m in f["scoreBranch"].fields["modules"]:
        t = m.typename
        if t == "nn.Linear":
            x = torch.einsum("bchw,oc->bohw", x, _t(m.fields["weight"])) + _t(m.fields["bias"])[None, :, None, None]
        elif t == "nn.Threshold":
            x = x.clamp(min=0)
    return x[0, 0]


@pytest.mark.parametrize("log2_scale,size", [(0.0, (64, 96)), (-0.5, (91, 136)), (0.5, (68, 79))])
def test_converted_model_scores_whole_images_as_the_official_inference(tmp_path, log2_scale, size):
    tree = deepmask_file(np.random.default_rng(6))
    write_t7(tmp_path / "model.t7", tree)
    model = convert_torch7(tmp_path / "model.t7")
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(6))
    ref = _reference_score_map(tree["model"], image, 2.0**log2_scale)
    with torch.no_grad():
        ours = model.scale_maps(model.canvas(image, log2_scale), refine=False)["scores"]
    assert ours.shape == ref.shape  # sizes chosen so the border needs no rounding to whole cells
    _close(ours, ref)


def test_converted_model_saves_and_loads_as_a_model_file(tmp_path):
    write_t7(tmp_path / "model.t7", deepmask_file(np.random.default_rng(2)))
    model = convert_torch7(tmp_path / "model.t7")
    out = save_model(
        tmp_path / "dm.safetensors",
        model,
        model.info.config,
        model.info.class_names,
        list(model.info.label_to_cat_id.values()),
    )
    back = maskkit.load_model(out)
    assert back.info.config.model.padding == "symmetric"
    crops = _crops(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(back.window_outputs(crops)["mask"], model.window_outputs(crops)["mask"])


def test_full_size_official_layouts_convert_to_the_presets(tmp_path):
    """The released models' sizes (trunk width 64, 160 px window, km = ks = 32): same configs
    as the presets and the official parameter counts (SharpMask: + the 12,300 parameters of
    the vertical nets' first convs, which the paper's Fig. 7b does not have)."""
    rng = np.random.default_rng(3)
    kw = dict(width=64, fsz=10, reduce=128, hidden=512, osz=56, score_hidden=1024)
    write_t7(tmp_path / "sharp.t7", sharpmask_file(rng, km=32, skip=(64, 64, 64, 32), **kw))
    model = convert_torch7(tmp_path / "sharp.t7")
    preset = get_config("sharpmask_r50").model
    got = model.info.config.model
    official = {"pyramid", "border_fill"}  # full-image inference as Infer*.lua
    assert {k for k in preset.__dict__ if getattr(preset, k) != getattr(got, k)} == {
        "upsample",
        "refine_mask_convs",
    } | official
    assert sum(p.numel() for p in model.parameters()) == 17_333_121 + 2_738_235 + 12_300
    write_t7(tmp_path / "deep.t7", deepmask_file(rng, gsz=112, **kw))
    deep = convert_torch7(tmp_path / "deep.t7", "deepmask_r50")
    assert sum(p.numel() for p in deep.parameters()) == 17_333_121
    preset = get_config("deepmask_r50").model
    got = deep.info.config.model
    assert {k for k in preset.__dict__ if getattr(preset, k) != getattr(got, k)} == official


# --------------------------------------------------------------------------- strictness and safety


def _dm_tree(seed: int = 4) -> dict:
    return deepmask_file(np.random.default_rng(seed))


def _refused(tmp_path, tree, *needles, preset=None) -> str:
    write_t7(tmp_path / "bad.t7", tree)
    with pytest.raises(CheckpointError) as e:
        convert_torch7(tmp_path / "bad.t7", preset)
    msg = str(e.value)
    assert "bad.t7" in msg and "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_a_removed_tensor_is_reported_missing(tmp_path):
    tree = _dm_tree()
    del tree["model"].fields["trunk"].fields["modules"][-1].fields["bias"]  # Linear(128*fSz^2 -> 512) bias
    _refused(tmp_path, tree, "1 missing: head.fc.bias")


def test_extra_modules_are_reported_unexpected(tmp_path):
    rng = np.random.default_rng(5)
    tree = sharpmask_file(rng)
    tree["model"].fields["refs"][4].fields["modules"].append(
        sym_padded(conv(rng, 1, 1, 3, 1, 1, bias=True))
    )  # after the output
    _refused(tmp_path, tree, "2 unexpected: refs[4].modules[7].modules[2].weight, refs[4].modules[7].modules[2].bias")
    tree = sharpmask_file(rng)
    tree["model"].fields["neths"].append(seq(conv(rng, 8, 4, 3, 1, 1)))  # a 5th skip net that refs does not use
    _refused(tmp_path, tree, "1 unexpected: neths[5].modules[1].weight")


def test_another_configuration_is_refused(tmp_path):
    tree = _dm_tree()
    layer3 = tree["model"].fields["trunk"].fields["modules"][6].fields["modules"]
    del layer3[-1]  # a ResNet with 5 blocks in layer3: not the official ResNet-50 trunk
    _refused(tmp_path, tree, "(3, 4, 5) blocks")
    _refused(tmp_path, _dm_tree(), "converts to deepmask_r50, not 'sharpmask_r50'", preset="sharpmask_r50")


def test_a_wrongly_padded_conv_is_refused(tmp_path):
    tree = _dm_tree()
    conv1 = tree["model"].fields["trunk"].fields["modules"][0]  # Sequential(SymmetricPadding, conv 7x7)
    tree["model"].fields["trunk"].fields["modules"][0] = conv1.fields["modules"][1]  # padW = 0 now: unpadded
    _refused(tmp_path, tree, "trunk.modules[1] kernel/stride/padding ((7, 7), (2, 2), (0, 0), 'zeros')")
    tree = _dm_tree()
    c = tree["model"].fields["trunk"].fields["modules"][0].fields["modules"][1].fields
    c["padW"] = c["padH"] = 3
    tree["model"].fields["trunk"].fields["modules"][0] = (
        tree["model"].fields["trunk"].fields["modules"][0].fields["modules"][1]
    )
    _refused(tmp_path, tree, "convs padded in several ways")


def test_not_a_model_file_and_corrupt_files_are_refused(tmp_path):
    _refused(tmp_path, {"model": seq(conv(np.random.default_rng(0), 3, 4, 3))}, "found nn.Sequential")
    (tmp_path / "cut.t7").write_bytes((tmp_path / "bad.t7").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.t7: not a readable Torch7 file"):
        convert_torch7(tmp_path / "cut.t7")
    with pytest.raises(CheckpointError, match="no such Torch7 file"):
        convert_torch7(tmp_path / "absent.t7")


def test_a_tensor_pointing_outside_its_storage_is_refused(tmp_path):
    tree = _dm_tree()
    lin = tree["model"].fields["trunk"].fields["modules"][-1].fields
    lin["weight"].strides = (10**9, 1)  # torchfile would build a view far outside the storage
    msg = _refused(tmp_path, tree, "trunk.modules[12].weight points outside its storage")
    assert msg.count("bad.t7") == 1


def test_malformed_module_records_are_refused(tmp_path):
    tree = _dm_tree()
    tree["model"].fields["scoreBranch"] = 3  # not a module
    _refused(tmp_path, tree, "scoreBranch is not a module container (found int)")
    tree = _dm_tree()
    del tree["model"].fields["trunk"].fields["modules"][8].fields["nOutputPlane"]  # the 1x1 conv
    _refused(tmp_path, tree, "trunk.modules[9]: malformed cudnn.SpatialConvolution module")
    rng = np.random.default_rng(7)
    tree = sharpmask_file(rng)
    tree["model"].fields["refs"][2] = seq(conv(rng, 2, 2, 1))
    _refused(tmp_path, tree, "refs[2] does not start with ParallelTable")


def test_a_serialised_lua_function_is_kept_as_bytes_never_run(tmp_path):
    """torchfile has no Lua interpreter: a function in the file (here in the saved config, where
    a trainer could leave a hook) comes back as its bytecode, and the model converts."""
    tree = _dm_tree()
    payload = b"\x1bLua" + b"os.execute('touch " + str(tmp_path / "ran").encode() + b"')"
    tree["config"]["hook"] = LuaFunction(payload, {1: "upvalue"})
    write_t7(tmp_path / "model.t7", tree)
    hook = read_torch7(tmp_path / "model.t7")[b"config"][b"hook"]
    assert type(hook).__name__ == "LuaFunction" and hook.dumped == payload
    convert_torch7(tmp_path / "model.t7")
    assert not (tmp_path / "ran").exists()
