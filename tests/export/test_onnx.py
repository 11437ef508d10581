"""ONNX export + the ONNX Runtime runner (issue #11): parity with the PyTorch path on real
images at two sizes, empty outputs, foreign files, and predict/eval through the CLI.

Random weights give near-uniform scores and mask probabilities of ~0.5, so each model's
class-logit and mask-predictor weights are redrawn with a larger spread (seeded): detections
are well separated and masks decisive, so the comparison is meaningful.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from pycocotools import mask as mask_utils  # noqa: E402
from torchvision.ops import box_iou, roi_align  # noqa: E402

from maskkit.checkpoint import save_model  # noqa: E402
from maskkit.cli import main  # noqa: E402
from maskkit.data.coco import load_image  # noqa: E402
from maskkit.engine.export import export_file, export_model  # noqa: E402
from maskkit.engine.inference.predictor import Predictor  # noqa: E402
from maskkit.errors import MaskkitError  # noqa: E402
from maskkit.export.numpy_ops import paste_masks, resize_antialias  # noqa: E402
from maskkit.export.runtime import OnnxRunner  # noqa: E402
from maskkit.models.zoo import create_model  # noqa: E402
from maskkit.structures import paste_masks_in_image  # noqa: E402

SMALL = ["model.min_size_test=320", "model.max_size_test=512"]  # keeps the presets' layers, smaller inputs


def _spread_scores(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the mask predictor too: its official init (std 0.001) leaves every probability ~0.5
        for w in (model.fcos.cls_logits.weight, model.mask_head.predictor.weight):
            w.copy_(torch.randn(w.shape, generator=g) * std)
        # (and a bias: where the deconv's ReLU output is all zero the logit would be exactly 0, p = 0.5)
        model.mask_head.predictor.bias.copy_(torch.randn(model.mask_head.predictor.bias.shape, generator=g))
    return model.eval()


def _images(coco_tiny) -> list[torch.Tensor]:
    """Two real images at two different sizes (and aspect ratios): one whole, one cropped."""
    files = sorted((coco_tiny / "val2017").glob("*.jpg"))
    return [load_image(files[0]), load_image(files[1])[:, 40:340, 10:510]]


def _mask_same(a: np.ndarray, b: np.ndarray) -> bool:
    """Mask IoU >= 0.99, or at most one pixel apart (tiny masks of sub-pixel boxes)."""
    union, inter = np.logical_or(a, b).sum(), np.logical_and(a, b).sum()
    return union - inter <= max(1, 0.01 * union)


def assert_same_detections(want: dict, got: dict, threshold: float = 0.5) -> None:
    """Every detection of ``want`` (torch) has one in ``got`` (ONNX Runtime) with the same label,
    box IoU >= 0.99, score within 1e-4 and mask IoU >= 0.99 (or one pixel apart); same count."""
    wb = want["boxes"].numpy()
    gb = np.asarray(got["boxes"])
    assert len(gb) == len(wb)
    if len(wb) == 0:
        return
    iou = box_iou(torch.as_tensor(wb), torch.as_tensor(gb)).numpy()
    same = want["labels"].numpy()[:, None] == np.asarray(got["labels"])[None, :]
    iou = np.where(same, iou, 0.0)
    j = iou.argmax(axis=1)
    assert len(set(j.tolist())) == len(j), "two detections matched the same one"
    assert iou[np.arange(len(j)), j].min() >= 0.99
    assert np.abs(want["scores"].numpy() - np.asarray(got["scores"])[j]).max() <= 1e-4
    assert np.abs(want["mask_scores"].numpy() - np.asarray(got["mask_scores"])[j]).max() <= 1e-4
    wm = want["masks"].numpy()[:, 0] >= threshold
    gm = np.asarray(got["masks"])[j, 0] >= threshold
    assert all(_mask_same(a, b) for a, b in zip(wm, gm))


def test_onnxruntime_roialign_equals_torchvision_aligned():
    """The evidence the one-graph export rests on (benchmarks/roialign_ort_vs_torchvision.py)."""
    import onnxruntime as ort

    class Align(torch.nn.Module):
        def forward(self, f, r):
            return roi_align(f, r, 14, spatial_scale=0.125, sampling_ratio=0, aligned=True)

    g = torch.Generator().manual_seed(0)
    feat = torch.randn(1, 4, 40, 50, generator=g)
    xy = torch.rand(16, 2, generator=g) * 300
    rois = torch.cat([torch.zeros(16, 1), xy, xy + 3 + torch.rand(16, 2, generator=g) * 100], dim=1)
    buf = io.BytesIO()
    torch.onnx.export(Align(), (feat, rois), buf, opset_version=16, dynamo=False, input_names=["f", "r"])
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"f": feat.numpy(), "r": rois.numpy()})[0]
    np.testing.assert_allclose(got, Align()(feat, rois).numpy(), atol=1e-6)


def test_numpy_resize_and_paste_equal_torch():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))
    for hw in [(60, 80), (30, 41), (48, 50)]:
        want = TF.resize(x, list(hw), antialias=True).numpy()
        np.testing.assert_allclose(resize_antialias(x.numpy(), *hw), want, atol=1e-6)
    masks = torch.rand(4, 28, 28)
    boxes = torch.tensor(  # inside, across two borders, sub-pixel, larger than the image
        [[3.2, 4.1, 40.7, 30.0], [-5.0, 10.0, 20.0, 70.0], [10.0, 10.0, 10.5, 11.0], [-30.0, -20.0, 90.0, 80.0]]
    )
    for zero_outside in (True, False):
        np.testing.assert_allclose(
            paste_masks(masks.numpy(), boxes.numpy(), (50, 60), zero_outside),
            paste_masks_in_image(masks, boxes, (50, 60), zero_outside).numpy(),
            atol=1e-5,
        )


def _official_layout(preset: str) -> torch.nn.Module:
    """A model as ``maskkit convert`` builds it for a centermask2 checkpoint: BGR 0-255 input,
    detectron2's mean/std, threshold 0.05, the official post-processing (random weights)."""
    from maskkit.config import apply_overrides
    from maskkit.convert.centermask2 import official_config
    from maskkit.models.zoo import build

    return build(apply_overrides(official_config(preset), SMALL), backbone_weights=False)


