"""The system objects: what the engine asks of CenterMask and SharpMask."""

from __future__ import annotations

import json
import shutil

import torch

from maskkit.data.synthetic import generate
from maskkit.engine.systems import SYSTEMS, system_of
from maskkit.models.zoo import get_config


def _data_with_an_empty_image(tmp_path):
    root = generate(tmp_path / "d", num_train=3, num_val=1, size=64, progress=False)
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    first = data["images"][0]
    shutil.copy(root / "train" / first["file_name"], root / "train" / "empty.png")
    data["images"].append({**first, "id": 999, "file_name": "empty.png"})
    ann.write_text(json.dumps(data))
    return ann, root / "train"


def test_centermask_training_set_follows_data_filter_empty(tmp_path):
    ann, images = _data_with_an_empty_image(tmp_path)
    cfg = get_config("centermask_lite_demo")
    assert 999 in SYSTEMS["centermask"].training_set(ann, images, cfg).image_ids  # negatives kept
    cfg.data.filter_empty = True
    assert 999 not in system_of(cfg).training_set(ann, images, cfg).image_ids


def test_sharpmask_is_class_agnostic_and_keeps_the_top_proposals():
    sm = SYSTEMS["sharpmask"]
    assert sm.class_agnostic and not SYSTEMS["centermask"].class_agnostic
    assert sm.label_mapping(None) == (["object"], [1]) and sm.results_mapping({1: 7}) is None
    pred = {
        "scores": torch.tensor([0.125, 0.875, 0.5]),
        "boxes": torch.arange(12.0).view(3, 4),
        "labels": torch.ones(3),
    }
    top, thr = sm.for_overlay(pred, 0.3, top=2)
    assert thr == 0.0 and top["scores"].tolist() == [0.875, 0.5] and top["boxes"][0].tolist() == [4, 5, 6, 7]


def test_one_record_per_system_behind_the_protocol():
    """Every system of the model layer (models/zoo.SPECS: config class, model class, presets,
    weight loader) has one engine record holding it, with every method of the System protocol;
    a config, a model config, a model with ``info`` and a bare network all find their record."""
    import inspect

    import maskkit
    from maskkit.engine.systems import System
    from maskkit.models.zoo import MODEL_CONFIGS, SPECS

    assert set(SYSTEMS) == set(SPECS) == set(MODEL_CONFIGS)
    wanted = {n for n, v in vars(System).items() if inspect.isfunction(v)} | {"name", "spec", "class_agnostic"}
    for name, record in SYSTEMS.items():
        assert record.spec is SPECS[name] and record.name == name
        assert all(hasattr(record, w) for w in wanted), [w for w in wanted if not hasattr(record, w)]
        preset = next(iter(record.spec.presets))
        cfg = get_config(preset)
        assert system_of(cfg) is system_of(cfg.model) is record
        model = maskkit.create_model(preset)
        assert system_of(model) is record
        del model.info  # a network without maskkit's info: found by its class
        assert system_of(model) is record
    assert system_of(torch.nn.Linear(2, 2)) is SYSTEMS["centermask"]  # any other module: scored as a detector
