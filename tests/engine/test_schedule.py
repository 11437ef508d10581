"""Weight-decay groups (``train.no_decay``) and the CenterMask presets' official data filter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskkit.config import ConfigError, TrainConfig
from maskkit.engine.schedule import build_optimizer
from maskkit.models.zoo import get_config


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight 4-D, bias 1-D
        self.bn = nn.BatchNorm2d(4)  # weight and bias 1-D, norm layer
        self.scale = nn.Parameter(torch.ones(1))  # FCOS-style scale: 1-D, not a norm


def _decay_of(opt: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}


def test_no_decay_1d_exempts_every_1d_tensor():
    net = _Net()
    d = _decay_of(build_optimizer(net, TrainConfig(weight_decay=1e-4)))
    assert d[id(net.conv.weight)] == 1e-4
    assert d[id(net.conv.bias)] == d[id(net.bn.weight)] == d[id(net.bn.bias)] == d[id(net.scale)] == 0.0


def test_no_decay_norm_is_detectron2s_rule():
    """Biases and scales decay like weights; only the norm layer's parameters do not."""
    net = _Net()
    d = _decay_of(build_optimizer(net, TrainConfig(weight_decay=1e-4, no_decay="norm")))
    assert d[id(net.conv.weight)] == d[id(net.conv.bias)] == d[id(net.scale)] == 1e-4
    assert d[id(net.bn.weight)] == d[id(net.bn.bias)] == 0.0


def test_no_decay_rejects_other_values():
    with pytest.raises(ConfigError, match="train.no_decay"):
        build_optimizer(_Net(), TrainConfig(no_decay="bias"))


def test_centermask_paper_presets_train_as_the_official_configs():
    for name in ("centermask_lite_v19", "centermask_r50"):
        cfg = get_config(name)
        assert cfg.train.no_decay == "norm" and cfg.data.filter_empty
    demo = get_config("centermask_lite_demo")  # the demo keeps its recorded recipe
    assert demo.train.no_decay == "1d" and not demo.data.filter_empty
