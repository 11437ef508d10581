"""Deterministic random weights in the official centermask2 layout (shared test helper).

The reference outputs under ``tests/convert/reference/`` were produced by the authors' code
(``benchmarks/official_reference/``) with exactly these weights, so the weights themselves
are never stored: a test rebuilds them from a layout JSON and feeds them to ``maskkit
convert``. Every tensor is drawn from its own ``torch.Generator`` seeded with
``zlib.crc32(name)``, so a tensor's values depend only on its name and shape (not on the
order of keys, nor on the other tensors of the configuration).

Scales (chosen so the untrained network gives non-degenerate outputs; the official
initialisation would give every location the same score):

- conv / linear weights: He-normal, ``N(0, 2 / fan_in)`` (``fan_in`` = in-channels x kernel
  area; for the mask head's ``deconv`` (ConvTranspose2d, stride 2 = kernel) the in-channels);
- normalisation weight (any 1-D ``.weight``): ``1 + 0.1 N(0, 1)``; any 1-D ``.bias``
  ``0.05 N(0, 1)``; ``running_mean`` ``0.1 N(0, 1)``; ``running_var`` uniform in [0.75, 1.25];
  ``num_batches_tracked`` 0;
- the stem's first conv (the only conv with 3 input channels) He x ``STEM_GAIN`` (1/64: the
  input is in 0-255 pixel units minus the mean); the weight of the last norm of every residual
  branch (ResNet ``conv3.norm``, VoVNetV2 identity OSA modules' ``concat/norm``, MobileNetV2
  ``conv.7``) ``RESIDUAL_GAIN`` (0.25) x ``(1 + 0.1 N(0, 1))``: so features stay O(1-10)
  through 100 layers instead of doubling per residual block;
- FCOS head: ``cls_logits.weight`` He x 1.5, ``cls_logits.bias`` ``cls_bias + 0.1 N(0, 1)``
  (``cls_bias`` chosen per configuration by the generator, so that some - not all -
  location-class pairs pass the 0.05 test threshold on the reference crops; every reference
  file records the value it was made with: pass it back as ``cls_bias=ref["cls_bias"]``);
  ``bbox_pred.weight`` He x 0.05 and ``bias`` ``2 + 0.5 N(0, 1)`` (boxes of about 2-6
  strides per side); ``ctrness.weight`` He x 0.5, ``bias`` 0; ``scales.i.scale``
  ``1 + 0.05 N(0, 1)``;
- MaskIoU output layer ``roi_heads.maskiou_head.maskiou``: weight He x 1e-2, bias
  ``0.5 + 0.6 N(0, 1)`` per class: predicted IoUs around 0.5, some classes below 0 and some above 1
  (exercises the official, unclamped product score x IoU);
- DCN ``conv_offset``: He x 0.1 (never executed on CPU, see the generator's README).

Usage (tests in ``tests/convert`` import it as a sibling module)::

    from official_weights import load_layout, official_random_state_dict, reference_image
    ref = json.loads((REFERENCE / "inference" / "centermask_lite_V_19_eSE_FPN_ms_4x.json").read_text())
    sd = official_random_state_dict(load_layout(ref["config_name"]), cls_bias=ref["cls_bias"])
    torch.save({"model": sd}, tmp_path / "model_final.pth")   # a detectron2-style .pth
    image = reference_image(coco_root, ref["images"][0]["input"])  # uint8 BGR [3, H, W]
"""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import torch

REFERENCE = Path(__file__).resolve().parent / "reference"
LAYOUTS = REFERENCE / "layouts"
CLS_BIAS = -5.0
STEM_GAIN = 1.0 / 64.0  # pixels minus mean are ~+-64: bring the stem's output to unit scale
RESIDUAL_GAIN = 0.25  # last norm of a residual branch: keeps deep nets from doubling per block
# The last normalisation of a residual branch: ResNet bottleneck ``conv3.norm``, VoVNetV2's
# identity OSA modules (the 2nd, 3rd... module of a stage: ``OSA4_2_concat/norm``),
# MobileNetV2's inverted-residual projection norm (``conv.7``, every block).
_RESIDUAL_END = re.compile(
    r"(\.conv3\.norm\.weight$)|(OSA\d+_([2-9]|\d\d+)_concat/norm\.weight$)|(features\.\d+\.conv\.7\.weight$)"
)


def load_layout(config_name: str) -> dict:
    """The layout JSON of one official config (``reference/layouts/<config_name>.json``)."""
    path = LAYOUTS / f"{config_name}.json"
    return json.loads(path.read_text())


def _generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")))


def _fan_in(name: str, shape: list[int]) -> int:
    if name.endswith("deconv.weight"):  # ConvTranspose2d weight is [in, out, kh, kw]
        return shape[0]
    return max(1, math.prod(shape[1:]))


