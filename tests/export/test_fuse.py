"""The fused eager path (norms folded into convolutions, optional channels_last) gives the
unfused model's outputs (issue #11: unchanged to 1e-5)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from maskkit.export.fuse import fold_norms, fuse_model
from maskkit.models.zoo import create_model


def _randomise_norms(model: torch.nn.Module) -> None:
    """Non-trivial statistics (fresh norms are the identity, which would hide a wrong fold)."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.running_mean.shape[0]
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize(
    "preset, channels_last, mask_tol",
    [
        ("centermask_lite_v19", False, 1e-5),
        # channels_last picks other oneDNN kernels: mask probabilities within 1e-5 on an Intel Xeon
        # (AVX-512), up to 5e-5 on an AMD EPYC (Zen 4, AVX-512) for 2 of 630k pixels
        ("centermask_lite_v19", True, 2e-4),
        ("centermask_lite_mnv2", False, 1e-5),
        # random ResNet-50 features reach ~4e3 (no trained statistics keep them small): float32
        # rounding alone moves them by ~6e-3 against a float64 reference, and a few mask pixels by ~1e-3
        ("centermask_lite_r50", False, 2e-3),
    ],
)
def test_fused_equals_unfused(preset, channels_last, mask_tol):
    torch.manual_seed(0)
    overrides = [
        "model.min_size_test=160",
        "model.max_size_test=256",
        "model.fcos.score_thresh=0.0",
        "model.fcos.detections_per_image=20",
    ]
    model = create_model(preset, overrides=overrides).eval()
    with torch.no_grad():
        _randomise_norms(model)
        model.mask_head.predictor.weight.normal_(std=0.05)
    fused = fuse_model(model, channels_last=channels_last)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)) for m in fused.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())  # the original is untouched
    img = torch.rand(3, 150, 210, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats_a = model.fpn(model.backbone(model.preprocess([img])))
        feats_b = fused.fpn(fused.backbone(fused.preprocess([img])))
        for a, b in zip(feats_a, feats_b):
            # to 1e-5 of the feature scale: random ResNet features reach ~4e3, where float32
            # rounding alone (unfused vs a float64 reference) is ~6e-3
            torch.testing.assert_close(b, a, atol=1e-5 * float(a.abs().max()), rtol=0)
        want, got = model([img])[0], fused([img])[0]
    assert len(want["boxes"]) == 20
    for k in ("boxes", "labels", "scores", "masks", "mask_scores"):
        tol = {"boxes": 1e-4, "masks": mask_tol}.get(k, 1e-5)
        a, b = (got[k], want[k]) if k != "masks" else (got[k].probabilities(), want[k].probabilities())
        torch.testing.assert_close(a, b, atol=tol, rtol=1e-5)


def test_fold_counts_every_conv_norm_pair():
    model = create_model("centermask_lite_v19")
    norms = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert fold_norms(model) == norms > 0


def test_fused_path_rewrites_ese_and_the_mask_heads():
    """eSE runs as a matrix-vector product (no 1x1 convolution on a 1x1 map); the mask head
    computes only the label's mask, its deconvolution as a 1x1 convolution (no transposed
    convolution is left), and the MaskIoU head's first convolution sees whole 16-channel blocks."""
    from maskkit.export.fuse import ClassMaskHead, LinearESE, PaddedMaskIoUHead
    from maskkit.models.backbones.vovnet import EffectiveSE

    model = create_model("centermask_lite_v19")
    fused = fuse_model(model)
    assert sum(isinstance(m, LinearESE) for m in fused.modules()) == 4
    assert not any(isinstance(m, EffectiveSE) for m in fused.modules())
    assert isinstance(fused.mask_head, ClassMaskHead) and isinstance(fused.maskiou, PaddedMaskIoUHead)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in fused.modules())
    assert fused.maskiou.w0.shape[1] % 16 == 0
    assert isinstance(model.mask_head.deconv, torch.nn.ConvTranspose2d)  # the original is untouched


# ATen's ConvParams::use_mkldnn sends a float32 convolution to its native im2col+GEMM kernel
# (aten::_slow_conv2d_forward) when groups == 1, the kernel is at most 3x3, the batch is 1 and the
# input holds <= 20480 elements ("for some case, native is faster"). Measured at 2 threads, those
# (the FCOS head on P6/P7, the P7 conv) are as fast or faster there than forced onto oneDNN
# (benchmarks/export_runtimes.md), so the fused path leaves them; anything else on that path
# would be a layout, contiguity or dtype mistake.
_NATIVE_MAX_NUMEL = 20480


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_path_sends_no_large_convolution_to_the_slow_kernel(channels_last):
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    overrides = ["model.min_size_test=192", "model.max_size_test=256", "model.fcos.score_thresh=0.0"]
    fused = fuse_model(create_model("centermask_lite_v19", overrides=overrides), channels_last=channels_last)
    img = torch.rand(3, 192, 256, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the benchmark's setting (at 1 thread ATen also sends unstrided 1x1s there)
    try:
        with torch.inference_mode():
            fused([img])  # warm-up
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                fused([img])
    finally:
        torch.set_num_threads(threads)
    events = [e for e in prof.events() if e.name in ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward")]
    assert sum(e.name == "aten::mkldnn_convolution" for e in events) > 20  # the profile saw the convolutions
    for e in events:
        if e.name == "aten::_slow_conv2d_forward":
            x, w = e.input_shapes[0], e.input_shapes[1]
            assert x[0] == 1 and x[1] * x[2] * x[3] <= _NATIVE_MAX_NUMEL, (x, w)
            assert x[2:] != [1, 1], f"a 1x1-map convolution (eSE) on the slow path: {x} x {w}"


@pytest.mark.parametrize("num_convs", [1, 2, 4])
def test_merged_fcos_towers_equal_the_two_towers(num_convs):
    """One tower of twice the width (first conv shared input, later ones 2-group convs, GroupNorm
    of 2g groups) and one box+centerness conv give the head's numbers on every level."""
    from maskkit.export.fuse import MergedFCOSHead
    from maskkit.models.centermask.fcos import FCOSHead

    torch.manual_seed(0)
    head = FCOSHead(64, 5, num_convs=num_convs, num_levels=3).eval()
    with torch.no_grad():
        for p in head.parameters():  # non-trivial weights, GroupNorm affine and level scales
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 and p is head.scales else 0.0))
    merged = MergedFCOSHead(head).eval()
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in merged.modules())
    assert n_conv == num_convs + 2  # was 2 * num_convs + 3
    feats = [torch.randn(2, 64, s, s + 3) for s in (20, 10, 5)]
    with torch.no_grad():
        for want, got in zip(head(feats), merged(feats)):
            for a, b in zip(want, got):
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
