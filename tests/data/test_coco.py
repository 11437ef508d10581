"""COCO-format dataset: real subset, hand-made jsons (every segmentation kind, crowd, empty
images, non-contiguous ids), bad input errors, image modes, data resolution."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms import v2

from maskkit.cli.common import add_data_arguments, dataset_from_args
from maskkit.data.coco import (
    CocoDataset,
    collate,
    load_image,
    resolve_data,
)
from maskkit.errors import DataError

H, W = 8, 10  # hand-made images are 8 high, 10 wide


# --------------------------------------------------------------------------- helpers


def _png(path: Path, h: int = H, w: int = W, value: tuple[int, int, int] = (10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), value).save(path)


def _block_mask(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE by hand: column-major runs, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _write(root: Path, images: list, annotations: list, categories: list, name: str = "instances.json") -> Path:
    ann_file = root / name
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann_file


def _img(i: int, h: int = H, w: int = W) -> dict:
    return {"id": i, "file_name": f"{i}.png", "height": h, "width": w}


def _ann(aid: int, image_id: int, cat: int, segm, bbox, iscrowd: int = 0) -> dict:
    return {
        "id": aid,
        "image_id": image_id,
        "category_id": cat,
        "segmentation": segm,
        "bbox": bbox,
        "area": float(bbox[2] * bbox[3]),
        "iscrowd": iscrowd,
    }


CATS = [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}]


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """4 images: polygon + uncompressed RLE + compressed RLE; crowd only; nothing; one of each."""
    img_dir = tmp_path / "imgs"
    for i in (1, 2, 3, 4):
        _png(img_dir / f"{i}.png")
    anns = [
        # polygon square x 1..5, y 1..4 (as COCO polygons trace pixel borders)
        _ann(10, 1, 3, [[1, 1, 5, 1, 5, 4, 1, 4]], [1, 1, 4, 3]),
        _ann(11, 1, 17, _uncompressed_rle(_block_mask(2, 6, 6, 9)), [6, 2, 3, 4]),
        _ann(12, 1, 90, _compressed_rle(_block_mask(5, 8, 0, 3)), [0, 5, 3, 3]),
        _ann(20, 2, 3, _uncompressed_rle(_block_mask(0, 8, 0, 10)), [0, 0, 10, 8], iscrowd=1),
        _ann(40, 4, 17, [[0, 0, 4, 0, 4, 4, 0, 4]], [0, 0, 4, 4]),
        _ann(41, 4, 3, _compressed_rle(_block_mask(4, 8, 5, 10)), [5, 4, 5, 4], iscrowd=1),
    ]
    ann_file = _write(tmp_path, [_img(i) for i in (1, 2, 3, 4)], anns, CATS)
    return ann_file, img_dir


# --------------------------------------------------------------------------- real COCO subset


@pytest.mark.parametrize("split", ["val", "train"])
def test_coco_tiny_loads_with_contiguous_labels(coco_tiny: Path, split: str):
    ds = CocoDataset(*resolve_data(coco_tiny, split))
    assert len(ds) == len(ds.coco.imgs) > 0
    assert ds.num_classes == 80 and len(ds.class_names) == 80
    assert sorted(ds.label_to_cat_id) == list(range(1, 81))
    assert ds.cat_ids == sorted(ds.cat_ids) and ds.cat_ids[0] == 1 and ds.cat_ids[-1] == 90
    assert len(set(ds.cat_ids)) == 80 and set(ds.cat_ids) != set(range(1, 81))  # COCO's ids have gaps
    assert ds.class_names[0] == "person" and ds.class_names[-1] == "toothbrush"
    for label, cid in ds.label_to_cat_id.items():
        assert ds.cat_id_to_label[cid] == label
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32 and image.shape[0] == 3
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    ann_cats = sorted(a["category_id"] for a in ds.coco.imgToAnns[ds.image_ids[0]])
    assert sorted(ds.label_to_cat_id[int(lab)] for lab in target["labels"]) == ann_cats


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own, under numpy 2
def test_coco_tiny_crowd_rle_decodes_to_image_size(coco_tiny: Path):
    ds = CocoDataset(*resolve_data(coco_tiny, "val"))
    idx = next(k for k, i in enumerate(ds.image_ids) if any(a["iscrowd"] for a in ds.coco.imgToAnns[i]))
    crowd_ann = next(a for a in ds.coco.imgToAnns[ds.image_ids[idx]] if a["iscrowd"])
    assert isinstance(crowd_ann["segmentation"], dict)  # RLE
    image, target = ds[idx]
    h, w = image.shape[-2:]
    assert target["orig_size"] == (h, w)
    masks = target["masks"].to_dense()  # RLE masks, made dense here
    assert masks.shape[1:] == (h, w) and masks.dtype == torch.uint8
    crowd = target["iscrowd"] == 1
    assert crowd.any() and (~crowd).any()
    k = int(torch.nonzero(crowd)[0])
    expected = mask_utils.decode(mask_utils.frPyObjects(crowd_ann["segmentation"], h, w))
    assert torch.equal(masks[k], torch.from_numpy(expected))


def test_coco_tiny_flip_moves_masks_with_boxes(coco_tiny: Path):
    ds = CocoDataset(*resolve_data(coco_tiny, "val"), transforms=v2.RandomHorizontalFlip(p=1.0))
    plain = CocoDataset(*resolve_data(coco_tiny, "val"))
    (img0, t0), (img1, t1) = plain[0], ds[0]
    w = img0.shape[-1]
    assert torch.equal(img1, img0.flip(-1))
    checked = 0
    for k in range(len(t0["labels"])):
        m0, m1 = t0["masks"].to_dense()[k].float(), t1["masks"].to_dense()[k].float()
        if m0.sum() < 20:
            continue
        xs = torch.arange(w, dtype=torch.float32) + 0.5
        cx0 = float((m0.sum(0) * xs).sum() / m0.sum())
        cx1 = float((m1.sum(0) * xs).sum() / m1.sum())
        assert abs(cx1 - (w - cx0)) < 1e-3  # the mask mirrored ...
        b0, b1 = t0["boxes"][k], t1["boxes"][k]
        assert torch.allclose(b1[[0, 2]], w - b0[[2, 0]], atol=1e-4)  # ... and the box with it
        assert float(b1[0]) - 1 <= cx1 <= float(b1[2]) + 1
        checked += 1
    assert checked >= 1


# --------------------------------------------------------------------------- hand-made jsons


def test_every_segmentation_kind_decodes(tiny):
    ds = CocoDataset(*tiny)
    assert ds.image_ids == [1, 2, 3, 4]
    image, t = ds[0]
    assert image.shape == (3, H, W) and torch.allclose(image[:, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    assert t["image_id"] == 1 and t["orig_size"] == (H, W)
    assert t["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY and t["boxes"].canvas_size == (H, W)
    assert torch.equal(t["boxes"], torch.tensor([[1.0, 1, 5, 4], [6, 2, 9, 6], [0, 5, 3, 8]]))
    # uncompressed and compressed RLE: exact
    masks = t["masks"].to_dense()
    assert torch.equal(masks[1], torch.from_numpy(_block_mask(2, 6, 6, 9)))
    assert torch.equal(masks[2], torch.from_numpy(_block_mask(5, 8, 0, 3)))
    # polygon: inside the box, about its area (pycocotools rasterises the outline)
    poly = masks[0]
    ys, xs = torch.nonzero(poly, as_tuple=True)
    assert 9 <= int(poly.sum()) <= 20 and xs.min() >= 1 and xs.max() <= 5 and ys.min() >= 1 and ys.max() <= 4
    assert t["iscrowd"].tolist() == [0, 0, 0] and t["area"].dtype == torch.float32


def test_noncontiguous_ids_map_to_contiguous_labels(tiny):
    ds = CocoDataset(*tiny)
    assert ds.cat_ids == [3, 17, 90] and ds.class_names == ["car", "cat", "toothbrush"]
    assert ds.label_to_cat_id == {1: 3, 2: 17, 3: 90} and ds.cat_id_to_label == {3: 1, 17: 2, 90: 3}
    assert ds[0][1]["labels"].tolist() == [1, 2, 3]


def test_crowd_kept_as_ignore_region_and_empty_image(tiny):
    ds = CocoDataset(*tiny)
    _, crowd = ds[1]
    assert crowd["iscrowd"].tolist() == [1] and crowd["masks"].to_dense().sum() == H * W
    _, mixed = ds[3]
    assert mixed["iscrowd"].tolist() == [0, 1]
    _, empty = ds[2]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].to_dense().shape == (0, H, W)
    assert empty["labels"].shape == (0,) and empty["labels"].dtype == torch.int64
    assert empty["iscrowd"].shape == (0,) and empty["area"].shape == (0,)
    assert CocoDataset(*tiny, skip_crowd_only=True).image_ids == [1, 3, 4]
    assert CocoDataset(*tiny, remove_images_without_annotations=True).image_ids == [1, 2, 4]


def test_collate_in_a_dataloader(tiny):
    loader = torch.utils.data.DataLoader(CocoDataset(*tiny), batch_size=3, collate_fn=collate)
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 3
    assert [t["image_id"] for t in targets] == [1, 2, 3]


def test_degenerate_annotations_dropped_with_one_counted_warning(tmp_path):
    _png(tmp_path / "1.png")
    anns = [
        _ann(1, 1, 3, [[1, 1, 5, 1, 5, 4, 1, 4]], [1, 1, 4, 3]),  # fine
        _ann(2, 1, 3, [[1, 1, 5, 1]], [1, 1, 4, 3]),  # polygon with 2 points
        _ann(3, 1, 3, [[1, 1, 5, 1, 5, 4, 1, 4]], [1, 1, 0, 3]),  # zero-width box
        _ann(4, 1, 3, [[1, 1, 5, 1, 5, 4, 1, 4]], [20, 30, 4, 3]),  # box outside the image
        _ann(5, 1, 3, [[1, 1, 5, 1, 5, 4, 1, 4], [0, 0, 1]], [1, 1, 4, 3]),  # one bad part: kept
    ]
    ann_file = _write(tmp_path, [_img(1)], anns, CATS, name="instances_train.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDataset(ann_file, tmp_path)
    msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1
    assert "instances_train.json: dropped 3 degenerate" in msgs[0] and "ids 2, 3, 4" in msgs[0]
    assert "fewer than 3 points" in msgs[0] and "zero area" in msgs[0] and "outside the image" in msgs[0]
    assert ds.num_dropped == 3 and sorted(ds.coco.anns) == [1, 5]
    assert ds.coco.anns[5]["segmentation"] == [[1, 1, 5, 1, 5, 4, 1, 4]]
    assert len(ds[0][1]["labels"]) == 2


def _error(ann_file: Path, img_dir: Path) -> str:
    with pytest.raises(DataError) as e:
        CocoDataset(ann_file, img_dir)
    return str(e.value)


def test_not_coco_instances_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    msg = _error(bad, tmp_path)
    assert str(bad) in msg and "not a JSON file" in msg
    bad.write_text("[1, 2]")
    assert "not COCO instances JSON" in _error(bad, tmp_path)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    msg = _error(bad, tmp_path)
    assert str(bad) in msg and "categories" in msg and "not COCO instances JSON" in msg
    assert "annotation file not found" in _error(tmp_path / "nope.json", tmp_path)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("image_id", 99, "annotation 7 refers to unknown image_id 99"),
        ("category_id", 5, "annotation 7 refers to unknown category_id 5"),
    ],
)
def test_annotation_pointing_at_unknown_image_or_category(tmp_path, field, value, expected):
    _png(tmp_path / "1.png")
    ann = _ann(7, 1, 3, [[1, 1, 5, 1, 5, 4, 1, 4]], [1, 1, 4, 3])
    ann[field] = value
    ann_file = _write(tmp_path, [_img(1)], [ann], CATS)
    msg = _error(ann_file, tmp_path)
    assert str(ann_file) in msg and expected in msg


def test_rle_of_the_wrong_size(tmp_path):
    _png(tmp_path / "1.png")
    ann = _ann(8, 1, 3, _compressed_rle(_block_mask(0, 4, 0, 4, h=6, w=10)), [0, 0, 4, 4])
    ann_file = _write(tmp_path, [_img(1)], [ann], CATS)
    msg = _error(ann_file, tmp_path)
    assert str(ann_file) in msg and "annotation 8" in msg and "6x10" in msg and "8x10" in msg


def test_missing_and_unreadable_images(tmp_path):
    ann_file = _write(tmp_path, [_img(1)], [], CATS)
    msg = _error(ann_file, tmp_path)
    assert "1.png" in msg and "not found" in msg
    (tmp_path / "1.png").write_bytes(b"this is not a png")
    ds = CocoDataset(ann_file, tmp_path)
    with pytest.raises(DataError, match=r"1\.png: cannot read image"):
        ds[0]
    _png(tmp_path / "1.png", h=5, w=10)  # size differs from the json's 8x10
    with pytest.raises(DataError, match=r"1\.png: image size 5x10 differs .* 8x10"):
        ds[0]


# --------------------------------------------------------------------------- image modes


def test_load_image_modes(tmp_path):
    gray = np.array([[0, 128, 255]], dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    x = load_image(tmp_path / "gray.png")
    assert x.shape == (3, 1, 3) and x.dtype == torch.float32
    assert torch.allclose(x, torch.from_numpy(gray / 255.0).float().expand(3, 1, 3))

    rgba = np.array([[[255, 0, 0, 0], [0, 255, 0, 128], [0, 0, 255, 255]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "rgba.png")  # alpha dropped: colours kept as stored
    assert x.shape == (3, 1, 3) and torch.equal(x[:, 0, :], torch.eye(3))

    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 255, 128, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "pal.png")
    x = load_image(tmp_path / "pal.png")
    assert torch.allclose(x[:, 0, 1], torch.tensor([255, 128, 0]) / 255.0) and torch.equal(x[:, 0, 0], torch.zeros(3))

    deep = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    x = load_image(tmp_path / "deep.png")
    assert torch.allclose(x[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0])) and torch.equal(x[0], x[2])


def test_load_image_applies_exif_orientation(tmp_path):
    raw = np.zeros((2, 3, 3), dtype=np.uint8)  # stored 2 high x 3 wide
    raw[0, 0] = (255, 0, 0)  # red at stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(raw).save(tmp_path / "rot.png", exif=exif)
    x = load_image(tmp_path / "rot.png")
    assert x.shape == (3, 3, 2)  # upright: 3 high x 2 wide
    assert torch.equal(x[:, 0, 1], torch.tensor([1.0, 0, 0]))  # top-left moved to top-right
    assert float(x.sum()) == 1.0


def test_load_image_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.png: image file not found"):
        load_image(tmp_path / "nope.png")


# --------------------------------------------------------------------------- resolve_data


def _layout(root: Path, ann_name: str, folder: str) -> tuple[Path, Path]:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann = _write(root / "annotations", [_img(1)], [], CATS, name=ann_name)
    _png(root / folder / "1.png")
    return ann, root / folder


def test_resolve_data_coco2017_and_synthetic_layouts(tmp_path):
    coco = tmp_path / "coco"
    ann_val, img_val = _layout(coco, "instances_val2017.json", "val2017")
    ann_tr, img_tr = _layout(coco, "instances_train2017.json", "train2017")
    assert resolve_data(coco, "val") == (ann_val, img_val)
    assert resolve_data(str(coco), "train") == (ann_tr, img_tr)
    assert resolve_data(coco, "val2017") == (ann_val, img_val)
    synth = tmp_path / "synth"
    ann_s, img_s = _layout(synth, "instances_val.json", "val")
    assert resolve_data(synth, "val") == (ann_s, img_s)
    assert resolve_data(None, "val", ann=ann_s, images=img_s) == (ann_s, img_s)
    assert resolve_data(coco, "val", ann=ann_s, images=img_s) == (ann_s, img_s)  # explicit wins


def test_resolve_data_errors(tmp_path):
    with pytest.raises(DataError, match="no dataset given"):
        resolve_data(None, "val")
    with pytest.raises(DataError, match="dataset folder not found"):
        resolve_data(tmp_path / "absent", "val")
    with pytest.raises(DataError) as e:
        resolve_data(tmp_path, "val")
    assert "no annotations for split 'val'" in str(e.value)
    assert str(tmp_path / "annotations" / "instances_val*.json") in str(e.value)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text("{}")
    with pytest.raises(DataError) as e:
        resolve_data(tmp_path, "val")
    assert "no image folder" in str(e.value) and str(tmp_path / "val") in str(e.value)
    with pytest.raises(DataError, match="must be given together"):
        resolve_data(None, "val", ann=tmp_path / "annotations" / "instances_val.json")
    with pytest.raises(DataError, match="image folder not found"):
        resolve_data(None, "val", ann=tmp_path / "annotations" / "instances_val.json", images=tmp_path / "nope")
    (tmp_path / "annotations" / "instances_train2014.json").write_text("{}")
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    with pytest.raises(DataError, match="several annotation files match split 'train'"):
        resolve_data(tmp_path, "train")


def test_data_arguments_build_the_dataset(tmp_path):
    ann, img = _layout(tmp_path, "instances_train.json", "train")
    parser = argparse.ArgumentParser()
    add_data_arguments(parser, split_default="train")
    ds = dataset_from_args(parser.parse_args(["--data", str(tmp_path)]))
    assert ds.ann_file == ann and ds.image_dir == img and len(ds) == 1
    ds = dataset_from_args(parser.parse_args(["--ann", str(ann), "--images", str(img)]))
    assert ds.ann_file == ann
    assert parser.parse_args([]).split == "train"


def test_dataset_uses_the_upright_exif_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored W x H swapped; upright it is W=10 wide, H=8 high as the json says
    Image.new("RGB", (H, W), (0, 0, 255)).save(tmp_path / "1.png", exif=exif)
    ann_file = _write(tmp_path, [_img(1)], [_ann(1, 1, 3, [[1, 1, 5, 1, 5, 4, 1, 4]], [1, 1, 4, 3])], CATS)
    image, target = CocoDataset(ann_file, tmp_path)[0]
    assert image.shape == (3, H, W) and target["masks"].to_dense().shape == (1, H, W)
    assert torch.equal(image[:, 0, 0], torch.tensor([0.0, 0, 1]))
    ann_file = _write(tmp_path, [_img(1, h=W, w=H)], [], CATS)  # json with the stored (raw) size
    with pytest.raises(DataError, match="EXIF orientation"):
        CocoDataset(ann_file, tmp_path)[0]
