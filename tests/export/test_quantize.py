"""INT8 export and inference precision (issue #24): what an INT8 file holds and records, that it
runs like any exported file, the refusals (calibration data, bf16 without native support), the
precision decisions, and OpenVINO IR files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import maskkit  # noqa: E402
from maskkit.cli import main  # noqa: E402
from maskkit.data.synthetic import generate  # noqa: E402
from maskkit.engine.export import export_model  # noqa: E402
from maskkit.engine.quantize import quantize_model  # noqa: E402
from maskkit.errors import MaskkitError  # noqa: E402
from maskkit.export.precision import CpuFeatures, choose_precision  # noqa: E402
from maskkit.export.quantize import conv_group, conv_nodes, quantize_graph, quantized_convs  # noqa: E402
from maskkit.export.runtime import OnnxRunner, read_metadata  # noqa: E402

SMALL = ["model.min_size_test=96", "model.max_size_test=128", "model.fcos.score_thresh=0.0"]


def _weights(tmp_path: Path, model) -> Path:
    from maskkit.checkpoint import save_model

    info = model.info
    return save_model(tmp_path / "m.safetensors", model, info.config, info.class_names, info.cat_ids)


def _folder(d: Path, name: str, files: dict[str, bytes] | None = None) -> Path:
    (d / name).mkdir()
    for f, content in (files or {}).items():
        (d / name / f).write_bytes(content)
    return d / name


def _file(d: Path, name: str) -> Path:
    (d / name).write_text("x")
    return d / name


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("q") / "data", num_train=6, num_val=3, size=96, progress=False, seed=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = maskkit.create_model("centermask_lite_demo", num_classes=6, overrides=SMALL).eval()
    with torch.no_grad():
        m.fcos.box_pred.bias.fill_(2.0)  # boxes of a few strides, as a trained model's
    return m


@pytest.mark.parametrize("quantizer", ["nncf", "onnxruntime"])
def test_int8_file_quantizes_the_convolutions_and_records_how(tmp_path, data, model, quantizer):
    if quantizer == "nncf":
        pytest.importorskip("nncf")
    path = quantize_model(model, tmp_path / "m.int8.onnx", data / "train", calibration_count=4, quantizer=quantizer)
    import onnx

    proto = onnx.load(str(path))
    convs = conv_nodes(proto)
    assert convs and set(quantized_convs(proto)) == set(convs)  # every convolution's weights are int8
    ints = {init.name for init in proto.graph.initializer if init.data_type in (onnx.TensorProto.INT8,)}
    assert ints  # int8 weights are stored in the file
    made_by = {o: n.op_type for n in proto.graph.node for o in n.output}
    for n in proto.graph.node:  # decoding, NMS and top-k take float inputs, never quantized ones
        if n.op_type in ("NonMaxSuppression", "TopK"):
            assert all(made_by.get(i) != "DequantizeLinear" for i in n.input), n.name
    meta = read_metadata(path)
    record = json.loads(meta["maskkit_quantization"])
    assert record["precision"] == "int8" and record["quantizer"].startswith(quantizer)
    assert record["calibration"] == str(data / "train") and record["calibration_images"] == 4
    assert record["quantized_convs"] == len(convs) and record["float_convs"] == []
    float_meta = read_metadata(export_model(model, tmp_path / "m.onnx"))
    for k in ("maskkit_config", "class_names", "cat_ids", "maskkit_runtime", "maskkit_export_format"):
        assert meta[k] == float_meta[k]  # the model's description round-trips
    runner = OnnxRunner(path)
    assert runner.choice.precision == "int8" and runner.quantization == record


def test_named_convolutions_stay_in_float(tmp_path, data, model):
    pytest.importorskip("nncf")
    from maskkit.engine.systems import system_of
    from maskkit.export.onnx import onnx_bytes
    from maskkit.export.quantize import calibration_feeds, calibration_images

    graph = system_of(model).export_graph(model)
    payload = onnx_bytes(graph, model)
    import onnx

    keep = [n for n in conv_nodes(onnx.load_from_string(payload)) if conv_group(n) in ("fcos/cls_logits", "mask_head")]
    assert keep
    feeds = calibration_feeds(calibration_images(data / "train", 3), graph.runtime)
    proto, _ = quantize_graph(payload, feeds, "nncf", keep)
    assert set(quantized_convs(proto)) == set(conv_nodes(proto)) - set(keep)


def test_an_int8_file_runs_through_predict_eval_and_the_predictor(tmp_path, data, model):
    path = quantize_model(model, tmp_path / "m.int8.onnx", data / "train", calibration_count=3, quantizer="onnxruntime")
    p = maskkit.Predictor(path)
    assert p.precision.precision == "int8"
    pred = p(torch.rand(3, 80, 100))
    assert {"boxes", "scores", "labels", "masks", "category_ids"} <= set(pred)
    assert (
        main(["predict", "--weights", str(path), str(data / "val"), "--out", str(tmp_path / "pred"), "--no-progress"])
        == 0
    )
    assert (tmp_path / "pred" / "results.json").is_file()
    assert main(["eval", "--weights", str(path), "--data", str(data), "--out", str(tmp_path / "ev")]) == 0
    assert "segm/AP" in json.loads((tmp_path / "ev" / "metrics.json").read_text())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", r"missing: no such calibration folder"),
        (lambda d: _folder(d, "empty"), r"empty: holds no images to calibrate on"),
        (lambda d: _folder(d, "corrupt", {"a.png": b"not a png"}), r"a\.png"),
        (lambda d: _file(d, "f.txt"), r"f\.txt: --calibration takes a COCO-style root"),
    ],
)
def test_bad_calibration_data_is_one_line_naming_it_and_writes_nothing(tmp_path, model, capsys, make, message):
    weights, source = _weights(tmp_path, model), make(tmp_path)
    out = tmp_path / "q.onnx"
    rc = main(
        ["export", "--weights", str(weights), "--quantize", "int8", "--calibration", str(source), "--out", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("maskkit: error:")
    import re

    assert re.search(message, err[0]), err[0]
    assert not out.exists() and not list(tmp_path.glob(".q.onnx*"))


def test_bf16_without_native_support_is_one_clear_line(tmp_path, model, monkeypatch, capsys):
    from PIL import Image

    weights = _weights(tmp_path, model)
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    monkeypatch.setenv("MASKKIT_CPU_FEATURES", "avx512f,avx512_vnni")  # VNNI but no bf16
    rc = main(
        ["predict", "--weights", str(weights), str(tmp_path), "--precision", "bf16"] + ["--out", str(tmp_path / "p")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "no native bfloat16" in err[0] and "emulated" in err[0]
    with pytest.raises(MaskkitError, match="no native bfloat16"):
        maskkit.Predictor(weights, precision="bf16")
    monkeypatch.setenv("MASKKIT_CPU_FEATURES", "avx512_bf16")
    p = maskkit.Predictor(weights, precision="bf16")  # allowed where native (the probe's answer)
    assert p.precision.precision == "bf16"
    assert p(torch.rand(3, 64, 64))["boxes"].dtype == torch.float32  # outputs stay float32


def test_precision_decisions_follow_the_file_and_the_cpu():
    none, vnni = CpuFeatures(frozenset(), "", "t"), CpuFeatures(frozenset({"avx512_vnni"}), "", "t")
    bf16 = CpuFeatures(frozenset({"avx512_bf16", "avx512_vnni"}), "", "t")
    amx = CpuFeatures(frozenset({"amx_tile", "amx_bf16", "amx_int8"}), "", "t")
    assert choose_precision(None, "fp32", "onnx", "f", none).precision == "fp32"
    assert choose_precision("auto", "fp32", "eager", "f", none).precision == "fp32"
    assert choose_precision("auto", "fp32", "eager", "f", bf16).precision == "bf16"
    assert choose_precision("auto", "fp32", "eager", "f", amx).precision == "bf16"
    assert "no native bf16" in choose_precision("auto", "fp32", "eager", "f", vnni).reason
    assert choose_precision(None, "int8", "onnx", "f", none).precision == "int8"  # the file's own
    assert "not native" in choose_precision("auto", "int8", "onnx", "f", none).reason
    assert "native" in choose_precision("int8", "int8", "onnx", "f", vnni).reason
    for bad in [("int8", "fp32"), ("fp32", "int8"), ("bf16", "int8")]:
        with pytest.raises(MaskkitError):
            choose_precision(bad[0], bad[1], "onnx", "f", bf16)
    with pytest.raises(MaskkitError, match="bf16 runs exported files on OpenVINO, not onnxruntime"):
        choose_precision("bf16", "fp32", "onnx", "f", bf16, runtime="onnxruntime")


def test_openvino_ir_export_runs_as_the_onnx_file(tmp_path, model):
    pytest.importorskip("openvino")
    xml = export_model(model, tmp_path / "m.xml", fmt="openvino")
    assert xml.with_suffix(".bin").is_file()
    onnx_path = export_model(model, tmp_path / "m.onnx")
    image = np.random.default_rng(0).random((3, 80, 100), dtype=np.float32)
    a = OnnxRunner(xml)(image)
    b = OnnxRunner(onnx_path, backend="openvino")(image)
    assert OnnxRunner(xml).choice.runtime == "openvino"
    for k in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(a[k], b[k])
    assert read_metadata(xml)["maskkit_config"] == read_metadata(onnx_path)["maskkit_config"]
    with pytest.raises(MaskkitError, match="OpenVINO IR file runs on OpenVINO"):
        OnnxRunner(xml, backend="onnxruntime")


def test_accuracy_aware_int8_records_its_search_and_eval_reproduces_it(tmp_path, data, model):
    pytest.importorskip("nncf")
    from maskkit.data.coco import open_split
    from maskkit.engine.inference.evaluate import evaluate_model
    from maskkit.evaluation import primary_metric
    from maskkit.export.onnx_model import OnnxModel

    path = quantize_model(
        model, tmp_path / "m.int8.onnx", data / "train", calibration_count=3, max_ap_drop=0.0, validation=data
    )
    acc = json.loads(read_metadata(path)["maskkit_quantization"])["accuracy"]
    assert acc["metric"] == "segm/AP" and acc["max_drop"] == 0.0 and acc["validation_images"] == 3
    assert acc["trials"] and acc["met"] == (acc["drop"] <= 0.0)
    key, value = primary_metric(evaluate_model(OnnxModel(path), open_split(data, "val"), progress=False))
    assert key == acc["metric"] and value == pytest.approx(acc["int8"], abs=1e-12)  # a fresh eval reproduces it
