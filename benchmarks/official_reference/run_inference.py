"""Phase 2: inference reference outputs of the official centermask2 models.

For each configuration, the official model (built from the yaml) is loaded with
``official_random_state_dict(layout, cls_bias)`` (tests/convert/official_weights.py), put in
eval mode and run - one image per batch - on the crops of ``INPUTS`` (real COCO val2017
images from coco-tiny, read by ``official_weights.reference_image``). ``cls_bias`` is the first
value of ``CLS_BIAS_GRID`` for which every crop gives at least ``MIN_DETS`` detections.

Writes ``tests/convert/reference/inference/<config_name>.json`` (format: README.md there).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "convert"))
import numpy as np  # noqa: E402
import official_env as oe  # noqa: E402
import pycocotools.mask as mask_util  # noqa: E402
import torch  # noqa: E402
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN  # noqa: E402
from official_weights import load_layout, official_random_state_dict, reference_image  # noqa: E402

COCO = Path("/work/shared/data/coco-tiny")
OUT = REPO / "tests" / "convert" / "reference" / "inference"
INPUTS = [
    {"split": "val2017", "file_name": "000000532481.jpg", "crop_xyxy": [100, 50, 484, 338]},
    {"split": "val2017", "file_name": "000000184324.jpg", "crop_xyxy": [0, 0, 320, 320]},
    {"split": "val2017", "file_name": "000000436738.jpg", "crop_xyxy": [150, 120, 450, 380]},
]
# Every runnable zoo config except R-101, V-57 and V-99, which run the same code paths as R-50
# and V-39 with deeper stacks (their layouts are covered in layouts/): keeps the stored files small.
CONFIGS = [c for c in oe.ZOO if "dcn" not in c and not any(s in c for s in ("R_101", "V_57", "V_99"))]
CLS_BIAS_GRID = [-11.0 + 0.5 * i for i in range(15)]  # -11.0 ... -4.0
MIN_DETS = 3
N_FIRST = 6  # first values of each intermediate tensor (flattened, C order)
N_MASK_PROBS = 3  # 28x28 mask probabilities stored for the first detections


def stats(t: torch.Tensor) -> dict:
    """Shape, float64 sum / mean / mean of |x| (10 significant digits), first values (C order)."""
    d = t.detach().double()
    g = lambda x: float(f"{x:.10g}")  # noqa: E731
    return {
        "shape": list(t.shape),
        "sum": g(d.sum().item()),
        "mean": g(d.mean().item()),
        "abs_mean": g(d.abs().mean().item()),
        "first": _floats(t.flatten()[:N_FIRST]),
    }


def _f32(v: float) -> float:
    """The shortest decimal that reads back to the same float32 (keeps the JSON small)."""
    return float(str(np.float32(v)))


def _floats(t: torch.Tensor) -> list:
    """float32 tensor -> nested lists of ``_f32`` values."""
    t = t.detach().float()
    return [_f32(v) for v in t.tolist()] if t.dim() <= 1 else [_floats(r) for r in t]


class Recorder:
    """Forward hooks on the official modules, recording the intermediates of the last run."""

    def __init__(self, model):
        self.rec: dict = {}
        model.backbone.register_forward_hook(self._backbone)
        model.proposal_generator.fcos_head.register_forward_hook(self._fcos_head)
        model.proposal_generator.register_forward_hook(self._proposals)
        model.roi_heads.mask_head.register_forward_hook(self._tensor("mask_head_logits"))
        model.roi_heads.maskiou_head.register_forward_hook(self._tensor("maskiou_head_out"))

    def _backbone(self, mod, inp, out):
        self.rec["input_normalized_padded"] = stats(inp[0])
        self.rec["fpn"] = {k: stats(v) for k, v in out.items()}

    def _fcos_head(self, mod, inp, out):
        logits, reg, ctr, _ = out
        self.rec["fcos_logits"] = [stats(t) for t in logits]
        self.rec["fcos_bbox_reg"] = [stats(t) for t in reg]
        self.rec["fcos_ctrness"] = [stats(t) for t in ctr]

    def _proposals(self, mod, inp, out):
        p = out[0][0]
        self.rec["fcos_detections"] = {
            "n": len(p),
            "boxes_first5": _floats(p.pred_boxes.tensor[:5]),
            "scores_first5": _floats(p.scores[:5]),
        }

    def _tensor(self, key):
        def hook(mod, inp, out):
            self.rec[key] = stats(out[0] if isinstance(out, tuple) else out)

        return hook


def run_one(model, rec: Recorder, image: torch.Tensor) -> dict:
    h, w = image.shape[1:]
    inputs = [{"image": image, "height": h, "width": w}]
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        raw = model.inference(inputs, do_postprocess=False)[0]
        raw_boxes = raw.pred_boxes.tensor.clone()  # detector_postprocess clips them in place
        raw_masks = raw.pred_masks[:N_MASK_PROBS, 0].clone()
        res = GeneralizedRCNN._postprocess([raw], inputs, images.image_sizes)[0]["instances"]
    masks = np.asfortranarray(res.pred_masks.numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_util.encode(masks) if len(res) else []
    return {
        "image_size_hw": [h, w],
        "padded_size_hw": list(images.tensor.shape[-2:]),
        "num_detections": len(res),
        "boxes_xyxy": _floats(res.pred_boxes.tensor),
        "scores": _floats(res.scores),
        "labels": res.pred_classes.tolist(),
        # the official MaskIoU branch is skipped when there is no detection (no field then)
        "mask_scores": _floats(res.mask_scores) if res.has("mask_scores") else [],
        "masks_rle": [r["counts"].decode("ascii") for r in rles],
        "raw": {
            "num": len(raw),
            "boxes_xyxy_unclipped": _floats(raw_boxes),
            "mask_probs_28_first": [stats(m) for m in raw_masks],
        },
        "intermediates": dict(rec.rec),
    }


def run_config(name: str) -> dict:
    layout = load_layout(name)
    cfg, model = oe.build_official(name)
    model.eval()
    rec = Recorder(model)
    images = [reference_image(COCO, spec) for spec in INPUTS]
    for bias in CLS_BIAS_GRID:
        model.load_state_dict(official_random_state_dict(layout, cls_bias=bias), strict=True)
        results = [run_one(model, rec, im) for im in images]
        print(f"  {name} cls_bias {bias}: {[r['num_detections'] for r in results]}", flush=True)
        if min(r["num_detections"] for r in results) >= MIN_DETS:
            break
    for spec, r in zip(INPUTS, results):
        r["input"] = spec
    return {
        "config_name": name,
        "source": oe.repo_commits(),
        "cls_bias": bias,
        "size_divisibility": model.backbone.size_divisibility,
        "batch": "one image per forward call; inputs [{'image': uint8 BGR [3,H,W], 'height': H, 'width': W}]",
        "labels_are": "contiguous 0-based class indices (detectron2 pred_classes), COCO category order",
        "images": results,
    }


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for name in names or CONFIGS:
        ref = run_config(name)
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(ref, separators=(",", ":")) + "\n")
        print(
            f"{name}: cls_bias {ref['cls_bias']}, detections {[r['num_detections'] for r in ref['images']]}, "
            f"{path.stat().st_size} bytes"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
