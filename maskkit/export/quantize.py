"""Post-training static INT8 quantization of an exported graph, calibrated on the user's images.

What is quantized: the convolutions (trunk, FPN, the heads, the mask branch's convolutions) and,
with NNCF, the matrix products it finds worth it (the MaskIoU head's FCs), as QuantizeLinear /
DequantizeLinear pairs around them (QDQ, which ONNX Runtime and OpenVINO both run as int8
kernels). Decoding, NMS, RoIAlign, Eq. 2 and the scores are not quantized: they are no
convolutions, and their inputs are dequantized to float first. ``keep_float`` names convolution
nodes to leave in float (the accuracy-aware search chooses them).

The calibration images are preprocessed exactly as at inference, by the runner's own functions
(:func:`maskkit.export.numpy_ops.centermask_input`, :func:`~maskkit.export.numpy_ops.sharpmask_canvases`).

Two maintained quantizers: NNCF (``nncf.quantize`` on the ONNX graph, with its fast bias
correction) and ONNX Runtime's ``quantize_static`` (MinMax, per-channel weights). OpenVINO's own
NNCF backend cannot take these graphs (their control flow), so the ONNX backend is used.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskkit.errors import DataError, MaskkitError, first_line
from maskkit.export.numpy_ops import centermask_input, sharpmask_canvases

__all__ = [
    "QUANTIZERS",
    "DEFAULT_QUANTIZER",
    "Quantization",
    "calibration_images",
    "calibration_feeds",
    "conv_nodes",
    "quantize_graph",
    "quantized_convs",
    "conv_group",
]

QUANTIZERS = ("nncf", "onnxruntime")
DEFAULT_QUANTIZER = "nncf"  # benchmarks/cpu_precision.md: the quantizer comparison
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Quantization:
    """What an INT8 file records about its quantization (``maskkit_quantization`` metadata)."""

    quantizer: str  # "nncf 3.4.0" / "onnxruntime 1.32.0"
    calibration: str  # the calibration source as given
    calibration_images: int
    quantized_convs: int
    float_convs: list[str] = field(default_factory=list)  # convolution nodes kept in float
    precision: str = "int8"
    accuracy: dict[str, Any] = field(default_factory=dict)  # the accuracy-aware search's record, if any

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def calibration_images(source: str | Path, count: int, split: str = "train") -> list[Path]:
    """``count`` image files of ``source``, evenly spread over it: a COCO-style root (its ``split``
    images, as ``--data`` finds them) or a folder of images. One-line :class:`DataError` for a
    missing path, an empty folder or a root without that split."""
    from maskkit.data.coco import resolve_data

    path = Path(source)
    if count < 1:
        raise MaskkitError(f"--calibration-images must be >= 1, got {count}")
    if not path.exists():
        raise DataError(f"{path}: no such calibration folder")
    if not path.is_dir():
        raise DataError(f"{path}: --calibration takes a COCO-style root or a folder of images, not a file")
    if (path / "annotations").is_dir():
        ann, images = resolve_data(path, split)
        try:
            listed = json.loads(Path(ann).read_text())["images"]
            files = sorted(Path(images) / str(im["file_name"]) for im in listed)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{ann}: cannot list its images ({first_line(e)})") from None
    else:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: holds no images to calibrate on")
    idx = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
    return [files[i] for i in sorted(set(idx.tolist()))]


def calibration_feeds(paths: list[Path], runtime: dict) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for each image, preprocessed as the runner does at inference; a file
    that cannot be read is one :class:`DataError` naming it."""
    from maskkit.data.coco import load_image

    feeds = []
    for p in paths:
        image = load_image(p).numpy()  # DataError naming the file when it cannot be decoded
        if runtime["pipeline"] == "proposals":
            feeds.append({f"scale_{i}": c for i, c in enumerate(sharpmask_canvases(image, runtime))})
        else:
            batch, size = centermask_input(image, runtime)
            feeds.append({"image": batch, "size": size})
    return feeds


def conv_nodes(proto) -> list[str]:
    """The names of the graph's convolution nodes, in graph order."""
    return [n.name for n in proto.graph.node if n.op_type == "Conv"]


def quantized_convs(proto) -> list[str]:
    """The convolution nodes whose weight comes through a DequantizeLinear (int8 in the file)."""
    made_by = {o: n for n in proto.graph.node for o in n.output}
    out = []
    for n in proto.graph.node:
        if n.op_type == "Conv" and len(n.input) > 1:
            src = made_by.get(n.input[1])
            if src is not None and src.op_type == "DequantizeLinear":
                out.append(n.name)
    return out


def _nncf(proto, feeds: list[dict], keep_float: list[str]):
    import logging

    # NNCF imports torch's C++-extension helper, which warns about a missing CUDA toolkit
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    nncf.set_log_level(logging.ERROR)

    ignored = nncf.IgnoredScope(names=list(keep_float), validate=False) if keep_float else None
    kw = {"ignored_scope": ignored} if ignored is not None else {}
    return nncf.quantize(proto, nncf.Dataset(feeds), subset_size=len(feeds), **kw), f"nncf {nncf.__version__}"


def _onnxruntime(proto, feeds: list[dict], keep_float: list[str]):
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="maskkit-quantize-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=list(keep_float),
        )
        return onnx.load(str(dst)), f"onnxruntime {onnxruntime.__version__}"


def quantize_graph(payload: bytes, feeds: list[dict], quantizer: str = DEFAULT_QUANTIZER, keep_float=()):
    """The float ONNX graph ``payload`` quantized with ``quantizer`` on ``feeds`` -> (ONNX model
    proto, "quantizer version"). The graph's metadata is kept."""
    import onnx

    if quantizer not in QUANTIZERS:
        raise MaskkitError(f"--quantizer {quantizer}: choose one of {', '.join(QUANTIZERS)}")
    if not feeds:
        raise DataError("no calibration images")
    proto = onnx.load_from_string(payload)
    meta = list(proto.metadata_props)
    try:
        quantized, name = (_nncf if quantizer == "nncf" else _onnxruntime)(proto, feeds, list(keep_float))
    except ImportError as e:
        raise MaskkitError(
            f"--quantize int8 with {quantizer} needs {e.name} (pip install 'maskkit[quantize]')"
        ) from None
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(meta)
    return quantized, name


def conv_group(name: str) -> str:
    """The model part a convolution node belongs to, from its traced name
    (``/backbone/stages.2/...`` -> ``backbone/stages.2``; the FCOS head's levels share theirs;
    the SAG-Mask head's convolutions, SAM and deconvolution are ``mask_head``)."""
    parts = [re.sub(r"_\d+$", "", p) for p in name.strip("/").split("/")[:-1]]
    if not parts or parts[0] in ("convs", "sam"):
        return "mask_head"
    if parts[0] in ("backbone", "fcos", "trunk", "head", "refinement") and len(parts) > 1:
        return "/".join(parts[:2])
    return parts[0]
