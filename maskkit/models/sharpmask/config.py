"""DeepMask / SharpMask model configuration (read by ``maskkit/models/sharpmask/model.py``).

Defaults are "DeepMask-ours" + SharpMask refinement as in the paper and the official Torch7
code (``../shared/papers/REFERENCE.md``). Presets in ``presets.py`` change what differs.

Geometry: a window of ``window`` px maps to a ``feature_size`` x ``feature_size`` cell grid of
the stride-16 trunk output (``window == 16 * feature_size``). Training crops add ``context``
px around the window (``window + context``, a multiple of 32 so the border is whole stride-16
cells on each side).
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from maskkit.config import MAX_CLASSES, NON_NEGATIVE, PROBABILITY, WindowSamplerConfig, ruled, section, within


@section("model")
class SharpMaskConfig:
    system: Literal["sharpmask"] = "sharpmask"
    num_classes: int = ruled(1, within(1, MAX_CLASSES, f"an integer in 1..{MAX_CLASSES}"))  # class-agnostic proposals
    # Trunk: "resnet50" (DeepMask-ours, torchvision Bottleneck [3, 4, 6] truncated after layer3),
    # "resnet18" (BasicBlock [2, 2, 2]) or "resnet_tiny" (BasicBlock [1, 1, 1], narrow: the
    # CPU demo trunk), or "vgg_a" (the original DeepMask's VGG-A conv layers, with
    # trunk_norm "none" or "BN"). ``trunk_width`` is the first stage's width (64 in the papers;
    # the others follow: ResNet 64/128/256 x expansion, VGG 64/128/256/512).
    trunk: str = "resnet50"
    trunk_width: int = 64
    # ImageNet file the trunk starts from: torchvision's resnet50 / resnet18 state dict
    # (maskkit/models/backbones/pretrained.py; layer4 and fc unused). The builder loads it.
    trunk_weights: str | None = None
    trunk_norm: Literal["FrozenBN", "BN", "GN", "none"] = "FrozenBN"  # FrozenBN: official; BN/GN: from scratch
    # 3x3/7x7 conv padding (padding.py): "symmetric" (official SpatialSymmetricPadding, cba|abcd)
    # | "reflect" (dcb|abcd, maskkit's earlier default) | "zeros"
    padding: Literal["symmetric", "reflect", "zeros"] = "symmetric"
    head: Literal["C", "original"] = (
        "C"  # "C" (DeepMask-ours, Fig. 3d) | "original" (DeepMask, Fig. 3a: separate score branch)
    )
    reduce_channels: int = ruled(128, NON_NEGATIVE)  # F128
    feature_size: int = ruled(10, NON_NEGATIVE)  # window 160 / stride 16
    hidden_dim: int = 512  # head C's shared vector
    mask_size: int = ruled(56, NON_NEGATIVE)  # DeepMask mask output
    mask_loss_size: int = ruled(112, NON_NEGATIVE)  # DeepMask: the mask logits are upsampled to this for the loss
    score_hidden: int = 1024
    score_pool_hidden: int = 512  # original head only: Linear(512*7*7 -> 512) after the 2x2 max-pool
    score_dropout: float = 0.5
    score_loss_weight: float = 1.0 / 32.0
    refine: bool = True  # add the SharpMask refinement modules
    refine_channels: tuple[int, ...] = (32, 16, 8, 4)  # schedule (b), k = 32: k_m^i = k_s^i
    skip_channels: tuple[int, ...] = (64, 64, 64, 32)  # first skip conv width per level (stride 16, 8, 4, 2)
    upsample: Literal["bilinear", "nearest"] = "bilinear"  # paper | official code
    refine_mask_convs: int = 1  # 3x3 convs on the mask path: 1 (paper Fig. 7b) | 2 (official code, released model)
    use_refinement_output: bool = True  # False: return the coarse DeepMask mask
    # Stage 2 also fine-tunes trunk + head C through the refinement (paper Sec. 3.3: frozen, as
    # "end-to-end fine-tuning adds little" to a converged DeepMask; the CPU demo's is not converged).
    finetune_trunk: bool = False
    sampler: WindowSamplerConfig = field(default_factory=WindowSamplerConfig)
    # Full-image inference (REFERENCE 'Full-image inference').
    scales: tuple[float, ...] = (-2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5)  # log2 scales
    stride: int = 16
    # image pyramid resize: "antialias" (torchvision resize) | "official" (InferSharpMask.lua: nnx
    # SpatialReSamplingEx bilinear, corners aligned, no antialiasing; what converted .t7 models use)
    pyramid: Literal["antialias", "official"] = "antialias"
    border_fill: float | None = None  # half-window image border in 0..1 RGB: None = mean colour; official 0.5
    top_n: int = 1000
    mask_threshold: float = ruled(0.2, PROBABILITY)
    refine_batch: int = 100  # windows refined per chunk at inference
    pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @property
    def window(self) -> int:
        """Window side in px (the stride-16 cell grid times 16)."""
        return self.stride * self.feature_size
