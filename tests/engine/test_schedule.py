"""Weight-decay groups (``train.no_decay``) and the CenterMask presets' official data filter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskkit.config import ConfigError, TrainConfig
from maskkit.engine.training.schedule import build_optimizer, lr_factor
from maskkit.errors import MaskkitError
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


def _budget_run(step_s, budget_min: float, max_iter: int = 1000, world_size: int = 1):
    """TimeBudgetHook over a simulated run of ``step_s`` seconds per step (a number, or a function
    of the step) -> (steps run, the run's final length, TrainConfig, elapsed seconds). The
    config is never changed: the run's length lives in the loop's state."""
    from maskkit.engine.training.hooks import TimeBudgetHook
    from maskkit.engine.training.state import LoopState

    now = [0.0]
    tc = TrainConfig(max_iter=max_iter, warmup_iters=50, schedule="cosine", time_budget_min=budget_min)
    state = LoopState(max_iter=tc.max_iter)
    hook = TimeBudgetHook(tc.time_budget_min, tc.warmup_iters, world_size, clock=lambda: now[0], every=25)
    hook.before_train(state)
    while not state.finished:
        now[0] += step_s(state.step) if callable(step_s) else step_s
        state.step += 1
        hook.after_step(state)
    assert tc.max_iter == max_iter  # the configured length stays as configured
    return state.step, state.max_iter, tc, now[0]


def test_time_budget_shortens_the_run_and_the_cosine_follows(capsys):
    steps, length, tc, elapsed = _budget_run(step_s=0.1, budget_min=1.0)  # 600 steps fit in 60 s
    assert 595 <= steps == length <= 600 and elapsed <= 60.0
    assert lr_factor(steps - 1, tc, length) < 1e-4  # annealed to ~0 at the shortened end
    assert "time budget 1 min: training" in capsys.readouterr().err


def test_time_budget_follows_the_recent_step_time_after_a_slow_start(capsys):
    """A slow start (cold cache, workers starting: 50 steps of 0.5 s, then 0.1 s) first shortens
    the run, then gives the steps back as the recent rate shows them: 25 s + 35 s / 0.1 = 400
    steps fit in the minute (the mean since the start would have stopped at 120)."""
    steps, length, tc, elapsed = _budget_run(step_s=lambda k: 0.5 if k < 50 else 0.1, budget_min=1.0)
    assert 390 <= steps == length <= 400 and elapsed <= 60.0
    assert lr_factor(steps - 1, tc, length) < 1e-3
    steps, _, _, elapsed = _budget_run(step_s=lambda k: 0.1 if k < 300 else 0.3, budget_min=1.0)  # a slow-down
    assert 55.0 <= elapsed <= 60.0 and 380 <= steps <= 400  # 30 s + 30 s / 0.3


def test_time_budget_never_lengthens_and_is_off_by_default():
    assert _budget_run(step_s=0.01, budget_min=1.0)[0] == 1000  # 1000 steps take 10 s: unchanged
    assert _budget_run(step_s=1.0, budget_min=0.0)[0] == 1000  # 0 = off
    with pytest.raises(MaskkitError, match="one process"):
        _budget_run(step_s=0.1, budget_min=1.0, world_size=2)


def test_the_schedule_anneals_over_the_runs_length_in_the_loop_state():
    """The cosine reads the run's length from the loop's state at each step (a time budget sets
    it there), never from a config written during the run."""
    import math

    from maskkit.engine.training.schedule import build_scheduler
    from maskkit.engine.training.state import LoopState

    tc = TrainConfig(lr=1.0, max_iter=100, warmup_iters=0, schedule="cosine")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tc.lr)
    state = LoopState(max_iter=tc.max_iter)
    sched = build_scheduler(opt, tc, lambda: state.max_iter)
    for _ in range(50):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 50 / 100)))
    state.max_iter = 60  # shortened
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 51 / 60)))
    assert tc.max_iter == 100
