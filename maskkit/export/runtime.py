"""Run a maskkit ONNX file (``maskkit export``) with ONNX Runtime; pre- and post-processing in
NumPy (and nothing else: this module imports neither torch nor the rest of maskkit's engine, so
it runs where only ``numpy`` and ``onnxruntime`` are installed).

    runner = OnnxRunner("model.onnx")
    pred = runner(image)  # float32 [3, H, W] in 0..1 (or uint8 [H, W, 3])
    pred["boxes"] [N, 4], pred["labels"] [N], pred["scores"] [N], pred["masks"] [N, 1, H, W],
    pred["mask_scores"] [N]   (NumPy arrays, the data contract of DESIGN.md)

The steps mirror ``CenterMask.inference``: shortest-side resize (antialiased bilinear, as
``torchvision.transforms.v2.functional.resize(antialias=True)``), normalisation, zero padding to
``size_divisibility``, the graph, then boxes scaled to the original size and masks pasted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from maskkit.errors import MaskkitError, first_line
from maskkit.geometry import paste_regions, test_resize_size

__all__ = [
    "OnnxRunner",
    "read_onnx_metadata",
    "resize_antialias",
    "resize_align_corners",
    "paste_masks",
    "paste_window_masks",
    "sharpmask_canvases",
]

EXPORT_FORMAT = "1"


def read_onnx_metadata(path: str | Path) -> tuple[object, dict[str, str]]:
    """An ONNX Runtime session for ``path`` and the file's maskkit metadata; one-line
    :class:`MaskkitError` when the file is missing, not ONNX, or not exported by maskkit."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MaskkitError(f"{path}: running .onnx files needs onnxruntime (pip install 'maskkit[export]')") from None
    path = Path(path)
    if not path.is_file():
        raise MaskkitError(f"{path}: no such model file")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise MaskkitError(f"{path}: not a loadable ONNX file ({first_line(e)[:200]})") from None
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    if "maskkit_runtime" not in meta:
        raise MaskkitError(
            f"{path}: ONNX file without maskkit metadata; it was not written by `maskkit export` "
            "(a model for another task or tool?)"
        )
    if meta.get("maskkit_export_format") != EXPORT_FORMAT:
        raise MaskkitError(
            f"{path}: maskkit ONNX format {meta.get('maskkit_export_format')!r} is not supported "
            f"(expected {EXPORT_FORMAT!r}); export the model again"
        )
    return sess, meta


