"""FLOP counting, latency measurement and the `bench` / `models` verbs (maskkit/bench.py, maskkit/models/zoo.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import maskkit
from maskkit.cli import main
from maskkit.engine.bench import format_rows, run_bench, time_model, time_models
from maskkit.errors import MaskkitError
from maskkit.models.flops import bench_image_size, centermask_gflops, count_gflops


def test_bench_image_size():
    assert bench_image_size(600, 1000) == (600, 800)
    assert bench_image_size(800, 1333) == (800, 1067)
    assert bench_image_size(800, 1000) == (750, 1000)  # longer side capped


def test_count_gflops_counts_a_multiply_add_once():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    g = count_gflops(lambda: conv(torch.zeros(1, 3, 10, 10)))
    assert g * 1e9 == pytest.approx(3 * 8 * 9 * 100)


def test_centermask_gflops_on_meta_equals_a_real_forward():
    overrides = ["model.fcos.score_thresh=0.0", "model.min_size_test=128", "model.max_size_test=200"]
    model = maskkit.create_model("centermask_lite_demo", num_classes=3, overrides=overrides).eval()
    h, w = bench_image_size(128, 200)
    with torch.device("meta"):
        meta = maskkit.create_model("centermask_lite_demo", num_classes=3, overrides=overrides)
    dets = []
    real = count_gflops(lambda: dets.append(model([torch.rand(3, h, w)])[0]))
    assert len(dets[0]["boxes"]) == 50  # threshold 0: the 50 detections of the paper reach the mask branch
    assert centermask_gflops(meta, h, w) == pytest.approx(real, rel=1e-9)
    assert centermask_gflops(model, h, w, detections=0) < real


def test_time_model_median_and_output():
    model = maskkit.create_model("centermask_lite_demo", num_classes=2, overrides=["model.min_size_test=64"]).eval()
    median, times, out = time_model(model, torch.rand(3, 64, 80), iters=3, warmup=1)
    assert len(times) == 3 and min(times) <= median <= max(times) and median > 0
    assert set(out) >= {"boxes", "masks", "scores"}


def test_time_models_interleaves_the_rows_and_the_probe():
    """Sequential rows drifted with the shared machine's load (export_runtimes.md): every round
    calls each model and the probe once, after the warm-up calls of each."""
    calls = []

    class Recorder(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, images):
            calls.append(self.name)
            return [{"boxes": torch.zeros(0, 4)}]

    timings, probes = time_models(
        {"a": Recorder("a"), "b": Recorder("b")},
        torch.zeros(3, 4, 4),
        iters=3,
        warmup=1,
        probe=lambda: calls.append("p") or 7.0,
    )
    assert calls == ["a", "b"] + ["p", "a", "b"] * 3
    assert probes == [7.0] * 3 and set(timings) == {"a", "b"} and all(len(t[1]) == 3 for t in timings.values())


def test_run_bench_forces_the_same_detections_on_both_models():
    rows = run_bench(
        "centermask_lite_demo", size=96, vs="maskrcnn_r50", iters=1, warmup=0, detections=20, num_classes=3, flops=False
    )
    assert [r["model"] for r in rows] == ["centermask_lite_demo", "maskrcnn_r50"]
    assert [r["detections"] for r in rows] == [20, 20]
    assert rows[0]["input"] == rows[1]["input"] == "96x128"


def test_bench_rejects_unknown_models_and_peers(capsys):
    with pytest.raises(MaskkitError, match="unknown model"):
        run_bench("no_such_model", iters=1, flops=False)
    assert main(["bench", "--model", "no_such_model", "--iters", "1", "--no-flops"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(MaskkitError, match="sharpmask model"):
        run_bench("deepmask_demo", iters=1, flops=False)
    with pytest.raises(SystemExit):
        main(["bench", "--model", "centermask_lite_demo", "--vs", "yolo"])


def test_bench_and_models_verbs_print_tables(capsys):
    assert (
        main(
            [
                "bench",
                "--model",
                "centermask_lite_demo",
                "--size",
                "64",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--num-classes",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "centermask_lite_demo" in out and "64x85" in out and "GFLOPs" in out
    assert main(["models", "centermask_lite_demo", "centermask_r50"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines["centermask_r50"][2] == "51.23" and lines["centermask_r50"][3] == "800x1067"
    assert float(lines["centermask_r50"][4]) > 100  # GFLOPs at 800x1067
    assert main(["models", "--no-flops", "centermask_lite_v19"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "-"


def test_run_bench_runtimes_in_one_process_with_peak():
    pytest.importorskip("onnxruntime")
    rows = run_bench(
        "centermask_lite_demo",
        size=96,
        iters=1,
        warmup=0,
        detections=10,
        num_classes=3,
        runtimes=("eager", "fused", "onnxruntime"),
    )
    assert [r["runtime"] for r in rows] == ["eager", "fused", "onnxruntime"]
    assert all(r["detections"] == 10 for r in rows)  # the same work on every runtime
    assert rows[0]["peak_gflops_per_s"] > 0 and all(0 < r["pct_peak"] for r in rows)
    assert "latency ratio" in format_rows(rows) and "conv peak" in format_rows(rows)


def test_bench_unknown_runtime_is_a_clear_error():
    with pytest.raises(MaskkitError, match="--runtime tensorrt"):
        run_bench("centermask_lite_demo", size=64, iters=1, warmup=0, runtimes=("tensorrt",), flops=False)


def test_onnx_runtimes_of_two_models_in_one_folder_run_their_own_graphs(tmp_path):
    """benchmarks/sharpmask_runtimes.py timed DeepMask then SharpMask with one folder: the
    SharpMask row ran DeepMask's exported file (a fixed name, reused). Each model object gets its
    own export; both ONNX runtimes of one model share it."""
    pytest.importorskip("onnxruntime")
    from maskkit.engine.bench import build_runtime

    deep = maskkit.create_model("deepmask_demo", overrides=["model.top_n=5"]).eval()
    sharp = maskkit.create_model("sharpmask_demo", overrides=["model.top_n=5"]).eval()
    a = build_runtime(deep, "onnxruntime", str(tmp_path))
    b = build_runtime(sharp, "onnxruntime", str(tmp_path))
    assert a.runner.path != b.runner.path
    assert build_runtime(deep, "onnxruntime", str(tmp_path)).runner.path == a.runner.path
    img = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for model, timed in ((deep, a), (sharp, b)):
            want, got = model([img])[0], timed([img])[0]
            torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=0)
