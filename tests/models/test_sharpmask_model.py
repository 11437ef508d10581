"""SharpMask / DeepMask: parameter counts, convolutional == per-window inference, batched
refinement with shared skip features == per-window refinement, output contract, losses, stages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import FrozenBatchNorm2d

import maskkit
from maskkit.errors import CheckpointError, MaskkitError
from maskkit.models.sharpmask.model import mask_boxes, mask_loss, paste_window_masks, score_loss
from maskkit.models.sharpmask.padding import conv_padding_mode
from maskkit.models.sharpmask.refine import gather_window_skips
from maskkit.structures import paste_masks_in_image


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_deepmask_r50_parameter_count_matches_official():
    with torch.device("meta"):
        m = maskkit.create_model("deepmask_r50")
    assert m.refinement is None
    assert _count(m.trunk) == 8_512_704  # ResNet-50 conv1..layer3 (frozen BN holds buffers only)
    assert _count(m.head.reduce) == 131_200
    assert _count(m.head.fc) == 6_554_112
    assert _count(m.head.mask) == 1_608_768
    assert _count(m.head.score) == 526_337
    assert _count(m) == 17_333_121


def test_sharpmask_r50_refinement_adds_under_3m_parameters():
    with torch.device("meta"):
        m = maskkit.create_model("sharpmask_r50")
    r = m.refinement
    assert _count(r.m1) == 1_641_600  # Linear(512 -> 32*10*10)
    skip = [_count(mod.skip_path) for mod in r.modules_list]
    assert skip == [608_352, 304_208, 152_136, 19_620]  # strides 16, 8, 4, 2
    merge = [_count(mod.skip_merge) + _count(mod.mask_merge) for mod in r.modules_list]
    assert merge == [9_248, 2_320, 584, 148]
    assert _count(r.out) == 19
    assert _count(r) == 2_738_235 < 3_000_000
    assert _count(m) == 17_333_121 + 2_738_235
    # schedule (b), k = 32: mask encodings 32, 16, 8, 4 channels (then 2 -> 1)
    assert [mod.mask_merge.in_channels for mod in r.modules_list] == [32, 16, 8, 4]
    assert [mod.skip_path[2].out_channels for mod in r.modules_list] == [32, 16, 8, 4]


def test_r50_trunk_is_torchvision_resnet50_with_symmetric_padding():
    m = maskkit.create_model("deepmask_r50")
    ref = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith(("layer4", "fc"))}
    m.trunk.load_state_dict(sd, strict=True)  # same names and shapes: ImageNet weights load
    convs = [mod for mod in m.trunk.modules() if isinstance(mod, torch.nn.Conv2d)]
    # official SpatialSymmetricPadding on every 3x3/7x7 conv (maskkit/models/sharpmask/padding.py)
    assert all(conv_padding_mode(c) == ("symmetric" if c.kernel_size[0] > 1 else "zeros") for c in convs)
    assert all(not isinstance(mod, torch.nn.BatchNorm2d) for mod in m.trunk.modules())


def test_deepmask_vgg_is_the_original_deepmask():
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        m = maskkit.create_model("deepmask_vgg")
        vgg = torchvision.models.vgg11(weights=None)
    assert _count(m) == 75_844_545  # the paper's "~75M" for the original DeepMask
    assert _count(m.trunk) == 9_220_480 and _count(m.head.fc) == 51_380_736
    assert _count(m.head.score_fc) + _count(m.head.score) == 13_371_905
    # the trunk's names and shapes are torchvision vgg11's conv layers: ImageNet VGG-A weights load
    ours = {k: v.shape for k, v in m.trunk.state_dict().items()}
    assert ours == {k: v.shape for k, v in vgg.state_dict().items() if k.startswith("features.")}
    assert m.cfg.window == 224 and m.refinement is None


def test_trunk_loads_imagenet_classifier_weights(tmp_path):
    """A torchvision classifier state dict (what users download themselves) initialises the
    trunk; layer4/fc are ignored; a wrong architecture or a corrupt file is one clear error."""
    ref = torchvision.models.resnet18(weights=None)
    torch.nn.init.normal_(ref.layer3[1].conv2.weight)
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")
    trunk = ["model.trunk=resnet18", "model.trunk_width=64", "model.trunk_norm=FrozenBN"]
    model = maskkit.create_model(
        "sharpmask_demo", overrides=[*trunk, f"model.trunk_weights={tmp_path / 'resnet18.pth'}"]
    )
    assert torch.equal(model.trunk.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    assert torch.equal(model.trunk.bn1.running_var, ref.bn1.running_var)
    with pytest.raises(
        CheckpointError, match=r"resnet18\.pth.*mis-shaped \(layer1\.0\.conv1\.weight \(64, 64, 3, 3\) vs"
    ):
        maskkit.create_model(
            "deepmask_demo",
            overrides=[
                "model.trunk=resnet50",
                "model.trunk_width=64",
                f"model.trunk_weights={tmp_path / 'resnet18.pth'}",
            ],
        )
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        maskkit.create_model("sharpmask_demo", overrides=[*trunk, f"model.trunk_weights={tmp_path / 'bad.pth'}"])
    with pytest.raises(CheckpointError, match="missing.pth: no such"):
        maskkit.create_model("sharpmask_demo", overrides=[*trunk, f"model.trunk_weights={tmp_path / 'missing.pth'}"])


def _scale_maps(model, image: torch.Tensor, log2_scale: float, refine: bool) -> dict:
    """The convolutional path at one scale: vectors ``[512, gh, gw]``, scores, skips."""
    maps = model.scale_maps(model.canvas(image, log2_scale), refine)
    return {**maps, "vectors": maps["vectors"][0]}


def _crops(model, skips, ij: torch.Tensor) -> list[torch.Tensor]:
    """The windows' ``S*`` crops at one scale (top-left cells ``ij [N, 2]``)."""
    return gather_window_skips([skips], torch.zeros_like(ij[:, 0]), ij[:, 0], ij[:, 1], model.cfg.feature_size)