def official_tensor(name: str, shape: list[int], dtype: str = "float32", cls_bias: float = CLS_BIAS) -> torch.Tensor:
    """The deterministic value of one official tensor, from its name and shape (and the
    class-logit bias constant, used only for ``cls_logits.bias``)."""
    if dtype != "float32":  # only num_batches_tracked (int64) in the official layouts
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    g = _generator(name)
    n = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 0.75 + 0.5 * torch.rand(shape, generator=g, dtype=torch.float32)
    if leaf == "running_mean":
        return 0.1 * n
    if name.endswith(".scale") and ".scales." in name:
        return 1.0 + 0.05 * n
    if "cls_logits" in name:
        return cls_bias + 0.1 * n if leaf == "bias" else 1.5 * n * math.sqrt(2.0 / _fan_in(name, shape))
    if "bbox_pred" in name:
        return 2.0 + 0.5 * n if leaf == "bias" else 0.05 * n * math.sqrt(2.0 / _fan_in(name, shape))
    if "maskiou_head.maskiou." in name:  # predicted mask IoU: 0.5 +- O(1)
        return 0.5 + 0.6 * n if leaf == "bias" else 1e-2 * n * math.sqrt(2.0 / _fan_in(name, shape))
    if "ctrness" in name:
        return torch.zeros(shape) if leaf == "bias" else 0.5 * n * math.sqrt(2.0 / _fan_in(name, shape))
    if len(shape) == 1 and leaf == "weight" and _RESIDUAL_END.search(name):
        return RESIDUAL_GAIN * (1.0 + 0.1 * n)
    if len(shape) == 1:
        return 1.0 + 0.1 * n if leaf == "weight" else 0.05 * n
    he = n * math.sqrt(2.0 / _fan_in(name, shape))
    if len(shape) == 4 and shape[1] == 3:  # the stem's first conv reads 0-255 pixels
        return he * STEM_GAIN
    return 0.1 * he if "conv_offset" in name else he


def official_random_state_dict(layout: dict, cls_bias: float | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of ``layout["tensors"]`` (name -> shape), in order, with its seeded value.

    ``layout`` is a layout JSON as written by ``benchmarks/official_reference/dump_layouts.py``
    (or any dict with a ``tensors`` mapping and an optional ``dtypes`` mapping).
    ``cls_bias`` (the class-logit bias constant) defaults to ``CLS_BIAS``; the reference
    output files record the value they were made with (key ``cls_bias``).
    """
    if cls_bias is None:
        cls_bias = CLS_BIAS
    dtypes = layout.get("dtypes", {})
    return {k: official_tensor(k, list(s), dtypes.get(k, "float32"), cls_bias) for k, s in layout["tensors"].items()}


def reference_image(coco_root: Path | str, spec: dict) -> torch.Tensor:
    """The exact input of a reference run: ``uint8 [3, H, W]``, **BGR**, 0-255 (detectron2's
    ``INPUT.FORMAT: BGR`` as its ``DefaultPredictor`` feeds it, minus the resize).

    ``spec`` = ``{"split": "val2017", "file_name": "...jpg", "crop_xyxy": [x0, y0, x1, y1]}``:
    the file is read with PIL, converted to RGB, channel-reversed to BGR and cropped to
    ``[y0:y1, x0:x1]``; no resize, so the model's input size is the crop size and the
    detections are in crop pixels.
    """
    import numpy as np
    from PIL import Image

    x0, y0, x1, y1 = spec["crop_xyxy"]
    with Image.open(Path(coco_root) / spec["split"] / spec["file_name"]) as im:
        rgb = np.asarray(im.convert("RGB"))
    bgr = np.ascontiguousarray(rgb[y0:y1, x0:x1, ::-1].transpose(2, 0, 1))
    return torch.from_numpy(bgr)


def gradient_projection(name: str, grad: torch.Tensor, k: int = 64) -> torch.Tensor:
    """A fixed random ``k``-bucket count sketch of a gradient, ``float64 [k]``.

    Element ``i`` of ``grad.flatten()`` (the gradient in the *official* parameter's shape, C
    order) is added, with a random sign ``s_i``, to a random bucket ``b_i``; ``b`` and ``s`` come
    from a generator seeded with ``zlib.crc32("proj:" + name)`` (``name`` = the official
    parameter name). It is a linear map (a sparse Johnson-Lindenstrauss projection): inner
    products, hence cosines, of two sketched gradients estimate those of the gradients, and
    ``sketch(g1) - sketch(g2) = sketch(g1 - g2)``, so near-equal gradients give near-equal
    sketches. O(numel), so the 6.4M-element MaskIoU FC gradient costs milliseconds.
    """
    g = grad.detach().double().flatten()
    gen = _generator("proj:" + name)
    bucket = torch.randint(0, k, (g.numel(),), generator=gen)
    sign = torch.randint(0, 2, (g.numel(),), generator=gen, dtype=torch.int8).double() * 2.0 - 1.0
    return torch.zeros(k, dtype=torch.float64).index_add_(0, bucket, g * sign)


def match_detections(
    boxes: torch.Tensor, labels: torch.Tensor, ref_boxes: torch.Tensor, ref_labels: torch.Tensor
) -> list[int]:
    """Greedy one-to-one matching, best box IoU first, among detections of the same label ->
    for each detection the index of the reference detection (-1 if none is left): the library's
    matcher (:func:`maskkit.evaluation.agreement.match_detections`)."""
    from maskkit.evaluation.agreement import match_detections as match

    return match(boxes, labels, ref_boxes, ref_labels)[0]
