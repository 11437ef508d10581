"""Import the authors' detectron2 + centermask2 source trees on a CPU, without compiling.

Run every script of this folder with (see README.md)::

    PYTHONPATH=/work/refdeps:/work/refsrc/detectron2:/work/refsrc/centermask2 \
        /work/main/.venv/bin/python benchmarks/official_reference/<script>.py

Nothing here is imported by maskkit: these scripts drive the *official* code, outside the
project, to record reference outputs under tests/convert/reference/.

detectron2's C++/CUDA extension ``detectron2._C`` is not built. It is only needed by
``detectron2.layers.deform_conv`` (DCN kernels, CUDA-only anyway: the autograd functions raise
"Deformable Conv is not supported on CPUs!" on CPU tensors) and by the fast COCO evaluator.
We insert an *empty* module as ``detectron2._C`` before importing detectron2, so that the real
``DeformConv`` / ``ModulatedDeformConv`` classes are defined (their parameters are plain
``nn.Parameter``s, so the DCN configurations can be *built* and their state-dict layouts
read) while any attempt to *run* a deformable convolution still fails loudly.
Everything the non-DCN configurations execute (NMS, RoIAlign, focal loss, GIoU, paste) is
pure PyTorch / torchvision in detectron2.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

REFSRC = Path(os.environ.get("MASKKIT_REFSRC", "/work/refsrc"))
CM2_CONFIGS = REFSRC / "centermask2" / "configs" / "centermask"

# Every configuration of the centermask2 model zoo (README "Models" tables), by config file.
ZOO = {
    "centermask_lite_V_19_eSE_FPN_ms_4x": "Lite V-19",
    "centermask_lite_V_19_slim_eSE_FPN_ms_4x": "Lite V-19-slim",
    "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x": "Lite V-19-slim-dw",
    "centermask_lite_V_39_eSE_FPN_ms_4x": "Lite V-39",
    "centermask_lite_Mv2_FPN_ms_4x": "Lite MobileNetV2",
    "centermask_R_50_FPN_ms_3x": "R-50",
    "centermask_R_101_FPN_ms_3x": "R-101",
    "centermask_X_101_FPN_ms_3x": "X-101 32x8d",
    "centermask_V_39_eSE_FPN_ms_3x": "V-39",
    "centermask_V_57_eSE_FPN_ms_3x": "V-57",
    "centermask_V_99_eSE_FPN_ms_3x": "V-99",
    "centermask_V_39_eSE_dcn_FPN_ms_3x": "V-39 DCN",
    "centermask_V_57_eSE_dcn_FPN_ms_3x": "V-57 DCN",
    "centermask_V_99_eSE_dcn_FPN_ms_3x": "V-99 DCN",
}


def _install_stub_C() -> None:
    if "detectron2._C" not in sys.modules:
        stub = types.ModuleType("detectron2._C")
        stub.__doc__ = "empty stand-in: detectron2's C++ extension is not compiled here"
        sys.modules["detectron2._C"] = stub


_install_stub_C()

import centermask.modeling  # noqa: E402,F401  (registers FCOS, CenterROIHeads, backbones)
import detectron2  # noqa: E402,F401
import torch  # noqa: E402
from centermask.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402


def load_cfg(config_name: str, device: str = "cpu"):
    """The official config of one zoo entry (yaml with its _BASE_), frozen, on ``device``."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CM2_CONFIGS / f"{config_name}.yaml"))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    return cfg


def build_official(config_name: str):
    """(cfg, model) built by detectron2's ``build_model`` from the official yaml, on CPU."""
    cfg = load_cfg(config_name)
    torch.manual_seed(0)
    model = build_model(cfg)
    return cfg, model


def repo_commits() -> dict:
    """Commit of each source tree, read from the COMMIT file written when it was extracted."""
    out = {}
    for name in ("detectron2", "centermask2"):
        f = REFSRC / name / "COMMIT"
        out[name] = f.read_text().strip() if f.exists() else "unknown"
    return out
