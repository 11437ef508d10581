"""The same weights give the same results on the test device as on the CPU (issue #16), and
mixed-precision autocast trains and predicts without NaN, close to float32.

Run on a GPU with ``pytest --device cuda tests/models/test_device_parity.py`` (or
``MASKKIT_TEST_DEVICE=cuda``). On the default CPU device the CPU-vs-device comparisons skip (they
would compare the CPU with itself); the bf16 autocast checks run on the CPU too.

- CenterMask-Lite V-19: the seeded weights of ``tests/convert/official_weights.py`` (the
  configuration ``tests/convert/test_centermask2.py`` compares with the authors' code) on real
  COCO crops; every CPU detection has a device detection of the same label, box IoU >= 0.99
  (boxes within 1e-3 of the box scale), scores within 1e-3, mask IoU >= 0.99.
- SharpMask (``sharpmask_r50``, seeded init, refinement on) full-image proposals on a real
  COCO image at two of the paper's scales: the same proposals, scores within 1e-3, mask IoU
  >= 0.99. Proposals whose score is within 1e-3 of the top-N cut may trade places with the first
  one left out: only those above the cut by more than that are required to match.
- Autocast (bf16 on any device, fp16 on CUDA with ``torch.amp.GradScaler``, as ``train.amp``):
  three training steps of Lite V-19 from one initialisation on two COCO images: every loss and
  gradient finite, each step's total loss within 5 % of float32's; inference returns float32
  outputs whose top detections match float32's (box IoU >= 0.9).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import maskkit
from maskkit.convert.centermask2 import convert_state_dict
from maskkit.models.zoo import build_model

ROOT = Path(__file__).resolve().parents[2]
CONVERT_TESTS = ROOT / "tests" / "convert"
LITE_REF = CONVERT_TESTS / "reference" / "inference" / "centermask_lite_V_19_eSE_FPN_ms_4x.json"
SCORE_TOL, BOX_IOU, MASK_IOU = 1e-3, 0.99, 0.99
sys.path.insert(0, str(CONVERT_TESTS))  # the seeded official weights and the detection matching
from official_weights import (  # noqa: E402
    load_layout,
    match_detections,
    official_random_state_dict,
    reference_image,
)


def _needs_accelerator(device: torch.device) -> None:
    if device.type == "cpu":
        pytest.skip("compares the test device with the CPU: run with --device cuda")


def _lite_v19_official():
    """Lite V-19 with the seeded official-layout weights, converted in memory; and its reference record."""
    ref = json.loads(LITE_REF.read_text())
    weights = official_random_state_dict(load_layout(ref["config_name"]), cls_bias=ref["cls_bias"])
    cfg, state = convert_state_dict(weights)
    model = build_model(cfg.model)
    model.load_state_dict(state)
    model.cfg.min_size_test = 0  # the crops as they are
    return model.eval(), ref


def _binary_iou(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    inter = (x & y).flatten(1).sum(1).double()
    union = (x | y).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))  # two empty masks agree


def _run(model, image: torch.Tensor, device: torch.device) -> dict:
    with torch.no_grad():
        out = model.to(device)([image.to(device)])[0]
        binary = out["masks"][:, 0] >= 0.5  # pasted on the device
    out = {k: v.cpu() for k, v in out.items() if k != "masks"}
    out["binary"] = binary.cpu()
    return out


def _assert_same_detections(cpu: dict, dev: dict, where: str, required: torch.Tensor | None = None) -> None:
    """Every (required) CPU detection has a device detection of the same label: box IoU, score
    and mask IoU within the module's tolerances."""
    required = torch.ones(len(cpu["boxes"]), dtype=torch.bool) if required is None else required
    match = match_detections(cpu["boxes"], cpu["labels"], dev["boxes"], dev["labels"])
    missing = [i for i, j in enumerate(match) if j < 0 and required[i]]
    assert not missing, f"{where}: {len(missing)} CPU detections without a device one"
    keep = [i for i, j in enumerate(match) if j >= 0 and required[i]]
    assert keep, f"{where}: nothing to compare"
    i, j = torch.tensor(keep), torch.tensor([match[k] for k in keep])
    ious = box_iou(cpu["boxes"][i], dev["boxes"][j]).diagonal()
    assert ious.min() >= BOX_IOU, f"{where}: box IoU {ious.min():.5f}"
    scale = (cpu["boxes"][i, 2:] - cpu["boxes"][i, :2]).abs().amax(1, keepdim=True).clamp(min=1.0)
    assert ((cpu["boxes"][i] - dev["boxes"][j]).abs() <= SCORE_TOL * scale).all(), f"{where}: boxes"
    assert ((cpu["scores"][i] - dev["scores"][j]).abs() <= SCORE_TOL).all(), f"{where}: scores"
    if "mask_scores" in cpu:
        assert ((cpu["mask_scores"][i] - dev["mask_scores"][j]).abs() <= SCORE_TOL).all(), f"{where}: mask scores"
    mask_ious = _binary_iou(cpu["binary"][i], dev["binary"][j])
    assert mask_ious.min() >= MASK_IOU, f"{where}: mask IoU {mask_ious.min():.4f}"


def test_centermask_lite_v19_on_the_device_equals_the_cpu(device, coco_tiny):
    _needs_accelerator(device)
    model, ref = _lite_v19_official()
    compared = 0
    for im in ref["images"]:
        rgb = reference_image(coco_tiny, im["input"]).flip(0).float() / 255.0
        cpu = _run(model, rgb, torch.device("cpu"))
        dev = _run(model, rgb, device)
        assert len(cpu["boxes"]) == len(dev["boxes"]), im["input"]["file_name"]
        if len(cpu["boxes"]):
            _assert_same_detections(cpu, dev, f"Lite V-19 {im['input']['file_name']}")
            compared += len(cpu["boxes"])
    assert compared > 0  # the seeded weights give detections on these crops


