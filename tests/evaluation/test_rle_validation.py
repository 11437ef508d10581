"""Issue #14 items 2-3: malformed RLEs never reach pycocotools (whose decoder loops forever on
runs that do not sum to h x w, ignoring signals, and reads past a truncated string), in ground
truth and in results, on every path; and ``eval --predictions`` checks the ground truth as the
dataset does. CLI cases run in a subprocess with a timeout, so a hang fails instead of blocking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskkit.data.coco import CocoDataset
from maskkit.errors import DataError, MaskkitError
from maskkit.evaluation.coco import evaluate_coco, load_coco_gt
from maskkit.structures import rle_problem

ROOT = Path(__file__).resolve().parents[2]
H, W = 6, 5


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


GOOD = _rle(np.pad(np.ones((2, 3)), ((1, 3), (1, 1))))
SHORT = {"size": [H, W], "counts": _rle(np.ones((H - 1, W)))["counts"]}  # runs sum to 25, not 30
BAD_RLES = {
    "runs do not sum to h x w": (SHORT, "runs sum to 25 pixels, not 6x5=30"),
    "truncated string": ({"size": [H, W], "counts": "0"}, "ends inside a run|runs sum"),
    "garbage characters": ({"size": [H, W], "counts": "\x01\x02~~~"}, "not an RLE character"),
    "unterminated run": ({"size": [H, W], "counts": "ooo"}, "ends inside a run"),
    "negative run": ({"size": [H, W], "counts": [40, -10]}, "negative run"),
    "uncompressed sum": ({"size": [H, W], "counts": [3, 4]}, "runs sum to 7"),
    "size not integers": ({"size": [H, "5"], "counts": GOOD["counts"]}, "'size' must be"),
}


def test_valid_rles_pass_and_match_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(1, 40, 2)
        r = _rle(rng.random((h, w)) < rng.random())
        assert rle_problem(r, int(h), int(w)) is None
    assert rle_problem(GOOD, H, W) is None


@pytest.mark.parametrize("name", BAD_RLES)
def test_rle_problem_names_the_defect(name):
    rle, msg = BAD_RLES[name]
    problem = rle_problem(rle)
    assert problem is not None and __import__("re").search(msg, problem), problem


def _gt(tmp_path: Path, segm=None, extra_anns=()) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (W, H)).save(tmp_path / "img" / "a.png")
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "segmentation": segm or GOOD,
            "iscrowd": 0,
            "bbox": [1.0, 1.0, 3.0, 2.0],
            "area": 6.0,
        },
        *extra_anns,
    ]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def _result(segm) -> dict:
    return {"image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 3.0, 2.0], "score": 0.9, "segmentation": segm}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [n for n in BAD_RLES if isinstance(BAD_RLES[n][0]["counts"], str)])
def test_bad_result_rle_is_refused_by_the_api(tmp_path, name):
    with pytest.raises(MaskkitError, match="result 0 .*image 1"):
        evaluate_coco(load_coco_gt(_gt(tmp_path)), [_result(BAD_RLES[name][0])], iou_types=["segm"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", BAD_RLES)
def test_bad_ground_truth_rle_is_refused_by_every_loader(tmp_path, name):
    gt = _gt(tmp_path, segm=BAD_RLES[name][0])
    with pytest.raises(DataError, match=r"gt\.json: annotation 1 \(image 1, a\.png\)"):
        load_coco_gt(gt)
    with pytest.raises(DataError, match=r"gt\.json: annotation 1 \(image 1, a\.png\)"):
        CocoDataset(gt, tmp_path / "img")


@pytest.mark.parametrize(
    "bad,msg",
    [
        ({"id": 1, "image_id": 1, "category_id": 1, "segmentation": GOOD}, "duplicate annotation id 1"),
        ({"id": 2, "image_id": 9, "category_id": 1, "segmentation": GOOD}, "unknown image_id 9"),
        ({"id": 2, "image_id": 1, "category_id": 7, "segmentation": GOOD}, "unknown category_id 7"),
        ({"id": 2, "image_id": 1, "category_id": 1}, "'segmentation' must be"),
        ({"id": 2, "image_id": 1, "category_id": 1, "segmentation": {"size": [9, 9], "counts": "19"}}, "differs from"),
    ],
)
def test_eval_predictions_checks_the_ground_truth_as_the_dataset_does(tmp_path, bad, msg):
    gt = _gt(tmp_path, extra_anns=[bad])
    for load in (load_coco_gt, lambda p: CocoDataset(p, tmp_path / "img")):
        with pytest.raises(DataError, match=msg):
            load(gt)


def _cli(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "maskkit", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.timeout(200)
@pytest.mark.parametrize("where", ["results", "ground truth"])
def test_eval_cli_with_a_hanging_rle_exits_2_with_one_line(tmp_path, where):
    gt = _gt(tmp_path, segm=SHORT if where == "ground truth" else None)
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([_result(SHORT if where == "results" else GOOD)]))
    p = _cli(
        "eval",
        "--predictions",
        str(preds),
        "--ann",
        str(gt),
        "--images",
        str(tmp_path / "img"),
        "--out",
        str(tmp_path / "out"),
    )
    errors = [line for line in p.stderr.splitlines() if line.startswith("maskkit: error:")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "runs sum to 25 pixels" in errors[0] and ("preds.json" in errors[0] or "gt.json" in errors[0])


def test_eval_cli_refuses_results_where_one_lacks_a_mask(tmp_path):
    gt = _gt(tmp_path)
    preds = tmp_path / "preds.json"
    no_mask = {k: v for k, v in _result(GOOD).items() if k != "segmentation"}
    preds.write_text(json.dumps([_result(GOOD), no_mask]))
    p = _cli(
        "eval",
        "--predictions",
        str(preds),
        "--ann",
        str(gt),
        "--images",
        str(tmp_path / "img"),
        "--out",
        str(tmp_path / "out"),
    )
    assert p.returncode == 2 and "result 1 has no 'segmentation'" in p.stderr and "Traceback" not in p.stderr
