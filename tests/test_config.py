"""Config mechanics: overrides are type-checked, configs round-trip through JSON."""

import pytest

from maskkit.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_from_json,
    config_to_dict,
    config_to_json,
)
from maskkit.models.centermask.config import CenterMaskConfig
from maskkit.models.sharpmask.config import SharpMaskConfig
from maskkit.models.zoo import MODEL_CONFIGS


def test_overrides_are_typed():
    cfg = Config(model=CenterMaskConfig())
    apply_overrides(
        cfg,
        [
            "train.lr=0.005",
            "model.fpn_channels=128",
            "data.min_size_train=[480,512]",
            "model.backbone.residual=false",
            "train.steps=100,200",
            "model.backbone.variant=V-19",
        ],
    )
    assert cfg.train.lr == 0.005 and isinstance(cfg.train.lr, float)
    assert cfg.model.fpn_channels == 128
    assert cfg.data.min_size_train == (480, 512)
    assert cfg.model.backbone.residual is False
    assert cfg.train.steps == (100, 200)
    assert cfg.model.backbone.variant == "V-19"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=fast", "expected a number"),
        ("model.fpn_channels=1.5", "expected an integer"),
        ("model.backbone.residual=maybe", "true/false"),
        ("train.nope=1", "has no field 'nope'"),
        ("train.lr", "key=value"),
        ("train.lr.x=1", "is not a section"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    cfg = Config(model=CenterMaskConfig())
    with pytest.raises(ConfigError, match=message):
        apply_overrides(cfg, [override])


@pytest.mark.parametrize("model", [CenterMaskConfig(), SharpMaskConfig()])
def test_round_trip(model):
    cfg = Config(model=model, name="x")
    cfg.train.steps = (5, 7)
    again = config_from_json(config_to_json(cfg), MODEL_CONFIGS)
    assert again == cfg
    assert type(again.model) is type(model)
    assert config_to_dict(again) == config_to_dict(cfg)


def test_saved_config_errors():
    with pytest.raises(ConfigError, match="not valid JSON"):
        config_from_json("{not json", MODEL_CONFIGS)
    with pytest.raises(ConfigError, match="no 'model' section"):
        config_from_dict({"train": {}}, MODEL_CONFIGS)
    with pytest.raises(ConfigError, match="model.system"):
        config_from_dict({"model": {"system": "yolo"}}, MODEL_CONFIGS)
    d = config_to_dict(Config(model=CenterMaskConfig()))
    d["model"]["bogus"] = 1
    with pytest.raises(ConfigError, match="unknown field"):
        config_from_dict(d, MODEL_CONFIGS)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.optimizer=adam", r"train\.optimizer must be one of 'sgd', 'adamw', got 'adam'"),
        ("model.fcos.scoring=cube", r"model\.fcos\.scoring must be one of 'sqrt', 'product', got 'cube'"),
        ("model.postprocess=detectron", r"model\.postprocess must be one of 'maskkit', 'centermask2'"),
        ("train.stage=3", r"train\.stage must be one of 1, 2, got 3"),
    ],
)
def test_choice_fields_are_refused_as_they_are_parsed(override, message):
    """A ``Literal`` field takes one of its values, checked when the override is parsed (not
    where the value is used), and the error names the allowed values."""
    cfg = Config(model=CenterMaskConfig())
    with pytest.raises(ConfigError, match=message):
        apply_overrides(cfg, [override])


def test_choice_and_range_fields_are_checked_when_a_saved_config_is_read():
    d = config_to_dict(Config(model=SharpMaskConfig()))
    d["model"]["pyramid"] = "bicubic"
    with pytest.raises(ConfigError, match=r"model\.pyramid must be one of 'antialias', 'official', got 'bicubic'"):
        config_from_dict(d, MODEL_CONFIGS)


def test_values_set_in_code_are_checked_by_validate_config():
    from maskkit.config import validate_config

    cfg = Config(model=CenterMaskConfig())
    cfg.train.schedule = "linear"
    with pytest.raises(ConfigError, match=r"train\.schedule must be one of 'step', 'cosine', got 'linear'"):
        validate_config(cfg)
    cfg = Config(model=CenterMaskConfig())
    cfg.model.fcos.nms_thresh = 1.5
    with pytest.raises(ConfigError, match=r"model\.fcos\.nms_thresh must be a number in \[0, 1\], got 1\.5"):
        validate_config(cfg)
    cfg = Config(model=SharpMaskConfig())
    cfg.model.sampler.mask_batch_prob = float("nan")
    with pytest.raises(ConfigError, match=r"model\.sampler\.mask_batch_prob must be a number in \[0, 1\]"):
        validate_config(cfg)
