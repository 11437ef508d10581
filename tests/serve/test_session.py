"""The model behind the page, at the API level: analyses, thresholds, SharpMask top-N,
COCO results with the model's category ids, overlays, cache and bundled examples."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from maskkit.errors import MaskkitError
from maskkit.serve.images import decode_image
from maskkit.serve.session import ServeSession, synthetic_examples


def scene(seed: int = 0, h: int = 120, w: int = 160) -> torch.Tensor:
    """A small textured image [3, h, w] in 0..1 with a few bright rectangles."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, h, w, generator=g) * 0.3
    img[:, 20:60, 30:90] = torch.tensor([0.9, 0.2, 0.2])[:, None, None]
    img[:, 70:110, 100:150] = torch.tensor([0.2, 0.8, 0.3])[:, None, None]
    return img


@pytest.fixture(scope="module")
def cm(centermask_file) -> ServeSession:
    return ServeSession(centermask_file, num_examples=0)


@pytest.fixture(scope="module")
def sm(sharpmask_file) -> ServeSession:
    return ServeSession(sharpmask_file, max_proposals=12, num_examples=0)


def test_centermask_info(cm):
    info = cm.info
    assert (info.name, info.system, info.classes, info.class_agnostic) == (
        "centermask_lite_demo",
        "centermask",
        ["person", "dog"],
        False,
    )
    assert info.input_size == "shorter side resized to 128 px, longer side at most 128 px"
    assert info.max_detections == 50 and info.weights == "tiny_centermask.safetensors"


def test_centermask_analysis_threshold_and_results(cm):
    a = cm.analyze(scene(), "scene.png")
    n = a.scores.numel()
    assert 0 < n <= 50 and a.size == (120, 160)
    assert torch.all(a.scores[:-1] >= a.scores[1:])  # best first
    assert a.masks.dtype == torch.bool and a.masks.shape == (n, 1, 120, 160)  # compact BoxMasks
    assert a.masks.to_dense().shape == (n, 1, 120, 160)
    thr = float(a.scores[n // 2])
    keep = cm.selection(a, thr)
    assert keep.numel() == int((a.scores >= thr).sum()) and keep.numel() < n
    results = cm.coco_results(a, score_thr=thr, image_id=7)
    assert len(results) == keep.numel()
    assert {r["category_id"] for r in results} <= {1, 18}  # the model file's ids, not labels 1..2
    assert all(r["image_id"] == 7 and r["score"] >= thr and r["segmentation"]["size"] == [120, 160] for r in results)
    rows = cm.detections(a)
    assert [r["rank"] for r in rows] == list(range(1, n + 1))
    assert (
        rows[0]["class_name"] in ("person", "dog")
        and rows[0]["category_id"] == {"person": 1, "dog": 18}[rows[0]["class_name"]]
    )
    assert rows[0]["area"] == int(a.masks[0].sum())


def test_overlay_png_draws_only_kept_instances(cm):
    a = cm.analyze(scene(1), "scene.png")
    plain = np.asarray(Image.open(io.BytesIO(cm.overlay_png(a, score_thr=1.0))))
    drawn = np.asarray(Image.open(io.BytesIO(cm.overlay_png(a, score_thr=0.0))))
    assert plain.shape == drawn.shape == (120, 160, 3)
    assert np.array_equal(plain, a.image.permute(1, 2, 0).numpy())  # nothing kept: the image itself
    assert (plain != drawn).any()


def test_identical_image_is_answered_from_cache(cm):
    a = cm.analyze(scene(2), "one.png")
    assert cm.analyze(scene(2), "two.png") is a and cm.get(a.id) is a
    assert cm.get("0" * 20) is None


def test_cache_evicts_oldest(centermask_file):
    s = ServeSession(centermask_file, cache_size=1, num_examples=0)
    first = s.analyze(scene(3))
    s.analyze(scene(4))
    assert s.get(first.id) is None


def test_sharpmask_top_n(sm):
    assert sm.info.class_agnostic and sm.info.classes == ["object"] and sm.info.max_detections == 12
    assert sm.info.input_size.startswith("any size: 80 px windows")
    a = sm.analyze(scene(), "scene.png")
    assert a.scores.numel() == 12 and torch.all(a.labels == 1)
    for n in (1, 3, 12, 50):
        results = sm.coco_results(a, score_thr=0.0, top_n=n)
        assert len(results) == min(n, 12)
        assert {r["category_id"] for r in results} == {1}
        assert [r["score"] for r in results] == pytest.approx(a.scores[: min(n, 12)].tolist())
    assert sm.coco_results(a, top_n=0) == []
    one = sm.overlay_png(a, top_n=1)
    assert one != sm.overlay_png(a, top_n=5)


def test_max_proposals_must_be_positive(sharpmask_file):
    with pytest.raises(MaskkitError, match="max_proposals"):
        ServeSession(sharpmask_file, max_proposals=0, num_examples=0)


def test_synthetic_examples_are_pngs_of_shapes():
    ex = synthetic_examples(2, size=96)
    assert [n for n, _ in ex] == ["shapes-1.png", "shapes-2.png"]
    imgs = [decode_image(data, name) for name, data in ex]
    assert all(t.shape == (3, 96, 96) for t in imgs)
    assert not torch.equal(imgs[0], imgs[1])
    assert synthetic_examples(2, size=96) == ex  # deterministic


def test_an_exported_onnx_file_serves_the_same_detections(centermask_file, tmp_path):
    """``maskkit serve --weights model.onnx``: the same page model, run by ONNX Runtime."""
    pytest.importorskip("onnxruntime")
    from maskkit.engine.export import export_file

    onnx = ServeSession(export_file(centermask_file, tmp_path / "m.onnx"), num_examples=0)
    ref = ServeSession(centermask_file, num_examples=0)
    assert onnx.info.name == ref.info.name and onnx.info.classes == ref.info.classes
    a, b = onnx.analyze(scene(3)), ref.analyze(scene(3))
    ra, rb = onnx.coco_results(a, 0.0), ref.coco_results(b, 0.0)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert x["category_id"] == y["category_id"] and abs(x["score"] - y["score"]) < 1e-4
