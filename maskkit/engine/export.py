"""``maskkit export``: a model file -> one ONNX file of its whole inference pipeline, the graph
its system builds from the model's own pieces (:meth:`maskkit.engine.systems.System.export_graph`,
:mod:`maskkit.export`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from maskkit.checkpoint import load_model
from maskkit.engine.systems import system_of
from maskkit.errors import MaskkitError
from maskkit.export.onnx import DEFAULT_OPSET, onnx_bytes, write_onnx, write_openvino

__all__ = ["DEFAULT_OPSET", "export_model", "export_file"]


def export_model(model: nn.Module, out: str | Path, opset: int = DEFAULT_OPSET, fmt: str = "onnx") -> Path:
    """Write ``model`` (a maskkit model in eval mode, with ``model.info``) to ``out``: ONNX, or
    OpenVINO IR (``fmt="openvino"``, ``out`` ending in ``.xml``)."""
    if getattr(model, "info", None) is None:
        raise MaskkitError(f"export: a {type(model).__name__} without model.info was not built by maskkit")
    if opset < 16:
        raise MaskkitError(f"--opset {opset}: RoiAlign with half-pixel (aligned) coordinates needs opset >= 16")
    if fmt not in ("onnx", "openvino"):
        raise MaskkitError(f"--format {fmt}: onnx or openvino")
    graph = system_of(model).export_graph(model)
    if fmt == "openvino":
        return write_openvino(onnx_bytes(graph, model, opset), out)
    return write_onnx(graph, model, out, opset)


def export_file(
    weights: str | Path, out: str | Path | None = None, opset: int = DEFAULT_OPSET, fmt: str = "onnx"
) -> Path:
    """``maskkit export --weights FILE``: the model file's pipeline -> ``out`` (default:
    ``FILE`` with suffix ``.onnx``, or ``.xml`` for OpenVINO IR)."""
    weights = Path(weights)
    model = load_model(weights)
    out = Path(out) if out is not None else weights.with_suffix(".xml" if fmt == "openvino" else ".onnx")
    if out.resolve() == weights.resolve():
        raise MaskkitError(f"{out}: the export would overwrite the model file; choose another --out")
    return export_model(model, out, opset, fmt)
