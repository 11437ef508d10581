"""CenterMask (paper Sec. 2.2, Fig. 2): backbone -> FPN P3-P7 -> FCOS boxes -> SAG-Mask masks
(+ MaskIoU mask scores).

``model(images, targets)`` in train mode returns the loss dict
``{loss_cls, loss_box, loss_ctr, loss_mask[, loss_maskiou]}`` (sum = total loss, Eq. 8 plus
the mask-scoring term); in eval mode ``model(images)`` returns one prediction dict per
image at the image's original size (data contract in :mod:`maskkit.structures`), its
``masks`` a :class:`maskkit.masks.BoxMasks`: the 28x28 mask probabilities and the boxes they
are pasted into, binarised at ``mask_threshold`` when pasted (nothing is pasted here).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image
from torchvision.transforms.v2 import functional as TF

from maskkit.errors import MaskkitError
from maskkit.geometry import test_resize_size
from maskkit.masks import BoxMasks, is_compact
from maskkit.models.backbones import build_backbone, include_c2
from maskkit.models.centermask.config import CenterMaskConfig
from maskkit.models.centermask.fcos import (
    FCOSHead,
    fcos_decode,
    fcos_losses,
    fcos_targets,
    flatten_levels,
    level_locations,
)
from maskkit.models.centermask.mask_head import (
    SAGMaskHead,
    assign_fpn_levels,
    mask_loss,
    mask_targets,
    match_rois,
    multilevel_roi_align,
    sample_foreground,
    select_class,
)
from maskkit.models.centermask.maskiou import MaskIoUHead, mask_ratios, maskiou_loss, maskiou_targets
from maskkit.models.fpn import FPN
from maskkit.structures import empty_prediction, instance_polygons

__all__ = ["CenterMask"]


class CenterMask(nn.Module):
    """The CenterMask detector for a :class:`CenterMaskConfig`.

    ``backbone`` (optional) replaces ``build_backbone(cfg.backbone)``; it must return
    ``[C3, C4, C5]`` and declare ``out_channels`` and ``strides``.
    """

    def __init__(self, cfg: CenterMaskConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        k, c, m = cfg.num_classes, cfg.fpn_channels, cfg.mask
        if not 2 <= m.k_min <= m.k_max <= 5:
            raise MaskkitError(
                f"model.mask.k_min / k_max must satisfy 2 <= k_min <= k_max <= 5, got {m.k_min} / {m.k_max}"
            )
        if backbone is None:
            backbone = build_backbone(cfg.backbone)
        if m.k_min == 2:  # a P2 level (stride 4) for the mask branch only: FCOS stays on P3-P7
            backbone = include_c2(backbone)
        self.backbone = backbone
        self.fpn = FPN(list(backbone.out_channels), c, list(backbone.strides))
        first = 5 - len(backbone.strides) + 1  # the pyramid's first level: 3, or 2 with C2
        self.p3 = 3 - first  # index of P3 in the pyramid
        self.strides = self.fpn.strides[self.p3 :]  # P3..P7 (FCOS)
        self.mask_levels = slice(m.k_min - first, m.k_max - first + 1)  # P_kmin..P_kmax (mask branch)
        self.mask_strides = self.fpn.strides[self.mask_levels]
        self.fcos = FCOSHead(c, k, cfg.fcos.num_convs, len(self.strides), cfg.fcos.prior_prob)
        self.mask_head = SAGMaskHead(c, 1 if m.class_agnostic else k, m.num_convs, m.channels, m.sam, m.init)
        self.maskiou = (
            MaskIoUHead(c, k, m.maskiou_num_convs, m.maskiou_channels, m.maskiou_fc_dim, m.pooler_resolution, m.init)
            if m.maskiou
            else None
        )
        self.register_buffer(
            "pixel_mean", torch.tensor(cfg.pixel_mean, dtype=torch.float32).view(3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(cfg.pixel_std, dtype=torch.float32).view(3, 1, 1), persistent=False
        )

    # ------------------------------------------------------------------ forward

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        _check_images(images)
        if not self.training:
            return self.inference(images)
        if targets is None or len(targets) != len(images):
            raise MaskkitError("CenterMask in train mode needs one target dict per image")
        targets = [self._clean_target(t, img) for t, img in zip(targets, images)]
        sizes = [tuple(img.shape[-2:]) for img in images]
        feats, mask_feats = self.features(self.preprocess(images))
        head = self.fcos(feats)
        losses = self.detector_losses(head, feats, targets)
        dets = self.detect(head, feats, sizes, self.cfg.mask.train_detections, train=True)
        losses.update(self.mask_losses(mask_feats, dets, targets, sizes))
        return losses

    @torch.no_grad()
    def inference(self, images: list[Tensor]) -> list[dict]:
        """Eval path: resize to the test size, detect, segment, map back to each original size."""
        orig = [tuple(img.shape[-2:]) for img in images]
        resized = [self._test_resize(img) for img in images]
        sizes = [tuple(img.shape[-2:]) for img in resized]
        feats, mask_feats = self.features(self.preprocess(resized))
        dets = self.detect(self.fcos(feats), feats, sizes, self.cfg.fcos.detections_per_image)
        return self.segment(mask_feats, dets, sizes, orig)

    def features(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Backbone + FPN -> (``[P3..P7]`` for FCOS, ``[P_kmin..P_kmax]`` for the mask branch)."""
        pyramid = self.fpn(self.backbone(batch))
        return pyramid[self.p3 :], pyramid[self.mask_levels]

    # ------------------------------------------------------------------ steps

    def preprocess(self, images: list[Tensor]) -> Tensor:
        """Normalise and zero-pad (bottom/right) to a common size divisible by
        ``size_divisibility`` -> ``[B, 3, H_pad, W_pad]``."""
        if self.cfg.input_format == "BGR255":
            images = [img.flip(0) * 255.0 for img in images]
        d = max(int(self.cfg.size_divisibility), 1)
        hp = -(-max(img.shape[-2] for img in images) // d) * d
        wp = -(-max(img.shape[-1] for img in images) // d) * d
        batch = images[0].new_zeros((len(images), 3, hp, wp))
        for i, img in enumerate(images):
            batch[i, :, : img.shape[-2], : img.shape[-1]] = (img - self.pixel_mean) / self.pixel_std
        return batch

    def detector_losses(self, head, feats: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """FCOS targets for every location of P3-P7, then focal / GIoU / centerness losses."""
        cls, reg, ctr = head
        f = self.cfg.fcos
        labels, box_t = fcos_targets(
            level_locations(feats, self.strides),
            self.strides,
            targets,
            f.size_of_interest,
            f.center_sampling_radius,
            f.crowd,
        )
        # Losses in float32 also under autocast (focal/GIoU terms are precision-sensitive).
        return fcos_losses(
            flatten_levels(cls).float(),
            flatten_levels(reg).float(),
            flatten_levels(ctr)[..., 0].float(),
            labels,
            box_t,
            f.focal_alpha,
            f.focal_gamma,
        )

    def detect(
        self, head, feats: list[Tensor], sizes: list[tuple[int, int]], max_dets: int, train: bool = False
    ) -> list[dict]:
        """Decoded detections per image (no gradient): ``dict(boxes [N, 4], scores [N], labels [N])``.
        ``train=True``: the mask branch's training RoIs, as the official code (threshold
        ``score_thresh_train``, boxes neither clipped nor filtered)."""
        f = self.cfg.fcos
        cls, reg, ctr = ([t.detach().float() for t in h] for h in head)  # decode in float32 (also under autocast)
        threshold = f.score_thresh_train if train else f.score_thresh
        clip = not train and self.cfg.postprocess != "centermask2"
        locations = level_locations(feats, self.strides)
        return fcos_decode(
            cls,
            reg,
            ctr,
            locations,
            self.strides,
            sizes,
            threshold,
            f.pre_nms_topk,
            f.nms_thresh,
            max_dets,
            f.scoring,
            clip=clip,
        )

    def roi_features(
        self, feats: list[Tensor], boxes: Tensor, batch_idx: Tensor, sizes: list[tuple[int, int]]
    ) -> Tensor:
        """RoIAlign 14x14 on ``feats`` = P_kmin..P_kmax with the configured level rule -> ``[R, C, 14, 14]``."""
        m = self.cfg.mask
        areas = torch.tensor([h * w for h, w in sizes], dtype=torch.float32, device=boxes.device)[batch_idx]
        levels = assign_fpn_levels(boxes, areas, m.k_min, m.k_max, m.assignment)
        rois = torch.cat([batch_idx[:, None].to(boxes.dtype), boxes], dim=1)
        return multilevel_roi_align(feats, rois, levels, self.mask_strides, m.k_min, m.pooler_resolution)

    def mask_losses(self, feats: list[Tensor], dets: list[dict], targets: list[dict], sizes) -> dict[str, Tensor]:
        """Training RoIs = detections + GT boxes matched to a GT at IoU >= 0.5 (crowd never
        matched), at most ``train_max_fg`` per image; BCE mask loss and, with mask scoring,
        the MaskIoU loss on them (centermask2 ``center_heads.CenterROIHeads``)."""
        m = self.cfg.mask
        boxes, bidx, labels, tgts, ratios = [], [], [], [], []
        for i, (d, t) in enumerate(zip(dets, targets)):
            keep_gt = (t["iscrowd"] == 0).nonzero(as_tuple=True)[0]
            gt_boxes, gt_masks = t["boxes"][keep_gt], t["masks"][keep_gt]
            polys = t.get("polygons")
            gt_polys = None if polys is None else [polys[int(j)] for j in keep_gt]
            cand = torch.cat([d["boxes"], gt_boxes])
            keep, g = match_rois(cand, gt_boxes, m.train_iou_thresh)
            sel = sample_foreground(len(keep), m.train_max_fg, keep.device)
            keep, g = keep[sel], g[sel]
            b = cand[keep]
            boxes.append(b)
            bidx.append(torch.full((len(keep),), i, dtype=torch.int64, device=b.device))
            labels.append(t["labels"][keep_gt][g])
            tgts.append(mask_targets(gt_masks, b, g, 2 * m.pooler_resolution, gt_polys))
            if self.maskiou is not None:
                ratios.append(mask_ratios(gt_masks, b, g, gt_polys))
        boxes, bidx, labels, tgts = torch.cat(boxes), torch.cat(bidx), torch.cat(labels), torch.cat(tgts)
        roi_feats = self.roi_features(feats, boxes, bidx, sizes)
        logits = self.mask_head(roi_feats).float()  # [P, K, 28, 28]
        losses = {"loss_mask": mask_loss(logits, labels, tgts)}
        if self.maskiou is not None:
            sel_logits = select_class(logits, labels)  # [P, 28, 28]
            if m.maskiou_detach_mask:
                sel_logits = sel_logits.detach()
            iou_t = maskiou_targets(sel_logits.detach(), tgts, torch.cat(ratios))
            pred = self.maskiou(roi_feats, sel_logits.sigmoid()[:, None].to(roi_feats.dtype)).float()
            losses["loss_maskiou"] = m.maskiou_loss_weight * maskiou_loss(pred, labels, iou_t)
        return losses

    def segment(self, feats: list[Tensor], dets: list[dict], sizes, orig_sizes) -> list[dict]:
        """Masks (and mask scores) for all detections of the batch at once, then per image:
        boxes scaled to the original size, masks kept as 28x28 probabilities over them
        (:class:`BoxMasks`, pasted only where a caller needs pixels)."""
        counts = [len(d["boxes"]) for d in dets]
        boxes = torch.cat([d["boxes"] for d in dets])
        labels = torch.cat([d["labels"] for d in dets])
        scores = torch.cat([d["scores"] for d in dets])
        bidx = torch.repeat_interleave(
            torch.arange(len(dets), device=boxes.device), torch.tensor(counts, device=boxes.device)
        )
        if boxes.shape[0]:
            roi_feats = self.roi_features(feats, boxes, bidx, sizes)
            probs = select_class(self.mask_head(roi_feats), labels).float().sigmoid()  # [R, 28, 28]
            if self.maskiou is not None:
                iou = self.maskiou(roi_feats, probs[:, None].to(roi_feats.dtype)).float()
                iou = iou[torch.arange(len(labels), device=labels.device), labels - 1]
                # maskkit: predicted IoU clamped to [1e-3, 1]: where the head predicts no overlap (early
                # in training, or for poor masks) the ranking falls back to the box score, not ties at
                # 0. centermask2 (maskiou_head.mask_iou_inference): score x IoU, unclamped.
                mask_scores = scores * (iou if self.cfg.postprocess == "centermask2" else iou.clamp(min=1e-3, max=1.0))
            else:
                mask_scores = scores.clone()
        else:
            m = 2 * self.cfg.mask.pooler_resolution
            probs = boxes.new_zeros((0, m, m))
            mask_scores = scores.clone()
        out = []
        for i, (n_i, (h, w), (h0, w0)) in enumerate(zip(counts, sizes, orig_sizes)):
            if n_i == 0:
                out.append(empty_prediction(h0, w0, device=boxes.device, mask_threshold=self.cfg.mask_threshold))
                continue
            sl = slice(sum(counts[:i]), sum(counts[:i]) + n_i)
            scale = boxes.new_tensor([w0 / w, h0 / h, w0 / w, h0 / h])
            b = boxes[sl] * scale
            if self.cfg.postprocess == "centermask2":
                out.append(
                    _detectron2_postprocess(
                        b, labels[sl], scores[sl], probs[sl], mask_scores[sl], (h0, w0), self.cfg.mask_threshold
                    )
                )
                continue
            out.append(
                {
                    "boxes": b,
                    "labels": labels[sl],
                    "scores": scores[sl],
                    "masks": BoxMasks(probs[sl], b, (h0, w0), self.cfg.mask_threshold),
                    "mask_scores": mask_scores[sl],
                }
            )
        return out

    # ------------------------------------------------------------------ input checks

    def _test_resize(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        nh, nw = test_resize_size(h, w, self.cfg.min_size_test, self.cfg.max_size_test)
        if (nh, nw) == (h, w):
            return img
        return TF.resize(img, [nh, nw], antialias=True)

    def _clean_target(self, t: dict, img: Tensor) -> dict:
        """Plain tensors on the image's device; labels in 1..K; masks the image's size (dense, or
        compact as the dataset gives them: :class:`maskkit.data.rle_masks.RLEMasks`, kept on the
        CPU and turned into pixels only for the GTs the mask loss uses)."""
        h, w = img.shape[-2:]
        try:
            boxes = torch.as_tensor(t["boxes"]).as_subclass(Tensor).to(img.device, torch.float32).reshape(-1, 4)
            labels = torch.as_tensor(t["labels"]).as_subclass(Tensor).to(img.device, torch.int64).reshape(-1)
            masks = t["masks"]
            if not is_compact(masks):
                masks = torch.as_tensor(masks).as_subclass(Tensor).to(img.device)
        except KeyError as e:
            raise MaskkitError(f"target of image {t.get('image_id', '?')} has no {e.args[0]!r}") from None
        n = boxes.shape[0]
        crowd = t.get("iscrowd")
        crowd = (
            torch.zeros(n, dtype=torch.int64, device=img.device)
            if crowd is None
            else torch.as_tensor(crowd).as_subclass(Tensor).to(img.device, torch.int64).reshape(-1)
        )
        if not is_compact(masks) and masks.numel() == 0:
            masks = masks.new_zeros((n, h, w), dtype=torch.uint8)
        shape = (len(masks), *masks.image_size) if is_compact(masks) else tuple(masks.shape)
        if labels.shape[0] != n or crowd.shape[0] != n or len(shape) != 3 or shape[0] != n:
            raise MaskkitError(
                f"target of image {t.get('image_id', '?')}: {n} boxes but labels {tuple(labels.shape)}, "
                f"iscrowd {tuple(crowd.shape)}, masks {shape}"
            )
        if shape[-2:] != (h, w):
            raise MaskkitError(f"target of image {t.get('image_id', '?')}: masks are {shape[-2:]}, image is {(h, w)}")
        if n and (labels.min() < 1 or labels.max() > self.cfg.num_classes):
            raise MaskkitError(
                f"target of image {t.get('image_id', '?')}: labels must be in 1..{self.cfg.num_classes}, "
                f"got {labels.min().item()}..{labels.max().item()}"
            )
        try:
            polygons = instance_polygons(t, n, (h, w))
        except ValueError as e:
            raise MaskkitError(f"target of image {t.get('image_id', '?')}: {e}") from None
        return {"boxes": boxes, "labels": labels, "masks": masks, "iscrowd": crowd, "polygons": polygons}


def _detectron2_postprocess(
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor,
    probs: Tensor,
    mask_scores: Tensor,
    size: tuple[int, int],
    mask_threshold: float = 0.5,
) -> dict:
    """``postprocess="centermask2"``, after the mask branch ran on the unclipped boxes: clip the
    boxes ``[N, 4]`` (already at the output size) to ``size``, drop the empty ones, and paste the
    masks ``[N, 28, 28]`` into the clipped boxes (when pasted: :class:`BoxMasks`) without
    zeroing the bilinear bleed past the box (detectron2 ``modeling/postprocessing.py:
    detector_postprocess`` + ``layers/mask_ops.py``)."""
    boxes = clip_boxes_to_image(boxes, size)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not bool(keep.any()):
        return empty_prediction(size[0], size[1], device=boxes.device, mask_threshold=mask_threshold)
    boxes = boxes[keep]
    return {
        "boxes": boxes,
        "labels": labels[keep],
        "scores": scores[keep],
        "masks": BoxMasks(probs[keep], boxes, size, mask_threshold, zero_outside=False),
        "mask_scores": mask_scores[keep],
    }


def _check_images(images) -> None:
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise MaskkitError("CenterMask expects a non-empty list of images [3, H, W]")
    for img in images:
        if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
            shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise MaskkitError(f"CenterMask expects float images [3, H, W] in 0..1, got {shape}")
