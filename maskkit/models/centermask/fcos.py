"""FCOS detector (paper Sec. 2.1; REFERENCE 'FPN and FCOS'): head, targets, losses, decoding.

The head returns raw per-level tensors; :func:`fcos_targets`, :func:`fcos_losses` and
:func:`fcos_decode` are pure functions over them. Shapes: ``B`` images, ``K`` classes,
``L`` locations over all levels (``sum_l H_l * W_l``), ``G`` ground-truth boxes.

Label convention inside this module: 0 = background, 1..K = class, -1 = ignored (a
location inside a crowd box that no ordinary box claims; crowd boxes are never positives).
With ``crowd="negative"`` (the official code, whose data loader drops crowd annotations)
crowd boxes are simply absent: their locations are negatives.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import batched_nms, sigmoid_focal_loss

__all__ = [
    "FCOSHead",
    "level_locations",
    "flatten_levels",
    "fcos_targets",
    "centerness_target",
    "fcos_losses",
    "giou_loss_ltrb",
    "fcos_decode",
]

INF = float("inf")


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` x (3x3 conv + GroupNorm(32) + ReLU), as the FCOS towers."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(math.gcd(32, channels), channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Classification tower -> class logits; box tower -> ltrb regression and centerness.

    forward(feats: list of ``[B, C, H_l, W_l]``) -> ``(cls_logits, box_reg, centerness)``,
    three lists over levels of ``[B, K, H_l, W_l]``, ``[B, 4, H_l, W_l]`` (ltrb distances
    divided by the level stride, >= 0) and ``[B, 1, H_l, W_l]`` (logits).
    """

    def __init__(
        self, channels: int, num_classes: int, num_convs: int = 4, num_levels: int = 5, prior_prob: float = 0.01
    ):
        super().__init__()
        self.cls_tower = _tower(channels, num_convs)
        self.box_tower = _tower(channels, num_convs)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)  # on the box tower (REFERENCE)
        self.scales = nn.Parameter(torch.ones(num_levels))  # one learnable scale per level
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0.0)
        # Focal-loss prior (RetinaNet): every location starts at p = prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        cls_out, box_out, ctr_out = [], [], []
        for i, f in enumerate(feats):
            c = self.cls_tower(f)
            b = self.box_tower(f)
            cls_out.append(self.cls_logits(c))
            # Stride-normalised regression: scale, then ReLU (distances are non-negative).
            box_out.append(F.relu(self.box_pred(b) * self.scales[i]))
            ctr_out.append(self.centerness(b))
        return cls_out, box_out, ctr_out


def level_locations(feats: list[Tensor], strides: list[int]) -> list[Tensor]:
    """Image-plane location of every feature cell: ``x = j * s + s // 2`` -> list of ``[H_l*W_l, 2]`` (x, y)."""
    out = []
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        xs = torch.arange(w, device=f.device, dtype=torch.float32) * s + s // 2
        ys = torch.arange(h, device=f.device, dtype=torch.float32) * s + s // 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
    return out


def flatten_levels(tensors: list[Tensor]) -> Tensor:
    """List of ``[B, C, H_l, W_l]`` -> ``[B, L, C]`` (row-major within a level, levels in order)."""
    return torch.cat([t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, t.shape[1]) for t in tensors], dim=1)


def _per_location(locations: list[Tensor], strides: list[int], size_of_interest: tuple[float, ...]):
    """Concatenated locations ``[L, 2]``, their stride ``[L]`` and size range ``[L, 2]``."""
    edges = [-1.0, *size_of_interest, INF]  # level l accepts max(l,t,r,b) in [edges[l], edges[l+1]]
    loc = torch.cat(locations, 0)
    stride = torch.cat([torch.full((len(p),), float(s), device=loc.device) for p, s in zip(locations, strides)])
    ranges = torch.cat(
        [torch.tensor([[edges[i], edges[i + 1]]], device=loc.device).expand(len(p), 2) for i, p in enumerate(locations)]
    )
    return loc, stride, ranges


