"""SharpMask / DeepMask assembly: per-window training losses and multi-scale full-image inference.

Training (train mode), per window (paper Sec. 3.3, REFERENCE 'Training data')::

    losses = model(crops, targets)
    # crops:   float [B, 3, S, S] in 0..1 RGB, S = window + context (192 for the 160 px window;
    #          any S = window + 32k works: the stride-16 features are centre-cropped to the window)
    # targets: {"kind": "mask" | "score",
    #           "masks":  float [B, h, w] in {-1, +1}, the object mask over the central window
    #                     (any resolution; resized with nearest to the loss resolution),
    #           "scores": float [B] in {-1, +1}}
    # -> {"loss_mask"} (mask batches) or {"loss_score"} (score batches), scalars

Stage 1 (DeepMask): the 56x56 mask logits are upsampled bilinearly to ``mask_loss_size`` (112)
and compared with the label by the logistic (soft margin) loss; score batches give the score
loss weighted 1/32. Stage 2 (``set_stage(2)``): trunk and head C are frozen (no gradients,
norms in eval mode) and the refined 160x160 mask logits get the soft margin loss; stage 2 is
trained on mask samples only.

Inference (eval mode)::

    predictions = model([image [3, H, W] 0..1, ...])
    # -> per image dict(boxes [N, 4] xyxy px: tight box of each binarised mask,
    #                    labels [N] all 1, scores [N] sigmoid objectness, sorted descending,
    #                    masks [N, 1, H, W] binarised at mask_threshold, as a compact BoxMasks:
    #                    each window's mask over its window, pasted only where pixels are needed)

run as in the paper: at each scale ``2^s`` the resized image is padded by half a window (80 px,
with the mean colour) and the trunk and head C run convolutionally (stride 16) over it; the
``top_n`` windows over all scales are kept; their masks come from the mask branch (56x56,
DeepMask) or from the refinement run in batches on the top windows only, reusing the skip
features ``S*`` computed once per image and scale (SharpMask); each window mask is resized
to its window and binarised when it is pasted (:class:`maskkit.masks.BoxMasks`: straight to
RLE, to a crop, or dense); the boxes are the tight boxes of the pasted masks. No NMS (as the
official code). :meth:`SharpMask.propose` returns the window-level proposals (masks at window
resolution).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import _topk_min
from torchvision.transforms.v2 import functional as TF

from maskkit.config import InputConvention
from maskkit.errors import MaskkitError
from maskkit.masks import BoxMasks
from maskkit.models.sharpmask.config import SharpMaskConfig
from maskkit.models.sharpmask.deepmask import build_head, build_trunk
from maskkit.models.sharpmask.refine import Refinement, gather_window_skips
from maskkit.structures import empty_prediction

__all__ = ["SharpMask", "mask_loss", "score_loss", "mask_boxes", "paste_window_masks", "clamp_boxes"]


# --------------------------------------------------------------------------- losses


def mask_loss(logits: torch.Tensor, target: torch.Tensor, size: int) -> torch.Tensor:
    """Logistic (soft margin) mask loss averaged over pixels (DeepMask Eq. 1, positives only).

    ``logits [B, m, m]`` are upsampled bilinearly to ``size`` (DeepMask: 56 -> 112) when they are
    smaller; ``target [B, h, w]`` in {-1, +1} is resized with nearest to ``size``."""
    if logits.shape[-1] != size:
        logits = F.interpolate(logits[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    if target.shape[-2:] != (size, size):
        target = F.interpolate(target[:, None].float(), size=(size, size), mode="nearest")[:, 0]
    return F.soft_margin_loss(logits, target.to(logits.dtype))


def score_loss(logits: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """Logistic objectness loss ``weight * mean(log(1 + exp(-y s)))`` (weight 1/32, REFERENCE)."""
    return weight * F.soft_margin_loss(logits, target.to(logits.dtype))


# --------------------------------------------------------------------------- decoding helpers


def mask_boxes(masks: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes of binary masks ``[N, 1, H, W]`` (or ``[N, H, W]``); an empty mask gets
    its ``fallback [N, 4]`` box. Vectorised (torchvision's ``masks_to_boxes`` loops over masks
    and fails on empty ones)."""
    if masks.dim() == 4:
        masks = masks[:, 0]
    n, h, w = masks.shape
    if n == 0:
        return fallback.new_zeros((0, 4))
    rows = masks.any(dim=2)  # [N, H]
    cols = masks.any(dim=1)  # [N, W]
    y0 = rows.int().argmax(dim=1)
    y1 = h - rows.flip(1).int().argmax(dim=1)
    x0 = cols.int().argmax(dim=1)
    x1 = w - cols.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(fallback.dtype)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], fallback, boxes)


