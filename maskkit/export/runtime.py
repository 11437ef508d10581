"""Run a maskkit ONNX file (``maskkit export``) with ONNX Runtime (or OpenVINO); pre- and
post-processing in NumPy (and nothing else: this module imports neither torch nor the rest of
maskkit's engine, so it runs where only ``numpy`` and ``onnxruntime`` are installed).

    runner = OnnxRunner("model.onnx")
    pred = runner(image)  # float32 [3, H, W] in 0..1 (or uint8 [H, W, 3])
    pred["boxes"] [N, 4], pred["labels"] [N], pred["scores"] [N], pred["masks"] [N, 1, H, W],
    pred["mask_scores"] [N]   (NumPy arrays, the data contract of DESIGN.md)

The steps are ``CenterMask.inference``'s: the test resize, normalisation and padding
(:func:`maskkit.export.numpy_ops.centermask_input`), the graph (the model's own
``detect_and_segment``), then ``CenterMask.finish`` with the model's post-processing convention
(the same :class:`maskkit.models.centermask.postprocess.PostProcess` object) and the NumPy paste.
SharpMask's are ``SharpMask.propose`` + ``proposals_to_prediction``'s. The NumPy twins of the torch
steps are :mod:`maskkit.export.numpy_ops`, each tested equal to its original.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from maskkit.errors import MaskkitError, first_line
from maskkit.export.numpy_ops import (
    canonical_boxes,
    centermask_input,
    paste_masks,
    paste_window_masks,
    sharpmask_canvases,
    window_boxes,
)
from maskkit.export.precision import Choice, CpuFeatures, choose_precision
from maskkit.models.centermask.postprocess import postprocess_of

__all__ = ["EXPORT_FORMAT", "OnnxRunner", "read_metadata", "read_onnx_metadata", "is_openvino_ir"]

EXPORT_FORMAT = "1"  # the layout of a maskkit .onnx file (inputs, outputs, metadata)


def _check_metadata(path: Path, meta: dict[str, str]) -> dict[str, str]:
    if "maskkit_runtime" not in meta:
        raise MaskkitError(
            f"{path}: a model file without maskkit metadata; it was not written by `maskkit export` "
            "(a model for another task or tool?)"
        )
    if meta.get("maskkit_export_format") != EXPORT_FORMAT:
        raise MaskkitError(
            f"{path}: maskkit ONNX format {meta.get('maskkit_export_format')!r} is not supported "
            f"(expected {EXPORT_FORMAT!r}); export the model again"
        )
    return meta


def is_openvino_ir(path: str | Path) -> bool:
    """An OpenVINO IR model (``maskkit export --format openvino``: ``.xml`` + ``.bin``)."""
    return Path(path).suffix.lower() == ".xml"


def read_metadata(path: str | Path) -> dict[str, str]:
    """The maskkit metadata of an exported file: an ``.onnx`` file's ``metadata_props`` (read
    with ``onnx``, or ONNX Runtime), an OpenVINO IR's ``rt_info["maskkit"]``. One-line
    :class:`MaskkitError` when the file is missing, not loadable, or not exported by maskkit."""
    path = Path(path)
    if not path.is_file():
        raise MaskkitError(f"{path}: no such model file")
    try:
        if is_openvino_ir(path):
            info = _openvino().Core().read_model(str(path)).get_rt_info()
            meta = {k: v.astype(str) for k, v in (info["maskkit"].items() if "maskkit" in info else ())}
        else:
            meta = _onnx_metadata(path)
    except MaskkitError:
        raise
    except Exception as e:  # the runtimes raise their own exception types (Fail, InvalidGraph, ...)
        kind = "OpenVINO IR" if is_openvino_ir(path) else "ONNX"
        raise MaskkitError(f"{path}: not a loadable {kind} file ({first_line(e)[:200]})") from None
    return _check_metadata(path, meta)


def _onnx_metadata(path: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:  # the graph's metadata through ONNX Runtime instead
        return dict(_ort_session(path, None).get_modelmeta().custom_metadata_map)
    proto = onnx.load(str(path), load_external_data=False)
    return {e.key: e.value for e in proto.metadata_props}


def read_onnx_metadata(path: str | Path) -> tuple[object, dict[str, str]]:
    """An ONNX Runtime session for ``path`` and the file's maskkit metadata (:func:`read_metadata`)."""
    meta = read_metadata(path)
    return _ort_session(Path(path), None), meta


