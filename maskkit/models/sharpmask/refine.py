"""SharpMask top-down refinement (paper Sec. 3.2, Fig. 1d, Fig. 7b).

``M^{i+1} = R^i(M^i, F^i)``: four refinement modules, one per pooling stage, take the mask
encoding ``M^i`` and the trunk features ``F^i`` at strides 16, 8, 4, 2 (centre-cropped to the
window: 10, 20, 40, 80 cells for a 160 px window) and double the resolution each time.

Each module, in the refactored form of Fig. 7b (what the official code runs):

- skip ("horizontal") path: ``S^i = ReLU(conv3x3(ReLU(conv3x3(F^i -> 64)) -> k_s^i))`` — two 3x3
  convs, reducing to 64 channels first (32 at stride 2), Sec. 5.2 — then
  ``S*^i = conv3x3(S^i -> k_m^{i+1})``;
- mask ("vertical") path: ``M*^i = conv3x3(M^i -> k_m^{i+1})`` (paper, Fig. 7b); the
  official code (``SharpMask.lua: createVertical``) runs ``conv3x3(M^i -> k_m^i) + ReLU`` first
  (``SharpMaskConfig.refine_mask_convs = 2``, the layout of the released SharpMask model);
- ``M^{i+1} = upsample2(ReLU(M*^i + S*^i))``.

conv over ``concat(M, S)`` equals ``conv_m(M) + conv_s(S)`` (split the kernel along its input
channels), so this is the paper's module; the split lets ``S^i`` *and* ``S*^i`` be computed
once on the whole image (per scale) and shared by every window (Fig. 7 caption), while only
``M^i`` is per window. (At the window's border ``conv_s`` sees the neighbouring image features
rather than padding, as in the official code.)

Channels, schedule (b) with k = 32: ``k_m^i = k_s^i = 32 / 2^(i-1)`` = 32, 16, 8, 4; the last
module outputs 2 channels and a final 3x3 conv gives 1 channel of mask logits at window
resolution (160 x 160). ``M^1 = Linear(512 -> 32*10*10)`` of head C's shared vector.

Parameters with the DeepMask-ours trunk: M1 1,641,600; skip paths 608,352 + 304,208 +
152,136 + 19,620; merge convs 9,248 + 2,320 + 584 + 148; output conv 19; total 2,738,235.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskkit.errors import MaskkitError
from maskkit.models.sharpmask.config import SharpMaskConfig
from maskkit.models.sharpmask.deepmask import center_crop
from maskkit.models.sharpmask.padding import set_conv_padding

__all__ = ["RefinementModule", "Refinement", "gather_window_skips"]


def _conv3x3(cin: int, cout: int, padding: str) -> nn.Conv2d:
    return set_conv_padding(nn.Conv2d(cin, cout, kernel_size=3, padding=1), padding)


class RefinementModule(nn.Module):
    """One ``R^i`` (Fig. 7b). ``skip`` is shared per image; ``forward`` is per window."""

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        k_s: int,
        k_m: int,
        k_out: int,
        padding: str,
        upsample: str,
        mask_convs: int = 1,
    ) -> None:
        super().__init__()
        if mask_convs not in (1, 2):
            raise MaskkitError(f"sharpmask refine_mask_convs must be 1 (paper) or 2 (official code), got {mask_convs}")
        self.skip_path = nn.Sequential(
            _conv3x3(in_channels, hidden, padding),
            nn.ReLU(inplace=True),
            _conv3x3(hidden, k_s, padding),
            nn.ReLU(inplace=True),
        )
        self.skip_merge = _conv3x3(k_s, k_out, padding)  # S -> S*
        # official code only: conv3x3(M -> k_m) + ReLU before the merge conv (SharpMask.lua createVertical)
        self.mask_conv = _conv3x3(k_m, k_m, padding) if mask_convs == 2 else None
        self.mask_merge = _conv3x3(k_m, k_out, padding)  # M -> M*
        self.upsample = upsample

    def skip(self, features: torch.Tensor) -> torch.Tensor:
        """Trunk features ``F^i [B, C_i, h, w]`` -> ``S*^i [B, k_out, h, w]`` (shareable)."""
        return self.skip_merge(self.skip_path(features))

    def forward(self, m: torch.Tensor, s_star: torch.Tensor) -> torch.Tensor:
        """``M^i [N, k_m, h, w]`` + window crop of ``S*^i [N, k_out, h, w]`` -> ``M^{i+1} [N, k_out, 2h, 2w]``."""
        if self.mask_conv is not None:
            m = F.relu(self.mask_conv(m))  # [N, k_m, h, w]
        x = F.relu(self.mask_merge(m) + s_star)
        if self.upsample == "bilinear":  # the paper (Sec. 3.2)
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=2, mode="nearest")  # the official code


class Refinement(nn.Module):
    """M1 + the four refinement modules + the output conv.

    Args:
        trunk_channels: channels of the trunk features at strides 2, 4, 8, 16 (trunk order).
    """

    def __init__(self, trunk_channels: list[int], cfg: SharpMaskConfig) -> None:
        super().__init__()
        ks = list(cfg.refine_channels)
        if len(ks) != 4 or len(cfg.skip_channels) != 4:
            raise MaskkitError("sharpmask refine_channels and skip_channels need 4 entries (strides 16, 8, 4, 2)")
        if cfg.upsample not in ("bilinear", "nearest"):
            raise MaskkitError(f"sharpmask upsample must be 'bilinear' or 'nearest', got {cfg.upsample!r}")
        self.feature_size = cfg.feature_size
        self.k1 = ks[0]
        outs = ks[1:] + [max(1, ks[-1] // 2)]  # k_m^{i+1}; schedule (b) halves once more: 2
        in_ch = list(reversed(trunk_channels))  # strides 16, 8, 4, 2
        self.m1 = nn.Linear(cfg.hidden_dim, ks[0] * cfg.feature_size**2)
        self.modules_list = nn.ModuleList(
            RefinementModule(
                in_ch[i], cfg.skip_channels[i], ks[i], ks[i], outs[i], cfg.padding, cfg.upsample, cfg.refine_mask_convs
            )
            for i in range(4)
        )
        self.out = _conv3x3(outs[-1], 1, cfg.padding)

    def skip_features(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Trunk features ``[f2, f4, f8, f16]`` -> ``[S*^1 .. S*^4]`` (strides 16, 8, 4, 2)."""
        return [mod.skip(f) for mod, f in zip(self.modules_list, reversed(feats))]

    def window_skips(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-window path: centre-crop each ``S*^i`` of a crop to the window (10, 20, 40, 80 cells)."""
        return [center_crop(s, self.feature_size * 2**i) for i, s in enumerate(skips)]

    def forward(self, vec: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Shared vectors ``[N, hidden]`` + per-window ``S*^i`` crops ``[N, k, 10*2^(i-1), ...]``
        -> mask logits ``[N, 1, W, W]`` (W = 16 * feature_size)."""
        m = self.m1(vec).view(-1, self.k1, self.feature_size, self.feature_size)  # M^1 [N, 32, 10, 10]
        for mod, s in zip(self.modules_list, skips):
            m = mod(m, s)  # [N, k, 20, 20] ... [N, 2, 160, 160]
        return self.out(m)  # [N, 1, 160, 160]


def gather_window_skips(
    skips: list[list[torch.Tensor]], scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, feature_size: int
) -> list[torch.Tensor]:
    """Batched crops of the whole-canvas ``S*^i [1, k, h_i, w_i]`` (strides 16, 8, 4, 2) of each
    pyramid scale (``skips[scale][level]``) for the windows whose top-left stride-16 cell on the
    canvas of scale ``scale [N]`` is ``(rows [N], cols [N])`` -> per level ``[N, k, s_i, s_i]``,
    ``s_i = feature_size * 2^(i-1)``. One gather per level over all scales' maps flattened:
    no loop over windows or scales, and the sizes stay graph values when traced."""
    out = []
    for level in range(len(skips[0])):
        maps = [s[level][0] for s in skips]  # per scale [k, h, w]
        f = 2**level  # cells of this level per stride-16 cell
        size = feature_size * f
        widths = torch.stack([torch._shape_as_tensor(m)[2] for m in maps]).to(torch.int64)  # [S]
        counts = torch.stack([torch._shape_as_tensor(m)[1] * torch._shape_as_tensor(m)[2] for m in maps])
        starts = torch.cumsum(counts.to(torch.int64), 0) - counts.to(torch.int64)  # [S]
        flat = torch.cat([m.reshape(m.shape[0], -1) for m in maps], dim=1)  # [k, sum h*w]
        ar = torch.arange(size, dtype=torch.int64, device=flat.device)
        ys = rows[:, None] * f + ar  # [N, size]
        xs = cols[:, None] * f + ar
        idx = starts[scale][:, None, None] + ys[:, :, None] * widths[scale][:, None, None] + xs[:, None, :]
        crop = flat[:, idx.reshape(-1)].reshape(flat.shape[0], -1, size, size)  # [k, N, size, size]
        out.append(crop.permute(1, 0, 2, 3))
    return out
