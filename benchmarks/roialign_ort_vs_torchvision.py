"""Is ONNX Runtime's CPU RoiAlign equal to torchvision's ``roi_align(aligned=True,
sampling_ratio=0)`` on the installed versions? (issue #11: ORT's half-pixel RoiAlign has had a
long-standing error). Exports one ``roi_align`` at opset 16 (``coordinate_transformation_mode=
half_pixel``) and compares on random features and boxes like CenterMask's (P3-P5 strides,
boxes of 4..600 px, adaptive sampling).

    python benchmarks/roialign_ort_vs_torchvision.py   # prints versions and the max abs error
"""

from __future__ import annotations

import io
import sys

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from torchvision.ops import roi_align


class _Align(torch.nn.Module):
    def __init__(self, scale: float, sampling_ratio: int):
        super().__init__()
        self.scale, self.sampling_ratio = scale, sampling_ratio

    def forward(self, feat, rois):
        return roi_align(feat, rois, 14, spatial_scale=self.scale, sampling_ratio=self.sampling_ratio, aligned=True)


def compare(stride: int, sampling_ratio: int, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(1, 8, 600 // stride, 800 // stride, generator=g)
    xy = torch.rand(64, 2, generator=g) * torch.tensor([780.0, 580.0])
    wh = torch.exp(torch.rand(64, 2, generator=g) * np.log(150.0)) * 4.0
    boxes = torch.cat([xy, (xy + wh).clamp(max=torch.tensor([800.0, 600.0]))], dim=1)
    rois = torch.cat([torch.zeros(64, 1), boxes], dim=1)
    mod = _Align(1.0 / stride, sampling_ratio).eval()
    buf = io.BytesIO()
    torch.onnx.export(
        mod, (feat, rois), buf, opset_version=16, input_names=["feat", "rois"], output_names=["out"], dynamo=False
    )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"feat": feat.numpy(), "rois": rois.numpy()})[0]
    want = mod(feat, rois).numpy()
    return float(np.abs(got - want).max())


def main() -> int:
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnxruntime {ort.__version__}")
    worst = 0.0
    for stride in (8, 16, 32):
        for sr in (0, 2):
            err = compare(stride, sr)
            worst = max(worst, err)
            print(f"stride {stride:2d} sampling_ratio {sr}: max |ORT - torchvision| = {err:.3g}")
    print(f"worst: {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