def _openvino():
    try:
        import openvino as ov
    except ImportError:
        raise MaskkitError("runtime openvino needs the openvino package (pip install openvino)") from None
    return ov


def _ort_session(path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise MaskkitError(f"{path}: running .onnx files needs onnxruntime (pip install 'maskkit[export]')") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise MaskkitError(f"{path}: not a loadable ONNX file ({first_line(e)[:200]})") from None


class _OpenVinoSession:
    """The same ``run(None, feeds) -> [outputs]`` as an ONNX Runtime session, on OpenVINO's CPU
    plugin (which reads ``.onnx`` files and its own IR), with an inference precision hint: f32
    stated explicitly, since on CPUs with native bf16 (AMX, AVX512-BF16) the plugin's default is
    bf16, which moves detections; bf16 when asked for. INT8 files run their quantized
    convolutions in int8 whatever the hint says."""

    def __init__(self, path: Path, threads: int | None, hint: str = "f32"):
        config = {"INFERENCE_PRECISION_HINT": hint, **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})}
        try:
            self.compiled = _openvino().Core().compile_model(str(path), "CPU", config)
        except MaskkitError:
            raise
        except Exception as e:
            raise MaskkitError(f"{path}: OpenVINO cannot compile it ({first_line(e)[:200]})") from None

    def run(self, _names, feeds: dict) -> list[np.ndarray]:
        res = self.compiled(feeds)
        return [np.asarray(res[o]) for o in self.compiled.outputs]


