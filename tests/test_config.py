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
