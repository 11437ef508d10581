"""``maskkit export --quantize int8``: a model file -> an INT8 ONNX (or OpenVINO IR) file of its
whole pipeline, calibrated on the user's images, optionally within a bound on the accuracy it
may lose.

Plain INT8 (:func:`quantize_file` without ``max_ap_drop``): the system's float graph
(:meth:`System.export_graph`), calibration images preprocessed as at inference, the quantizer
(:mod:`maskkit.export.quantize`), maskkit's metadata plus what the quantization was
(``maskkit_quantization``: quantizer and version, calibration source and image count, the
convolutions kept in float).

Accuracy-aware INT8 (``max_ap_drop`` + ``validation``): the model's headline metric (COCO segm
AP; segm AR@100 for proposals) is measured on the validation images for the float graph and for
the fully quantized one; while the drop exceeds the bound, the model part whose float
convolutions recover the most (each part measured once, kept in float on its own) joins the
float set, and the file is quantized again and measured. The file records the bound, the
measured float and INT8 figures, the parts kept in float and every measurement made.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from torch import nn

from maskkit.atomic import atomic_write
from maskkit.checkpoint import load_model
from maskkit.data.coco import open_split
from maskkit.engine.inference.evaluate import evaluate_model
from maskkit.engine.systems import system_of
from maskkit.errors import MaskkitError
from maskkit.evaluation import primary_metric
from maskkit.export.onnx import DEFAULT_OPSET, onnx_bytes, set_metadata, write_openvino
from maskkit.export.onnx_model import OnnxModel
from maskkit.export.quantize import (
    DEFAULT_QUANTIZER,
    Quantization,
    calibration_feeds,
    calibration_images,
    conv_group,
    conv_nodes,
    quantize_graph,
    quantized_convs,
)

__all__ = ["quantize_model", "quantize_file"]


def _metric(payload: bytes, dataset, threads: int | None) -> tuple[str, float]:
    """The headline metric of an exported graph on ``dataset`` (its runner, float32 or int8)."""
    with tempfile.TemporaryDirectory(prefix="maskkit-quantize-") as tmp:
        path = Path(tmp) / "candidate.onnx"
        path.write_bytes(payload)
        metrics = evaluate_model(OnnxModel(path, threads=threads), dataset, progress=False)
    return primary_metric(metrics)


def _search(
    float_payload: bytes, feeds, quantizer: str, dataset, max_drop: float, threads: int | None
) -> tuple[object, str, dict]:
    """The accuracy-aware search (see the module docstring) -> (model proto, quantizer, record)."""
    key, base = _metric(float_payload, dataset, threads)
    import onnx

    groups: dict[str, list[str]] = {}
    for name in conv_nodes(onnx.load_from_string(float_payload)):
        groups.setdefault(conv_group(name), []).append(name)
    trials: list[dict] = []

    def measure(kept: list[str]) -> tuple[object, str, float]:
        floats = [n for g in kept for n in groups[g]]
        proto, name = quantize_graph(float_payload, feeds, quantizer, floats)
        value = _metric(proto.SerializeToString(), dataset, threads)[1]
        trials.append({"float_parts": list(kept), key: value})
        print(f"maskkit: {key} {100 * value:.2f} with {', '.join(kept) or 'nothing'} in float", file=sys.stderr)
        return proto, name, value

    kept: list[str] = []
    proto, name, value = measure(kept)
    gains: dict[str, float] | None = None
    while 100 * (base - value) > max_drop and len(kept) < len(groups):
        if gains is None:  # each part's recovery, measured once with it alone in float
            gains = {g: measure([g])[2] - value for g in groups}
        best = max((g for g in groups if g not in kept), key=lambda g: gains[g])
        kept.append(best)
        proto, name, value = measure(kept)
    record = {
        "metric": key,
        "max_drop": max_drop,
        "float": base,
        "int8": value,
        "drop": 100 * (base - value),
        "float_parts": kept,
        "met": 100 * (base - value) <= max_drop,
        "validation_images": len(dataset),
        "trials": trials,
    }
    return proto, name, record


def quantize_model(
    model: nn.Module,
    out: str | Path,
    calibration: str | Path,
    *,
    fmt: str = "onnx",
    calibration_count: int = 32,
    quantizer: str = DEFAULT_QUANTIZER,
    max_ap_drop: float | None = None,
    validation: str | Path | None = None,
    validation_split: str = "val",
    opset: int = DEFAULT_OPSET,
    threads: int | None = None,
) -> Path:
    """Write ``model`` (a maskkit model with ``model.info``) as an INT8 file to ``out``: ONNX
    (``fmt="onnx"``) or OpenVINO IR (``"openvino"``, ``out`` ending in ``.xml``). Nothing is
    written when the calibration or validation data cannot be read."""
    if fmt not in ("onnx", "openvino"):
        raise MaskkitError(f"--format {fmt}: onnx or openvino")
    if max_ap_drop is not None and (validation is None or not max_ap_drop >= 0):
        raise MaskkitError("--max-ap-drop needs --validation DATA and a bound >= 0 (AP points)")
    dataset = open_split(validation, validation_split) if max_ap_drop is not None else None
    paths = calibration_images(calibration, calibration_count)
    graph = system_of(model).export_graph(model.eval())
    feeds = calibration_feeds(paths, graph.runtime)  # every image read before anything is written
    payload = onnx_bytes(graph, model, opset)
    if max_ap_drop is None:
        proto, name = quantize_graph(payload, feeds, quantizer)
        accuracy: dict = {}
    else:
        proto, name, accuracy = _search(payload, feeds, quantizer, dataset, max_ap_drop, threads)
    floats = [n for n in conv_nodes(proto) if n not in set(quantized_convs(proto))]
    record = Quantization(name, str(calibration), len(paths), len(quantized_convs(proto)), floats, accuracy=accuracy)
    set_metadata(proto, {"maskkit_quantization": record.to_json()})
    data = proto.SerializeToString()
    if fmt == "openvino":
        return write_openvino(data, out)
    return atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))


def quantize_file(weights: str | Path, out: str | Path | None = None, **kw) -> Path:
    """``maskkit export --weights FILE --quantize int8 --calibration DATA``: see :func:`quantize_model`
    (default ``out``: ``FILE`` with suffix ``.int8.onnx`` / ``.int8.xml``)."""
    weights = Path(weights)
    fmt = kw.get("fmt", "onnx")
    out = Path(out) if out is not None else weights.with_suffix(".int8.xml" if fmt == "openvino" else ".int8.onnx")
    if out.resolve() == weights.resolve():
        raise MaskkitError(f"{out}: the export would overwrite the model file; choose another --out")
    path = quantize_model(load_model(weights), out, **kw)
    record = json.loads(_read_quantization(path))
    acc = record.get("accuracy") or {}
    if acc:
        print(
            f"maskkit: {acc['metric']} {100 * acc['float']:.2f} (float32) -> {100 * acc['int8']:.2f} (int8), "
            f"drop {acc['drop']:.2f} (bound {acc['max_drop']:g}: {'met' if acc['met'] else 'NOT met'}); "
            f"in float: {', '.join(acc['float_parts']) or 'nothing'}",
            file=sys.stderr,
        )
    return path


def _read_quantization(path: Path) -> str:
    from maskkit.export.runtime import read_metadata

    return read_metadata(path)["maskkit_quantization"]
