"""The inference form of a model: the same weights, rewritten for eval-mode speed; the fused eager
path and the ONNX export graphs are built from it.

Inference modules (:func:`inference_modules`; the export graph traces these):

- The FCOS head's two towers (classification, box) as one tower of twice the width
  (:class:`MergedFCOSHead`): their first convolutions see the same input and become one
  convolution with both filter banks, the later ones a 2-group convolution; each GroupNorm of
  ``g`` groups over ``C`` channels pair becomes one of ``2g`` groups over ``2C`` (the same
  groups, so the same statistics), and box regression + centerness one 5-output convolution:
  per pyramid level half the calls (the head's many small-map calls cost more than their FLOPs).
- The SAG-Mask head computing only each RoI's own class (:class:`ClassMaskHead`), with its 2x2
  stride-2 deconvolution as the 1x1 convolution to ``4C`` channels it is (ONNX Runtime runs a
  1x1 convolution in its blocked NCHWc layout; its ConvTranspose is several times slower).
- The MaskIoU head's first convolution with its ``C + 1`` input channels zero-padded to whole
  16-channel blocks (:class:`PaddedMaskIoUHead`), so ONNX Runtime's NCHWc convolution applies.

Fused eager path (:func:`fuse_model`), on top of those:

- Every convolution followed by a BatchNorm / FrozenBatchNorm (VoVNet's conv-norm-ReLU units,
  the ResNet and MobileNetV2 trunks) gets the norm folded into its weights and bias
  (``torch.nn.utils.fusion.fuse_conv_bn_weights``), the norm becomes ``nn.Identity``: one
  pass over the activations fewer per unit. GroupNorm (the FCOS towers) normalises with
  per-image statistics and cannot be folded.
- eSE channel attention (VoVNetV2): its "FC" is a 1x1 convolution on a ``[1, C, 1, 1]`` map,
  which ATen sends to its native ``_slow_conv2d_forward``; here it is the matrix-vector product
  it is (``F.linear``), and the rescale is done in place on the block's fresh output.
- Transposed convolutions get channels_last weights also in the NCHW path: oneDNN otherwise
  reorders the weight on every call (bitwise the same result).
- Optionally ``channels_last`` everywhere (so the convolutions pick the NHWC oneDNN kernels);
  :mod:`maskkit.engine.bench` measures whether it helps on the machine at hand.

Outputs equal the plain model's to float rounding (``tests/export/test_fuse.py``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import FrozenBatchNorm2d

from maskkit.models.backbones.vovnet import EffectiveSE
from maskkit.models.centermask.fcos import FCOSHead
from maskkit.models.centermask.mask_head import SAGMaskHead
from maskkit.models.centermask.maskiou import MaskIoUHead

__all__ = [
    "inference_modules",
    "fuse_model",
    "fold_norms",
    "LinearESE",
    "MergedFCOSHead",
    "ClassMaskHead",
    "PaddedMaskIoUHead",
    "merge_fcos_heads",
    "AutocastModel",
]

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _folded(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """A copy of ``conv`` computing ``norm(conv(x))`` (norm in eval mode: fixed statistics)."""
    fused = copy.deepcopy(conv)
    # FrozenBatchNorm2d keeps running stats as buffers and no momentum; same formula as BN eval.
    w, b = fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
    )
    fused.weight, fused.bias = w, b
    return fused


def fold_norms(module: nn.Module) -> int:
    """Fold every (Conv2d, BatchNorm2d | FrozenBatchNorm2d) pair in place: consecutive children
    of an ``nn.Sequential``, and torchvision ResNet blocks' ``convN``/``bnN`` attributes.
    Returns the number of norms folded."""
    count = 0
    for m in module.modules():
        if isinstance(m, nn.Sequential):
            names = list(m._modules)
            for a, b in zip(names, names[1:]):
                conv, norm = m._modules[a], m._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, _NORMS):
                    m._modules[a], m._modules[b] = _folded(conv, norm), nn.Identity()
                    count += 1
        for i in range(1, 4):  # torchvision BasicBlock / Bottleneck: conv1->bn1, conv2->bn2, conv3->bn3
            conv, norm = getattr(m, f"conv{i}", None), getattr(m, f"bn{i}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, _NORMS):
                setattr(m, f"conv{i}", _folded(conv, norm))
                setattr(m, f"bn{i}", nn.Identity())
                count += 1
    return count


class LinearESE(nn.Module):
    """eSE (VoVNetV2 Eq. 6-7) for inference: ``x * hardsigmoid(W mean_hw(x) + b)`` with the 1x1
    convolution's weight as a ``[C, C]`` matrix. Rescales ``x [B, C, H, W]`` in place (the
    OSA block's fresh output; nothing else holds it) and returns it."""

    def __init__(self, ese: EffectiveSE):
        super().__init__()
        fc = ese.fc
        self.weight = nn.Parameter(fc.weight.detach().reshape(fc.out_channels, fc.in_channels).clone(), False)
        self.bias = nn.Parameter(fc.bias.detach().clone(), False)

    def forward(self, x: Tensor) -> Tensor:
        a = F.hardsigmoid(F.linear(x.mean(dim=(2, 3)), self.weight, self.bias))  # [B, C]
        return x.mul_(a[:, :, None, None])


