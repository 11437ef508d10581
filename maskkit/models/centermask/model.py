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
from torchvision.transforms.v2 import functional as TF

from maskkit.config import InputConvention
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
from maskkit.models.centermask.postprocess import postprocess_of
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
        self.post = postprocess_of(cfg.postprocess)  # maskkit's or the official post-processing
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
        # what the weights expect (the buffers above hold its mean/std); weights that bring their
        # own replace it (maskkit.models.zoo.use_input_convention), the config stays as configured
        self.input_convention = InputConvention.of(cfg)

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
        """Eval path: resize to the test size, detect and segment (:meth:`detect_and_segment`),
        then map each image's instances back to its original size (:meth:`finish`)."""
        orig = [tuple(img.shape[-2:]) for img in images]
        resized = [self._test_resize(img) for img in images]
        sizes = [tuple(img.shape[-2:]) for img in resized]
        dets, probs, mask_scores = self.detect_and_segment(self.preprocess(resized), sizes)
        return self.finish(dets, probs, mask_scores, sizes, orig)

    def detect_and_segment(self, batch: Tensor, sizes) -> tuple[list[dict], Tensor, Tensor]:
        """The static-shape part of inference on a preprocessed batch ``[B, 3, H, W]`` with the
        resized sizes ``(h, w)`` (or an int64 ``[B, 2]`` tensor): backbone, FPN, FCOS head, the
        decode (:func:`fcos_decode`) and the mask branch, without a branch on the data, so the
        ONNX export traces exactly this (:mod:`maskkit.export.centermask`). -> detections per
        image (resized-image pixels), mask probabilities ``[R, 28, 28]`` and mask scores ``[R]``
        of the ``R`` detections of the batch, in order."""
        feats, mask_feats = self.features(batch)
        dets = self.detect(self.fcos(feats), feats, sizes, self.cfg.fcos.detections_per_image)
        probs, mask_scores = self.mask_branch(mask_feats, dets, sizes)
        return dets, probs, mask_scores

    def features(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Backbone + FPN -> (``[P3..P7]`` for FCOS, ``[P_kmin..P_kmax]`` for the mask branch)."""
        pyramid = self.fpn(self.backbone(batch))
        return pyramid[self.p3 :], pyramid[self.mask_levels]

    # ------------------------------------------------------------------ steps

    def preprocess(self, images: list[Tensor]) -> Tensor:
        """Normalise and zero-pad (bottom/right) to a common size divisible by
        ``size_divisibility`` -> ``[B, 3, H_pad, W_pad]``."""
        if self.input_convention.format == "BGR255":
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
        clip = not train and self.post.clip_before_nms
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

    def roi_features(self, feats: list[Tensor], boxes: Tensor, batch_idx: Tensor, sizes) -> Tensor:
        """RoIAlign 14x14 on ``feats`` = P_kmin..P_kmax with the configured level rule (Eq. 2 with
        the resized image's area, or Eq. 1) -> ``[R, C, 14, 14]``."""
        m = self.cfg.mask
        areas = _image_areas(sizes, boxes)[batch_idx]
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

    def mask_branch(self, feats: list[Tensor], dets: list[dict], sizes) -> tuple[Tensor, Tensor]:
        """Sec. 2.3-2.4 and 2.6 for all detections of the batch at once: Eq. 2 levels, RoIAlign,
        SAG-Mask (the label's mask) and MaskIoU -> mask probabilities ``[R, 28, 28]`` and mask
        scores ``[R]`` (box score x predicted IoU, by the post-processing convention; the box
        score without mask scoring). Zero detections give zero rows (no branch)."""
        boxes = torch.cat([d["boxes"] for d in dets])
        labels = torch.cat([d["labels"] for d in dets])
        scores = torch.cat([d["scores"] for d in dets])
        bidx = torch.cat([torch.full_like(d["labels"], i) for i, d in enumerate(dets)])
        roi_feats = self.roi_features(feats, boxes, bidx, sizes)
        probs = self.mask_head.class_logits(roi_feats, labels).float().sigmoid()  # [R, 28, 28]
        if self.maskiou is None:
            return probs, scores.clone()
        iou = self.maskiou(roi_feats, probs[:, None].to(roi_feats.dtype)).float()  # [R, K]
        return probs, self.post.mask_scores(scores, iou.gather(1, (labels - 1)[:, None])[:, 0])

    def finish(self, dets: list[dict], probs: Tensor, mask_scores: Tensor, sizes, orig_sizes) -> list[dict]:
        """Per image: boxes scaled to the original size, the convention's last step
        (:meth:`PostProcess.final_boxes`), masks kept as 28x28 probabilities over their boxes
        (:class:`BoxMasks`, pasted only where a caller needs pixels)."""
        out, start = [], 0
        for d, (h, w), (h0, w0) in zip(dets, sizes, orig_sizes):
            sl = slice(start, start + len(d["boxes"]))
            start = sl.stop
            scale = d["boxes"].new_tensor([w0 / w, h0 / h, w0 / w, h0 / h])
            boxes, kept = self.post.final_boxes(d["boxes"] * scale, (h0, w0))
            labels, scores, p, ms = d["labels"], d["scores"], probs[sl], mask_scores[sl]
            if kept is not None:
                boxes, labels, scores, p, ms = boxes[kept], labels[kept], scores[kept], p[kept], ms[kept]
            if len(boxes) == 0:
                out.append(empty_prediction(h0, w0, device=probs.device, mask_threshold=self.cfg.mask_threshold))
                continue
            masks = BoxMasks(p, boxes, (h0, w0), self.cfg.mask_threshold, self.post.zero_outside)
            out.append({"boxes": boxes, "labels": labels, "scores": scores, "masks": masks, "mask_scores": ms})
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


def _check_images(images) -> None:
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise MaskkitError("CenterMask expects a non-empty list of images [3, H, W]")
    for img in images:
        if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
            shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise MaskkitError(f"CenterMask expects float images [3, H, W] in 0..1, got {shape}")


def _image_areas(sizes, like: Tensor) -> Tensor:
    """Areas ``[B]`` of the resized, unpadded images (``(h, w)`` ints, or an int64 ``[B, 2]``
    tensor while tracing): Eq. 2's ``A_input``."""
    if isinstance(sizes, Tensor):
        return (sizes[:, 0] * sizes[:, 1]).to(like.dtype)
    return torch.tensor([h * w for h, w in sizes], dtype=like.dtype, device=like.device)
