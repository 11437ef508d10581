"""The torch-free runner's NumPy twins equal the torch code they stand for, on random inputs, and
the decode exists once: eager inference and the export graph run the same model methods, and
the runner applies the same post-processing object (issue #23)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

import maskkit
from maskkit.export import numpy_ops
from maskkit.masks import BoxMasks
from maskkit.models.centermask.postprocess import POSTPROCESS
from maskkit.models.sharpmask.model import paste_window_masks


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", range(4))
def test_resizes_equal_torch(seed):
    g = _rng(seed)
    h, w = (int(v) for v in torch.randint(5, 90, (2,), generator=g))
    x = torch.rand(3, h, w, generator=g)
    for oh, ow in [(int(v) for v in torch.randint(1, 120, (2,), generator=g)) for _ in range(3)]:
        want = TF.resize(x, [oh, ow], antialias=True).numpy()
        np.testing.assert_allclose(numpy_ops.resize_antialias(x.numpy(), oh, ow), want, atol=2e-7, rtol=0)
        want = F.interpolate(x[None], size=(oh, ow), mode="bilinear", align_corners=True)[0].numpy()
        np.testing.assert_allclose(numpy_ops.resize_align_corners(x.numpy(), oh, ow), want, atol=2e-7, rtol=0)


@pytest.mark.parametrize("preset", ["centermask_lite_v19", "centermask_lite_demo"])
def test_centermask_input_equals_the_model_preprocessing(preset):
    """RGB 0..1 input (a preset without weights) and BGR 0..255 (the demo preset's packaged trunk
    brings detectron2's convention)."""
    model = maskkit.create_model(preset, overrides=["model.min_size_test=72", "model.max_size_test=100"])
    from maskkit.export.centermask import centermask_runtime_spec

    spec = centermask_runtime_spec(model)
    # the resize twins' 2e-7 on 0..1 pixels, scaled to 0..255 for BGR and divided by the std
    conv = model.input_convention
    atol = 2e-7 * (255.0 if conv.format == "BGR255" else 1.0) / min(conv.pixel_std)
    for seed, (h, w) in enumerate([(50, 70), (90, 31), (3, 200)]):
        image = torch.rand(3, h, w, generator=_rng(seed))
        resized = model._test_resize(image)
        want = model.preprocess([resized])
        got, size = numpy_ops.centermask_input(image.numpy(), spec)
        assert tuple(size) == tuple(resized.shape[-2:])
        np.testing.assert_allclose(got, want.numpy(), atol=atol, rtol=0)


@pytest.mark.parametrize("zero_outside", [True, False])
def test_paste_equals_box_masks(zero_outside):
    g = _rng(1)
    for n, (h, w) in [(6, (50, 60)), (3, (17, 91))]:
        masks = torch.rand(n, 28, 28, generator=g)
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.4 - 10
        wh = torch.rand(n, 2, generator=g) * 60 + 0.3
        boxes = torch.cat([xy, xy + wh], 1)
        want = BoxMasks(masks, boxes, (h, w), 0.5, zero_outside).probabilities().numpy()
        got = numpy_ops.paste_masks(masks.numpy(), boxes.numpy(), (h, w), zero_outside)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset, pyramid", [("sharpmask_demo", "antialias"), ("deepmask_demo", "official")])
def test_sharpmask_canvases_window_boxes_and_paste_equal_the_model(preset, pyramid):
    model = maskkit.create_model(preset, overrides=[f"model.pyramid={pyramid}", "model.border_fill=0.5"]).eval()
    from maskkit.export.sharpmask import sharpmask_runtime_spec

    spec = sharpmask_runtime_spec(model)
    image = torch.rand(3, 61, 83, generator=_rng(2))
    for want, got in zip(
        (model.canvas(image, s) for s in model.cfg.scales), numpy_ops.sharpmask_canvases(image.numpy(), spec)
    ):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-6, rtol=0)
    g = _rng(3)
    which = torch.randint(0, len(model.cfg.scales), (20,), generator=g)
    cells = torch.randint(0, 12, (20, 2), generator=g)
    boxes = model.window_boxes(which, cells)
    np.testing.assert_array_equal(
        numpy_ops.window_boxes(which.numpy(), cells.numpy(), spec["scales"], spec["window"]), boxes.numpy()
    )
    props = {"scores": torch.rand(20, generator=g), "window_boxes": boxes, "masks": torch.rand(20, 40, 40, generator=g)}
    pred = model.proposals_to_prediction(props, (61, 83))
    fallback = numpy_ops.canonical_boxes(boxes.numpy(), spec["canonical_size"], spec["window"])
    dense, tight = numpy_ops.paste_window_masks(props["masks"].numpy(), boxes.numpy(), (61, 83), 0.2, fallback)
    want_dense, want_tight = paste_window_masks(props["masks"], boxes, (61, 83), 0.2, torch.from_numpy(fallback))
    np.testing.assert_array_equal(dense, want_dense.numpy())
    np.testing.assert_array_equal(tight, want_tight.numpy())
    np.testing.assert_array_equal(tight.clip(0, [83, 61, 83, 61]), pred["boxes"].numpy())


def test_eager_inference_and_the_export_graph_run_the_same_decode(monkeypatch):
    """The decode exists once: counting the calls of the model's one decode and mask branch
    while eager inference runs and while the ONNX graph is traced; the runner post-processes
    with the model's own PostProcess object."""
    pytest.importorskip("onnx")
    from maskkit.engine.export import export_model
    from maskkit.export.runtime import OnnxRunner
    from maskkit.models.centermask import model as cm

    calls = {"decode": 0, "mask_branch": 0}
    decode, branch = cm.fcos_decode, cm.CenterMask.mask_branch

    def counted_decode(*a, **k):
        calls["decode"] += 1
        return decode(*a, **k)

    def counted_branch(self, *a, **k):
        calls["mask_branch"] += 1
        return branch(self, *a, **k)

    monkeypatch.setattr(cm, "fcos_decode", counted_decode)
    monkeypatch.setattr(cm.CenterMask, "mask_branch", counted_branch)
    model = maskkit.create_model("centermask_lite_demo", overrides=["model.postprocess=centermask2"]).eval()
    model([torch.rand(3, 64, 80)])
    assert calls == {"decode": 1, "mask_branch": 1}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, Path(tmp) / "m.onnx")  # tracing runs the same two methods
        assert calls == {"decode": 2, "mask_branch": 2}
        runner = OnnxRunner(path)
    assert runner.post is model.post is POSTPROCESS["centermask2"]