@pytest.mark.parametrize(
    "preset, official, extra",
    [
        ("centermask_lite_v19", False, []),  # a Lite preset, maskkit pre- and post-processing
        # a full preset in the converted official layout (BGR255, centermask2 post-processing)
        ("centermask_mnv2", True, []),
        # the demo preset with its mask branch on P2-P3 (a pyramid with a stride-4 level)
        ("centermask_lite_demo", False, ["model.num_classes=80", "model.mask.k_min=2", "model.mask.k_max=3"]),
    ],
    ids=["lite_v19", "mnv2-official", "demo-p2"],
)
def test_onnxruntime_parity_on_real_images_two_sizes(tmp_path, coco_tiny, preset, official, extra):
    torch.manual_seed(0)
    model = _spread_scores(_official_layout(preset) if official else create_model(preset, overrides=SMALL + extra))
    assert model.cfg.postprocess == ("centermask2" if official else "maskkit")
    assert model.cfg.input_format == "BGR255" or not official
    path = export_model(model, tmp_path / "m.onnx")
    runner = OnnxRunner(path)
    sizes = set()
    for img in _images(coco_tiny):
        with torch.no_grad():
            want = model([img])[0]
        got = runner(img.numpy())
        assert len(want["boxes"]) > 5  # the comparison is not vacuous
        assert_same_detections(want, got)
        sizes.add(tuple(runner.preprocess(img.numpy())[0].shape[-2:]))
    assert len(sizes) == 2  # one file served two different input sizes


