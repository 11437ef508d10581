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
- FCOS head: ``cls_logits.weight`` He x 0.5, ``cls_logits.bias`` ``cls_bias + 0.1 N(0, 1)``
  (``cls_bias`` per configuration in ``CLS_BIAS_BY_CONFIG``, default ``CLS_BIAS``: some
  location-class pairs pass the 0.05 test threshold on a ~300 px crop, not all of them);
  ``bbox_pred.weight`` He x 0.05 and ``bias`` ``2 + 0.5 N(0, 1)`` (boxes of about 2-6
  strides per side); ``ctrness.weight`` He x 0.5, ``bias`` 0; ``scales.i.scale``
  ``1 + 0.05 N(0, 1)``;
- MaskIoU output layer ``roi_heads.maskiou_head.maskiou``: weight He x 1e-3, bias
  ``0.5 + 0.05 N(0, 1)`` (the untrained FC stack gives outputs in the hundreds otherwise);
- DCN ``conv_offset``: He x 0.1 (never executed on CPU, see the generator's README).

Usage (tests in ``tests/convert`` import it as a sibling module)::

    from official_weights import load_layout, official_random_state_dict
    sd = official_random_state_dict(load_layout("centermask_lite_V_19_eSE_FPN_ms_4x"))
    torch.save({"model": sd}, tmp_path / "model_final.pth")
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch

LAYOUTS = Path(__file__).resolve().parent / "reference" / "layouts"
CLS_BIAS = -5.0
# Per-configuration class-logit bias: the untrained networks' logit spread differs, and these
# values give between a handful and ~50 final detections on the reference crops.
CLS_BIAS_BY_CONFIG = {
    "centermask_lite_V_19_eSE_FPN_ms_4x": -5.5,
    "centermask_lite_V_39_eSE_FPN_ms_4x": -5.0,
    "centermask_R_50_FPN_ms_3x": -5.0,
}


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
        return cls_bias + 0.1 * n if leaf == "bias" else 0.5 * n * math.sqrt(2.0 / _fan_in(name, shape))
    if "bbox_pred" in name:
        return 2.0 + 0.5 * n if leaf == "bias" else 0.05 * n * math.sqrt(2.0 / _fan_in(name, shape))
    if "maskiou_head.maskiou." in name:  # predicted mask IoU of about 0.5 +- 0.3
        return 0.5 + 0.05 * n if leaf == "bias" else 1e-3 * n * math.sqrt(2.0 / _fan_in(name, shape))
    if "ctrness" in name:
        return torch.zeros(shape) if leaf == "bias" else 0.5 * n * math.sqrt(2.0 / _fan_in(name, shape))
    if len(shape) == 1:
        return 1.0 + 0.1 * n if leaf == "weight" else 0.05 * n
    he = n * math.sqrt(2.0 / _fan_in(name, shape))
    return 0.1 * he if "conv_offset" in name else he


def official_random_state_dict(layout: dict, cls_bias: float | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of ``layout["tensors"]`` (name -> shape), in order, with its seeded value.

    ``layout`` is a layout JSON as written by ``benchmarks/official_reference/dump_layouts.py``
    (or any dict with a ``tensors`` mapping and an optional ``dtypes`` mapping).
    ``cls_bias`` defaults to ``CLS_BIAS_BY_CONFIG[layout["config_name"]]`` (else ``CLS_BIAS``);
    the reference output files record the value they were made with.
    """
    if cls_bias is None:
        cls_bias = CLS_BIAS_BY_CONFIG.get(layout.get("config_name", ""), CLS_BIAS)
    dtypes = layout.get("dtypes", {})
    return {k: official_tensor(k, list(s), dtypes.get(k, "float32"), cls_bias) for k, s in layout["tensors"].items()}
