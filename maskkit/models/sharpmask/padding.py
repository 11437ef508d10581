"""Border padding of the DeepMask / SharpMask convolutions.

The official Torch7 code pads every 3x3 and 7x7 convolution of the trunk and of the
refinement modules with its ``SpatialSymmetricPadding`` module (``SpatialSymmetricPadding.lua``,
``modelUtils.lua: updatePadding``): Matlab's ``padarray(A, p, 'symmetric')``, which mirrors the
border pixel too (``cba|abcd``), unlike reflection (``dcb|abcd``, torch's ``"reflect"``) or
zeros. Modes (``SharpMaskConfig.padding``):

- ``"symmetric"``: the official code (default of the faithful presets);
- ``"reflect"``: maskkit's earlier default, kept selectable (the demo presets use it);
- ``"zeros"``: plain zero padding (the original VGG DeepMask).

``nn.Conv2d`` has no symmetric ``padding_mode``, so a symmetric conv gets ``padding = 0`` and a
forward pre-hook that pads its input (mirrored border slices, the same values as torchvision's
``pad(..., padding_mode="symmetric")``, which is not used because its export is size-bound).
The conv keeps its class and parameter names, so state dicts do not depend on the padding mode.
"""

from __future__ import annotations

import torch
from torch import nn

from maskkit.errors import MaskkitError

__all__ = ["PADDING_MODES", "SymmetricPad", "symmetric_pad", "set_conv_padding", "conv_padding", "conv_padding_mode"]

PADDING_MODES = ("symmetric", "reflect", "zeros")


def symmetric_pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, C, H + 2 pad_h, W + 2 pad_w]`` padded as ``cba|abcd|dcb``
    (``numpy.pad(mode="symmetric")``); needs ``pad <= size`` on each side."""
    if pad_h > x.shape[-2] or pad_w > x.shape[-1]:
        raise MaskkitError(
            f"symmetric padding by {pad_h}x{pad_w} needs an input of at least that size, got {tuple(x.shape[-2:])}"
        )
    return _mirror(_mirror(x, pad_w, -1), pad_h, -2)


def _mirror(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """``pad`` border slices of ``dim`` mirrored on each side and concatenated (``cba|abcd|dcb``).
    Slices with ends counted from the end, not index tensors computed from the size, so the ONNX
    export stays valid at any size (torchvision's symmetric ``pad`` traces its gather indices as
    constants: the exported SharpMask graph failed on any other image size); also cheaper than
    the gather in eager mode."""
    if pad == 0:
        return x
    left = [x.narrow(dim, i, 1) for i in reversed(range(pad))]  # c b a
    right = [x.select(dim, -1 - i).unsqueeze(dim) for i in range(pad)]  # d c b
    return torch.cat([*left, x, *right], dim=dim)


class SymmetricPad:
    """Forward pre-hook of a conv whose own padding was set to 0: pads its input symmetrically."""

    def __init__(self, pad_h: int, pad_w: int) -> None:
        self.pad_h, self.pad_w = pad_h, pad_w

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (symmetric_pad(args[0], self.pad_h, self.pad_w), *args[1:])


def conv_padding(conv: nn.Conv2d) -> tuple[str, tuple[int, int]]:
    """The padding a conv runs with: ``(mode, (pad_h, pad_w))``, mode ``"symmetric"`` for a
    hooked conv, else its ``padding_mode``."""
    for h in conv._forward_pre_hooks.values():
        if isinstance(h, SymmetricPad):
            return "symmetric", (h.pad_h, h.pad_w)
    return conv.padding_mode, tuple(conv.padding)


def conv_padding_mode(conv: nn.Conv2d) -> str:
    """The padding mode a conv runs with (see :func:`conv_padding`)."""
    return conv_padding(conv)[0]


def set_conv_padding(module: nn.Module, mode: str) -> nn.Module:
    """Give every ``nn.Conv2d`` with a kernel > 1 inside ``module`` (itself included) the
    padding ``mode``; the padding amounts stay those the conv was built with. Call once, on
    freshly built convs."""
    if mode not in PADDING_MODES:
        raise MaskkitError(f"sharpmask padding must be one of {', '.join(PADDING_MODES)}; got {mode!r}")
    for m in module.modules():
        if not isinstance(m, nn.Conv2d) or max(m.kernel_size) == 1:
            continue
        if mode == "symmetric":
            if isinstance(m.padding, str):
                raise MaskkitError(f"symmetric padding needs numeric conv padding, got {m.padding!r}")
            pad_h, pad_w = m.padding
            m.padding, m.padding_mode = (0, 0), "zeros"
            m.register_forward_pre_hook(SymmetricPad(pad_h, pad_w))
        else:
            m.padding_mode = mode
    return module
