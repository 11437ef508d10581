"""COCO AP / proposal AR evaluation: hand-built cases with known answers, GT-vs-itself,
class-agnostic proposals, the AUC, the results format and the ``maskkit eval`` verb."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from maskkit.cli import main
from maskkit.errors import MaskkitError
from maskkit.evaluation import (
    check_results,
    evaluate_coco,
    evaluate_proposals,
    format_table,
    load_coco_gt,
    predictions_to_coco_results,
    proposal_recall_curve,
    write_metrics,
    write_results,
)
from maskkit.evaluation.coco import _load_dt, _results_for, _run_cocoeval  # internals checked directly
from maskkit.structures import masks_to_rle, rle_to_mask

H, W = 200, 200
CATS = [{"id": 7, "name": "cat"}, {"id": 42, "name": "dog"}]


def rect_mask(x, y, w, h, height=H, width=W) -> np.ndarray:
    m = np.zeros((height, width), dtype=np.uint8)
    m[y : y + h, x : x + w] = 1
    return m


def make_gt(objects: dict[int, list[tuple]], cats=CATS) -> COCO:
    """GT of axis-aligned rectangles ``{image_id: [(x, y, w, h, cat_id[, iscrowd]), ...]}`` with
    RLE masks, so box IoU and mask IoU agree exactly."""
    images = [{"id": i, "height": H, "width": W, "file_name": f"{i}.jpg"} for i in sorted(objects)]
    anns = []
    for image_id, objs in sorted(objects.items()):
        for x, y, w, h, cat, *crowd in objs:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": float(w * h),
                    "iscrowd": crowd[0] if crowd else 0,
                    "segmentation": masks_to_rle(rect_mask(x, y, w, h)[None])[0],
                }
            )
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": cats}
    coco.createIndex()
    return coco


def det(image_id, x, y, w, h, cat, score) -> dict:
    return {
        "image_id": image_id,
        "category_id": cat,
        "bbox": [float(x), float(y), float(w), float(h)],
        "score": score,
        "segmentation": masks_to_rle(rect_mask(x, y, w, h)[None])[0],
    }


def gt_as_results(coco: COCO) -> list[dict]:
    """Every non-crowd GT annotation as a perfect detection (mask RLE with str counts)."""
    out = []
    for a in coco.dataset["annotations"]:
        if a.get("iscrowd", 0):
            continue
        rle = coco.annToRLE(a)
        counts = rle["counts"]
        out.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": list(a["bbox"]),
                "score": 1.0,
                "segmentation": {
                    "size": list(rle["size"]),
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                },
            }
        )
    return out


# --------------------------------------------------------------------------- AP


def test_gt_against_itself_gives_ap_one():
    gt = make_gt(
        {
            1: [(10, 10, 50, 50, 7), (100, 100, 60, 40, 42), (5, 120, 20, 20, 7)],
            2: [(0, 0, 150, 150, 42), (30, 160, 30, 30, 7, 1)],
        }
    )  # the last one is crowd
    m = evaluate_coco(gt, gt_as_results(gt))
    for t in ("bbox", "segm"):
        for stat in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100"):
            assert m[f"{t}/{stat}"] == pytest.approx(1.0), (t, stat)
        assert m[f"{t}/AP-cat"] == pytest.approx(1.0) and m[f"{t}/AP-dog"] == pytest.approx(1.0)
        assert m[f"{t}/AR1"] == pytest.approx(0.75)  # 2 cats in image 1: 1 detection recalls one
    assert len([k for k in m if not k.split("/")[1].startswith("AP-")]) == 24  # 12 stats x 2 types


def test_known_ap_from_101_point_interpolation():
    # One image, 2 GT of one class. Detections by score: d1 = g1 exactly (TP at every IoU),
    # d2 far from both (FP), d3 covers 31/50 of g2 (IoU 0.62: TP at IoU 0.50/0.55/0.60, FP above).
    gt = make_gt({1: [(10, 10, 50, 50, 7), (100, 100, 50, 50, 7)]})
    results = [det(1, 10, 10, 50, 50, 7, 0.9), det(1, 10, 150, 30, 30, 7, 0.8), det(1, 100, 100, 50, 31, 7, 0.7)]
    # t <= 0.6: recall [.5, .5, 1], precision [1, .5, 2/3] -> interpolated [1, 2/3, 2/3]; the 101
    # recall points 0..0.50 (51 of them) take 1, the 50 points above take 2/3.
    ap_low = (51 * 1.0 + 50 * (2 / 3)) / 101
    # t > 0.62: recall [.5, .5, .5] -> 51 points take 1, recall above 0.5 is never reached (0).
    ap_high = 51 / 101
    m = evaluate_coco(gt, results)
    for t in ("bbox", "segm"):
        assert m[f"{t}/AP50"] == pytest.approx(ap_low, abs=1e-6)
        assert m[f"{t}/AP75"] == pytest.approx(ap_high, abs=1e-6)
        assert m[f"{t}/AP"] == pytest.approx((3 * ap_low + 7 * ap_high) / 10, abs=1e-6)
        assert m[f"{t}/AP-cat"] == pytest.approx(m[f"{t}/AP"], abs=1e-9)
        assert math.isnan(m[f"{t}/AP-dog"])  # no dog in the GT: undefined, not 0
        assert math.isnan(m[f"{t}/APs"]) and math.isnan(m[f"{t}/APl"])  # both GT are medium
        assert m[f"{t}/AR100"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10, abs=1e-6)


def test_segm_ranked_by_segm_score():
    # Swapping the mask ranking (segm_score) changes mask AP but not box AP.
    gt = make_gt({1: [(10, 10, 50, 50, 7)]})
    good, bad = det(1, 10, 10, 50, 50, 7, 0.9), det(1, 120, 120, 50, 50, 7, 0.8)
    good["segm_score"], bad["segm_score"] = 0.1, 0.95
    m = evaluate_coco(gt, [good, bad], per_category=False)
    assert m["bbox/AP"] == pytest.approx(1.0)
    assert m["segm/AP"] == pytest.approx((51 * 0.5 + 50 * 0.5) / 101, abs=1e-6)  # TP ranked 2nd: precision 1/2


def test_empty_results_give_zero_not_crash():
    gt = make_gt({1: [(10, 10, 50, 50, 7)], 2: []})
    m = evaluate_coco(gt, [])
    assert m["bbox/AP"] == 0.0 and m["segm/AR100"] == 0.0 and m["segm/AP-cat"] == 0.0
    assert math.isnan(m["bbox/APs"])  # undefined stays nan
    p = evaluate_proposals(gt, [])
    assert p["proposals/segm/AR@100"] == 0.0 and p["proposals/bbox/AUC"] == 0.0


def test_image_ids_restrict_evaluation():
    gt = make_gt({1: [(10, 10, 50, 50, 7)], 2: [(10, 10, 50, 50, 7)]})
    results = [det(1, 10, 10, 50, 50, 7, 0.9)]
    assert evaluate_coco(gt, results, ("bbox",))["bbox/AR100"] == pytest.approx(0.5)
    assert evaluate_coco(gt, results, ("bbox",), image_ids=[1])["bbox/AR100"] == pytest.approx(1.0)
    with pytest.raises(MaskkitError, match="not in the ground-truth"):
        evaluate_coco(gt, results, ("bbox",), image_ids=[3])


def test_gt_against_itself_on_real_coco_val(coco_tiny):
    gt = load_coco_gt(coco_tiny / "annotations" / "instances_val2017.json")
    results = gt_as_results(gt)  # crowd annotations excluded
    assert 0 < len(results) < len(gt.anns)
    m = evaluate_coco(gt, results, per_category=False)
    for t in ("bbox", "segm"):
        assert m[f"{t}/AP"] == pytest.approx(1.0) and m[f"{t}/AP50"] == pytest.approx(1.0)
        assert m[f"{t}/AR100"] == pytest.approx(1.0)
    p = evaluate_proposals(gt, results, iou_types=("segm",))
    assert p["proposals/segm/AR@1000"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- proposals


def test_proposals_are_class_agnostic():
    gt = make_gt({1: [(10, 10, 50, 50, 7), (100, 100, 60, 40, 42)]})
    # Each GT proposed with the other class's id: class-aware eval sees only wrong classes.
    props = [det(1, 10, 10, 50, 50, 42, 0.9), det(1, 100, 100, 60, 40, 7, 0.8)]
    p = evaluate_proposals(gt, props)
    for t in ("segm", "bbox"):
        assert p[f"proposals/{t}/AR@10"] == pytest.approx(1.0)
        assert p[f"proposals/{t}/AR@1000"] == pytest.approx(1.0)
        assert p[f"proposals/{t}/ARm@1000"] == pytest.approx(1.0)
    aware = evaluate_coco(gt, props)
    assert aware["segm/AR100"] == 0.0 and aware["segm/AP"] == 0.0
    # Proposals need no category id at all.
    bare = [{k: v for k, v in r.items() if k != "category_id"} for r in props]
    assert evaluate_proposals(gt, bare, iou_types=("bbox",))["proposals/bbox/AR@10"] == pytest.approx(1.0)
    # ... or ids the dataset does not have (SharpMask proposals carry label 1 as their id).
    ones = [{**r, "category_id": 1} for r in props]
    assert evaluate_proposals(gt, ones, iou_types=("bbox",))["proposals/bbox/AR@10"] == pytest.approx(1.0)


def test_auc_hand_built():
    # Image 1: p1 misses, p2 = g1, p3 covers g2 with IoU 0.62 (hit at 3 of the 10 thresholds).
    # Image 2: its only proposal = its only GT. Counts are per image.
    gt = make_gt({1: [(10, 10, 50, 50, 7), (100, 100, 50, 50, 7)], 2: [(20, 20, 40, 40, 42)]})
    props = [
        det(1, 150, 10, 30, 30, 7, 0.9),
        det(1, 10, 10, 50, 50, 7, 0.8),
        det(1, 100, 100, 50, 31, 7, 0.7),
        det(2, 20, 20, 40, 40, 7, 0.95),
    ]
    ar = {1: 1 / 3, 2: 2 / 3, 3: (2 + 0.3) / 3}  # AR at 1, 2, 3 proposals per image
    p = evaluate_proposals(gt, props, max_dets=(1, 2, 3), iou_types=("bbox", "segm"))
    for t in ("bbox", "segm"):
        for k, v in ar.items():
            assert p[f"proposals/{t}/AR@{k}"] == pytest.approx(v, abs=1e-9)
        assert p[f"proposals/{t}/AUC"] == pytest.approx(sum(ar.values()) / 3, abs=1e-9)
    p = evaluate_proposals(gt, props, iou_types=("segm",))  # default counts 10/100/1000
    assert p["proposals/segm/AR@10"] == pytest.approx(ar[3])
    assert p["proposals/segm/AUC"] == pytest.approx((ar[1] + ar[2] + 998 * ar[3]) / 1000, abs=1e-9)
    assert p["proposals/segm/AUCm"] == pytest.approx(p["proposals/segm/AUC"])  # every GT is medium
    assert math.isnan(p["proposals/segm/AUCs"])


def test_recall_curve_matches_cocoeval_at_every_count():
    rng = np.random.default_rng(0)
    objects, results = {}, []
    for image_id in (1, 2, 3):
        objs = []
        for _ in range(int(rng.integers(1, 6))):
            w, h = (int(v) for v in rng.integers(8, 120, size=2))
            x, y = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
            objs.append((x, y, w, h, 7, int(rng.random() < 0.15)))
        objects[image_id] = objs
        for _ in range(int(rng.integers(5, 25))):  # jittered copies of the GT and random boxes
            x, y, w, h, *_ = objs[int(rng.integers(len(objs)))]
            dx, dy = (int(v) for v in rng.integers(-6, 7, size=2))
            x, y = min(max(x + dx, 0), W - 4), min(max(y + dy, 0), H - 4)
            w, h = max(min(w, W - x), 4), max(min(h, H - y), 4)
            results.append(det(image_id, x, y, w, h, 7, float(rng.random())))
    gt = make_gt(objects)
    counts = list(range(1, 26))
    dt = _load_dt(gt, _results_for(results, "segm", "test"))
    e = _run_cocoeval(gt, dt, "segm", sorted(gt.imgs), use_cats=False, max_dets=counts)
    curve = proposal_recall_curve(e)  # [A, T, 25]
    official = e.eval["recall"][:, 0]  # [T, A, M]
    for a in range(4):
        for m in range(len(counts)):
            if (official[:, a, m] > -1).all():
                np.testing.assert_allclose(curve[a, :, m], official[:, a, m], atol=1e-12)
            else:
                assert np.isnan(curve[a, :, m]).all()
    assert curve[0, 0, -1] > 0.5  # a non-trivial case


# --------------------------------------------------------------------------- results format


def test_predictions_to_coco_results_roundtrip():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 1, 30, 40, generator=g)
    preds = [
        {
            "boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.0, 0.0, 40.0, 30.0], [5.5, 6.5, 7.5, 9.0]]),
            "labels": torch.tensor([1, 2, 1]),
            "scores": torch.tensor([0.9, 0.5, 0.2]),
            "masks": probs,
            "mask_scores": torch.tensor([0.3, 0.6, 0.1]),
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, 30, 40),
        },
        {
            "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]),
            "labels": torch.tensor([2]),
            "scores": torch.tensor([0.7]),
            "masks": torch.ones(1, 1, 30, 40),
        },
    ]
    res = predictions_to_coco_results(preds, [5, 6, 9], {1: 7, 2: 42}, mask_threshold=0.4)
    assert [r["image_id"] for r in res] == [5, 5, 5, 9]
    assert [r["category_id"] for r in res] == [7, 42, 7, 42]
    assert res[0]["bbox"] == pytest.approx([1.0, 2.0, 10.0, 20.0]) and res[2]["bbox"] == pytest.approx(
        [5.5, 6.5, 2.0, 2.5]
    )
    assert [r["score"] for r in res] == pytest.approx([0.9, 0.5, 0.2, 0.7])
    assert [r["segm_score"] for r in res] == pytest.approx([0.3, 0.6, 0.1, 0.7])  # box score when no mask_scores
    for j in range(3):
        assert isinstance(res[j]["segmentation"]["counts"], str)
        np.testing.assert_array_equal(
            rle_to_mask(res[j]["segmentation"]), (probs[j, 0] >= 0.4).numpy().astype(np.uint8)
        )
    json.dumps(res)  # JSON-ready
    # labels used as category ids as they are; no masks -> box results only
    plain = predictions_to_coco_results([{k: v for k, v in preds[0].items() if k != "masks"}], [5], None)
    assert [r["category_id"] for r in plain] == [1, 2, 1] and all("segmentation" not in r for r in plain)
    with pytest.raises(MaskkitError, match="label 2"):
        predictions_to_coco_results(preds[:1], [5], {1: 7})


def test_predictions_evaluate_end_to_end():
    gt = make_gt({1: [(10, 10, 50, 50, 7), (100, 100, 60, 40, 42)]})
    masks = torch.from_numpy(np.stack([rect_mask(10, 10, 50, 50), rect_mask(100, 100, 60, 40)]))[:, None].float()
    pred = {
        "boxes": torch.tensor([[10.0, 10, 60, 60], [100.0, 100, 160, 140]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.8, 0.7]),
        "masks": masks,
    }
    m = evaluate_coco(gt, predictions_to_coco_results([pred], [1], {1: 7, 2: 42}))
    assert m["bbox/AP"] == pytest.approx(1.0) and m["segm/AP"] == pytest.approx(1.0)


def test_check_results_names_the_problem():
    gt = make_gt({1: [(10, 10, 50, 50, 7)]})
    ok = det(1, 10, 10, 50, 50, 7, 0.9)
    check_results([ok], gt)
    check_results([{**ok, "image_id": np.int64(1), "score": np.float32(0.5)}], gt)  # numpy scalars are fine
    cases = [
        ({"a": 1}, "expected a JSON list"),
        ([3], "result 0"),
        ([{**ok, "image_id": 99}], "image_id 99"),
        ([{**ok, "image_id": "1"}], "image_id"),
        ([{**ok, "category_id": 5}], "category_id 5"),
        ([{**ok, "score": float("nan")}], "score"),
        ([{**ok, "bbox": [1, 2, 3]}], "bbox"),
        ([{**ok, "segmentation": [[1, 2, 3, 4, 5, 6]]}], "RLE"),
        ([{**ok, "segmentation": masks_to_rle(np.ones((1, 5, 5)))[0]}], "size"),
    ]
    for bad, msg in cases:
        with pytest.raises(MaskkitError, match=msg):
            check_results(bad, gt, source="preds.json")
    with pytest.raises(MaskkitError, match="no 'segmentation'"):
        evaluate_coco(gt, [{k: v for k, v in ok.items() if k != "segmentation"}], iou_types=("segm",))


def test_write_metrics_and_table(tmp_path):
    metrics = {"segm/AP": 0.25, "bbox/AP": 0.5, "bbox/APs": float("nan"), "bbox/AP-cat": np.float64(0.125)}
    path = write_metrics(metrics, tmp_path / "out")
    text = path.read_text()
    assert json.loads(text) == {"bbox/AP": 0.5, "bbox/AP-cat": 0.125, "bbox/APs": None, "segm/AP": 0.25}
    assert text.index("bbox/AP") < text.index("segm/AP")
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left
    table = format_table(metrics)
    assert "50.00" in table and "25.00" in table and "12.50" in table and " - " in table
    res = [det(1, 1, 2, 3, 4, 7, 0.5)]
    assert json.loads(write_results(res, tmp_path / "r.json").read_text()) == res
    res[0]["score"] = np.float32(0.5)
    assert json.loads(write_results(res, tmp_path / "r.json").read_text())[0]["score"] == 0.5


# --------------------------------------------------------------------------- CLI


@pytest.fixture()
def cli_files(tmp_path):
    gt = make_gt({1: [(10, 10, 50, 50, 7), (100, 100, 50, 50, 7)], 2: [(20, 20, 40, 40, 42)]})
    ann = tmp_path / "instances_val.json"
    ann.write_text(json.dumps(gt.dataset))
    images = tmp_path / "val"
    images.mkdir()
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(gt_as_results(gt)))
    return tmp_path, ann, images, preds


def test_cli_eval_writes_metrics(cli_files, capsys):
    root, ann, images, preds = cli_files
    out = root / "eval"
    assert (
        main(["eval", "--predictions", str(preds), "--ann", str(ann), "--images", str(images), "--out", str(out)]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bbox/AP"] == pytest.approx(1.0) and metrics["segm/AP50"] == pytest.approx(1.0)
    assert "segm/APs" in metrics and metrics["segm/AP-dog"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "AP50" in printed and "100.00" in printed and str(out / "metrics.json") in printed
    # --data ROOT finds instances_val.json + val/; --proposals gives AR/AUC
    assert (
        main(
            [
                "eval",
                "--predictions",
                str(preds),
                "--data",
                str(root),
                "--out",
                str(out),
                "--proposals",
                "--iou-types",
                "segm",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["proposals/segm/AR@100"] == pytest.approx(1.0) and "proposals/segm/AUC" in metrics
    assert not any(k.startswith("proposals/bbox") for k in metrics)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"image_id": 1}', "JSON list"),
        ('[{"image_id": 77, "category_id": 7, "score": 1, "bbox": [0, 0, 1, 1]}]', "image_id 77"),
        ('[{"image_id": 1, "category_id": 3, "score": 1, "bbox": [0, 0, 1, 1]}]', "category_id 3"),
    ],
)
def test_cli_eval_bad_predictions(cli_files, capsys, content, message):
    root, ann, images, preds = cli_files
    preds.write_text(content)
    rc = main(
        ["eval", "--predictions", str(preds), "--ann", str(ann), "--images", str(images), "--out", str(root / "e")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("maskkit: error: ") and str(preds) in err[-1] and message in err[-1]
    assert not (root / "e" / "metrics.json").exists()


def test_cli_eval_weights_needs_a_model_file(cli_files, capsys):
    root, ann, images, _ = cli_files
    missing = root / "nope.safetensors"
    assert main(["eval", "--weights", str(missing), "--ann", str(ann), "--images", str(images)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("maskkit: error: ") and str(missing) in err[-1]