def _ltrb(loc: Tensor, boxes: Tensor) -> Tensor:
    """Distances from each location ``[L, 2]`` to the sides of each box ``[G, 4]`` -> ``[L, G, 4]``."""
    x, y = loc[:, 0, None], loc[:, 1, None]
    return torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2)


@torch.no_grad()
def fcos_targets(
    locations: list[Tensor],
    strides: list[int],
    targets: list[dict],
    size_of_interest: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0),
    center_sampling_radius: float = 1.5,
    crowd: str = "ignore",
    max_pairs: int = 1 << 22,
) -> tuple[Tensor, Tensor]:
    """FCOS target assignment (REFERENCE 'Targets').

    A location is positive for a (non-crowd) box when it lies inside the box - or, with
    center sampling, within ``radius * stride`` of the box centre (clipped to the box) - and
    the largest of its ltrb distances falls in its level's size range. Ambiguous locations
    go to the box of smallest area. Returns ``labels [B, L]`` (0 bg, 1..K, -1 ignore) and
    ``box_targets [B, L, 4]`` (ltrb divided by the location's stride). ``crowd``:
    ``"ignore"`` (maskkit) marks locations inside crowd boxes -1; ``"negative"`` (official
    centermask2: detectron2's mapper drops crowd annotations) leaves them background. The
    ``[L, G]`` location-box pairs are computed ``max_pairs`` at a time (same result).
    """
    if crowd not in ("ignore", "negative"):
        raise ValueError(f"crowd must be 'ignore' or 'negative', got {crowd!r}")
    loc, stride, ranges = _per_location(locations, strides, size_of_interest)
    all_labels, all_boxes = [], []
    for t in targets:
        boxes, labels = t["boxes"], t["labels"]
        is_crowd = t.get("iscrowd")
        is_crowd = torch.zeros_like(labels, dtype=torch.bool) if is_crowd is None else is_crowd.bool()
        # [L, G] pairs, a block of locations at a time (thousands of boxes would take gigabytes),
        # written into tensors made up front (small tensors kept between the large temporary
        # blocks would pin the allocator's heap)
        rows = max(1, max_pairs // max(1, int(boxes.shape[0])))
        lab = torch.empty(loc.shape[0], dtype=torch.int64, device=loc.device)
        dtype = torch.promote_types(torch.promote_types(loc.dtype, boxes.dtype), torch.float32)  # ltrb / stride
        reg = torch.empty(loc.shape[0], 4, dtype=dtype, device=loc.device)
        for i in range(0, loc.shape[0], rows):
            sl = slice(i, i + rows)
            lab[sl], reg[sl] = _assign(
                loc[sl], stride[sl], ranges[sl], boxes, labels, is_crowd, center_sampling_radius, crowd == "ignore"
            )
        all_labels.append(lab)
        all_boxes.append(reg)
    return torch.stack(all_labels), torch.stack(all_boxes)


def _assign(
    loc, stride, ranges, boxes, labels, is_crowd, center_sampling_radius, crowd_ignore
) -> tuple[Tensor, Tensor]:
    """:func:`fcos_targets` for the locations ``loc [L, 2]`` (their ``stride [L]``, size ``ranges
    [L, 2]``) of one image -> ``labels [L]``, ``box_targets [L, 4]``."""
    n = loc.shape[0]
    gb, gl = boxes[~is_crowd], labels[~is_crowd]
    if gb.shape[0] == 0:
        lab = torch.zeros(n, dtype=torch.int64, device=loc.device)
        reg = torch.zeros(n, 4, device=loc.device)
    else:
        ltrb = _ltrb(loc, gb)  # [L, G, 4]
        if center_sampling_radius > 0:
            cx, cy = (gb[:, 0] + gb[:, 2]) / 2, (gb[:, 1] + gb[:, 3]) / 2
            rad = stride[:, None] * center_sampling_radius  # [L, 1]
            region = torch.stack(
                [
                    torch.maximum(cx - rad, gb[:, 0]),
                    torch.maximum(cy - rad, gb[:, 1]),
                    torch.minimum(cx + rad, gb[:, 2]),
                    torch.minimum(cy + rad, gb[:, 3]),
                ],
                dim=2,
            )  # [L, G, 4]
            x, y = loc[:, 0, None], loc[:, 1, None]
            inside = (x > region[..., 0]) & (y > region[..., 1]) & (x < region[..., 2]) & (y < region[..., 3])
        else:
            inside = ltrb.min(dim=2).values > 0
        max_reg = ltrb.max(dim=2).values  # [L, G]
        in_range = (max_reg >= ranges[:, :1]) & (max_reg <= ranges[:, 1:])
        area = ((gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1]))[None].expand(n, -1).clone()
        area[~(inside & in_range)] = INF
        min_area, idx = area.min(dim=1)  # smallest box wins
        lab = gl[idx].clone()
        lab[min_area == INF] = 0
        reg = ltrb[torch.arange(n, device=loc.device), idx] / stride[:, None]
    if crowd_ignore and is_crowd.any():
        in_crowd = (_ltrb(loc, boxes[is_crowd]).min(dim=2).values > 0).any(dim=1)
        lab[(lab == 0) & in_crowd] = -1  # crowd = ignore region
    return lab, reg