def _replace_children(module: nn.Module, kind: type, make) -> int:
    """Replace every submodule of type ``kind`` in ``module`` by ``make(it)`` (in place) -> count."""
    count = 0
    for m in list(module.modules()):
        for name, child in m.named_children():
            if isinstance(child, kind):
                setattr(m, name, make(child))
                count += 1
    return count


def _replace_ese(module: nn.Module) -> int:
    return _replace_children(module, EffectiveSE, LinearESE)


class MergedFCOSHead(nn.Module):
    """:class:`FCOSHead` for inference with the classification and box towers run as one tower
    of twice the width (see the module docstring); same ``forward`` contract and numbers."""

    def __init__(self, head: FCOSHead):
        super().__init__()
        convs = [(c, b) for c, b in zip(head.cls_tower, head.box_tower) if isinstance(c, nn.Conv2d)]
        norms = [(c, b) for c, b in zip(head.cls_tower, head.box_tower) if isinstance(c, nn.GroupNorm)]
        layers: list[nn.Module] = []
        for i, ((cc, bc), (cn, bn)) in enumerate(zip(convs, norms)):
            c = cc.out_channels
            conv = nn.Conv2d(c if i == 0 else 2 * c, 2 * c, 3, padding=1, groups=1 if i == 0 else 2)
            conv.weight.data = torch.cat([cc.weight.detach(), bc.weight.detach()])
            conv.bias.data = torch.cat([cc.bias.detach(), bc.bias.detach()])
            norm = nn.GroupNorm(2 * cn.num_groups, 2 * c, eps=cn.eps)
            norm.weight.data = torch.cat([cn.weight.detach(), bn.weight.detach()])
            norm.bias.data = torch.cat([cn.bias.detach(), bn.bias.detach()])
            layers += [conv, norm, nn.ReLU(inplace=True)]
        self.tower = nn.Sequential(*layers)
        self.channels = head.cls_logits.in_channels
        self.cls_logits = copy.deepcopy(head.cls_logits)
        self.box_ctr = nn.Conv2d(self.channels, 5, 3, padding=1)  # box_pred (4) and centerness (1)
        self.box_ctr.weight.data = torch.cat([head.box_pred.weight.detach(), head.centerness.weight.detach()])
        self.box_ctr.bias.data = torch.cat([head.box_pred.bias.detach(), head.centerness.bias.detach()])
        self.scales = nn.Parameter(head.scales.detach().clone(), False)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        cls_out, box_out, ctr_out = [], [], []
        for i, f in enumerate(feats):
            t = self.tower(f)
            cls_out.append(self.cls_logits(t[:, : self.channels]))
            bc = self.box_ctr(t[:, self.channels :])
            box_out.append(F.relu(bc[:, :4] * self.scales[i]))
            ctr_out.append(bc[:, 4:])
        return cls_out, box_out, ctr_out


