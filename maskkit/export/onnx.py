"""ONNX files of maskkit models: one traced graph of a model's whole inference pipeline, with
what the NumPy runner needs in the file's metadata.

A graph is an :class:`OnnxGraph`: the module to trace (built from the model's own pieces by
:func:`maskkit.export.centermask.centermask_graph` or :func:`maskkit.export.sharpmask.sharpmask_graph`,
chosen by the model's system in :mod:`maskkit.engine.systems`), an example input, the input and
output names with their dynamic axes, and the runner's pre/post-processing settings.
:func:`write_onnx` traces it and writes the file (atomically).

The file's ``metadata_props`` carry the model config, class names, category ids, the weights'
input convention and the runner's settings (``maskkit_runtime``), so ``predict``/``eval``/
``Predictor`` take the ``.onnx`` like a model file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from maskkit.atomic import atomic_write
from maskkit.config import config_to_json
from maskkit.errors import MaskkitError
from maskkit.export.runtime import EXPORT_FORMAT

__all__ = ["DEFAULT_OPSET", "OnnxGraph", "onnx_bytes", "metadata", "set_metadata", "write_onnx", "write_openvino"]

DEFAULT_OPSET = 17  # RoiAlign with coordinate_transformation_mode (aligned=True) needs >= 16


@dataclass
class OnnxGraph:
    """What :func:`write_onnx` traces: ``module(*args)``, its input/output names, the dynamic
    axes (``{name: {dim: label}}``) and the runner's settings for ``maskkit_runtime``."""

    module: nn.Module
    args: tuple
    inputs: list[str]
    outputs: list[str]
    axes: dict
    runtime: dict


def _trace(graph: OnnxGraph, opset: int) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about shape-derived Python ints (the parity tests check two sizes)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.module,
            graph.args,
            buf,
            opset_version=opset,
            dynamo=False,
            input_names=graph.inputs,
            output_names=graph.outputs,
            dynamic_axes=graph.axes,
        )
    return buf.getvalue()


def onnx_bytes(graph: OnnxGraph, model: nn.Module, opset: int = DEFAULT_OPSET, extra: dict | None = None) -> bytes:
    """Trace ``graph`` of ``model`` (a maskkit model with ``model.info``) -> the ONNX file's bytes,
    with maskkit's metadata (and ``extra`` entries)."""
    import onnx  # the [export] extra

    if opset < 16:
        raise MaskkitError(f"--opset {opset}: RoiAlign with half-pixel (aligned) coordinates needs opset >= 16")
    proto = onnx.load_from_string(_trace(graph, opset))
    set_metadata(proto, {**metadata(model, graph.runtime), **(extra or {})})
    proto.producer_name = "maskkit"
    return proto.SerializeToString()


def metadata(model: nn.Module, runtime: dict) -> dict[str, str]:
    """The maskkit metadata of an exported file of ``model``."""
    info = model.info
    return {
        "maskkit_export_format": EXPORT_FORMAT,
        "maskkit_config": config_to_json(info.config),
        "class_names": json.dumps(list(info.class_names)),
        "cat_ids": json.dumps([int(c) for c in info.cat_ids]),
        "maskkit_runtime": json.dumps(runtime),
    }


def set_metadata(proto, entries: dict[str, str]) -> None:
    """Set (add or replace) ``metadata_props`` entries of an ONNX model proto."""
    kept = [e for e in proto.metadata_props if e.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for k, v in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def write_onnx(graph: OnnxGraph, model: nn.Module, out: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Trace ``graph`` of ``model`` and write it to ``out`` (atomically) with maskkit's metadata."""
    payload = onnx_bytes(graph, model, opset)
    return atomic_write(out, lambda tmp: Path(tmp).write_bytes(payload))


def write_openvino(payload: bytes, out: str | Path) -> Path:
    """An ONNX file's bytes as OpenVINO IR at ``out`` (``.xml`` + ``.bin`` beside it), its maskkit
    metadata in the model's ``rt_info["maskkit"]``; both files written, then renamed into place."""
    import onnx

    try:
        import openvino as ov
    except ImportError:
        raise MaskkitError("--format openvino needs the openvino package (pip install openvino)") from None
    out = Path(out)
    if out.suffix.lower() != ".xml":
        raise MaskkitError(f"--out {out}: an OpenVINO IR file is named .xml (its weights go to .bin beside it)")
    meta = {e.key: e.value for e in onnx.load_from_string(payload).metadata_props}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as tmp:
        src = Path(tmp) / "model.onnx"
        src.write_bytes(payload)
        ov_model = ov.Core().read_model(str(src))
        for k, v in meta.items():
            ov_model.set_rt_info(v, ["maskkit", k])
        xml = Path(tmp) / out.name
        ov.save_model(ov_model, str(xml), compress_to_fp16=False)
        os.replace(xml.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(xml, out)
    return out
