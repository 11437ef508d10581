"""Symmetric padding of the DeepMask / SharpMask convs (maskkit/models/sharpmask/padding.py):
Matlab's padarray 'symmetric' (``cba|abcd``), the official ``SpatialSymmetricPadding``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import maskkit
from maskkit.errors import MaskkitError
from maskkit.models.sharpmask.padding import conv_padding, conv_padding_mode, set_conv_padding, symmetric_pad
from maskkit.models.zoo import get_config


def test_a_3x3_input_padded_by_2_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    expected = torch.tensor(
        [
            [5.0, 4.0, 4.0, 5.0, 6.0, 6.0, 5.0],
            [2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0],
            [2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0],
            [5.0, 4.0, 4.0, 5.0, 6.0, 6.0, 5.0],
            [8.0, 7.0, 7.0, 8.0, 9.0, 9.0, 8.0],
            [8.0, 7.0, 7.0, 8.0, 9.0, 9.0, 8.0],
            [5.0, 4.0, 4.0, 5.0, 6.0, 6.0, 5.0],
        ]
    )  # each side: the border row/column repeated, then the next one (cba|abc|cba)
    out = symmetric_pad(x[None, None], 2, 2)[0, 0]
    torch.testing.assert_close(out, expected)
    assert np.array_equal(np.pad(x.numpy(), 2, mode="symmetric"), expected.numpy())
    reflect = F.pad(x[None, None], [2, 2, 2, 2], mode="reflect")[0, 0]
    assert not torch.equal(reflect, expected)  # reflection (dcb|abcd) does not repeat the border


def test_matches_numpy_pad_symmetric_on_rectangles_and_batches():
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    for ph, pw in [(1, 1), (3, 3), (2, 1), (0, 3), (5, 7)]:
        ref = np.pad(x.numpy(), ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="symmetric")
        torch.testing.assert_close(symmetric_pad(x, ph, pw), torch.from_numpy(ref))
    with pytest.raises(MaskkitError, match="at least that size"):
        symmetric_pad(x, 6, 1)


def test_symmetric_conv_equals_a_conv_on_the_numpy_padded_input_with_gradients():
    torch.manual_seed(0)
    conv = set_conv_padding(nn.Conv2d(3, 4, kernel_size=7, stride=2, padding=3), "symmetric")
    assert conv_padding(conv) == ("symmetric", (3, 3))
    x = torch.randn(1, 3, 9, 11, requires_grad=True)
    padded = torch.from_numpy(np.pad(x.detach().numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="symmetric"))
    torch.testing.assert_close(conv(x), F.conv2d(padded, conv.weight, conv.bias, stride=2))
    conv(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert list(conv.state_dict()) == ["weight", "bias"]  # same names as any Conv2d


def test_modes_and_bad_mode():
    one = set_conv_padding(nn.Conv2d(2, 2, 1), "symmetric")
    assert conv_padding_mode(one) == "zeros"  # 1x1 convs are unpadded whatever the mode
    refl = set_conv_padding(nn.Conv2d(2, 2, 3, padding=1), "reflect")
    assert conv_padding(refl) == ("reflect", (1, 1))
    with pytest.raises(MaskkitError, match="symmetric, reflect, zeros"):
        set_conv_padding(nn.Conv2d(2, 2, 3, padding=1), "replicate")


def test_faithful_presets_pad_symmetrically_reflection_stays_selectable():
    for name in ("deepmask_r50", "sharpmask_r50", "sharpmask_zoom_r50", "sharpmask_zoom2_r50"):
        assert get_config(name).model.padding == "symmetric"
    assert get_config("deepmask_demo").model.padding == "reflect"  # recorded demo runs
    assert get_config("deepmask_vgg").model.padding == "zeros"  # the original VGG DeepMask
    model = maskkit.create_model("sharpmask_demo", overrides=["model.padding=symmetric"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    assert convs and all(conv_padding_mode(c) == "symmetric" for c in convs)  # trunk and refinement
    refl = maskkit.create_model("sharpmask_demo")
    assert all(
        conv_padding_mode(c) == "reflect" for c in refl.modules() if isinstance(c, nn.Conv2d) and c.kernel_size[0] > 1
    )
    assert list(model.state_dict()) == list(refl.state_dict())  # the padding mode does not rename weights