def _aa_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps ``idx [n_out, T]`` and weights ``[n_out, T]`` of PyTorch's antialiased bilinear
    resize along one axis (ATen ``UpSampleKernel.cpp``: ``_compute_indices_min_size_weights_aa``
    with the triangle filter, ``align_corners=False``). Written out because no NumPy-only
    library reproduces torch's numbers (PIL's float mode differs by up to ~5e-5)."""
    f32 = np.float32  # ATen computes scale, centres and weights in float32 for float images
    scale = f32(n_in) / f32(n_out)
    support = scale if scale >= 1.0 else f32(1.0)  # interp_size 2 (bilinear) * 0.5, widened when downsampling
    invscale = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
    centers = scale * (np.arange(n_out, dtype=f32) + f32(0.5))
    xmin = np.maximum((centers - support + f32(0.5)).astype(np.int64), 0)
    xmax = np.minimum((centers + support + f32(0.5)).astype(np.int64), n_in)
    taps = int((xmax - xmin).max())
    j = np.arange(taps)[None, :]
    idx = xmin[:, None] + j
    w = np.maximum(f32(1.0) - np.abs((idx.astype(f32) - centers[:, None] + f32(0.5)) * invscale), f32(0.0))
    w[idx >= xmax[:, None]] = 0.0
    total = np.zeros(n_out, f32)
    for t in range(taps):  # sequential sum, as ATen
        total += w[:, t]
    w /= total[:, None]
    return np.minimum(idx, n_in - 1), w


def resize_antialias(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 ``[C, H, W]`` -> ``[C, height, width]``, separable (width, then height)."""
    c, h, w = image.shape
    if (h, w) == (height, width):
        return image
    out = image
    if w != width:
        idx, wt = _aa_taps(w, width)
        out = np.einsum("chwt,wt->chw", out[:, :, idx], wt, optimize=False).astype(np.float32)
    if h != height:
        idx, wt = _aa_taps(h, height)
        out = np.einsum("chtw,ht->chw", out[:, idx, :], wt, optimize=False).astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def _bilinear_weights(coord: np.ndarray, lo: np.ndarray, hi: np.ndarray, m: int, zero_outside: bool) -> np.ndarray:
    """``[N, P, M]`` weights of bilinear sampling (``grid_sample``, ``align_corners=False``, zero
    padding) of an ``M``-cell mask spanning ``[lo, hi]`` (``[N]``) at pixel centres ``coord [N, P]``;
    ``zero_outside``: 0 for pixel centres outside ``[lo, hi]`` (as ``maskkit.masks._axis_weights``)."""
    g = (coord - lo[:, None]) / np.maximum(hi - lo, np.float32(1e-6))[:, None] * np.float32(2) - np.float32(1)
    src = ((g + np.float32(1)) * np.float32(m) - np.float32(1)) / np.float32(2)  # [N, P]
    i0 = np.floor(src)
    frac = (src - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    cells = np.arange(m)[None, None, :]
    w = (cells == i0[..., None]) * (np.float32(1) - frac)[..., None] + (cells == i0[..., None] + 1) * frac[..., None]
    if zero_outside:
        w = w * (np.abs(g) <= 1)[..., None]
    return w.astype(np.float32)


def _box_crops(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], zero_outside: bool):
    """Per mask: ``(r0, c0, float crop)``, its pasted probabilities over the rows and columns it
    can touch (:func:`maskkit.geometry.paste_regions`), as ``BoxMasks.prob_crops``. The
    sampling grid is separable (x depends on the column only, y on the row), so the bilinear
    resample is two small matrix products per mask, ``Wy [h, M] @ mask @ Wx^T [M, w]``."""
    h, w = int(size[0]), int(size[1])
    n, m = masks.shape[0], masks.shape[-1]
    boxes = boxes.astype(np.float32)
    probs = masks.reshape(n, m, m).astype(np.float32)
    half = np.float32(0.5)
    for i, (r0, c0, rh, rw) in enumerate(paste_regions(boxes.tolist(), m, h, w, zero_outside)):
        b = boxes[i : i + 1]
        px = (np.arange(rw, dtype=np.float32) + np.float32(c0) + half)[None]  # pixel centres of the region
        py = (np.arange(rh, dtype=np.float32) + np.float32(r0) + half)[None]
        wx = _bilinear_weights(px, b[:, 0], b[:, 2], m, zero_outside)[0]
        wy = _bilinear_weights(py, b[:, 1], b[:, 3], m, zero_outside)[0]
        yield r0, c0, wy @ (probs[i] @ wx.T)  # the order of maskkit.masks


def paste_masks(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], zero_outside: bool = True) -> np.ndarray:
    """NumPy twin of :meth:`maskkit.masks.BoxMasks.probabilities`: ``[N, M, M]`` mask
    probabilities into their boxes ``[N, 4]`` -> float32 ``[N, 1, H, W]``, each computed over
    the pixels it can touch only (a full-image product per mask cost 1.7 s for 50 masks at
    600x800 with BLAS threads competing: benchmarks/export_runtimes.md)."""
    h, w = int(size[0]), int(size[1])
    out = np.zeros((masks.shape[0], 1, max(h, 0), max(w, 0)), np.float32)
    if h > 0 and w > 0:
        for i, (r0, c0, crop) in enumerate(_box_crops(masks, boxes, (h, w), zero_outside)):
            out[i, 0, r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]] = crop
    return out