def paste_window_masks(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    image_size: tuple[int, int],
    threshold: float,
    fallback: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Window masks ``[N, M, M]`` (probabilities) over windows ``boxes [N, 4]`` -> binary image
    masks ``bool [N, 1, H, W]`` and their tight boxes (``fallback`` for empty masks).

    The values of ``structures.paste_masks_in_image(masks, boxes) >= threshold`` (bilinear, a
    cell's centre at ``x0 + (i + 0.5) * side / M``, pixels whose centre is outside the window
    set to 0); each mask is resampled over its window only (:class:`maskkit.masks.BoxMasks`,
    which the model returns instead of this dense tensor)."""
    pasted = BoxMasks(masks, boxes, image_size, threshold)
    return pasted.to_dense(), pasted.tight_boxes(fallback)


def clamp_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """xyxy ``boxes [N, 4]`` clamped into the ``(H, W)`` image (in place, returned)."""
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_size[0])
    return boxes


# --------------------------------------------------------------------------- the model


class SharpMask(nn.Module):
    """DeepMask-ours (trunk + head C) with optional SharpMask refinement; see the module docstring.

    ``cfg.refine=False`` builds the pure DeepMask model (the ``deepmask_*`` presets). With
    refinement, one network gives the coarse mask (``use_refinement_output=False`` or
    ``propose(..., refined=False)``) or the refined one.
    """

    def __init__(self, cfg: SharpMaskConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.window % 16 or cfg.stride != 16:
            raise MaskkitError(f"sharpmask needs stride 16 and a window multiple of 16, got {cfg.stride}/{cfg.window}")
        self.trunk = build_trunk(cfg)
        self.head = build_head(self.trunk.channels[-1], cfg)
        self.refinement = Refinement(self.trunk.channels, cfg) if cfg.refine else None
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(3, 1, 1), persistent=False)
        self.input_convention = InputConvention.of(cfg)  # as CenterMask's: the weights' own when they bring one
        self.stage = 1
        self.set_stage(1)

    # -- training-stage control (paper Sec. 3.3: two-stage training)

    def set_stage(self, stage: int) -> None:
        """1: train trunk + head C (refinement untouched); 2: freeze trunk + head C
        (``requires_grad=False``, norms/dropout in eval mode) and train the refinement only, or,
        with ``cfg.finetune_trunk``, train the refinement and fine-tune trunk + head C through it
        end to end (norms still fixed: stage 2 sees mask samples only)."""
        if stage not in (1, 2):
            raise MaskkitError(f"sharpmask training stage must be 1 or 2, got {stage}")
        if stage == 2 and self.refinement is None:
            raise MaskkitError("stage 2 trains the refinement modules: this model has refine=False (a DeepMask preset)")
        self.stage = stage
        for p in list(self.trunk.parameters()) + list(self.head.parameters()):
            p.requires_grad_(stage == 1 or self.cfg.finetune_trunk)
        if self.refinement is not None:
            self.refinement.requires_grad_(stage == 2)
        self.train(self.training)

    def train(self, mode: bool = True) -> "SharpMask":
        super().train(mode)
        if self.stage == 2:  # frozen feed-forward path: fixed BN statistics, no dropout
            self.trunk.eval()
            self.head.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser should see for the current stage."""
        if self.stage == 2 and not self.cfg.finetune_trunk:
            return list(self.refinement.parameters())
        if self.stage == 2:
            return list(self.refinement.parameters()) + list(self.trunk.parameters()) + list(self.head.parameters())
        return [p for p in list(self.trunk.parameters()) + list(self.head.parameters()) if p.requires_grad]

    # -- shared pieces

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """0..1 RGB -> normalised (ImageNet statistics by default)."""
        return (x - self.pixel_mean) / self.pixel_std

    def refined_output(self, refined: bool | None) -> bool:
        """Whether inference returns refined masks (``refined``, else ``cfg.use_refinement_output``;
        a model without refinement modules always returns the coarse ones)."""
        if refined is None:
            refined = self.cfg.use_refinement_output
        return bool(refined) and self.refinement is not None

    def forward(self, images, targets: dict | None = None):
        if self.training:
            if targets is None:
                raise MaskkitError("SharpMask in train mode needs targets (window batches from WindowSampler)")
            return self.losses(images, targets)
        return self.predict(images)

    # -- per-window path

    def window_outputs(self, crops: torch.Tensor, refined: bool | None = None) -> dict[str, torch.Tensor]:
        """Per-window forward of crops ``[B, 3, S, S]`` (0..1; S = window + 32k) ->
        ``{"vector" [B, 512], "score" [B] logits, "mask" [B, 56, 56] logits,
        "refined" [B, 160, 160] logits (when refining)}``."""
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise MaskkitError(f"SharpMask windows must be [B, 3, S, S], got {tuple(crops.shape)}")
        s = crops.shape[-1]
        if crops.shape[-2] != s or s < self.cfg.window or (s - self.cfg.window) % 32:
            raise MaskkitError(
                f"SharpMask window crops must be square with side window + 32k (window {self.cfg.window}), "
                f"got {tuple(crops.shape[-2:])}"
            )
        refine = self.refined_output(refined)
        frozen = self.stage == 2 and not self.cfg.finetune_trunk and torch.is_grad_enabled()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            feats = self.trunk(self.normalize(crops))
            vec = self.head.vector(feats[-1])  # [B, 512]
            score = self.head.window_score(feats[-1], vec)  # [B]
        out = {"vector": vec, "score": score, "mask": self.head.mask_logits(vec)}
        if refine:
            skips = self.refinement.window_skips(self.refinement.skip_features(feats))
            out["refined"] = self.refinement(vec, skips)[:, 0]  # [B, 160, 160]
        return out

    def losses(self, crops: torch.Tensor, targets: dict) -> dict[str, torch.Tensor]:
        """Loss dict for one all-mask or all-score batch (see the module docstring)."""
        kind = targets.get("kind")
        if kind not in ("mask", "score"):
            raise MaskkitError(f"SharpMask targets need kind 'mask' or 'score', got {kind!r}")
        if kind == "score":
            if self.stage == 2:
                raise MaskkitError(
                    "stage 2 trains the refinement on mask samples only (set model.sampler.mask_batch_prob=1)"
                )
            out = self.window_outputs(crops, refined=False)
            return {"loss_score": score_loss(out["score"], targets["scores"], self.cfg.score_loss_weight)}
        if self.stage == 2:
            out = self.window_outputs(crops, refined=True)
            return {"loss_mask": mask_loss(out["refined"], targets["masks"], self.cfg.window)}
        out = self.window_outputs(crops, refined=False)
        return {"loss_mask": mask_loss(out["mask"], targets["masks"], self.cfg.mask_loss_size)}

    # -- full-image inference

    def _pyramid_level(self, image: torch.Tensor, f: float) -> torch.Tensor:
        """``image [3, H, W]`` resized by ``f`` -> ``[3, h, w]``: torchvision's antialiased resize,
        or (``pyramid="official"``) nnx's SpatialReSamplingEx bilinear as InferSharpMask.lua
        uses it: size ``floor(f * H + 0.5)``, corners aligned, no antialiasing."""
        h0, w0 = image.shape[-2:]
        if self.cfg.pyramid == "official":
            h, w = max(1, math.floor(h0 * f + 0.5)), max(1, math.floor(w0 * f + 0.5))
            if (h, w) == (h0, w0):
                return image
            return F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=True)[0]
        h, w = max(1, round(h0 * f)), max(1, round(w0 * f))
        return TF.resize(image, [h, w], antialias=True) if (h, w) != (h0, w0) else image

    def canvas(self, image: torch.Tensor, log2_scale: float) -> torch.Tensor:
        """One scale's input (paper Sec. 3.3, REFERENCE 'Full-image inference'): the image
        ``[3, H, W]`` (0..1) resized by ``2^s``, normalised, padded by half a window (80 px: the
        mean colour, or ``border_fill`` as the official Infer*.lua's 0.5) and to whole stride-16
        cells -> ``[1, 3, H_s, W_s]``. (The NumPy runner's twin: ``numpy_ops.sharpmask_canvases``.)"""
        x = self._pyramid_level(image, 2.0**log2_scale)
        h, w = x.shape[-2:]
        pad = self.cfg.window // 2  # half a window of border
        extra_h, extra_w = (-(h + 2 * pad)) % 16, (-(w + 2 * pad)) % 16  # whole stride-16 cells
        x = self.normalize(x)
        fill = 0.0 if self.cfg.border_fill is None else self.normalize(x.new_full((3, 1, 1), self.cfg.border_fill))
        canvas = x.new_zeros((3, h + 2 * pad + extra_h, w + 2 * pad + extra_w)) + fill
        canvas[:, pad : pad + h, pad : pad + w] = x
        return canvas[None]

    def scale_maps(self, canvas: torch.Tensor, refine: bool) -> dict:
        """Trunk + head C run convolutionally on one scale's canvas ``[1, 3, H_s, W_s]`` ->
        ``vectors [1, 512, gh, gw]``, ``scores [gh, gw]`` logits and (refining) ``skips``, the
        ``S*`` maps of the refinement."""
        feats = self.trunk(canvas)
        vmap = self.head.vector_map(feats[-1])  # [1, 512, gh, gw]
        scores = self.head.score_map(feats[-1], vmap)[0]  # [gh, gw]
        return {"vectors": vmap, "scores": scores, "skips": self.refinement.skip_features(feats) if refine else None}

    def window_proposals(
        self, canvases: list[torch.Tensor], top_n: int, refine: bool, batch: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The best ``top_n`` windows over all scales of an image and their masks, without a
        branch on the data (the ONNX export traces exactly this): trunk and head C on every
        canvas, the top ``top_n`` window scores over all scales, their shared vectors, and their
        masks from head C (56x56, DeepMask) or the refinement on the windows' crops of the skip
        features of their own scale (SharpMask). ``batch``: the masks are computed scale by scale,
        ``batch`` windows at a time (memory: 1000 refined windows at once take gigabytes); None:
        all at once, as the export traces it.
        -> ``scores [N]`` (sigmoid), ``scale_index [N]``, ``cells [N, 2]`` (row, col of each
        window's top-left stride-16 cell on its canvas), ``masks [N, M, M]`` probabilities."""
        maps = [self.scale_maps(c, refine) for c in canvases]
        flat = torch.cat([m["scores"].reshape(-1) for m in maps]).float()  # float32 also under autocast
        top, order = flat.topk(_topk_min(flat, top_n, 0))
        counts = torch.stack([_size(m["scores"], 0) * _size(m["scores"], 1) for m in maps])
        widths = torch.stack([_size(m["scores"], 1) for m in maps])
        ends = torch.cumsum(counts, 0)
        which = (order[:, None] >= ends[None, :]).to(torch.int64).sum(1)  # the scale of each window
        local = order - (ends - counts)[which]
        rows, cols = local // widths[which], local % widths[which]
        # the windows' shared vectors as columns [512, N]; a batch takes its columns, transposed
        vecs = torch.cat([m["vectors"][0].reshape(m["vectors"].shape[1], -1) for m in maps], dim=1)[:, order]
        skips = [m["skips"] for m in maps] if refine else None

        def masks_of(g: torch.Tensor | None) -> torch.Tensor:
            v = (vecs if g is None else vecs[:, g]).T  # [n, 512]
            if not refine:
                return self.head.mask_logits(v).float().sigmoid()
            where = (which, rows, cols) if g is None else (which[g], rows[g], cols[g])
            crops = gather_window_skips(skips, *where, self.cfg.feature_size)
            return self.refinement(v, crops)[:, 0].float().sigmoid()

        if batch is None:
            masks = masks_of(None)
        else:
            side = self.cfg.window if refine else self.cfg.mask_size
            masks = flat.new_zeros((top.shape[0], side, side))
            for si in range(len(maps)):
                sel = (which == si).nonzero()[:, 0]
                for c in range(0, sel.numel(), batch):
                    masks[sel[c : c + batch]] = masks_of(sel[c : c + batch])
        return top.sigmoid(), which, torch.stack([rows, cols], dim=1), masks

    def window_boxes(self, scale_index: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Each window in image px, xyxy ``[N, 4]`` (may extend past the image): its top-left
        cell on the padded canvas of its scale -> the scaled image -> the original image."""
        factor = torch.tensor([2.0**s for s in self.cfg.scales], dtype=torch.float32, device=cells.device)[scale_index]
        side = torch.tensor([self.cfg.window / 2.0**s for s in self.cfg.scales], device=cells.device)[scale_index]
        pad = self.cfg.window // 2
        x0 = (cells[:, 1].float() * 16 - pad) / factor
        y0 = (cells[:, 0].float() * 16 - pad) / factor
        return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)

    @torch.no_grad()
    def propose(self, image: torch.Tensor, top_n: int | None = None, refined: bool | None = None) -> dict:
        """Window-level proposals of one image ``[3, H, W]`` (0..1), best ``top_n`` over all scales
        (:meth:`window_proposals`; the masks computed per scale, in batches of ``refine_batch``
        when refining).

        Returns ``scores [N]`` (sigmoid, descending), ``window_boxes [N, 4]`` (the windows in image
        px, xyxy; may extend past the image), ``masks [N, M, M]`` mask probabilities over the
        window (M = 160 refined, 56 coarse), ``scale_index [N]``, ``cells [N, 2]`` (row, col of
        the window's top-left stride-16 cell in the padded image at that scale)."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise MaskkitError(f"SharpMask inference images must be [3, H, W], got {tuple(image.shape)}")
        top_n = self.cfg.top_n if top_n is None else top_n
        refine = self.refined_output(refined)
        canvases = [self.canvas(image, s) for s in self.cfg.scales]
        batch = self.cfg.refine_batch if refine else max(1, top_n)
        scores, which, cells, masks = self.window_proposals(canvases, top_n, refine, batch)
        return {
            "scores": scores,
            "window_boxes": self.window_boxes(which, cells),
            "masks": masks,
            "scale_index": which,
            "cells": cells,
        }

    def proposals_to_prediction(self, props: dict, image_size: tuple[int, int]) -> dict:
        """Window proposals -> the data contract: masks over their windows, binarised at
        ``mask_threshold`` when pasted (:class:`BoxMasks`), tight boxes of the pasted masks (an
        empty mask gets its window's canonical object box), labels all 1."""
        h, w = image_size
        n = props["scores"].shape[0]
        if n == 0:
            return empty_prediction(
                h, w, with_mask_scores=False, device=props["scores"].device, mask_threshold=self.cfg.mask_threshold
            )
        wb = props["window_boxes"]
        centre = (wb[:, :2] + wb[:, 2:]) / 2
        half = (wb[:, 2:] - wb[:, :2]) * (self.cfg.sampler.canonical_size / self.cfg.window) / 2
        fallback = torch.cat([centre - half, centre + half], dim=1)  # the canonical object box
        masks = BoxMasks(props["masks"], wb, (h, w), self.cfg.mask_threshold)
        boxes = clamp_boxes(masks.tight_boxes(fallback), (h, w))
        return {
            "boxes": boxes,
            "labels": torch.ones(n, dtype=torch.int64, device=boxes.device),
            "scores": props["scores"],
            "masks": masks,
        }

    @torch.no_grad()
    def predict(self, images, top_n: int | None = None, refined: bool | None = None) -> list[dict]:
        """Full-image proposals for a list of images ``[3, H, W]`` (0..1) -> prediction dicts."""
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            images = [images]
        out = []
        for image in images:
            props = self.propose(image, top_n=top_n, refined=refined)
            out.append(self.proposals_to_prediction(props, tuple(image.shape[-2:])))
        return out


def _size(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.shape[dim]`` as an int64 tensor (a graph value while tracing: the sizes are dynamic)."""
    return torch._shape_as_tensor(x)[dim].to(torch.int64)