@pytest.mark.parametrize(
    "preset, extra",
    [
        ("sharpmask_demo", []),  # refinement on the skip features of each window's own scale
        ("deepmask_demo", ["model.pyramid=official", "model.border_fill=0.5"]),  # coarse masks, converted-.t7 settings
    ],
)
def test_sharpmask_onnxruntime_parity_on_real_images_two_sizes(tmp_path, coco_tiny, preset, extra):
    torch.manual_seed(0)
    model = create_model(preset, overrides=["model.top_n=100", *extra]).eval()
    path = export_model(model, tmp_path / "m.onnx")
    runner = OnnxRunner(path)
    imgs = _images(coco_tiny)
    for img in (imgs[0][:, :240, :320], imgs[1][:, :200, :280]):  # two sizes: every scale's input differs
        with torch.no_grad():
            want = model([img])[0]
        got = runner(img.numpy())
        assert len(want["boxes"]) == len(got["boxes"]) == 100
        np.testing.assert_allclose(got["scores"], want["scores"].numpy(), atol=1e-4)
        np.testing.assert_allclose(got["boxes"], want["boxes"].numpy(), atol=1e-3)
        a, b = want["masks"].numpy()[:, 0], got["masks"][:, 0]
        assert all(_mask_same(x, y) for x, y in zip(a, b))
    pred = Predictor(path)(img)  # the engine's path: labels all 1, class-agnostic
    assert pred["labels"].eq(1).all() and pred["masks"].dtype == torch.bool


def _assert_same_proposals(want: dict, got: dict) -> None:
    """Same proposals as sets (near-equal scores may be ordered differently): each of ``want``'s
    has its own in ``got`` with box IoU >= 0.99, score within 1e-4 and masks IoU >= 0.99 (or one
    pixel apart), the nearest in rank of those; same count."""
    assert len(got["scores"]) == len(want["scores"])
    iou = box_iou(want["boxes"], torch.as_tensor(got["boxes"])).numpy()
    ws, gs = want["scores"].numpy(), np.asarray(got["scores"])
    wm, gm = want["masks"].numpy()[:, 0], np.asarray(got["masks"])[:, 0]
    free = set(range(len(gs)))
    for i in range(len(ws)):
        ok = [j for j in free if iou[i, j] >= 0.99 and abs(ws[i] - gs[j]) <= 1e-4 and _mask_same(wm[i], gm[j])]
        assert ok, f"proposal {i} (score {ws[i]:.6f}) has no match"
        free.remove(min(ok, key=lambda j: abs(j - i)))


@pytest.mark.parametrize("preset", ["deepmask_r50", "sharpmask_r50"])
def test_r50_proposals_onnxruntime_parity_on_real_images_two_sizes(tmp_path, coco_tiny, preset):
    """The full-size presets (ResNet-50 trunk, symmetric padding, head C; SharpMask with its
    refinement on each window's own scale), random weights. To keep the CPU time small the test
    uses 2 of the paper's 7 scales (2^-1 and 2^0, ``model.scales=-1.0,0.0``), the top 100
    proposals and two small real crops (120x160 and 100x140: every scale's canvas differs
    between them); the graph is the same at any scale count (one input per scale)."""
    torch.manual_seed(0)
    model = create_model(preset, overrides=["model.top_n=100", "model.scales=-1.0,0.0"]).eval()
    assert model.cfg.padding == "symmetric" and model.cfg.trunk == "resnet50"
    runner = OnnxRunner(export_model(model, tmp_path / "m.onnx"))
    imgs = _images(coco_tiny)
    for img in (imgs[0][:, :120, :160], imgs[1][:, 20:120, 30:170]):
        with torch.no_grad():
            want = model([img])[0]
        got = runner(img.numpy())
        assert len(want["scores"]) == 100
        _assert_same_proposals(want, got)


