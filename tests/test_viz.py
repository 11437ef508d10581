"""Overlays change the pixels of the instances and nothing else; curves and ``data show``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskkit.cli import main
from maskkit.errors import DataError, MaskkitError
from maskkit.structures import masks_to_rle
from maskkit.viz import CROWD_COLOR, draw_instances, instance_colors, plot_metrics, save_image


def _image(h=64, w=80) -> torch.Tensor:
    return torch.full((3, h, w), 0.5)


def test_masks_colour_inside_only():
    image = _image()
    masks = torch.zeros(2, 1, 64, 80)
    masks[0, 0, 10:30, 10:30] = 0.9  # probabilities: >= 0.5 is inside
    masks[0, 0, 30:40, 10:30] = 0.3  # below the threshold: not part of the mask
    masks[1, 0, 40:60, 50:75] = 1.0
    # Boxes far from the masks' interiors (lines and labels are drawn at the boxes).
    inst = {
        "boxes": torch.tensor([[0.0, 0, 5, 5], [75.0, 0, 79, 5]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.8]),
        "masks": masks,
    }
    out = draw_instances(image, inst, class_names=["a", "b"])
    base = (image * 255).round().to(torch.uint8)
    assert out.dtype == torch.uint8 and out.shape == (3, 64, 80)
    changed = (out != base).any(0)  # [H, W]
    assert changed[12:28, 12:28].all() and changed[42:58, 52:73].all()
    assert not changed[32:40, 10:30].any()  # under the threshold
    assert not changed[15:40, 35:48].any() and not changed[62:, :45].any()  # labels sit at the top
    # Distinct colours per instance.
    assert not torch.equal(out[:, 20, 20], out[:, 50, 60])


def test_boxes_scores_and_threshold():
    image = _image()
    inst = {
        "boxes": torch.tensor([[10.0, 10, 50, 50], [20.0, 20, 60, 60]]),
        "labels": torch.tensor([1, 1]),
        "scores": torch.tensor([0.9, 0.1]),
    }
    base = draw_instances(image, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    assert torch.equal(base, (image * 255).round().to(torch.uint8))  # no instances: unchanged
    out = draw_instances(image, inst, score_thresh=0.5)
    changed = (out != base).any(0)
    assert changed[30, 10] and changed[50, 30]  # left / bottom edge of the kept box
    assert not changed[60, 40] and not changed[40, 60]  # bottom / right edge of the dropped box
    assert torch.equal(draw_instances(image, inst, score_thresh=0.95), base)
    both = (draw_instances(image, inst) != base).any(0)
    assert both[60, 40] and both[40, 60]


def test_crowd_drawn_grey_and_uint8_input():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    masks = torch.zeros(1, 40, 40, dtype=torch.uint8)
    masks[0, 10:30, 10:30] = 1
    out = draw_instances(
        image,
        {
            "boxes": torch.tensor([[0.0, 0, 39, 39]]),
            "labels": torch.tensor([3]),
            "masks": masks,
            "iscrowd": torch.tensor([1]),
        },
    )
    r, g, b = out[:, 20, 20].tolist()
    assert r == g == b and r > 0  # grey
    assert r == round(CROWD_COLOR[0] * 0.35)


def test_bad_shapes_raise():
    with pytest.raises(MaskkitError, match="masks"):
        draw_instances(_image(), {"boxes": torch.zeros(1, 4), "labels": torch.ones(1), "masks": torch.zeros(1, 10, 10)})
    with pytest.raises(MaskkitError, match="image"):
        draw_instances(torch.zeros(64, 80), {"boxes": torch.zeros(0, 4)})


def test_instance_colors_distinct():
    colors = instance_colors(30)
    assert len(set(colors)) == 30


def test_save_image_roundtrip(tmp_path):
    img = torch.randint(0, 256, (3, 12, 17), dtype=torch.uint8)
    path = save_image(img, tmp_path / "a" / "b.png")
    back = np.asarray(Image.open(path))
    np.testing.assert_array_equal(back, img.permute(1, 2, 0).numpy())


def test_plot_metrics(tmp_path):
    lines = [
        {"iter": i, "loss": 2.0 / (i + 1), "loss_mask": 1.0 / (i + 1), "lr": 0.01 * min(1, i / 5)} for i in range(1, 30)
    ]
    lines += [
        {"iter": 10, "bbox/AP": 0.1, "segm/AP": 0.08, "segm/AP-cat": 0.2},
        {"iter": 29, "bbox/AP": 0.2, "segm/AP": 0.15},
    ]
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = plot_metrics(jsonl, tmp_path / "curves.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (1500, 400)  # three panels
    only_loss = tmp_path / "loss.jsonl"
    only_loss.write_text(json.dumps({"iter": 1, "loss": 1.0}) + "\n" + json.dumps({"iter": 2, "loss": 0.5}) + "\n")
    with Image.open(plot_metrics(only_loss, tmp_path / "l.png")) as im:
        assert im.size == (500, 400)
    # the training loop's layout: "step", "loss/<part>", "eval/<type>/<figure>"
    train = tmp_path / "train.jsonl"
    train.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {"step": 1, "lr": 0.1, "loss": 2.0, "loss/cls": 1.0, "time": 3.0},
                {"step": 2, "eval/segm/AP": 0.1, "eval/proposals/segm/AR@100": 0.2},
            ]
        )
    )
    with Image.open(plot_metrics(train, tmp_path / "t.png")) as im:
        assert im.size == (1500, 400)
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text(json.dumps({"step": 1, "loss": float("nan"), "time": 1.0}) + "\n")
    with Image.open(plot_metrics(nothing, tmp_path / "n.png")) as im:
        assert im.size == (500, 400)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"iter": 1, "loss": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        plot_metrics(bad, tmp_path / "x.png")
    bad.write_text('{"loss": 1}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*'iter'"):
        plot_metrics(bad, tmp_path / "x.png")


def _tiny_dataset(root):
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    Image.fromarray(np.full((32, 48, 3), 200, np.uint8)).save(root / "train" / "a.jpg")
    mask = np.zeros((1, 32, 48), np.uint8)
    mask[0, 5:20, 5:25] = 1
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 48}],
        "categories": [{"id": 3, "name": "thing"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [5, 5, 20, 15],
                "area": 300,
                "iscrowd": 0,
                "segmentation": masks_to_rle(mask)[0],
            }
        ],
    }
    (root / "annotations" / "instances_train.json").write_text(json.dumps(ann))


def test_data_show_cli(tmp_path, capsys):
    _tiny_dataset(tmp_path / "ds")
    out = tmp_path / "show"
    assert main(["data", "show", "--data", str(tmp_path / "ds"), "--out", str(out), "--num", "4"]) == 0
    assert [p.name for p in out.iterdir()] == ["a.png"]
    assert str(out) in capsys.readouterr().out
    drawn = np.asarray(Image.open(out / "a.png")).astype(int)
    assert drawn.shape == (32, 48, 3)
    assert np.abs(drawn[12, 15] - 200).sum() > 30 and np.abs(drawn[28, 40] - 200).sum() < 10


def test_data_show_real_coco(coco_tiny, tmp_path):
    out = tmp_path / "show"
    assert main(["data", "show", "--data", str(coco_tiny), "--split", "val", "--out", str(out), "--num", "1"]) == 0
    assert len(list(out.glob("*.png"))) == 1
