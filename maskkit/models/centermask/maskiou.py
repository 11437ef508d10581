"""Mask scoring (MaskIoU head of Mask Scoring R-CNN, used by CenterMask Sec. 2.6 / Table 1).

The head regresses the IoU between each predicted mask and its ground truth; at inference
``mask_score = box score x predicted IoU`` ranks the segmentation results. Targets are
computed from dense masks, so polygon and RLE annotations work alike (the official code
derived the "mask ratio" from polygons and crashed on RLE).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskIoUHead", "maskiou_targets", "maskiou_loss"]


class MaskIoUHead(nn.Module):
    """RoI features ``[R, C, 14, 14]`` + predicted mask probabilities ``[R, 1, 28, 28]``
    -> predicted mask IoU per class ``[R, K]``.

    The mask is max-pooled to 14x14 and concatenated (C + 1 channels); ``num_convs`` x
    (3x3 conv + ReLU), the last with stride 2 (-> 7x7); FC ``fc_dim``, FC ``fc_dim``; linear to K.
    """

    def __init__(self, in_channels: int, num_classes: int, num_convs: int = 4, channels: int = 256,
                 fc_dim: int = 1024, resolution: int = 14):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            stride = 2 if i == num_convs - 1 else 1
            layers += [nn.Conv2d(in_channels + 1 if i == 0 else channels, channels, 3, stride=stride, padding=1),
                       nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        out_res = (resolution + 1) // 2
        self.fc1 = nn.Linear(channels * out_res * out_res, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.predictor = nn.Linear(fc_dim, num_classes)
        for m in self.convs:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0.0)
        for m in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.constant_(m.bias, 0.0)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, roi_feats: Tensor, mask_probs: Tensor) -> Tensor:
        x = torch.cat([roi_feats, F.max_pool2d(mask_probs, kernel_size=2, stride=2)], dim=1)
        x = self.convs(x).flatten(1)
        return self.predictor(F.relu(self.fc2(F.relu(self.fc1(x)))))


@torch.no_grad()
def maskiou_targets(mask_logits: Tensor, targets: Tensor, gt_area: Tensor, roi_area: Tensor) -> Tensor:
    """IoU of the binarised predicted mask with the *whole* GT mask.

    mask_logits ``[P, M, M]`` (the GT class's mask), targets ``[P, M, M]`` (GT cropped to
    the RoI), gt_area ``[P]`` (GT mask area in image pixels), roi_area ``[P]`` (RoI box area
    in pixels) -> ``[P]`` in [0, 1]. The GT part outside the RoI counts in the union: the
    GT's full area in M x M RoI cells is ``gt_area * M^2 / roi_area`` (Mask Scoring
    R-CNN's "area / mask ratio", here from dense masks so any annotation format works).
    """
    m2 = targets.shape[-1] * targets.shape[-2]
    pred = (mask_logits > 0).to(torch.float32)  # probability > 0.5
    inter = (pred * targets).sum(dim=(1, 2))
    gt_full = torch.maximum(gt_area * m2 / roi_area.clamp(min=1e-6), targets.sum(dim=(1, 2)))
    union = pred.sum(dim=(1, 2)) + gt_full - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-6), torch.zeros_like(union)).clamp(0, 1)


def maskiou_loss(pred: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """L2 loss between the GT class's predicted IoU (pred ``[P, K]``, labels ``[P]`` 1..K)
    and the IoU target ``[P]``; mean over positive RoIs."""
    if pred.shape[0] == 0:
        return pred.sum() * 0
    sel = pred[:, 0] if pred.shape[1] == 1 else pred[torch.arange(pred.shape[0], device=pred.device), labels - 1]
    return F.mse_loss(sel, targets)