class OnnxRunner:
    """An exported maskkit model (``.onnx``, or OpenVINO IR ``.xml``) under ONNX Runtime or
    OpenVINO on the CPU. ``runner(image) -> prediction`` with NumPy arrays; ``runner.config_json``,
    ``class_names``, ``cat_ids``, ``quantization`` (None for a float file) from the file.

    ``precision``: fp32 | bf16 | int8 | auto (None: the file's own, float32 or int8), chosen with
    :func:`maskkit.export.precision.choose_precision`, which also picks the runtime unless
    ``backend`` names one (``runner.choice`` says what runs and why)."""

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        backend: str | None = None,
        precision: str | None = None,
        features: CpuFeatures | None = None,
    ):
        self.path = Path(path)
        meta = read_metadata(self.path)
        self.quantization: dict | None = (
            json.loads(meta["maskkit_quantization"]) if "maskkit_quantization" in meta else None
        )
        if backend not in (None, "onnxruntime", "openvino"):
            raise MaskkitError(f"unknown ONNX backend {backend!r}: onnxruntime or openvino")
        if is_openvino_ir(self.path):
            if backend == "onnxruntime":
                raise MaskkitError(f"{self.path}: an OpenVINO IR file runs on OpenVINO, not ONNX Runtime")
            backend = "openvino"
        self.choice: Choice = choose_precision(
            precision, "int8" if self.quantization else "fp32", "onnx", str(self.path), features, backend
        )
        if self.choice.runtime == "openvino":
            self.session = _OpenVinoSession(self.path, threads, "bf16" if self.choice.precision == "bf16" else "f32")
        else:
            self.session = _ort_session(self.path, threads)
        self.runtime = json.loads(meta["maskkit_runtime"])
        self.config_json: str = meta["maskkit_config"]
        self.class_names: list[str] = json.loads(meta.get("class_names", "[]"))
        self.cat_ids: list[int] = [int(c) for c in json.loads(meta.get("cat_ids", "[]"))]
        # the graph's kind: "detections" (CenterMask: one image in, boxes + 28x28 masks out) or
        # "proposals" (DeepMask/SharpMask: one canvas per pyramid scale in, window masks out)
        self.pipeline: str = self.runtime["pipeline"]
        if self.pipeline not in ("detections", "proposals"):
            raise MaskkitError(f"{self.path}: unknown maskkit ONNX pipeline {self.pipeline!r}; upgrade maskkit")
        self.mask_threshold = float(self.runtime["mask_threshold"])
        # CenterMask: the model's post-processing convention (the object the model itself uses)
        self.post = postprocess_of(self.runtime["postprocess"]) if self.pipeline == "detections" else None

    @staticmethod
    def as_image(image) -> np.ndarray:
        """float ``[3, H, W]`` in 0..1, or uint8 ``[3, H, W]`` / ``[H, W, 3]`` -> float32 ``[3, H, W]``."""
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] != 3 and arr.shape[2] in (3, 4):
            arr = arr[..., :3].transpose(2, 0, 1)
        if arr.ndim != 3 or arr.shape[0] != 3:
            raise MaskkitError(f"expected an image [3, H, W] or [H, W, 3], got shape {arr.shape}")
        return arr.astype(np.float32) / np.float32(255) if arr.dtype == np.uint8 else arr.astype(np.float32)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[3, H, W]`` -> (normalised, padded ``[1, 3, H_pad, W_pad]``, ``size`` = resized ``(h, w)``)."""
        return centermask_input(image, self.runtime)

    def __call__(self, image, paste: bool = True) -> dict[str, np.ndarray]:
        """One image -> a prediction of NumPy arrays, ``masks`` pasted (float ``[N, 1, H, W]``,
        SharpMask bool). ``paste=False``: no full-image masks; ``mask_probs [N, M, M]`` over the
        ``boxes`` instead (with ``zero_outside``), or for proposals over ``window_boxes`` (with
        ``fallback`` boxes and no tight ``boxes``): what :class:`maskkit.masks.BoxMasks` takes."""
        image = self.as_image(image)
        if self.pipeline == "proposals":
            return self.proposals(image, paste)
        batch, size = self.preprocess(image)
        boxes, scores, labels, probs, mask_scores = self.session.run(None, {"image": batch, "size": size})
        return self.postprocess(boxes, scores, labels, probs, mask_scores, tuple(size), image.shape[-2:], paste)

    def postprocess(self, boxes, scores, labels, probs, mask_scores, size, orig, paste=True) -> dict[str, np.ndarray]:
        """``CenterMask.finish`` for one image: boxes to the original size, the post-processing
        convention's last step (the official one clips here, drops empty boxes and keeps the
        bilinear bleed in the paste), masks pasted there."""
        (h, w), (h0, w0) = size, orig
        boxes = boxes * np.asarray([w0 / w, h0 / h, w0 / w, h0 / h], np.float32)
        boxes, kept = self.post.final_boxes(boxes.reshape(-1, 4), (h0, w0))
        if kept is not None:
            boxes, scores, labels, probs, mask_scores = (
                boxes[kept],
                scores[kept],
                labels[kept],
                probs[kept],
                mask_scores[kept],
            )
        out = {
            "boxes": boxes.astype(np.float32),
            "labels": labels.astype(np.int64),
            "scores": scores.astype(np.float32),
            "mask_scores": mask_scores.astype(np.float32),
        }
        if not paste:
            return {**out, "mask_probs": probs.astype(np.float32), "zero_outside": self.post.zero_outside}
        return {**out, "masks": paste_masks(probs, boxes, (h0, w0), self.post.zero_outside)}

    def proposals(self, image: np.ndarray, paste: bool = True) -> dict[str, np.ndarray]:
        """SharpMask / DeepMask: the graph's top windows -> window boxes in image px, masks
        pasted and binarised, tight boxes (``SharpMask.propose`` + ``proposals_to_prediction``)."""
        rt = self.runtime
        canvases = sharpmask_canvases(image, rt)
        feeds = {f"scale_{i}": c for i, c in enumerate(canvases)}
        scores, which, cells, masks = self.session.run(None, feeds)
        h, w = image.shape[-2:]
        wb = window_boxes(which, cells, rt["scales"], rt["window"])
        fallback = canonical_boxes(wb, rt["canonical_size"], rt["window"])
        if not paste:
            return {
                "window_boxes": wb,
                "fallback": fallback.astype(np.float32),
                "labels": np.ones(len(scores), np.int64),
                "scores": scores.astype(np.float32),
                "mask_probs": masks.astype(np.float32),
            }
        pasted, boxes = paste_window_masks(masks, wb, (h, w), float(rt["mask_threshold"]), fallback)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return {
            "boxes": boxes,
            "labels": np.ones(len(scores), np.int64),
            "scores": scores.astype(np.float32),
            "masks": pasted,
        }
