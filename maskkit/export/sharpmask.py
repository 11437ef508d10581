"""ONNX export of DeepMask / SharpMask full-image proposals (``SharpMask.propose`` as one graph).

Inputs: ``scale_0 .. scale_{S-1}``, one float ``[1, 3, H_s, W_s]`` canvas per pyramid scale
(the image resized by ``2^s``, normalised, padded by half a window with the border colour and
to whole stride-16 cells; any sizes). The graph runs the trunk and head C convolutionally on
each, takes the best ``top_n`` windows over all scales (``TopK`` with k = min(top_n, windows)),
gathers their shared vectors and computes their masks: head C's 56x56 mask (DeepMask) or the
refinement modules on the windows' crops of the skip features ``S*`` of their own scale
(SharpMask; one ``Gather`` per level over all scales' maps flattened, no loop over windows).
Outputs: ``scores [N]`` (sigmoid), ``scale_index [N]``, ``cells [N, 2]`` (row, col of the
window's top-left stride-16 cell), ``masks [N, M, M]`` probabilities over the window. The
NumPy runner turns cells into window boxes and pastes (``maskkit.export.runtime``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import _topk_min

from maskkit.export.onnx import OnnxGraph
from maskkit.export.runtime import sharpmask_canvases

__all__ = ["SharpMaskGraph", "sharpmask_graph", "sharpmask_runtime_spec"]

OUTPUTS = ["scores", "scale_index", "cells", "masks"]


def _size(x: Tensor, dim: int) -> Tensor:
    """``x.shape[dim]`` as an int64 tensor (a graph value while tracing: sizes are dynamic)."""
    return torch._shape_as_tensor(x)[dim].to(torch.int64)


class SharpMaskGraph(nn.Module):
    """The exportable ``propose`` of a :class:`maskkit.models.sharpmask.model.SharpMask` (eval)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        self.refine = model._refined_output(None)

    def _gather_skips(self, skips: list[list[Tensor]], which: Tensor, rows: Tensor, cols: Tensor) -> list[Tensor]:
        """Per level, each window's ``S*`` crop from its own scale's map -> ``[N, k, s_l, s_l]``
        (as :func:`maskkit.models.sharpmask.refine.crop_windows`, over all scales at once)."""
        out = []
        for level in range(len(skips[0])):
            maps = [s[level][0] for s in skips]  # per scale [k, h, w]
            f = 2**level
            size = self.cfg.feature_size * f
            widths = torch.stack([_size(m, 2) for m in maps])  # [S]
            counts = torch.stack([_size(m, 1) * _size(m, 2) for m in maps])
            starts = torch.cumsum(counts, 0) - counts  # [S]
            flat = torch.cat([m.reshape(m.shape[0], -1) for m in maps], dim=1)  # [k, sum h*w]
            ar = torch.arange(size, dtype=torch.int64)
            ys = rows[:, None] * f + ar  # [N, size]
            xs = cols[:, None] * f + ar
            idx = starts[which][:, None, None] + ys[:, :, None] * widths[which][:, None, None] + xs[:, None, :]
            crop = flat[:, idx.reshape(-1)].reshape(flat.shape[0], -1, size, size)  # [k, N, size, size]
            out.append(crop.permute(1, 0, 2, 3))
        return out

    def forward(self, *scales: Tensor):
        model, cfg = self.model, self.cfg
        vecs, scores, skips, widths, counts = [], [], [], [], []
        for x in scales:
            feats = model.trunk(x)
            vmap = model.head.vector_map(feats[-1])  # [1, 512, gh, gw]
            smap = model.head.score_map(feats[-1], vmap)[0]  # [gh, gw]
            vecs.append(vmap[0].reshape(vmap.shape[1], -1))
            scores.append(smap.reshape(-1))
            widths.append(_size(smap, 1))
            counts.append(_size(smap, 0) * _size(smap, 1))
            if self.refine:
                skips.append(model.refinement.skip_features(feats))
        flat = torch.cat(scores)
        top, order = flat.topk(_topk_min(flat, cfg.top_n, 0))
        counts_t, widths_t = torch.stack(counts), torch.stack(widths)
        ends = torch.cumsum(counts_t, 0)
        which = (order[:, None] >= ends[None, :]).to(torch.int64).sum(1)  # scale of each window
        local = order - (ends - counts_t)[which]
        rows, cols = local // widths_t[which], local % widths_t[which]
        vec = torch.cat(vecs, dim=1)[:, order].T  # [N, 512]
        if self.refine:
            masks = model.refinement(vec, self._gather_skips(skips, which, rows, cols))[:, 0].sigmoid()
        else:
            masks = model.head.mask_logits(vec).sigmoid()
        return top.sigmoid(), which, torch.stack([rows, cols], dim=1), masks


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