def test_image_with_no_detections_exports_and_runs(tmp_path):
    torch.manual_seed(0)
    model = create_model("centermask_lite_demo").eval()  # prior 0.01 < score threshold: nothing detected
    path = export_model(model, tmp_path / "m.onnx")
    img = torch.rand(3, 90, 130, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert len(model([img])[0]["boxes"]) == 0
    got = OnnxRunner(path)(img.numpy())
    assert got["boxes"].shape == (0, 4) and got["labels"].shape == (0,) and got["masks"].shape == (0, 1, 90, 130)
    pred = Predictor(path)(img)
    assert pred["boxes"].shape == (0, 4) and pred["category_ids"].numel() == 0


def test_foreign_or_broken_onnx_file_is_a_clear_error(tmp_path, capsys):
    other = tmp_path / "classifier.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(other), dynamo=False)
    with pytest.raises(MaskkitError, match="not written by `maskkit export`"):
        Predictor(other)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(MaskkitError, match="not a loadable ONNX file"):
        Predictor(broken)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 24)).save(img)
    assert main(["predict", "--weights", str(other), str(img), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskkit: error:") and "classifier.onnx" in err[0]


def test_export_refuses_low_opset_and_overwrite(tmp_path):
    model = create_model("centermask_lite_demo")
    w = save_model(tmp_path / "m.onnx", model, model.info.config)
    with pytest.raises(MaskkitError, match="opset >= 16"):
        export_file(w, tmp_path / "o.onnx", opset=13)
    with pytest.raises(MaskkitError, match="overwrite"):
        export_file(w)


def _rle_same(a: dict, b: dict) -> bool:
    """Same mask: IoU >= 0.99, or at most one pixel apart (a 2-pixel mask of a sub-pixel box
    flips IoU to 0.5 on a single boundary pixel)."""
    return _mask_same(mask_utils.decode(a["segmentation"]) > 0, mask_utils.decode(b["segmentation"]) > 0)


def _same_results(a: list[dict], b: list[dict]) -> None:
    """Two COCO results lists hold the same detections (matched by image, category and box)."""
    assert len(a) == len(b) and len(a) > 0
    for x in a:
        cands = [y for y in b if (y["image_id"], y["category_id"]) == (x["image_id"], x["category_id"])]
        assert cands
        ious = mask_utils.iou([y["bbox"] for y in cands], [x["bbox"]], [0])[:, 0]
        close = [y for y, iou in zip(cands, ious) if iou >= 0.99]  # tiny boxes can overlap this much
        assert close, x
        y = min(close, key=lambda c: abs(c["score"] - x["score"]))
        assert abs(x["score"] - y["score"]) <= 1e-4
        assert _rle_same(x, y), (x["bbox"], y["bbox"])


def test_predict_and_eval_cli_onnx_equal_pytorch(tmp_path, coco_tiny):
    """One image per forward pass on both paths (the exported graph takes one image; a PyTorch
    batch pads its images to a common size, which moves detections near the padding)."""
    from maskkit.data.coco import open_split

    val = open_split(coco_tiny, "val", None, None)
    torch.manual_seed(0)
    model = _spread_scores(
        create_model("centermask_lite_demo", num_classes=len(val.cat_ids), overrides=["eval.max_images=3"])
    )
    w = save_model(tmp_path / "m.safetensors", model, model.info.config, val.class_names, val.cat_ids)
    assert main(["export", "--weights", str(w), "--format", "onnx"]) == 0
    onnx_path = w.with_suffix(".onnx")
    imgs = [str(p) for p in sorted((coco_tiny / "val2017").glob("*.jpg"))[:2]]
    for weights, out in ((w, "pt"), (onnx_path, "ort")):
        assert (
            main(
                [
                    "predict",
                    "--weights",
                    str(weights),
                    *imgs,
                    "--out",
                    str(tmp_path / f"p_{out}"),
                    "--no-draw",
                    "--score-thr",
                    "0.2",
                    "--no-progress",
                    "--batch",
                    "1",
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "eval",
                    "--weights",
                    str(weights),
                    "--data",
                    str(coco_tiny),
                    "--out",
                    str(tmp_path / f"e_{out}"),
                    "--batch",
                    "1",
                ]
            )
            == 0
        )
    for kind in ("p", "e"):
        a = json.loads((tmp_path / f"{kind}_pt" / "results.json").read_text())
        b = json.loads((tmp_path / f"{kind}_ort" / "results.json").read_text())
        _same_results(a, b)
    ma = json.loads((tmp_path / "e_pt" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "e_ort" / "metrics.json").read_text())
    assert ma.keys() == mb.keys()


def test_runner_imports_no_torch():
    """The NumPy runner runs where torch is not installed: importing it imports no torch."""
    import subprocess
    import sys

    code = "import sys, maskkit.export.runtime; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ}).returncode == 0


def test_openvino_backend_runs_the_same_file(tmp_path, coco_tiny):
    """The optional third runtime: the same .onnx on OpenVINO's CPU plugin, same detections."""
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    model = _spread_scores(create_model("centermask_lite_v19", overrides=SMALL))
    runner = OnnxRunner(export_model(model, tmp_path / "m.onnx"), threads=1, backend="openvino")
    img = _images(coco_tiny)[1]
    with torch.no_grad():
        want = model([img])[0]
    assert_same_detections(want, runner(img.numpy()))