def centerness_target(ltrb: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` of ``[P, 4]`` -> ``[P]``."""
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    c = (lr.min(1).values / lr.max(1).values.clamp(min=1e-6)) * (tb.min(1).values / tb.max(1).values.clamp(min=1e-6))
    return c.clamp(min=0).sqrt()


def giou_loss_ltrb(pred: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """GIoU loss ``1 - GIoU`` of ltrb distances from a common location: pred, target ``[P, 4]``
    -> ``[P]``. As the official ``IOULoss('giou')`` (centermask2 ``centermask/layers/iou_loss.py``)
    the IoU term is smoothed, ``(I + smooth) / (U + smooth)`` (distances in stride units, so
    ``smooth=1`` is one stride-cell of area), and the enclosing-box penalty uses the plain
    union. Written out because torchvision's ``generalized_box_iou_loss`` has no smoothing."""
    pl, pt, pr, pb = pred.unbind(1)
    tl, tt, tr, tb = target.unbind(1)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = (tl + tr) * (tt + tb) + (pl + pr) * (pt + pb) - inter
    enclose = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (torch.maximum(pt, tt) + torch.maximum(pb, tb))
    iou = (inter + smooth) / (union + smooth)
    return 1.0 - (iou - (enclose - union) / enclose)


def _mean_over_workers(x: Tensor) -> Tensor:
    """Average a count over DDP workers (so every worker normalises its loss the same way)."""
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


def fcos_losses(
    cls_logits: Tensor,
    box_reg: Tensor,
    ctr_logits: Tensor,
    labels: Tensor,
    box_targets: Tensor,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
) -> dict[str, Tensor]:
    """FCOS losses (REFERENCE 'Losses').

    cls_logits ``[B, L, K]``, box_reg ``[B, L, 4]``, ctr_logits ``[B, L]``, labels ``[B, L]``,
    box_targets ``[B, L, 4]``. Focal loss over non-ignored locations / #positives; GIoU loss
    (:func:`giou_loss_ltrb`, official +1 smoothing) on positives weighted by the centerness
    target / its sum; centerness BCE / #positives (centermask2 ``fcos_outputs.fcos_losses``).
    """
    valid = labels >= 0
    pos = labels > 0
    num_pos = _mean_over_workers(pos.sum().to(cls_logits.dtype)).clamp(min=1.0)
    onehot = torch.zeros_like(cls_logits)
    pos_idx = pos.nonzero(as_tuple=True)
    onehot[pos_idx + (labels[pos] - 1,)] = 1.0
    loss_cls = sigmoid_focal_loss(cls_logits[valid], onehot[valid], focal_alpha, focal_gamma, reduction="sum") / num_pos

    pred, tgt = box_reg[pos], box_targets[pos]  # [P, 4] ltrb / stride
    if pred.shape[0] == 0:
        zero = box_reg.sum() * 0 + ctr_logits.sum() * 0
        return {"loss_cls": loss_cls, "loss_box": zero, "loss_ctr": zero}
    ctr_t = centerness_target(tgt)
    giou = giou_loss_ltrb(pred, tgt)
    ctr_sum = _mean_over_workers(ctr_t.sum()).clamp(min=1e-6)
    loss_box = (giou * ctr_t).sum() / ctr_sum
    loss_ctr = F.binary_cross_entropy_with_logits(ctr_logits[pos], ctr_t, reduction="sum") / num_pos
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}


def _limits(size, like: Tensor) -> Tensor:
    """``[w, h, w, h]`` of an image ``size`` ``(h, w)`` (ints, or an int64 tensor while tracing)."""
    if isinstance(size, Tensor):
        hw = size.to(like.dtype)
        return torch.stack([hw[1], hw[0], hw[1], hw[0]])
    return like.new_tensor([size[1], size[0], size[1], size[0]])


@torch.no_grad()
def fcos_decode(
    cls_logits: list[Tensor],
    box_reg: list[Tensor],
    ctr_logits: list[Tensor],
    locations: list[Tensor],
    strides: list[int],
    image_sizes: list[tuple[int, int]] | Tensor,
    score_thresh: float = 0.05,
    pre_nms_topk: int = 1000,
    nms_thresh: float = 0.6,
    detections_per_image: int = 50,
    scoring: str = "sqrt",
    clip: bool = True,
) -> list[dict[str, Tensor]]:
    """Head outputs (lists over levels, as :class:`FCOSHead`) -> per image
    ``dict(boxes [N, 4] xyxy in the resized image, scores [N], labels [N] 1..K)``.

    Per level: the (location, class) pairs whose class probability is above ``score_thresh``,
    scored ``sqrt(cls * ctr)`` (``scoring="product"``: ``cls * ctr``), the best ``pre_nms_topk``;
    then over all levels class-wise NMS and the best ``detections_per_image``. ``clip=True``
    (maskkit) clips the boxes to the image and drops empty ones before NMS; ``clip=False`` keeps
    them as decoded, as the official ``FCOSOutputs.predict_proposals`` (clipping happens after
    the mask branch).

    The one decode of maskkit, in the static form the ONNX export traces (and a CUDA graph can
    capture): per level the top ``pre_nms_topk`` of all scores with non-candidates scored -1,
    then the candidates among them (the same set as thresholding first), no branch on the
    data. ``image_sizes``: ``(h, w)`` per image, or an int64 ``[B, 2]`` tensor (traced sizes).
    """
    if scoring not in ("sqrt", "product"):
        raise ValueError(f"scoring must be 'sqrt' or 'product', got {scoring!r}")
    results = []
    for i in range(len(image_sizes)):
        boxes_l, scores_l, labels_l, ok_l = [], [], [], []
        for cls, reg, ctr, loc, s in zip(cls_logits, box_reg, ctr_logits, locations, strides):
            k = cls.shape[1]
            prob = cls[i].permute(1, 2, 0).reshape(-1, k).sigmoid()  # [HW, K]
            score = prob * ctr[i].reshape(-1, 1).sigmoid()
            if scoring == "sqrt":
                score = score.sqrt()
            cand = (prob > score_thresh).reshape(-1)  # [HW * K]
            score = torch.where(cand, score.reshape(-1), torch.full_like(score.reshape(-1), -1.0))
            top, idx = score.topk(_topk_min(score, pre_nms_topk, 0))
            loc_idx, cls_idx = idx // k, idx % k
            d = reg[i].permute(1, 2, 0).reshape(-1, 4)[loc_idx] * s  # [N, 4] ltrb in pixels
            p = loc[loc_idx]
            boxes_l.append(torch.cat([p - d[:, :2], p + d[:, 2:]], dim=1))
            scores_l.append(top)
            labels_l.append(cls_idx + 1)
            ok_l.append(cand[idx])
        keep = torch.cat(ok_l).nonzero()[:, 0]
        boxes, scores, labels = torch.cat(boxes_l)[keep], torch.cat(scores_l)[keep], torch.cat(labels_l)[keep]
        if clip:  # clip=False: the official training proposals (neither clipped nor filtered)
            boxes = torch.minimum(boxes.clamp(min=0.0), _limits(image_sizes[i], boxes))
            nonempty = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero()[:, 0]
            boxes, scores, labels = boxes[nonempty], scores[nonempty], labels[nonempty]
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_image]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results