def _coco_image(coco_tiny: Path, index: int = 0) -> torch.Tensor:
    from PIL import Image

    files = sorted((coco_tiny / "val2017").glob("*.jpg"))
    rgb = np.asarray(Image.open(files[index]).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


def test_sharpmask_proposals_on_the_device_equal_the_cpu(device, coco_tiny):
    _needs_accelerator(device)
    torch.manual_seed(0)
    top_n = 50
    model = maskkit.create_model("sharpmask_r50", overrides=["model.scales=[-1.0,0.0]", f"model.top_n={top_n}"])
    image = _coco_image(coco_tiny)
    cpu = _run(model.eval(), image, torch.device("cpu"))
    dev = _run(model, image, device)
    assert len(cpu["boxes"]) == len(dev["boxes"]) == top_n
    # The proposals ranked clearly above the cut; the last few may trade places with the first left out.
    required = cpu["scores"] > cpu["scores"].min() + SCORE_TOL
    assert required.sum() >= top_n // 2
    _assert_same_detections(cpu, dev, "SharpMask R-50", required)


# --------------------------------------------------------------------------- autocast


def _two_train_images(coco_tiny: Path):
    from maskkit.data.coco import CocoDataset

    ds = CocoDataset(coco_tiny / "annotations" / "instances_train2017.json", coco_tiny / "train2017")
    images, targets = [], []
    for i in range(len(ds)):
        img, t = ds[i]
        if len(t["labels"]) and max(img.shape[-2:]) <= 640:
            images.append(torch.nn.functional.interpolate(img[None].as_subclass(torch.Tensor), scale_factor=0.5)[0])
            t = {k: v for k, v in t.items() if k in ("boxes", "labels", "iscrowd")}
            t["boxes"] = t["boxes"].as_subclass(torch.Tensor) * 0.5
            targets.append(t)
        if len(images) == 2:
            break
    h, w = zip(*(im.shape[-2:] for im in images))
    for t, img in zip(targets, images):  # masks rebuilt at the half size: each box filled (the loss needs one per box)
        m = torch.zeros(len(t["boxes"]), *img.shape[-2:], dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(t["boxes"].round().int().tolist()):
            m[k, y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = 1
        t["masks"] = m
    return images, targets


def _train_steps(device, images, targets, dtype, steps: int = 3) -> list[float]:
    torch.manual_seed(0)
    model = maskkit.create_model("centermask_lite_v19", num_classes=80).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    totals = []
    for _ in range(steps):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = model(images, targets)
        assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values()), losses
        total = sum(losses.values())
        opt.zero_grad()
        scaler.scale(total).backward()
        scaler.unscale_(opt)
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        scaler.step(opt)
        scaler.update()
        totals.append(total.item())
    return totals


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_training_steps_close_to_float32(amp, device, to_device, coco_tiny):
    if amp == "fp16" and device.type != "cuda":
        pytest.skip("fp16 autocast with a GradScaler is the CUDA mode (train.amp=fp16)")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    images, targets = to_device(_two_train_images(coco_tiny))
    ref = _train_steps(device, images, targets, None)
    got = _train_steps(device, images, targets, dtype)
    assert got == pytest.approx(ref, rel=0.05), (amp, got, ref)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_inference_matches_float32(amp, device, coco_tiny):
    if amp == "fp16" and device.type != "cuda":
        pytest.skip("fp16 autocast is a CUDA mode")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    model, ref = _lite_v19_official()
    model.to(device)
    rgb = reference_image(coco_tiny, ref["images"][0]["input"]).flip(0).float().to(device) / 255.0
    with torch.no_grad():
        want = model([rgb])[0]
        with torch.autocast(device.type, dtype=dtype):
            got = model([rgb])[0]
    assert all(got[k].dtype == torch.float32 for k in ("boxes", "scores", "mask_scores"))
    assert all(torch.isfinite(got[k]).all() for k in ("boxes", "scores", "mask_scores"))
    top = want["scores"] >= 0.3
    assert top.sum() > 0
    # each confident float32 detection is found again (same label, box IoU >= 0.9)
    iou = box_iou(want["boxes"][top], got["boxes"])
    iou[want["labels"][top][:, None] != got["labels"][None, :]] = 0
    assert iou.amax(1).min() >= 0.9, iou.amax(1)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_sharpmask_autocast_proposals_are_float32_and_match(amp, device):
    if amp == "fp16" and device.type != "cuda":
        pytest.skip("fp16 autocast is a CUDA mode")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    torch.manual_seed(0)
    model = maskkit.create_model("sharpmask_demo", overrides=["model.top_n=10", "model.scales=[0.0]"]).to(device)
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        want = model.eval().propose(image)
        with torch.autocast(device.type, dtype=dtype):
            got = model.propose(image)
    for k in ("scores", "window_boxes", "masks"):
        assert got[k].dtype == torch.float32 and torch.isfinite(got[k]).all(), k
    # the best window is found again, its score within bf16 / fp16 rounding of a logit
    assert got["scores"][0].item() == pytest.approx(want["scores"][0].item(), abs=0.02)
    assert torch.equal(got["window_boxes"][0], want["window_boxes"][0])
