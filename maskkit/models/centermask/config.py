"""CenterMask model configuration (read by ``maskkit/models/centermask/model.py``).

Defaults are the paper's full CenterMask (Sec. 2.6) with the official code's details
(``../shared/papers/REFERENCE.md``). Presets in ``presets.py`` change only what differs.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from maskkit.config import MAX_CLASSES, NON_NEGATIVE, PROBABILITY, ruled, section, within


@section("model.backbone")
class BackboneConfig:
    """Which trunk, and how it is normalised/frozen. Every backbone declares its output
    channels and strides (see ``maskkit/models/backbones``)."""

    name: Literal["vovnet", "resnet", "mobilenet_v2"] = "vovnet"
    variant: str = "V-39"  # vovnet: V-19-slim-dw ... V-99; resnet: resnet50 | resnet101 | resnext101_32x8d
    norm: Literal["FrozenBN", "BN", "GN"] = "FrozenBN"  # FrozenBN: official, ImageNet-initialised; BN/GN: from scratch
    freeze_at: int = 0  # freeze the stem and the first `freeze_at - 1` stages (0 = nothing frozen)
    residual: bool = True  # VoVNetV2 identity mapping (False = VoVNetV1)
    attention: Literal["eSE", "SE", "none"] = "eSE"  # SE: the original, reduction 16
    # ImageNet weights file the trunk starts from (torchvision, timm, centermask2/detectron2
    # layouts: maskkit/models/backbones/pretrained.py). The model builder loads it and sets
    # input_format / pixel_mean / pixel_std to the weights' own convention.
    weights: str | None = None
    # ResNet only: stride 2 in the 1x1 conv of each stage's first bottleneck (detectron2's
    # STRIDE_IN_1X1, the MSRA/Caffe2 of the official configs) instead of in the 3x3
    # (torchvision, and the official X-101).
    stride_in_1x1: bool = False


@section("model.fcos")
class FCOSConfig:
    """FCOS detector head, targets, loss and decoding (Sec. 2.1, REFERENCE 'FPN and FCOS')."""

    num_convs: int = ruled(4, NON_NEGATIVE)  # per tower (Lite: 2)
    center_sampling_radius: float = 1.5
    size_of_interest: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)  # level range edges
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior_prob: float = 0.01
    score_thresh: float = ruled(0.03, PROBABILITY)  # the paper (Sec. 2.6); FCOS and the official code: 0.05
    # Training: detections sent to the mask branch pass this class-probability threshold
    # (official INFERENCE_TH_TRAIN 0.05) and are NOT clipped to the image (as the official code).
    score_thresh_train: float = ruled(0.05, PROBABILITY)
    # Crowd regions in the focal loss: "ignore" (maskkit: locations inside a crowd box that no
    # object claims are left out) | "negative" (official: detectron2 drops crowd annotations).
    crowd: Literal["ignore", "negative"] = "ignore"
    pre_nms_topk: int = 1000  # per level
    nms_thresh: float = ruled(0.6, PROBABILITY)
    detections_per_image: int = 50  # top detections sent to the mask branch (Sec. 2.6)
    scoring: Literal["sqrt", "product"] = "sqrt"  # sqrt(cls * ctr) | cls * ctr (earlier code)


@section("model.mask")
class MaskHeadConfig:
    """SAG-Mask branch (Sec. 2.3-2.4) and the MaskIoU scoring head."""

    num_convs: int = ruled(4, NON_NEGATIVE)  # Lite: 2
    channels: int = ruled(256, NON_NEGATIVE)  # Lite: 128
    pooler_resolution: int = ruled(14, NON_NEGATIVE)
    sam: bool = True  # spatial attention module
    assignment: Literal["eq2", "eq1"] = "eq2"  # paper's scale-adaptive Eq. 2 | Mask R-CNN's Eq. 1
    k_min: int = 3
    k_max: int = 5
    class_agnostic: bool = False
    maskiou: bool = True  # mask scoring head
    maskiou_num_convs: int = ruled(4, NON_NEGATIVE)  # Lite: 2
    maskiou_channels: int = ruled(256, NON_NEGATIVE)  # Lite: 128
    maskiou_fc_dim: int = 1024
    maskiou_loss_weight: float = 1.0
    train_iou_thresh: float = ruled(0.5, PROBABILITY)  # proposals matched to GT at IoU >= this are mask positives
    train_detections: int = 100  # FCOS detections (+ GT boxes) sent to the mask branch in training (Sec. 2.6)
    # Foreground RoIs per image for the mask losses: at most this many, drawn at random (official
    # sampler: 512 RoIs x positive fraction 0.25 = 128); 0 = no cap.
    train_max_fg: int = 128
    # Detach the predicted mask before the MaskIoU head (False = official: the MaskIoU loss
    # also trains the mask head through the mask it is given).
    maskiou_detach_mask: bool = False
    # Initialisation of the SAM conv and the MaskIoU FC layers: "official" (He normal, fan_out:
    # SAM std ~0.47) | "maskkit" (PyTorch default SAM conv, std ~0.14, and He-uniform FCs: the
    # mask branch learns faster from scratch on small problems, e.g. the CPU demo).
    init: Literal["official", "maskkit"] = "official"


@section("model")
class CenterMaskConfig:
    system: Literal["centermask"] = "centermask"
    num_classes: int = ruled(80, within(1, MAX_CLASSES, f"an integer in 1..{MAX_CLASSES}"))
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn_channels: int = ruled(256, NON_NEGATIVE)  # Lite: 128
    fcos: FCOSConfig = field(default_factory=FCOSConfig)
    mask: MaskHeadConfig = field(default_factory=MaskHeadConfig)
    # Input convention: RGB float images in 0..1 are normalised with these (0..1 scale); with
    # input_format "BGR255" the image is first turned into BGR 0..255 and these are in that
    # scale and channel order (detectron2's PIXEL_MEAN / PIXEL_STD, as converted checkpoints).
    pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    input_format: Literal["RGB", "BGR255"] = "RGB"  # "BGR255" reproduces the official weights' convention
    size_divisibility: int = ruled(32, NON_NEGATIVE)
    # Test-time resize done inside the model in eval mode (0 = keep the input size).
    min_size_test: int = ruled(800, NON_NEGATIVE)
    max_size_test: int = ruled(1333, NON_NEGATIVE)
    mask_threshold: float = ruled(0.5, PROBABILITY)
    # Post-processing (decoded boxes -> NMS -> mask branch -> output):
    #  "maskkit":     boxes clipped to the image before NMS and the mask branch; empty boxes
    #                 dropped before the top-k cut; mask score = box score x clamp(IoU, 1e-3, 1);
    #                 pasted masks zeroed outside their box.
    #  "centermask2": the official released code (centermask2 fcos_outputs.predict_proposals,
    #                 maskiou_head.mask_iou_inference, detectron2 detector_postprocess): unclipped
    #                 boxes through NMS and RoIAlign, top-k cut, then boxes scaled to the output
    #                 size, clipped and empty ones dropped; mask score = box score x IoU (unclamped);
    #                 masks pasted into the clipped boxes as detectron2's paste_masks_in_image.
    # Converted centermask2 checkpoints use "centermask2"; the paper presets keep "maskkit".
    postprocess: Literal["maskkit", "centermask2"] = "maskkit"
