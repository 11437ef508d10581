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
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from maskkit.atomic import atomic_write
from maskkit.config import config_to_json
from maskkit.errors import MaskkitError
from maskkit.export.runtime import EXPORT_FORMAT

__all__ = ["DEFAULT_OPSET", "OnnxGraph", "write_onnx"]

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


def write_onnx(graph: OnnxGraph, model: nn.Module, out: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Trace ``graph`` of ``model`` (a maskkit model with ``model.info``) and write it to ``out``
    with maskkit's metadata."""
    import onnx  # the [export] extra

    if opset < 16:
        raise MaskkitError(f"--opset {opset}: RoiAlign with half-pixel (aligned) coordinates needs opset >= 16")
    proto = onnx.load_from_string(_trace(graph, opset))
    info = model.info
    meta = {
        "maskkit_export_format": EXPORT_FORMAT,
        "maskkit_config": config_to_json(info.config),
        "class_names": json.dumps(list(info.class_names)),
        "cat_ids": json.dumps([int(c) for c in info.cat_ids]),
        "maskkit_runtime": json.dumps(graph.runtime),
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "maskkit"
    payload = proto.SerializeToString()
    return atomic_write(out, lambda tmp: Path(tmp).write_bytes(payload))
