"""SAG-Mask branch (paper Sec. 2.3-2.4): Eq. 2 level assignment, RoIAlign, the spatial
attention module (SAM, Eq. 3-4), the mask head, its targets and loss.

Shapes: ``R`` RoIs over the whole batch, ``C`` FPN channels, ``K`` classes, ``M = 28``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, roi_align

from maskkit.masks import dense_rows
from maskkit.models.roi_align import roi_align_adaptive
from maskkit.structures import polygons_to_mask_in_box

__all__ = [
    "assign_fpn_levels",
    "multilevel_roi_align",
    "SpatialAttention",
    "SAGMaskHead",
    "match_rois",
    "mask_targets",
    "sample_foreground",
    "select_class",
    "mask_loss",
]


def assign_fpn_levels(
    boxes: Tensor, image_area: float | Tensor, k_min: int = 3, k_max: int = 5, rule: str = "eq2"
) -> Tensor:
    """Pyramid level of each RoI ``[R, 4]`` -> ``[R]`` int64 in ``[k_min, k_max]``.

    ``rule="eq2"`` (paper Eq. 2): ``k = ceil(k_max - log2(A_input / A_RoI))`` with
    ``A_input`` the area of the resized, unpadded input image (a number or ``[R]``).
    ``rule="eq1"`` (Mask R-CNN / FPN Eq. 1): ``k = floor(4 + log2(sqrt(w h) / 224))``.
    """
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    area = (wh[:, 0] * wh[:, 1]).clamp(min=1e-6)
    if rule == "eq2":
        image_area = torch.as_tensor(image_area, dtype=area.dtype, device=area.device)
        k = torch.ceil(k_max - torch.log2(image_area / area))
    elif rule == "eq1":
        k = torch.floor(4 + torch.log2(area.sqrt() / 224.0))
    else:
        raise ValueError(f"level assignment rule must be 'eq2' or 'eq1', got {rule!r}")
    return k.clamp(min=k_min, max=k_max).to(torch.int64)


def multilevel_roi_align(
    feats: list[Tensor], rois: Tensor, levels: Tensor, strides: list[int], k_min: int = 3, output_size: int = 14
) -> Tensor:
    """RoIAlign each RoI on its assigned level: feats ``[P_kmin..P_kmax]`` each ``[B, C, H, W]``,
    rois ``[R, 5]`` (batch index, x0, y0, x1, y1 in input pixels), levels ``[R]`` ->
    ``[R, C, S, S]`` (aligned=True, adaptive sampling, as detectron2; torchvision's
    MultiScaleRoIAlign only implements Eq. 1).

    Static shapes, no branch on the data (the ONNX export and CUDA graphs take this form): one
    batched ``roi_align`` per level over every RoI, the RoIs of the other levels replaced by an
    empty box, on which adaptive sampling takes no samples (torchvision, ONNX Runtime), and each
    RoI's own level kept with ``where`` (not a sum: OpenVINO's ROIAlign returns non-zero values
    for empty boxes)."""
    out = None
    for i, (f, s) in enumerate(zip(feats, strides)):
        on = (levels == k_min + i)[:, None]
        r = roi_align_adaptive(f, torch.where(on, rois, torch.zeros_like(rois)), output_size, 1.0 / s)
        sel = on[:, :, None, None]
        out = torch.where(sel, r, torch.zeros_like(r)) if out is None else torch.where(sel, r, out)
    return out


class SpatialAttention(nn.Module):
    """SAM (Eq. 3-4): ``X * sigmoid(conv3x3([mean_c(X), max_c(X)]))``; ``[R, C, H, W]`` -> same.

    The paper writes the concatenation as (max, avg); the official code concatenates
    (mean, max), which is the order used here so official weights load unchanged.
    """

    def __init__(self, init: str = "official"):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)
        if init == "official":
            # centermask2 sam.py: fvcore c2_msra_fill = He normal, fan_out, ReLU gain:
            # std = sqrt(2 / (1 * 3 * 3)) ~ 0.47.
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        elif init != "maskkit":  # "maskkit": PyTorch's default conv init (std ~0.14)
            raise ValueError(f"init must be 'official' or 'maskkit', got {init!r}")

    def attention(self, x: Tensor) -> Tensor:
        """The attention map ``[R, 1, H, W]`` in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class SAGMaskHead(nn.Module):
    """``[R, C_in, 14, 14]`` RoI features -> mask logits ``[R, K, 28, 28]`` (``K = 1`` if
    class-agnostic): ``num_convs`` x (3x3 conv + ReLU) -> SAM -> 2x2 deconv + ReLU -> 1x1 conv."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_convs: int = 4,
        channels: int = 256,
        sam: bool = True,
        init: str = "official",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.sam = SpatialAttention(init) if sam else nn.Identity()
        self.deconv = nn.ConvTranspose2d(channels if num_convs else in_channels, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        for m in [*self.convs, self.deconv]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0.0)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.sam(self.convs(x))
        return self.predictor(F.relu(self.deconv(x)))

    def class_logits(self, x: Tensor, labels: Tensor) -> Tensor:
        """The mask logits of each RoI's own class ``[R, M, M]`` (labels ``[R]``, 1..K): what
        inference keeps (:class:`maskkit.export.fuse.ClassMaskHead` computes only that row)."""
        return select_class(self(x), labels)


def match_rois(
    boxes: Tensor, gt_boxes: Tensor, iou_thresh: float = 0.5, max_pairs: int = 1 << 22
) -> tuple[Tensor, Tensor]:
    """Training RoIs: indices of ``boxes [N, 4]`` whose best IoU with ``gt_boxes [G, 4]`` is
    >= ``iou_thresh`` and the matched GT of each -> ``(keep [P], gt_idx [P])``. The ``[N, G]``
    IoU matrix is computed ``max_pairs`` entries at a time (an image with 20k annotations would
    otherwise take gigabytes: the candidates include the GT boxes themselves)."""
    if boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
        return empty, empty
    rows = max(1, max_pairs // gt_boxes.shape[0])
    # results written into tensors made up front: small tensors kept between the large temporary
    # IoU blocks would pin the allocator's heap (benchmarks/paste_memory.md, 20k annotations)
    iou = boxes.new_empty(boxes.shape[0], dtype=torch.float32)
    gt_idx = torch.empty(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    for i in range(0, boxes.shape[0], rows):
        iou[i : i + rows], gt_idx[i : i + rows] = box_iou(boxes[i : i + rows], gt_boxes).max(dim=1)
    keep = (iou >= iou_thresh).nonzero(as_tuple=True)[0]
    return keep, gt_idx[keep]


def mask_targets(
    gt_masks, boxes: Tensor, gt_idx: Tensor, size: int = 28, gt_polygons: list | None = None, chunk: int = 16
) -> Tensor:
    """GT masks cropped to RoIs -> ``[P, size, size]`` float in {0, 1}.

    gt_masks ``[G, H, W]`` (dense uint8/bool, or compact: :mod:`maskkit.masks`), boxes
    ``[P, 4]``, gt_idx ``[P]``, gt_polygons (optional, length G: None or the GT's polygon parts,
    see :mod:`maskkit.structures`). A GT with polygons is rasterised exactly inside each RoI
    (detectron2's ``PolygonMasks.crop_and_resize``, the official CenterMask targets); a GT known
    only as a mask (RLE) is cropped from its full-resolution mask by RoIAlign with
    ``aligned=True`` and thresholded at 0.5 (detectron2's ``BitMasks.crop_and_resize``). Only
    the matched GTs become pixels, ``chunk`` full-image masks at a time.
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0, size, size), dtype=torch.float32, device=boxes.device)
    out = torch.empty((boxes.shape[0], size, size), dtype=torch.float32, device=boxes.device)
    has_poly = torch.tensor(
        [gt_polygons is not None and gt_polygons[int(g)] is not None for g in gt_idx], dtype=torch.bool
    )
    dense = (~has_poly).nonzero(as_tuple=True)[0].to(boxes.device)
    if dense.numel():
        used, idx = gt_idx[dense].unique(return_inverse=True)  # only the matched GT masks become pixels
        for a in range(0, used.numel(), chunk):
            part = ((idx >= a) & (idx < a + chunk)).nonzero(as_tuple=True)[0]
            pixels = dense_rows(gt_masks, used[a : a + chunk]).to(boxes.device, torch.float32)[:, None]
            rois = torch.cat([(idx[part] - a)[:, None].to(torch.float32), boxes[dense[part]].to(torch.float32)], 1)
            crops = roi_align(pixels, rois, size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
            out[dense[part]] = (crops[:, 0] >= 0.5).to(torch.float32)
    if has_poly.any():
        box_np = boxes.detach().to("cpu", torch.float32).numpy()
        for r in has_poly.nonzero(as_tuple=True)[0].tolist():
            m = polygons_to_mask_in_box(gt_polygons[int(gt_idx[r])], box_np[r], size)
            out[r] = torch.from_numpy(m).to(out.device, torch.float32)
    return out


def sample_foreground(num: int, max_fg: int, device=None) -> Tensor:
    """Indices of the foreground RoIs kept for the mask losses: all ``num`` when
    ``num <= max_fg`` (or ``max_fg <= 0``), else a random ``max_fg`` of them (torch RNG), as
    detectron2's ``subsample_labels`` with 512 RoIs x 0.25 positive fraction = 128 per image."""
    if max_fg <= 0 or num <= max_fg:
        return torch.arange(num, device=device)
    return torch.randperm(num, device=device)[:max_fg]


def select_class(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """The mask of each RoI's class: ``[R, K, M, M]``, labels ``[R]`` (1..K) -> ``[R, M, M]``
    (class-agnostic heads, ``K = 1``, return their single mask)."""
    if mask_logits.shape[1] == 1:
        return mask_logits[:, 0]
    return mask_logits[torch.arange(mask_logits.shape[0], device=labels.device), labels - 1]


def mask_loss(mask_logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Mean per-pixel BCE of the GT class's mask on foreground RoIs (Mask R-CNN's L_mask, Eq. 8).
    mask_logits ``[P, K, M, M]``, labels ``[P]``, targets ``[P, M, M]``."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    return F.binary_cross_entropy_with_logits(select_class(mask_logits, labels), targets)