class ClassMaskHead(nn.Module):
    """:class:`SAGMaskHead` for inference, computing only each RoI's class: ``class_logits(x,
    labels)`` as the head's, without the ``[R, K, 28, 28]`` of every class. The deconvolution
    (2x2, stride 2) is a 1x1 convolution to ``4C`` channels, ``w[o*4 + a*2 + b, c] = W[c, o, a, b]``
    (output channel ``o`` at offset ``(a, b)``); after its ReLU only the label's predictor row is
    applied (one ``[C] x [C, 4hw]`` product per RoI) and the four offsets are interleaved on the
    small result."""

    def __init__(self, head: SAGMaskHead):
        super().__init__()
        self.convs, self.sam, self.predictor = head.convs, head.sam, head.predictor
        deconv = head.deconv
        cin, cout = deconv.in_channels, deconv.out_channels
        self.register_buffer("deconv_w", deconv.weight.detach().permute(1, 2, 3, 0).reshape(cout * 4, cin, 1, 1))
        self.register_buffer("deconv_b", deconv.bias.detach().repeat_interleave(4))

    def class_logits(self, x: Tensor, labels: Tensor) -> Tensor:
        """``[R, C, 14, 14]`` RoI features, labels ``[R]`` (1..K) -> the labels' mask logits ``[R, 28, 28]``."""
        x = self.sam(self.convs(x))  # [R, C, h, w]
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        y = F.relu(F.conv2d(x, self.deconv_w, self.deconv_b))  # [R, 4C, h, w]
        pred = self.predictor
        row = labels - 1 if pred.out_channels > 1 else torch.zeros_like(labels)
        z = torch.matmul(
            pred.weight[row].flatten(1)[:, None, :], y.reshape(n, pred.in_channels, 4 * h * w)
        )  # [R, 1, 4hw]
        z = z.reshape(n, 2, 2, h, w).permute(0, 3, 1, 4, 2).reshape(n, 2 * h, 2 * w)
        return z + pred.bias[row][:, None, None]


class PaddedMaskIoUHead(nn.Module):
    """:class:`MaskIoUHead` with its first convolution's ``C + 1`` input channels (features +
    pooled mask) zero-padded to a multiple of 16: same ``forward`` and numbers."""

    def __init__(self, head: MaskIoUHead):
        super().__init__()
        self.convs, self.fc1, self.fc2, self.predictor = head.convs, head.fc1, head.fc2, head.predictor
        conv0 = head.convs[0]
        self.pad = (-conv0.in_channels) % 16
        self.register_buffer("w0", F.pad(conv0.weight.detach(), (0, 0, 0, 0, 0, self.pad)))

    def forward(self, roi_feats: Tensor, mask_probs: Tensor) -> Tensor:
        """``[R, C, 14, 14]``, ``[R, 1, 28, 28]`` -> ``[R, K]``."""
        x = torch.cat([roi_feats, F.max_pool2d(mask_probs, kernel_size=2, stride=2)], dim=1)
        conv0 = self.convs[0]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        x = F.relu(F.conv2d(x, self.w0, conv0.bias, conv0.stride, conv0.padding))
        x = self.convs[2:](x).flatten(1)  # convs = [conv, ReLU, conv, ReLU, ...]
        return self.predictor(F.relu(self.fc2(F.relu(self.fc1(x)))))


def merge_fcos_heads(module: nn.Module) -> int:
    """Replace every :class:`FCOSHead` in ``module`` by its :class:`MergedFCOSHead` (in place)."""
    return _replace_children(module, FCOSHead, lambda head: MergedFCOSHead(head).eval())


def inference_modules(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with its heads in their inference form (merged FCOS
    towers, the label's mask only, the padded MaskIoU convolution; see the module docstring);
    ``model`` itself is unchanged, ``model.info`` / ``model.cfg`` are kept. A model without
    these heads (SharpMask) is copied as it is."""
    copy_ = copy.deepcopy(model).eval()
    merge_fcos_heads(copy_)
    _replace_children(copy_, SAGMaskHead, ClassMaskHead)
    _replace_children(copy_, MaskIoUHead, PaddedMaskIoUHead)
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_


def fuse_model(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """:func:`inference_modules` of ``model`` with norms folded, eSE as a matrix-vector product,
    transposed-convolution weights channels_last (and every weight channels_last when asked);
    ``model`` itself is unchanged."""
    fused = inference_modules(model)
    fold_norms(fused)
    _replace_ese(fused)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    for m in fused.modules():
        if isinstance(m, nn.ConvTranspose2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return fused


class AutocastModel(nn.Module):
    """``model`` run under ``torch.autocast`` of ``dtype`` (bf16 inference): the convolutions and
    matrix products in that precision; the models keep decoding, NMS, RoIAlign and the scores in
    float32 (their outputs are float32, as the data contract's). ``info`` / ``cfg`` are the model's."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.info, self.cfg = getattr(model, "info", None), getattr(model, "cfg", None)

    def forward(self, images, targets=None):
        device = images[0].device.type if isinstance(images, (list, tuple)) else images.device.type
        with torch.autocast(device, dtype=self.dtype):
            return self.model(images) if targets is None else self.model(images, targets)
