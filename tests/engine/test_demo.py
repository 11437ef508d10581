"""`maskkit demo --quick`: the whole pipeline end to end on tiny synthetic data (numbers are
meaningless at this size; the full demo is a benchmark, see benchmarks/synthetic_protocol.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from signal_helpers import signal_after_logged_steps

from maskkit.checkpoint import load_model
from maskkit.cli import main


@pytest.mark.slow  # 2-5 s on a quiet machine (warm imports), up to ~60 s on a loaded 2-core one
@pytest.mark.timeout(300)
def test_demo_quick_centermask(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Evaluation results for segm" in printed and str(out) in printed
    metrics = json.loads((out / "metrics.json").read_text())
    # the same keys as `maskkit eval`: 12 COCO figures per IoU type + per-category AP
    for t in ("bbox", "segm"):
        assert {f"{t}/{k}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")} <= set(metrics)
        assert f"{t}/AP-star" in metrics
    assert len(list((out / "overlays").glob("*.png"))) == 4
    assert (out / "curves.png").stat().st_size > 1000
    assert isinstance(json.loads((out / "results.json").read_text()), list)
    steps = [json.loads(line).get("step") for line in open(out / "metrics.jsonl")]
    assert steps[:3] == [1, 2, 3]
    model = load_model(out / "model_best.safetensors")
    assert model.info.class_names[0] == "star" and model.info.config.name == "centermask_lite_demo"


@pytest.mark.slow  # two short training stages + multi-scale proposals: as above
@pytest.mark.timeout(300)
def test_demo_quick_sharpmask(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--system", "sharpmask", "--out", str(out), "--no-progress"]) == 0
    assert "AR@10" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"proposals/segm/AR@10", "proposals/segm/AR@20"} <= set(metrics)
    assert (out / "stage1" / "model_last.safetensors").is_file()
    model = load_model(out / "model_best.safetensors")
    assert model.info.config.train.stage == 2 and model.info.config.model.refine
    assert list((out / "overlays").glob("*.png"))


@pytest.mark.timeout(240)
def test_demo_sigterm_is_one_line_and_keeps_the_checkpoint(tmp_path):
    """A SIGTERM during the demo's training: exit 128 + 15, one ``maskkit:`` line naming the
    saved checkpoint, no traceback (before the fix, ``write_metrics`` received None)."""
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "maskkit",
        "demo",
        "--quick",
        "--iters",
        "100000",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "train.log_period=1",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    stdout, err = signal_after_logged_steps(proc, out / "metrics.jsonl", signal.SIGTERM, timeout=200)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "Traceback" not in stdout
    lines = [line for line in err.splitlines() if line.startswith("maskkit:")]
    assert len(lines) == 1 and "stopped by signal 15" in lines[0] and "model_last.safetensors" in lines[0]
    assert (out / "model_last.safetensors").is_file() and not (out / "metrics.json").exists()


@pytest.mark.slow  # a few steps of each demo preset on 128 px scenes: ~10-40 s
@pytest.mark.timeout(300)
def test_demo_presets_run_through_maskkit_train(tmp_path, capsys):
    """The demo's recipe is named presets plus named scenes: `maskkit data synth --scenes demo` and
    `maskkit train --model <the plan's presets>` run it outside the demo (issue #12, item 4)."""
    from maskkit.engine.demo import plan

    data = tmp_path / "data"
    assert main(["data", "synth", "--out", str(data), "--scenes", "demo", "--train", "4", "--val", "2", "--quiet"]) == 0
    ann = json.loads((data / "annotations" / "instances_train.json").read_text())
    assert {(im["width"], im["height"]) for im in ann["images"]} == {(128, 128)}  # the demo scenes' size
    for system in ("centermask", "sharpmask"):
        previous = None
        for k, (preset, _) in enumerate(plan(system, False).stages):
            run = tmp_path / f"{system}{k}"
            args = ["train", "--model", preset, "--data", str(data), "--out", str(run), "--iters", "2", "--no-progress"]
            args += ["--set", "train.batch_size=2"]
            if previous is not None:
                args += ["--set", f"train.init_weights={previous}"]
            assert main(args) == 0, capsys.readouterr().err
            previous = run / "model_last.safetensors"
            assert load_model(previous).info.config.name == preset
