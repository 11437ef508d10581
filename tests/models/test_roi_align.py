"""maskkit.models.roi_align: torchvision's RoIAlign forward with a separable CPU backward whose
gradient equals torchvision's (up to the order of the sums)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from maskkit.models.roi_align import roi_align_adaptive


def _rois() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 120 - 10
    wh = torch.rand(40, 2, generator=g) * 90 + 0.3
    boxes = torch.cat([xy, xy + wh], 1)
    special = torch.tensor(
        [
            [-30.0, -30.0, 200.0, 200.0],  # larger than the map: samples outside [-1, size] drop out
            [5.0, 5.0, 5.0, 5.0],  # empty
            [50.0, 40.0, 30.0, 20.0],  # reversed: no samples
            [126.0, 94.0, 127.9, 95.9],  # at the last row / column
            [-8.0, -8.0, -1.0, -2.0],  # just outside the top-left
        ]
    )
    boxes = torch.cat([boxes, special])
    batch = (torch.arange(len(boxes)) % 2).to(torch.float32)[:, None]
    return torch.cat([batch, boxes], 1)


@pytest.mark.parametrize("scale", [1.0 / 4, 1.0 / 8])
def test_gradient_equals_torchvision(scale):
    feat = torch.randn(2, 6, 24, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    rois = _rois()
    grad_out = torch.randn(len(rois), 6, 14, 14, generator=torch.Generator().manual_seed(2))
    want = roi_align(feat, rois, 14, spatial_scale=scale, sampling_ratio=0, aligned=True)
    (gw,) = torch.autograd.grad(want, feat, grad_out)
    got = roi_align_adaptive(feat, rois, 14, scale)
    (gg,) = torch.autograd.grad(got, feat, grad_out)
    assert torch.equal(got, want)  # the forward is torchvision's
    torch.testing.assert_close(gg, gw, atol=1e-5, rtol=1e-5)
    assert gw.abs().sum() > 0


def test_without_gradient_it_is_torchvision_itself():
    feat = torch.randn(1, 3, 16, 16)
    rois = torch.tensor([[0.0, 1.0, 2.0, 30.0, 40.0]])
    want = roi_align(feat, rois, 7, spatial_scale=0.5, sampling_ratio=0, aligned=True)
    assert torch.equal(roi_align_adaptive(feat, rois, 7, 0.5), want)


def test_far_away_rois_get_no_gradient():
    feat = torch.randn(1, 2, 8, 8, requires_grad=True)
    rois = torch.tensor([[0.0, 5e3, 5e3, 6e3, 6e3], [0.0, -3e3, 0.0, -2e3, 4.0], [0.0, 1.0, 1.0, 5.0, 5.0]])
    out = roi_align_adaptive(feat, rois[2:], 7, 1.0)
    (want,) = torch.autograd.grad(out.sum(), feat)
    (got,) = torch.autograd.grad(roi_align_adaptive(feat, rois, 7, 1.0)[2:].sum(), feat)
    torch.testing.assert_close(got, want)


def test_cpu_backward_equals_the_device_gradient(device):
    """On ``--device cuda``: the separable CPU backward against torchvision's CUDA kernel."""
    if device.type == "cpu":
        pytest.skip("compares the CPU with the test device: run with --device cuda")
    feat = torch.randn(2, 6, 24, 32, generator=torch.Generator().manual_seed(1))
    rois = _rois()
    grad_out = torch.randn(len(rois), 6, 14, 14, generator=torch.Generator().manual_seed(2))
    grads = []
    for dev in (torch.device("cpu"), device):
        f = feat.to(dev).requires_grad_()
        out = roi_align_adaptive(f, rois.to(dev), 14, 1.0 / 4)
        grads.append((out.detach().cpu(), torch.autograd.grad(out, f, grad_out.to(dev))[0].cpu()))
    (out_cpu, g_cpu), (out_dev, g_dev) = grads
    torch.testing.assert_close(out_dev, out_cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_dev, g_cpu, atol=1e-5, rtol=1e-5)