def resize_align_corners(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 ``[C, H, W]`` -> ``[C, height, width]``, bilinear with corners aligned and no
    antialiasing (``F.interpolate(align_corners=True)``; SharpMask's ``pyramid="official"``)."""

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
        src = scale * np.arange(n_out, dtype=np.float32)
        i0 = src.astype(np.int64)
        lam = (src - i0).astype(np.float32)
        return i0, np.minimum(i0 + 1, n_in - 1), lam

    c, h, w = image.shape
    y0, y1, ly = taps(h, height)
    x0, x1, lx = taps(w, width)
    rows = image[:, y0, :] * (np.float32(1) - ly)[None, :, None] + image[:, y1, :] * ly[None, :, None]
    out = rows[:, :, x0] * (np.float32(1) - lx) + rows[:, :, x1] * lx
    return np.ascontiguousarray(out, dtype=np.float32)


def sharpmask_canvases(image: np.ndarray, spec: dict) -> list[np.ndarray]:
    """SharpMask's per-scale inputs (``SharpMask._scale_maps``): the image resized by ``2^s``,
    normalised, padded by half a window (mean colour or ``border_fill``) and to whole stride-16
    cells -> one ``[1, 3, H_s, W_s]`` per scale."""
    h0, w0 = image.shape[-2:]
    mean = np.asarray(spec["pixel_mean"], np.float32)[:, None, None]
    std = np.asarray(spec["pixel_std"], np.float32)[:, None, None]
    pad = spec["window"] // 2
    fill = np.float32(0) if spec["border_fill"] is None else (np.float32(spec["border_fill"]) - mean) / std
    out = []
    for s in spec["scales"]:
        f = 2.0**s
        if spec["pyramid"] == "official":
            h, w = max(1, int(np.floor(h0 * f + 0.5))), max(1, int(np.floor(w0 * f + 0.5)))
            x = image if (h, w) == (h0, w0) else resize_align_corners(image, h, w)
        else:
            h, w = max(1, round(h0 * f)), max(1, round(w0 * f))
            x = resize_antialias(image, h, w)
        ch, cw = h + 2 * pad, w + 2 * pad
        canvas = np.zeros((3, ch + (-ch) % 16, cw + (-cw) % 16), np.float32) + fill
        canvas[:, pad : pad + h, pad : pad + w] = (x - mean) / std
        out.append(canvas[None])
    return out


def paste_window_masks(
    masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], threshold: float, fallback: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`maskkit.models.sharpmask.model.paste_window_masks`: window masks
    ``[N, M, M]`` over windows ``boxes [N, 4]`` -> bool ``[N, 1, H, W]`` (bilinear, binarised at
    ``threshold``, pixels whose centre is outside the window cleared) and the masks' tight
    boxes (``fallback`` where empty). Each mask is resampled over its window only."""
    h, w = size
    out = np.zeros((masks.shape[0], 1, h, w), bool)
    tight = fallback.astype(np.float32).copy()
    for i, (r0, c0, crop) in enumerate(_box_crops(masks, boxes, (h, w), True)):
        vals = crop >= threshold
        out[i, 0, r0 : r0 + vals.shape[0], c0 : c0 + vals.shape[1]] = vals
        rows, cols = vals.any(axis=1), vals.any(axis=0)
        if rows.any():
            ys, xs = np.nonzero(rows)[0], np.nonzero(cols)[0]
            tight[i] = [c0 + xs[0], r0 + ys[0], c0 + xs[-1] + 1, r0 + ys[-1] + 1]
    return out, tight


class _OpenVinoSession:
    """The same ``run(None, feeds) -> [outputs]`` as an ONNX Runtime session, on OpenVINO's CPU
    plugin (the optional ``openvino`` package reads the ``.onnx`` file directly)."""

    def __init__(self, path: Path, threads: int | None):
        try:
            import openvino as ov
        except ImportError:
            raise MaskkitError("runtime openvino needs the openvino package (pip install openvino)") from None
        # float32 stated explicitly: on CPUs with native bf16 (AMX, AVX512-BF16) the CPU plugin's
        # default inference precision is bf16, which moves detections
        config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)

    def run(self, _names, feeds: dict) -> list[np.ndarray]:
        res = self.compiled(feeds)
        return [np.asarray(res[o]) for o in self.compiled.outputs]


class OnnxRunner:
    """An exported maskkit model under ONNX Runtime (CPU). ``runner(image) -> prediction``
    with NumPy arrays; ``runner.config_json``, ``class_names``, ``cat_ids`` from the file."""

    def __init__(self, path: str | Path, threads: int | None = None, backend: str = "onnxruntime"):
        self.path = Path(path)
        self.session, meta = read_onnx_metadata(self.path)
        if backend == "openvino":
            self.session = _OpenVinoSession(self.path, threads)
        elif backend != "onnxruntime":
            raise MaskkitError(f"unknown ONNX backend {backend!r}: onnxruntime or openvino")
        elif threads is not None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
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
        rt = self.runtime
        h0, w0 = image.shape[-2:]
        h, w = test_resize_size(h0, w0, rt["min_size_test"], rt["max_size_test"])
        img = resize_antialias(image, h, w)
        if rt["input_format"] == "BGR255":
            img = img[::-1] * np.float32(255.0)
        mean = np.asarray(rt["pixel_mean"], np.float32)[:, None, None]
        std = np.asarray(rt["pixel_std"], np.float32)[:, None, None]
        d = max(int(rt["size_divisibility"]), 1)
        batch = np.zeros((1, 3, -(-h // d) * d, -(-w // d) * d), np.float32)
        batch[0, :, :h, :w] = (img - mean) / std
        return batch, np.asarray([h, w], np.int64)

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
        """Boxes to the original size and masks pasted there (``CenterMask.segment``); with
        ``postprocess="centermask2"`` boxes are clipped after the mask branch, empty ones dropped
        and the paste keeps the bilinear bleed (detectron2 ``detector_postprocess``)."""
        (h, w), (h0, w0) = size, orig
        boxes = boxes * np.asarray([w0 / w, h0 / h, w0 / w, h0 / h], np.float32)
        zero_outside = True
        if self.runtime["postprocess"] == "centermask2":
            boxes = np.stack(
                [boxes[:, 0].clip(0, w0), boxes[:, 1].clip(0, h0), boxes[:, 2].clip(0, w0), boxes[:, 3].clip(0, h0)],
                axis=1,
            ).reshape(-1, 4)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            probs, mask_scores = probs[keep], mask_scores[keep]
            zero_outside = False
        out = {
            "boxes": boxes.astype(np.float32),
            "labels": labels.astype(np.int64),
            "scores": scores.astype(np.float32),
            "mask_scores": mask_scores.astype(np.float32),
        }
        if not paste:
            return {**out, "mask_probs": probs.astype(np.float32), "zero_outside": zero_outside}
        return {**out, "masks": paste_masks(probs, boxes, (h0, w0), zero_outside)}

    def proposals(self, image: np.ndarray, paste: bool = True) -> dict[str, np.ndarray]:
        """SharpMask / DeepMask: the graph's top windows -> window boxes in image px, masks
        pasted and binarised, tight boxes (``SharpMask.propose`` + ``proposals_to_prediction``)."""
        rt = self.runtime
        canvases = sharpmask_canvases(image, rt)
        feeds = {f"scale_{i}": c for i, c in enumerate(canvases)}
        scores, which, cells, masks = self.session.run(None, feeds)
        h, w = image.shape[-2:]
        # as torch: 2^s and window / 2^s are Python floats, rounded to float32 where they meet tensors
        factor = np.asarray([2.0**s for s in rt["scales"]], np.float32)[which]
        side = np.asarray([rt["window"] / 2.0**s for s in rt["scales"]], np.float32)[which]
        pad = np.float32(rt["window"] // 2)
        x0 = (cells[:, 1].astype(np.float32) * np.float32(16) - pad) / factor
        y0 = (cells[:, 0].astype(np.float32) * np.float32(16) - pad) / factor
        wb = np.stack([x0, y0, x0 + side, y0 + side], axis=1).reshape(-1, 4).astype(np.float32)
        centre = (wb[:, :2] + wb[:, 2:]) / 2
        half = (wb[:, 2:] - wb[:, :2]) * np.float32(rt["canonical_size"] / rt["window"]) / 2
        fallback = np.concatenate([centre - half, centre + half], axis=1)
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
