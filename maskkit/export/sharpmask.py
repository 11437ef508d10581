"""ONNX export of DeepMask / SharpMask full-image proposals: the model's own
:meth:`SharpMask.window_proposals` (what ``SharpMask.propose`` runs) traced as one graph.

Inputs: ``scale_0 .. scale_{S-1}``, one float ``[1, 3, H_s, W_s]`` canvas per pyramid scale
(:meth:`SharpMask.canvas`: the image resized by ``2^s``, normalised, padded by half a window
with the border colour and to whole stride-16 cells; any sizes). The graph runs the trunk and
head C convolutionally on each, takes the best ``top_n`` windows over all scales (``TopK`` with
k = min(top_n, windows)), gathers their shared vectors and computes their masks: head C's 56x56
mask (DeepMask) or the refinement modules on the windows' crops of the skip features ``S*`` of
their own scale (SharpMask; :func:`gather_window_skips`, one ``Gather`` per level over all
scales' maps flattened, no loop over windows).
Outputs: ``scores [N]`` (sigmoid), ``scale_index [N]``, ``cells [N, 2]`` (row, col of the
window's top-left stride-16 cell), ``masks [N, M, M]`` probabilities over the window. The
NumPy runner turns cells into window boxes and pastes (``maskkit.export.runtime``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from maskkit.export.numpy_ops import sharpmask_canvases
from maskkit.export.onnx import OnnxGraph

__all__ = ["SharpMaskGraph", "sharpmask_graph", "sharpmask_runtime_spec"]

OUTPUTS = ["scores", "scale_index", "cells", "masks"]


class SharpMaskGraph(nn.Module):
    """``(scale_0, ..., scale_{S-1}) -> scores, scale_index, cells, masks``: the model's
    :meth:`SharpMask.window_proposals` with every mask computed at once."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.refine = model.refined_output(None)

    def forward(self, *scales: Tensor):
        return self.model.window_proposals(list(scales), self.model.cfg.top_n, self.refine)


def sharpmask_runtime_spec(model: nn.Module) -> dict:
    cfg, conv = model.cfg, model.input_convention
    return {
        "pipeline": "proposals",
        "scales": [float(s) for s in cfg.scales],
        "window": int(cfg.window),
        "canonical_size": int(cfg.sampler.canonical_size),
        "pyramid": str(cfg.pyramid),
        "border_fill": None if cfg.border_fill is None else float(cfg.border_fill),
        "pixel_mean": [float(v) for v in conv.pixel_mean],
        "pixel_std": [float(v) for v in conv.pixel_std],
        "mask_threshold": float(cfg.mask_threshold),
    }


def sharpmask_graph(model: nn.Module) -> OnnxGraph:
    """The :class:`SharpMaskGraph` of ``model``; the example canvases come from the runner's own
    pre-processing of a 240x320 pattern (one input per pyramid scale, each of dynamic size)."""
    spec = sharpmask_runtime_spec(model)
    image = np.random.default_rng(0).random((3, 240, 320), dtype=np.float32)
    canvases = tuple(torch.from_numpy(c) for c in sharpmask_canvases(image, spec))
    names = [f"scale_{i}" for i in range(len(canvases))]
    axes = {**{n: {2: f"height_{i}", 3: f"width_{i}"} for i, n in enumerate(names)}, **{k: {0: "n"} for k in OUTPUTS}}
    return OnnxGraph(SharpMaskGraph(model.eval()).eval(), canvases, names, OUTPUTS, axes, spec)
