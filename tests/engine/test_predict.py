"""Predictor, the shared batched inference path, evaluate_model, and the predict / eval
--weights verbs (images, folders, globs, video, an image with no objects)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskkit.checkpoint import save_model
from maskkit.cli import main
from maskkit.engine.inference.evaluate import evaluate_model
from maskkit.engine.inference.files import expand_inputs
from maskkit.engine.inference.predictor import Predictor, infer_batches, to_image_tensor
from maskkit.errors import DataError
from maskkit.models.zoo import build_model, get_config

CAT_IDS = [11, 12, 13, 14, 15, 16]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from maskkit.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("syn"), num_train=0, num_val=3, seed=2, size=64, progress=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random demo CenterMask (6 classes) with a zero score threshold, so it detects things."""
    torch.manual_seed(0)
    cfg = get_config(
        "centermask_lite_demo",
        6,
        [
            "model.fcos.score_thresh=0.0",
            "model.fcos.detections_per_image=5",
            "model.min_size_test=64",
            "model.max_size_test=96",
        ],
    )
    model = build_model(cfg.model)
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_model(path, model, cfg, [f"c{i}" for i in range(6)], CAT_IDS)
    return path


def test_predictor_contract_and_input_forms(weights):
    p = Predictor(weights)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 48, 64, generator=g)
    pred = p(img)
    n = pred["boxes"].shape[0]
    assert n > 0
    assert pred["boxes"].shape == (n, 4) and pred["labels"].dtype == torch.int64
    assert pred["masks"].shape == (n, 1, 48, 64) and pred["scores"].shape == (n,)
    assert set(pred["category_ids"].tolist()) <= set(CAT_IDS)
    assert pred["class_names"][0] == f"c{int(pred['labels'][0]) - 1}"
    u8 = (img * 255).round().to(torch.uint8)
    same = [
        to_image_tensor(u8),
        to_image_tensor(u8.permute(1, 2, 0).numpy()),
        to_image_tensor(Image.fromarray(u8.permute(1, 2, 0).numpy())),
    ]
    for t in same[1:]:
        assert torch.equal(t, same[0])
    with pytest.raises(DataError, match=r"\[3, H, W\]"):
        to_image_tensor(torch.zeros(1, 8, 8))


def test_batched_equals_one_by_one(weights):
    p = Predictor(weights, batch_size=3)
    g = torch.Generator().manual_seed(1)
    imgs = [torch.rand(3, 64, 64, generator=g) for _ in range(3)]
    together = p(imgs)
    alone = [Predictor(weights, batch_size=1)(im) for im in imgs]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-4)


def test_image_with_no_objects(tmp_path, weights):
    """A blank image through the CLI: an empty prediction, results.json == [], an overlay."""
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(blank)
    pred = Predictor(weights, score_thresh=1.01)(blank)  # nothing can pass: the empty path
    assert pred["boxes"].shape == (0, 4) and pred["masks"].shape == (0, 1, 40, 50)
    assert pred["category_ids"].shape == (0,)
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(blank), "--out", str(out), "--score-thr", "1.01"]) == 0
    assert json.loads((out / "results.json").read_text()) == []
    assert (out / "blank_pred.png").is_file()


def test_predict_cli_folder_and_glob(tmp_path, weights, data_root):
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "--weights",
            str(weights),
            str(data_root / "val"),
            str(data_root / "val" / "*1.png"),
            "--out",
            str(out),
            "--score-thr",
            "0.0",
            "--batch",
            "2",
        ]
    )
    assert rc == 0
    index = json.loads((out / "images.json").read_text())
    assert len(index) == 4  # 3 from the folder + 1 from the glob
    results = json.loads((out / "results.json").read_text())
    assert results and {r["category_id"] for r in results} <= set(CAT_IDS)
    assert all("segmentation" in r and r["file_name"].endswith(".png") for r in results)
    assert len(list(out.glob("*_pred.png"))) == 3
    with pytest.raises(DataError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.png")])


class _Oracle(torch.nn.Module):
    """Returns the ground truth of a CocoDataset as predictions (perfect detector)."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset, self.i = dataset, 0

    def forward(self, images):
        preds = []
        for _ in images:
            t = self.dataset.load_target(self.i)
            self.i += 1
            n = len(t["labels"])
            preds.append(
                {
                    "boxes": t["boxes"].as_subclass(torch.Tensor),
                    "labels": t["labels"],
                    "scores": torch.ones(n),
                    "masks": t["masks"],  # the dataset's compact RLE masks, as they are
                }
            )
        return preds


def test_evaluate_model_perfect_predictions_score_one(data_root):
    from maskkit.data.coco import CocoDataset

    val = CocoDataset(data_root / "annotations" / "instances_val.json", data_root / "val")
    metrics = evaluate_model(_Oracle(val), val, batch_size=2, progress=False)
    assert metrics["segm/AP"] == pytest.approx(1.0) and metrics["bbox/AP50"] == pytest.approx(1.0)
    # images left out by max_images are not counted as misses
    metrics = evaluate_model(_Oracle(val), val, batch_size=1, max_images=2, progress=False)
    assert metrics["segm/AP"] == pytest.approx(1.0)


def test_eval_weights_cli(tmp_path, weights, data_root):
    # the model's category ids must be the dataset's: give it the synthetic ids
    from maskkit.checkpoint import load_model
    from maskkit.data.coco import CocoDataset

    val = CocoDataset(data_root / "annotations" / "instances_val.json", data_root / "val")
    model = load_model(weights)
    w = tmp_path / "m.safetensors"
    save_model(w, model, model.info.config, val.class_names, val.cat_ids)
    out = tmp_path / "ev"
    assert main(["eval", "--weights", str(w), "--data", str(data_root), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"bbox/AP", "segm/AP50", "segm/APs"} <= set(metrics)
    assert isinstance(json.loads((out / "results.json").read_text()), list)
    # a model whose category ids are not the dataset's is refused
    assert main(["eval", "--weights", str(weights), "--data", str(data_root), "--out", str(out)]) == 2


def test_infer_batches_restores_training_mode(weights):
    from maskkit.checkpoint import load_model

    model = load_model(weights).train()
    preds = list(infer_batches(model, [torch.rand(3, 32, 32)], batch_size=4))
    assert len(preds) == 1 and model.training


def test_video_round_trip(tmp_path, weights):
    cv2 = pytest.importorskip("cv2")
    src = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    assert w.isOpened()
    g = np.random.default_rng(0)
    for _ in range(3):
        w.write(g.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    w.release()
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(src), "--out", str(out), "--score-thr", "0.0"]) == 0
    cap = cv2.VideoCapture(str(out / "clip_pred.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 3
    index = json.loads((out / "images.json").read_text())
    assert [e["frame"] for e in index] == [0, 1, 2]
    results = json.loads((out / "results.json").read_text())
    assert results and {r["frame"] for r in results} <= {0, 1, 2}


def test_pil_images_use_the_data_layers_mode_handling():
    """A 16-bit PIL image is scaled from its full range (PIL's convert("RGB") would clip)."""
    img = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert img.mode.startswith("I;16")
    out = to_image_tensor(img)
    assert out.shape == (3, 1, 3)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))
