"""Phase 3: train-mode reference losses and gradients of the official centermask2 models.

For Lite V-19 and Lite V-39 (and any config given on the command line), the official model is
loaded with the seeded weights of ``tests/convert/official_weights.py`` (``cls_bias`` taken
from the phase-2 inference reference of the same config), put in train mode, and fed ONE batch
of two real COCO train2017 images of coco-tiny, prepared by detectron2's own ``DatasetMapper``
(``is_train=True``, **no augmentation**: empty augmentation list, so no resize and no flip;
``image_format="BGR"``, ``instance_mask_format="polygon"``, ``recompute_boxes=False``) from the
dicts of detectron2's ``load_coco_json``. Crowd annotations are dropped by the mapper (the
chosen images have none).

Randomness: the only random step of the official train forward is detectron2's
``subsample_labels`` (``torch.randperm``) in ``CenterROIHeads.label_and_sample_proposals``;
``torch.manual_seed(0)`` is set right before the forward. With at most 128 foreground RoIs
per image (recorded as ``num_fg_rois``), every foreground RoI is kept, so the sampler only
permutes them and the losses do not depend on the seed (checked: a second forward with
seed 1 is recorded in ``losses_seed1``).

Writes ``tests/convert/reference/train/<config_name>.json`` (format: tests/convert/reference/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "convert"))
import official_env as oe  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetMapper  # noqa: E402
from detectron2.data.datasets.coco import load_coco_json  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from official_weights import gradient_projection, load_layout, official_random_state_dict, reference_image  # noqa: E402
from run_inference import _floats, stats  # noqa: E402

COCO = Path("/work/shared/data/coco-tiny")
ANN = COCO / "annotations" / "instances_train2017.json"
OUT = REPO / "tests" / "convert" / "reference" / "train"
INFER = REPO / "tests" / "convert" / "reference" / "inference"
FILES = ["000000565248.jpg", "000000532482.jpg"]  # batch order
CONFIGS = ["centermask_lite_V_19_eSE_FPN_ms_4x", "centermask_lite_V_39_eSE_FPN_ms_4x"]
FULL_GRAD_MAX = 256  # store the whole gradient of tensors up to this size
N_PROJ = 64


def prepare_batch() -> tuple[list[dict], list[dict]]:
    """The two dataset dicts (detectron2's load_coco_json) through the official DatasetMapper."""
    dicts = load_coco_json(
        str(ANN), str(COCO / "train2017"), dataset_name="maskkit_ref_coco_tiny_train", extra_annotation_keys=["id"]
    )
    by_name = {Path(d["file_name"]).name: d for d in dicts}
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="polygon",
        recompute_boxes=False,
    )
    batch, described = [], []
    for name in FILES:
        d = by_name[name]
        assert not any(a.get("iscrowd", 0) for a in d["annotations"]), name
        item = mapper(d)
        own = reference_image(
            COCO, {"split": "train2017", "file_name": name, "crop_xyxy": [0, 0, d["width"], d["height"]]}
        )
        assert torch.equal(item["image"], own), "detectron2's read_image differs from reference_image"
        inst = item["instances"]
        described.append(
            {
                "split": "train2017",
                "file_name": name,
                "image_id": d["image_id"],
                "image_size_hw": list(inst.image_size),
                "annotation_ids": [a["id"] for a in d["annotations"]],
                "gt_boxes_xyxy": _floats(inst.gt_boxes.tensor),
                "gt_classes": inst.gt_classes.tolist(),
                "num_polygons": [len(p) for p in inst.gt_masks.polygons],
            }
        )
        batch.append(item)
    return batch, described


def _g9(x: float) -> float:
    return float(f"{x:.9g}")


def grad_record(named: dict[str, torch.Tensor], skip_zero: bool) -> dict:
    """name -> {shape, norm, sum, projection (64), values (small tensors only)}; with
    ``skip_zero`` the tensors this loss does not reach (None or all-zero gradient) are left out."""
    out = {}
    for name, g in named.items():
        if g is None or (skip_zero and not bool(g.any())):
            if not skip_zero:
                out[name] = None
            continue
        r = {
            "shape": list(g.shape),
            "norm": _g9(g.double().norm().item()),
            "sum": _g9(g.double().sum().item()),
            "projection": [_g9(v) for v in gradient_projection(name, g, N_PROJ).tolist()],
        }
        if g.numel() <= FULL_GRAD_MAX:
            r["values"] = _floats(g.flatten())
        out[name] = r
    return out


class TrainRecorder:
    def __init__(self, model):
        self.rec: dict = {}
        model.backbone.register_forward_hook(
            lambda m, i, o: self.rec.update(
                input_normalized_padded=stats(i[0]), fpn={k: stats(v) for k, v in o.items()}
            )
        )
        model.proposal_generator.register_forward_hook(self._proposals)
        model.roi_heads.mask_head.register_forward_hook(
            lambda m, i, o: self.rec.update(
                mask_head_in=stats(i[0]), mask_head_logits=stats(o[0] if isinstance(o, tuple) else o)
            )
        )
        model.roi_heads.maskiou_head.register_forward_hook(lambda m, i, o: self.rec.update(maskiou_head_out=stats(o)))
        model.roi_heads.register_forward_hook(self._roi)

    def _proposals(self, mod, inp, out):
        props = out[0]
        self.rec["fcos_train_proposals"] = [
            {"n": len(p), "boxes_first3": _floats(p.pred_boxes.tensor[:3]), "scores_first3": _floats(p.scores[:3])}
            for p in props
        ]

    def _roi(self, mod, inp, out):
        props = out[0]
        self.rec["num_rois_sampled"] = [len(p) for p in props]
        self.rec["num_fg_rois"] = [int((p.gt_classes < 80).sum()) for p in props]


def run_config(name: str, batch: list[dict]) -> dict:
    layout = load_layout(name)
    cls_bias = json.loads((INFER / f"{name}.json").read_text())["cls_bias"]
    cfg, model = oe.build_official(name)
    model.load_state_dict(official_random_state_dict(layout, cls_bias=cls_bias), strict=True)
    model.train()
    rec = TrainRecorder(model)
    params = dict(model.named_parameters())
    watched = {
        k: v
        for k, v in params.items()
        if k.startswith("roi_heads.") or any(s in k for s in ("cls_logits", "bbox_pred", "ctrness"))
    }
    with EventStorage(0):
        torch.manual_seed(0)
        losses = model(batch)
        intermediates = dict(rec.rec)
        total = sum(losses.values())
        grads = {}
        for key, loss in [("total", total), *sorted(losses.items())]:
            g = torch.autograd.grad(loss, list(watched.values()), retain_graph=True, allow_unused=True)
            grads[key] = grad_record(dict(zip(watched, g)), skip_zero=key != "total")
        torch.manual_seed(1)
        losses1 = model(batch)
    return {
        "config_name": name,
        "source": oe.repo_commits(),
        "cls_bias": cls_bias,
        "losses": {k: v.item() for k, v in losses.items()},
        "loss_dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in losses.items()},
        "losses_seed1": {k: v.item() for k, v in losses1.items()},
        "intermediates": intermediates,
        "gradients": grads,
    }


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    batch, described = prepare_batch()
    for name in names or CONFIGS:
        ref = run_config(name, batch)
        ref["batch"] = described
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(ref, separators=(",", ":")) + "\n")
        print(f"{name}: losses {ref['losses']} fg {ref['intermediates']['num_fg_rois']} -> {path.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
