"""The synthetic shapes dataset: exact masks, COCO validity, sizes, determinism, the CLI verb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from maskkit.cli import main
from maskkit.data.synthetic import CATEGORIES, _render, generate, image_rng, render_image
from maskkit.errors import MaskkitError

SMALL, LARGE = 32**2, 96**2  # COCO area thresholds


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "ds", num_train=8, num_val=4, seed=3, size=128, progress=False)


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, list[dict], np.ndarray]]:
    """40 scenes at the default 320 px (image, instances, pixel owner map), drawn as the train
    split of seed 0 draws them."""
    return [_render(image_rng(0, "train", i), 320) for i in range(40)]


def test_layout_and_coco_fields(dataset: Path):
    for split, num in (("train", 8), ("val", 4)):
        ann = json.loads((dataset / "annotations" / f"instances_{split}.json").read_text())
        assert set(ann) >= {"info", "licenses", "images", "annotations", "categories"}
        assert [c["id"] for c in ann["categories"]] == list(range(1, len(CATEGORIES) + 1))
        assert [c["name"] for c in ann["categories"]] == CATEGORIES
        assert all(c["supercategory"] == "shape" for c in ann["categories"])
        assert [im["id"] for im in ann["images"]] == list(range(1, num + 1))
        assert [a["id"] for a in ann["annotations"]] == list(range(1, len(ann["annotations"]) + 1))
        for im in ann["images"]:
            path = dataset / split / im["file_name"]
            assert path.is_file()
            with Image.open(path) as pil:
                assert (
                    pil.format == "PNG" and pil.mode == "RGB" and pil.size == (im["width"], im["height"]) == (128, 128)
                )
        for a in ann["annotations"]:
            assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= len(CATEGORIES)
            assert isinstance(a["segmentation"]["counts"], str)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2
def test_written_masks_and_images_equal_rendered(dataset: Path):
    """Masks decoded by pycocotools from the JSON are exactly the rendered ones (same rng
    seed), images are the rendered pixels (PNG is lossless), bbox/area match the masks."""
    for split in ("train", "val"):
        coco = COCO(str(dataset / "annotations" / f"instances_{split}.json"))
        for image_id in coco.getImgIds():
            image, instances = render_image(image_rng(3, split, image_id - 1), 128)
            info = coco.loadImgs(image_id)[0]
            np.testing.assert_array_equal(np.asarray(Image.open(dataset / split / info["file_name"])), image)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert len(anns) == len(instances) >= 1
            for a, inst in zip(anns, instances):
                decoded = coco.annToMask(a)
                np.testing.assert_array_equal(decoded.astype(bool), inst["mask"])
                assert a["category_id"] == inst["category"] + 1
                assert a["area"] == int(decoded.sum()) > 0
                ys, xs = np.nonzero(decoded)
                assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert list(mask_utils.toBbox(a["segmentation"])) == a["bbox"]


def test_size_distribution_covers_coco_small_medium_large(scenes):
    areas = np.array([inst["mask"].sum() for _, insts, _ in scenes for inst in insts])
    small, large = (areas < SMALL).mean(), (areas > LARGE).mean()
    medium = 1 - small - large
    # At 320 px roughly 40 % small / 45 % medium / 10-15 % large (COCO: 41 / 34 / 24).
    assert small >= 0.2 and medium >= 0.2 and large >= 0.05, (small, medium, large)


def test_scene_rules(scenes):
    counts = [len(insts) for _, insts, _ in scenes]
    assert len(CATEGORIES) >= 6
    assert min(counts) >= 1 and max(counts) <= 15 and len(set(counts)) >= 5
    cats = {inst["category"] for _, insts, _ in scenes for inst in insts}
    assert cats == set(range(len(CATEGORIES)))
    touching = occluded = 0
    for image, insts, owner in scenes:
        assert image.dtype == np.uint8 and image.shape == (320, 320, 3)
        union = np.zeros((320, 320), dtype=int)
        for k, inst in enumerate(insts):
            m = inst["mask"]
            assert m.dtype == bool and m.shape == (320, 320)
            # the visible mask is exactly the pixels this instance's paint still shows
            np.testing.assert_array_equal(m, owner == k + 1)
            union += m
            # heavily occluded / mostly off-image instances are dropped
            assert m.sum() >= 0.4 * inst["full_area"] and m.sum() >= 24
            touching += bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
            occluded += inst["occluded"]
            if inst["occluded"] or inst["truncated"]:
                assert m.sum() < inst["full_area"]
            else:
                assert m.sum() == inst["full_area"]
        assert union.max() <= 1, "visible (modal) masks of one image must not overlap"
    assert touching >= 10 and occluded >= 10


def test_render_image_is_render_without_owner_map():
    image, insts = render_image(image_rng(1, "val", 7), 96)
    image2, insts2, _ = _render(image_rng(1, "val", 7), 96)
    np.testing.assert_array_equal(image, image2)
    assert len(insts) == len(insts2) and all((a["mask"] == b["mask"]).all() for a, b in zip(insts, insts2))


def test_deterministic_and_split_independent(tmp_path: Path):
    a = generate(tmp_path / "a", num_train=2, num_val=2, seed=5, size=96, progress=False)
    b = generate(tmp_path / "b", num_train=3, num_val=2, seed=5, size=96, progress=False)
    c = generate(tmp_path / "c", num_train=2, num_val=2, seed=6, size=96, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 + 2 + 2
    for rel in files:
        if rel.name != "instances_train.json":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel  # same seed: same bytes
    # the train split with one more image starts with the same two images and annotations
    ta, tb = (json.loads((d / "annotations/instances_train.json").read_text()) for d in (a, b))
    assert tb["images"][:2] == ta["images"] and tb["annotations"][: len(ta["annotations"])] == ta["annotations"]
    for rel in files:
        assert (a / rel).read_bytes() != (c / rel).read_bytes(), rel  # another seed differs


def test_scene_knobs_max_instances_and_clutter(monkeypatch):
    """max_instances caps the count (and makes objects larger); clutter=False paints no
    unannotated distractor shapes or lines."""
    for i in range(12):
        _, few, _ = _render(image_rng(0, "train", i), 128, max_instances=2)
        assert 1 <= len(few) <= 2
    areas = {k: [] for k in (2, 15)}
    for k in areas:
        for i in range(30):
            areas[k] += [int(inst["mask"].sum()) for inst in _render(image_rng(0, "train", i), 128, max_instances=k)[1]]
    assert np.median(areas[2]) > 1.5 * np.median(areas[15])
    # min_area raises the smallest object drawn (visible areas can still be cut by occlusion/border)
    big = [
        int(inst["mask"].sum()) for i in range(30) for inst in _render(image_rng(0, "train", i), 128, min_area=1500)[1]
    ]
    assert np.percentile(big, 25) > 1000 > np.percentile(areas[15], 25)
    import maskkit.data.synthetic as synth

    painted = []  # the label of every painted shape: 0 = unannotated clutter
    real_paint = synth._paint
    monkeypatch.setattr(
        synth,
        "_paint",
        lambda canvas, owner, label, *a, **k: (painted.append(label), real_paint(canvas, owner, label, *a, **k))[1],
    )
    for i in range(6):
        _render(image_rng(4, "val", i), 128)
    assert painted.count(0) >= 12  # 2..8 distractors per image
    painted.clear()
    for i in range(6):
        insts = _render(image_rng(4, "val", i), 128, clutter=False)[1]
        assert all(inst["mask"].any() for inst in insts)
    assert painted and 0 not in painted


def test_bad_arguments_raise_one_clear_error(tmp_path: Path):
    for bad in (0, 16):
        with pytest.raises(MaskkitError, match="max_instances"):
            generate(tmp_path / "x", 1, 1, size=64, max_instances=bad, progress=False)
    with pytest.raises(MaskkitError, match="min_area"):
        generate(tmp_path / "x", 1, 1, size=64, min_area=64 * 64, progress=False)
    with pytest.raises(MaskkitError, match="size"):
        generate(tmp_path / "x", 1, 1, size=16, progress=False)
    with pytest.raises(MaskkitError, match=">= 0"):
        generate(tmp_path / "x", -1, 1, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(MaskkitError, match="not a directory"):
        generate(tmp_path / "file", 1, 1, size=64, progress=False)
    with pytest.raises(MaskkitError, match="cannot write"):  # a file where a folder must go
        generate(tmp_path / "file" / "sub", 1, 1, size=64, progress=False)


def test_cli_writes_layout(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--train",
                "2",
                "--val",
                "1",
                "--size",
                "96",
                "--seed",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "train: 2 images" in printed and "val: 1 images" in printed
    for split, num in (("train", 2), ("val", 1)):
        ann = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        assert len(ann["images"]) == num
        assert all((out / split / im["file_name"]).is_file() for im in ann["images"])
    assert main(["data", "synth", "--out", str(out), "--size", "8", "--quiet"]) == 2
    assert "at least 64" in capsys.readouterr().err


def test_loads_through_coco_dataset(dataset: Path):
    """The data layer resolves ``--data DIR --split val`` to the layout and reads it."""
    from maskkit.data.coco import CocoDataset, resolve_data

    for split, num in (("train", 8), ("val", 4)):
        ann_file, image_dir = resolve_data(dataset, split)
        assert ann_file == dataset / "annotations" / f"instances_{split}.json" and image_dir == dataset / split
        ds = CocoDataset(ann_file, image_dir)
        assert len(ds) == num and ds.class_names == CATEGORIES and ds.num_dropped == 0
        image, target = ds[1]
        rendered, instances = render_image(image_rng(3, split, 1), 128)
        assert image.shape == (3, 128, 128)
        np.testing.assert_allclose(image.numpy().transpose(1, 2, 0) * 255, rendered, atol=1e-3)
        np.testing.assert_array_equal(
            target["masks"].to_dense().numpy().astype(bool), np.stack([i["mask"] for i in instances])
        )
        assert target["labels"].tolist() == [i["category"] + 1 for i in instances]
        for box, inst in zip(target["boxes"].tolist(), instances):  # xyxy, exclusive right/bottom
            ys, xs = np.nonzero(inst["mask"])
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_cli_named_scenes_and_overrides(tmp_path: Path, capsys):
    """`--scenes demo` writes the demo's easier scenes (128 px, <= 3 instances, no clutter); single
    options override a named scene's setting."""
    from maskkit.data.synthetic import SCENES

    out = tmp_path / "demo"
    assert main(["data", "synth", "--out", str(out), "--scenes", "demo", "--train", "6", "--val", "1", "--quiet"]) == 0
    ann = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert {(im["width"], im["height"]) for im in ann["images"]} == {(128, 128)}
    per_image = [sum(a["image_id"] == im["id"] for a in ann["annotations"]) for im in ann["images"]]
    assert max(per_image) <= SCENES["demo"]["max_instances"] and min(per_image) >= 1
    assert "128x128 px" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--scenes",
                "demo",
                "--size",
                "96",
                "--train",
                "1",
                "--val",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    ann = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert {(im["width"], im["height"]) for im in ann["images"]} == {(96, 96)}