def _padded(model, image: torch.Tensor) -> torch.Tensor:
    """The image as the convolutional path sees it at scale 1: padded by half a window of the
    mean colour, then to whole stride-16 cells (in 0..1 space, so window crops can be cut)."""
    pad = model.cfg.window // 2
    h, w = image.shape[-2:]
    eh, ew = (-(h + 2 * pad)) % 16, (-(w + 2 * pad)) % 16
    mean = model.pixel_mean
    return F.pad(image - mean, (pad, pad + ew, pad, pad + eh)) + mean


def _check_conv_equals_windows(model, image, cells, context):
    """Scores/masks/refined masks of the convolutional path at ``cells`` equal the per-window
    path on crops of ``window + 2*context`` px around those windows (receptive field inside)."""
    model.eval()
    win = model.cfg.window
    with torch.no_grad():
        maps = _scale_maps(model, image, 0.0, refine=model.refinement is not None)
        padded = _padded(model, image)
        ij = torch.tensor(cells, device=image.device)
        crops = torch.stack(
            [
                padded[:, 16 * i - context : 16 * i + win + context, 16 * j - context : 16 * j + win + context]
                for i, j in cells
            ]
        )
        per_window = model.window_outputs(crops)
        vec = maps["vectors"][:, ij[:, 0], ij[:, 1]].T  # [N, hidden]
        torch.testing.assert_close(per_window["vector"], vec, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(per_window["score"], maps["scores"][ij[:, 0], ij[:, 1]], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(per_window["mask"], model.head.mask_logits(vec), rtol=1e-4, atol=1e-4)
        if model.refinement is not None:
            # batched refinement: all windows at once, S* computed once on the whole image
            batched = model.refinement(vec, _crops(model, maps["skips"], ij))[:, 0]
            torch.testing.assert_close(per_window["refined"], batched, rtol=1e-4, atol=1e-4)
    return per_window


def _randomise_bn(model):
    """Non-trivial eval-mode BatchNorm statistics (the equalities must hold for any weights)."""
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_convolutional_inference_equals_per_window_demo(upsample, device):
    torch.manual_seed(0)
    model = maskkit.create_model("sharpmask_demo", overrides=[f"model.upsample={upsample}"])
    _randomise_bn(model)
    model.to(device)
    image = torch.rand(3, 272, 272, device=device)
    # receptive field of the demo trunk + skip convs is < 100 px beyond the window: 112 px context
    out = _check_conv_equals_windows(model, image, [(10, 10), (9, 10), (10, 9), (9, 9)], context=112)
    assert out["refined"].shape == (4, 80, 80) and out["mask"].shape == (4, 28, 28)


def test_convolutional_inference_equals_per_window_r50(device):
    torch.manual_seed(0)
    model = maskkit.create_model("sharpmask_r50").to(device)
    image = torch.rand(3, 400, 400, device=device)
    # ResNet-50 layer3 receptive field is 267 px (+3 skip convs at stride 16: 363 px): 192 px
    # of context around the 160 px window covers it; the padded image is 560 px, the crop 544.
    out = _check_conv_equals_windows(model, image, [(12, 12)], context=192)
    assert out["refined"].shape == (1, 160, 160) and out["mask"].shape == (1, 56, 56)


def test_convolutional_inference_equals_per_window_vgg_original_head(device):
    """The original head's score branch (2x2 max-pool + Linear) runs as a stride-1 pool and a
    dilated 7x7 conv: stride-16 scores equal the per-window ones (narrow VGG for speed)."""
    torch.manual_seed(0)
    narrow = [
        "model.trunk_width=8",
        "model.reduce_channels=32",
        "model.hidden_dim=64",
        "model.score_pool_hidden=32",
        "model.score_hidden=32",
    ]
    model = maskkit.create_model("deepmask_vgg", overrides=narrow).to(device)
    image = torch.rand(3, 160, 160, device=device)
    # VGG-A conv5 receptive field is 134 px: 64 px of context around the 224 px window
    out = _check_conv_equals_windows(model, image, [(4, 4), (4, 5), (5, 4), (5, 5)], context=64)
    assert out["mask"].shape == (4, 56, 56)


def test_propose_uses_shared_skips_and_matches_score_maps(device):
    torch.manual_seed(0)
    model = maskkit.create_model("sharpmask_demo", overrides=["model.scales=[0.0]", "model.refine_batch=3"])
    _randomise_bn(model)
    model.to(device).eval()
    image = torch.rand(3, 96, 128, device=device)
    props = model.propose(image, top_n=7)
    maps = _scale_maps(model, image, 0.0, refine=True)
    best = maps["scores"].flatten().topk(7)
    torch.testing.assert_close(props["scores"], best.values.sigmoid())
    gw = maps["scores"].shape[1]
    ij = torch.stack([best.indices // gw, best.indices % gw], 1)
    assert torch.equal(props["cells"].to(device), ij)
    with torch.no_grad():
        vec = maps["vectors"][:, ij[:, 0], ij[:, 1]].T
        ref = model.refinement(vec, _crops(model, maps["skips"], ij))[:, 0].sigmoid()
    torch.testing.assert_close(props["masks"], ref, rtol=1e-5, atol=1e-6)
    # window boxes: top-left cell * 16 minus the 40 px pad, 80 px windows at scale 1
    pad = model.cfg.window // 2
    expect = torch.stack(
        [ij[:, 1] * 16 - pad, ij[:, 0] * 16 - pad, ij[:, 1] * 16 - pad + 80, ij[:, 0] * 16 - pad + 80], 1
    )
    torch.testing.assert_close(props["window_boxes"], expect.float())


def test_window_boxes_follow_the_scale(device):
    model = maskkit.create_model("deepmask_demo", overrides=["model.scales=[-1.0]"]).to(device).eval()
    props = model.propose(torch.rand(3, 64, 96, device=device), top_n=5)
    wb = props["window_boxes"]
    torch.testing.assert_close(wb[:, 2] - wb[:, 0], torch.full((5,), 160.0, device=device))  # 80 px window at scale 1/2
    ij = props["cells"].float().to(device)
    torch.testing.assert_close(wb[:, 0], (ij[:, 1] * 16 - 40) * 2)


def test_eval_output_follows_the_data_contract(device):
    torch.manual_seed(0)
    for name in ("deepmask_demo", "sharpmask_demo"):
        model = maskkit.create_model(name, overrides=["model.top_n=20", "model.scales=[-0.5,0.0]"]).to(device).eval()
        preds = model([torch.rand(3, 70, 90, device=device), torch.rand(3, 50, 40, device=device)])
        assert len(preds) == 2
        for p, (h, w) in zip(preds, [(70, 90), (50, 40)]):
            assert p["masks"].dtype == torch.bool and p["masks"].shape == (20, 1, h, w)
            assert p["boxes"].shape == (20, 4) and p["labels"].tolist() == [1] * 20
            assert torch.all(p["scores"][:-1] >= p["scores"][1:]) and p["scores"].max() <= 1
            assert torch.all(p["boxes"][:, 2] >= p["boxes"][:, 0]) and p["boxes"][:, 2].max() <= w
            assert p["boxes"][:, 3].max() <= h and p["boxes"].min() >= 0


def test_coarse_or_refined_from_one_network(device):
    model = maskkit.create_model("sharpmask_demo", overrides=["model.scales=[0.0]"]).to(device).eval()
    image = torch.rand(3, 64, 64, device=device)
    fine = model.propose(image, top_n=4)
    coarse = model.propose(image, top_n=4, refined=False)
    assert fine["masks"].shape[-1] == 80 and coarse["masks"].shape[-1] == 28
    torch.testing.assert_close(fine["scores"], coarse["scores"])


def test_tiny_and_odd_sized_images(device):
    model = maskkit.create_model("sharpmask_demo", overrides=["model.top_n=5"]).to(device).eval()
    for h, w in [(1, 1), (7, 33), (41, 17)]:
        p = model([torch.rand(3, h, w, device=device)])[0]
        assert p["masks"].shape == (5, 1, h, w) and p["boxes"].shape == (5, 4)
        assert p["boxes"][:, 2].max() <= w and p["boxes"][:, 3].max() <= h


def test_presets_round_trip_through_the_saved_config():
    from maskkit.config import config_to_json
    from maskkit.models.sharpmask.presets import PRESETS
    from maskkit.models.zoo import get_config, read_config

    assert {"deepmask_r50", "sharpmask_r50", "sharpmask_zoom_r50", "deepmask_vgg"} <= set(maskkit.list_models())
    for name in PRESETS:
        cfg = get_config(name)
        back = read_config(config_to_json(cfg))
        assert back == cfg and back.model.window == 16 * back.model.feature_size
        assert back.model.sampler.window == back.model.window  # the sampler cuts the model's windows
    assert get_config("sharpmask_r50").train.stage == 2 and get_config("deepmask_r50").train.stage == 1
    assert get_config("sharpmask_r50").model.sampler.mask_batch_prob == 1.0  # stage 2: mask samples only
    assert get_config("sharpmask_zoom_r50").model.scales[-1] == 1.0


def test_mask_boxes_tight_and_fallback():
    masks = torch.zeros(2, 1, 10, 12, dtype=torch.bool)
    masks[0, 0, 2:5, 3:9] = True
    fallback = torch.tensor([[0.0, 0, 1, 1], [1.0, 2, 3, 4]])
    assert mask_boxes(masks, fallback).tolist() == [[3, 2, 9, 5], [1, 2, 3, 4]]


@pytest.mark.parametrize("m", [28, 160])
def test_window_paste_equals_full_image_paste(m):
    """The per-window paste gives exactly the full-image bilinear paste binarised at 0.2, and the
    tight boxes of the result (windows of several scales, partly outside the image, one empty)."""
    g = torch.Generator().manual_seed(m)
    masks = torch.rand(40, m, m, generator=g) ** 3
    masks[5] = 0
    sides = torch.tensor([40.0, 56.57, 113.1, 226.3])[torch.randint(0, 4, (40,), generator=g)]
    x0 = torch.rand(40, generator=g) * 200 - 60
    y0 = torch.rand(40, generator=g) * 150 - 60
    boxes = torch.stack([x0, y0, x0 + sides, y0 + sides], 1)
    fallback = torch.rand(40, 4, generator=g)
    pasted, tight = paste_window_masks(masks, boxes, (120, 170), 0.2, fallback)
    expect = paste_masks_in_image(masks, boxes, (120, 170)) >= 0.2
    assert pasted.dtype == torch.bool and torch.equal(pasted, expect)
    assert torch.equal(tight, mask_boxes(expect, fallback))
    assert torch.equal(tight[5], fallback[5])


def test_losses_are_the_logistic_loss():
    logits = torch.zeros(2, 56, 56)
    target = torch.ones(2, 160, 160)
    assert mask_loss(logits, target, 112).item() == pytest.approx(math.log(2))
    s = torch.tensor([2.0, -1.0])
    y = torch.tensor([1.0, -1.0])
    expect = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2 / 32
    assert score_loss(s, y, 1 / 32).item() == pytest.approx(expect)
    # a perfect mask prediction has a small loss
    t = torch.where(torch.rand(2, 160, 160) > 0.5, 1.0, -1.0)
    assert mask_loss(t * 20, t, 160).item() < 1e-6


def _batch(kind, n=4, size=112, win=80, device="cpu"):
    torch.manual_seed(3)
    return torch.rand(n, 3, size, size, device=device), {
        "kind": kind,
        "masks": torch.where(torch.rand(n, win, win, device=device) > 0.5, 1.0, -1.0),
        "scores": torch.tensor([1.0, -1.0] * (n // 2), device=device),
    }


def test_stage1_trains_trunk_and_heads(device):
    model = maskkit.create_model("sharpmask_demo").to(device).train()
    model.set_stage(1)
    params = model.trainable_parameters()
    assert {id(p) for p in params} == {id(p) for p in list(model.trunk.parameters()) + list(model.head.parameters())}
    for kind, key in (("mask", "loss_mask"), ("score", "loss_score")):
        model.zero_grad()
        losses = model(*_batch(kind, device=device))
        assert set(losses) == {key} and losses[key].dim() == 0
        losses[key].backward()
        assert model.trunk.conv1.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.refinement.parameters())


def test_stage2_freezes_deepmask_and_trains_refinement_only(device):
    model = maskkit.create_model("sharpmask_demo").to(device).train()
    model.set_stage(2)
    assert model.trunk.training is False and model.head.training is False and model.refinement.training
    assert all(not p.requires_grad for p in list(model.trunk.parameters()) + list(model.head.parameters()))
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.refinement.parameters()}
    bn_before = model.trunk.bn1.running_mean.clone()
    losses = model(*_batch("mask", device=device))
    assert set(losses) == {"loss_mask"}
    losses["loss_mask"].backward()
    assert all(p.grad is not None for p in model.refinement.parameters())
    assert model.trunk.conv1.weight.grad is None
    assert torch.equal(model.trunk.bn1.running_mean, bn_before)  # frozen statistics
    with pytest.raises(MaskkitError, match="mask samples only"):
        model(*_batch("score", device=device))
    with pytest.raises(MaskkitError, match="refine=False"):
        maskkit.create_model("deepmask_demo").set_stage(2)


def test_stage2_finetune_trunk_trains_everything_through_the_refinement(device):
    model = maskkit.create_model("sharpmask_demo", overrides=["model.finetune_trunk=true"]).to(device).train()
    model.set_stage(2)
    assert model.trunk.training is False and model.head.training is False  # norms fixed, no dropout
    every = list(model.refinement.parameters()) + list(model.trunk.parameters()) + list(model.head.parameters())
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in every}
    bn_before = model.trunk.bn1.running_mean.clone()
    model(*_batch("mask", device=device))["loss_mask"].backward()
    assert model.trunk.conv1.weight.grad.abs().sum() > 0 and model.head.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.refinement.parameters())
    assert model.head.mask.weight.grad is None  # the coarse mask is not in the stage-2 loss
    assert torch.equal(model.trunk.bn1.running_mean, bn_before)


def test_bad_inputs_raise_clear_errors(device):
    model = maskkit.create_model("deepmask_demo").to(device).train()
    with pytest.raises(MaskkitError, match="window \\+ 32k"):
        model(torch.rand(2, 3, 100, 100, device=device), _batch("mask", device=device)[1])
    with pytest.raises(MaskkitError, match="needs targets"):
        model(torch.rand(2, 3, 112, 112, device=device))
    with pytest.raises(MaskkitError, match="kind"):
        model(torch.rand(2, 3, 112, 112, device=device), {"kind": "box"})
    model.eval()
    with pytest.raises(MaskkitError, match="\\[3, H, W\\]"):
        model([torch.rand(1, 30, 30, device=device)])
