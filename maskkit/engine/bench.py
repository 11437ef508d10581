"""Measure inference latency (and FLOPs) of a model preset, side by side with a peer.

``maskkit bench --model centermask_lite_v19 --size 600 --vs maskrcnn_r50`` times both models
in this process on the same random image (shorter side ``--size``, 4:3), in eval mode, with
the same number of detections sent through each mask branch: random weights give few
confident boxes, so both score thresholds are set to 0 and both detection caps to
``--detections`` (CenterMask: ``fcos.score_thresh=0`` -> every location is a candidate, the
top ``detections_per_image`` after NMS are kept; Mask R-CNN: ``box_score_thresh=0``,
``box_detections_per_img``). The reported latency is the median over ``--iters`` timed
runs after ``--warmup`` untimed ones, of the whole ``model([image])`` call (resize,
backbone, heads, decoding) and of pasting the masks at image size (maskkit's models return
compact masks, :class:`maskkit.masks.BoxMasks`, pasted here with ``to_dense()`` so the work
equals the peer's full-image paste). The rows are timed interleaved (each round calls every
runtime, the peer and the conv-peak probe once, :func:`time_models`), so a change of machine
load during the run moves every row alike and the ratios stay comparable.

Runtimes (``--runtime``, several at once: the ratios are measured in one process): ``eager``
(the model as trained), ``fused`` (:func:`maskkit.export.fuse.fuse_model`: norms folded into the
convolutions), ``fused_cl`` (the same with channels_last weights) and ``onnxruntime`` (the
exported file under ONNX Runtime with the NumPy pre/post-processing, ``torch`` threads =
ONNX Runtime intra-op threads) and ``openvino`` (the same file and NumPy steps on OpenVINO's CPU
plugin; optional package). Each row also reports the achieved GFLOP/s as a percentage of
the machine's convolution peak measured in the same run (:func:`conv_peak_gflops`: a large
3x3 convolution), so the distance to the roofline is visible.

FLOPs come from :mod:`maskkit.models.flops` (multiply-add = 1, convolutions and matrix
products only); this module only times.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import weakref
from pathlib import Path

import torch
from torch import Tensor, nn

from maskkit.engine.systems import system_of
from maskkit.errors import MaskkitError
from maskkit.masks import is_compact
from maskkit.models.flops import bench_image_size, centermask_gflops, count_gflops
from maskkit.models.zoo import build, get_config

__all__ = [
    "PEERS",
    "RUNTIMES",
    "time_model",
    "time_models",
    "ConvPeak",
    "build_peer",
    "conv_peak_gflops",
    "build_runtime",
    "run_bench",
    "format_rows",
    "bench_model",
    "random_calibration_folder",
]

PEERS = ("maskrcnn_r50",)
RUNTIMES = ("eager", "fused", "fused_cl", "onnxruntime", "openvino")


def _timed_call(model: nn.Module, image: Tensor, sync) -> tuple[float, dict]:
    sync()
    t0 = time.perf_counter()
    out = model([image])[0]
    if is_compact(out.get("masks")):  # the paste the peer does inside its forward
        out["masks"] = out["masks"].to_dense()
    sync()
    return (time.perf_counter() - t0) * 1000, out


def time_models(
    models: dict[str, nn.Module], image: Tensor, iters: int = 10, warmup: int = 2, probe=None
) -> tuple[dict[str, tuple[float, list[float], dict]], list[float]]:
    """Time every model of ``models`` on ``[image]`` **interleaved**: ``warmup`` untimed calls of
    each, then ``iters`` rounds of one timed call of each (and of ``probe()``, if given, which
    returns its own figure, e.g. the conv peak), so a change of machine load during the run
    hits every row alike instead of whichever row ran then (sequential rows drift apart on a
    shared machine: ``benchmarks/export_runtimes.md``). -> ``{name: (median ms, times, last
    prediction)}`` and
    the probe's figures."""
    sync = torch.cuda.synchronize if image.is_cuda else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in models}
    outs: dict[str, dict] = {}
    probes: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            for name, model in models.items():
                outs[name] = _timed_call(model, image, sync)[1]
        for _ in range(iters):
            if probe is not None:
                probes.append(probe())
            for name, model in models.items():
                t, outs[name] = _timed_call(model, image, sync)
                times[name].append(t)
    return {k: (statistics.median(v), v, outs[k]) for k, v in times.items()}, probes


def time_model(model: nn.Module, image: Tensor, iters: int = 10, warmup: int = 2) -> tuple[float, list[float], dict]:
    """Median latency in ms of ``model([image])`` over ``iters`` runs (after ``warmup``), all
    timings, and the last prediction."""
    return time_models({"model": model}, image, iters, warmup)[0]["model"]


def build_peer(name: str, min_size: int, max_size: int, detections: int) -> nn.Module:
    """torchvision's Mask R-CNN R50-FPN, randomly initialised (nothing downloaded), resizing to
    the same input size and forced to send ``detections`` boxes through its mask branch."""
    if name != "maskrcnn_r50":
        raise MaskkitError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        min_size=min_size,
        max_size=max_size,
        box_score_thresh=0.0,
        box_detections_per_img=detections,
    ).eval()


class ConvPeak:
    """The machine's convolution peak in GFLOP/s (multiply-add = 1, as the models' GFLOPs): a
    256 -> 256 3x3 convolution on a 100x100 map (5.9 GMAC, large enough for the best oneDNN
    kernel), with this process's thread count. Each call times it once (the first call also
    warms it up); :func:`time_models` calls it once per round."""

    MACS = 256 * 256 * 9 * 100 * 100

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device).eval()
        self.x = torch.rand(1, 256, 100, 100, device=device)
        self.warm = False

    def __call__(self) -> float:
        with torch.inference_mode():
            for _ in range(1 if self.warm else 2):
                t0 = time.perf_counter()
                self.conv(self.x)
                if self.device != "cpu":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
        self.warm = True
        return self.MACS / elapsed / 1e9


def conv_peak_gflops(device: str = "cpu", iters: int = 5) -> float:
    """The median of ``iters`` :class:`ConvPeak` measurements."""
    peak = ConvPeak(device)
    return statistics.median(peak() for _ in range(iters))


def build_runtime(
    model: nn.Module,
    runtime: str,
    workdir: str | None = None,
    precision: str = "fp32",
    calibration: str | Path | None = None,
) -> nn.Module:
    """``model`` (with ``model.info``) on ``runtime`` (see :data:`RUNTIMES`) at ``precision`` as a
    module taking ``[image]``: bf16 is autocast for the PyTorch runtimes and OpenVINO's hint;
    int8 is the model exported with ``--quantize int8`` (calibrated on ``calibration``, a folder
    of images), run by ONNX Runtime or OpenVINO. The exported runtimes export to ``workdir``."""
    if runtime in ("eager", "fused", "fused_cl"):
        if precision == "int8":
            raise MaskkitError(f"--runtime {runtime}: int8 runs exported files (onnxruntime, openvino)")
        module = model
        if runtime != "eager":
            from maskkit.export.fuse import fuse_model

            module = fuse_model(model, channels_last=runtime == "fused_cl")
        if precision == "bf16":
            from maskkit.export.fuse import AutocastModel

            module = AutocastModel(module, torch.bfloat16)
        return module
    if runtime in ("onnxruntime", "openvino"):
        from maskkit.export.onnx_model import OnnxModel

        if workdir is None:
            raise MaskkitError("the onnxruntime runtime needs a folder for the exported file")
        if precision == "bf16" and runtime == "onnxruntime":
            raise MaskkitError("--precision bf16: ONNX Runtime has no bf16 CPU kernels; use openvino")
        path = _exported(model, workdir, calibration if precision == "int8" else None)
        return OnnxModel(path, threads=torch.get_num_threads(), backend=runtime, precision=precision)
    raise MaskkitError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")


# model -> its exported file: one export serves both ONNX runtimes of the SAME model object. Keyed
# by the object itself (weakly), never by a fixed file name: a second model timed with the same
# folder once ran the first model's graph (benchmarks/export_runtimes.md, SharpMask timings).
_EXPORTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {calibration or None: path}


def _exported(model: nn.Module, workdir: str, calibration: str | Path | None = None) -> Path:
    """The model's float export (``calibration`` None), or its INT8 export calibrated there."""
    from maskkit.engine.export import export_model

    files = _EXPORTS.setdefault(model, {})
    key = None if calibration is None else str(calibration)
    path = files.get(key)
    if path is None or not path.is_file():
        fd, name = tempfile.mkstemp(prefix=f"{type(model).__name__.lower()}-", suffix=".onnx", dir=workdir)
        os.close(fd)
        if calibration is None:
            path = export_model(model, name)
        else:
            from maskkit.engine.quantize import quantize_model

            path = quantize_model(model, name, calibration, calibration_count=16)
        files[key] = path
    return path


def random_calibration_folder(image: Tensor, workdir: str, count: int = 8) -> Path:
    """``count`` random images of the bench image's size (the bench's random weights make
    calibration on real images pointless: the INT8 rows time the arithmetic, not accuracy)."""
    from PIL import Image

    folder = Path(workdir) / "calibration"
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(1)
    for i in range(count):
        arr = (torch.rand(image.shape[-2], image.shape[-1], 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"random_{i}.png")
    return folder


def _row(name: str, runtime: str, timing: tuple, image: Tensor, gflops: float | None, peak: float | None) -> dict:
    median, times, out = timing
    h, w = image.shape[-2:]
    achieved = gflops / (median / 1000) if gflops is not None else None
    return {
        "model": name,
        "runtime": runtime,  # "openvino", or "openvino-int8" etc. for a precision other than fp32
        "input": f"{h}x{w}",
        "detections": len(out["boxes"]),
        "median_ms": median,
        "min_ms": min(times),
        "gflops": gflops,
        "gflops_per_s": achieved,
        "pct_peak": 100 * achieved / peak if achieved is not None and peak else None,
    }


def bench_model(model_name: str | None, weights, num_classes: int, overrides: list[str], device: str):
    """The timed model: preset ``model_name`` with random weights (its box regression biased so
    that every location predicts a box of a few strides, as trained models do: random weights
    give near-empty boxes, which an INT8 export would round away), or a trained model file."""
    if weights is not None:
        from maskkit.checkpoint import load_model
        from maskkit.config import apply_overrides

        model = load_model(weights, device=device)
        cfg = model.info.config
        if not system_of(cfg).benchmarked:
            raise MaskkitError(f"bench measures CenterMask models; {weights} is a {cfg.model.system} model")
        apply_overrides(cfg, overrides)  # the model's cfg is this config's model part
        return model, Path(weights).stem
    cfg = get_config(model_name, num_classes)
    if not system_of(cfg).benchmarked:
        raise MaskkitError(f"bench measures CenterMask presets; {model_name!r} is a {cfg.model.system} model")
    model = build(get_config(model_name, num_classes, overrides), backbone_weights=False).to(device).eval()
    with torch.no_grad():
        model.fcos.box_pred.bias.fill_(2.0)
    return model, model_name


def run_bench(
    model_name: str | None,
    size: int | None = None,
    vs: str | None = None,
    iters: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    detections: int = 50,
    num_classes: int = 80,
    flops: bool = True,
    runtimes: tuple[str, ...] = ("eager",),
    precisions: tuple[str, ...] = ("fp32",),
    weights: str | Path | None = None,
    calibration: str | Path | None = None,
) -> list[dict]:
    """Time preset ``model_name`` (random weights) or the model file ``weights`` on each of
    ``runtimes`` x ``precisions`` (and the peer ``vs``, eager) on the same image -> one row per
    (model, runtime, precision): ``dict(model, runtime, input, detections, median_ms, gflops,
    gflops_per_s, pct_peak, ...)``; the first row carries ``peak_gflops_per_s``. Combinations a
    runtime does not have (int8 in PyTorch, bf16 in ONNX Runtime) are left out; bf16 on a CPU
    without native bf16 is refused (:func:`maskkit.export.precision.choose_precision`)."""
    from maskkit.export.precision import cpu_features

    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise MaskkitError(f"--runtime {','.join(bad) or '(none)'}: choose from {', '.join(RUNTIMES)}")
    wrong = [p for p in precisions if p not in ("fp32", "bf16", "int8")]
    if wrong or not precisions:
        raise MaskkitError(f"--precision {','.join(wrong) or '(none)'}: choose from fp32, bf16, int8")
    if device != "cpu" and (any(r != "eager" for r in runtimes) or precisions != ("fp32",)):
        raise MaskkitError(
            "--runtime fused/fused_cl/onnxruntime and --precision are measured on the CPU (--device cpu)"
        )
    if "bf16" in precisions and not cpu_features().bf16:
        raise MaskkitError(f"--precision bf16: no native bfloat16 on this CPU ({cpu_features().describe()})")
    overrides = ["model.fcos.score_thresh=0.0", f"model.fcos.detections_per_image={detections}"]
    if size:
        overrides.append(f"model.min_size_test={size}")
    model, label = bench_model(model_name, weights, num_classes, overrides, device)
    h, w = bench_image_size(model.cfg.min_size_test, model.cfg.max_size_test)
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    gflops = centermask_gflops(model, h, w) if flops else None
    combos = [
        (r, p)
        for p in precisions
        for r in runtimes
        if not (p == "int8" and r in ("eager", "fused", "fused_cl")) and not (p == "bf16" and r == "onnxruntime")
    ]
    with tempfile.TemporaryDirectory(prefix="maskkit-bench-") as tmp:
        calib = calibration or (random_calibration_folder(image, tmp) if "int8" in precisions else None)
        timed = {(label, r if p == "fp32" else f"{r}-{p}"): build_runtime(model, r, tmp, p, calib) for r, p in combos}
        flop = dict.fromkeys(timed, gflops)
        if vs:
            torch.manual_seed(0)  # the peer's random weights (and so its FLOPs) do not depend on what ran before
            peer = build_peer(vs, h, max(h, w), detections).to(device)
            timed[(vs, "eager")] = peer
            flop[(vs, "eager")] = count_gflops(lambda: peer([image])) if flops else None
        timings, probes = time_models(timed, image, iters, warmup, ConvPeak(device) if flops else None)
    peak = statistics.median(probes) if probes else None
    rows = [
        _row(name, runtime, timings[(name, runtime)], image, flop[(name, runtime)], peak) for name, runtime in timed
    ]
    rows[0]["peak_gflops_per_s"] = peak
    return rows


def format_rows(rows: list[dict]) -> str:
    """A table, the measured conv peak, and each row's latency ratio to the first row."""
    head = (
        f"{'model':<28} {'runtime':<14} {'input':>9} {'dets':>5} {'median ms':>10} {'min ms':>8} {'GFLOPs':>7} "
        f"{'GFLOP/s':>8} {'% peak':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        g = f"{r['gflops']:.1f}" if r["gflops"] is not None else "-"
        gs = f"{r['gflops_per_s']:.1f}" if r.get("gflops_per_s") is not None else "-"
        pct = f"{r['pct_peak']:.0f}%" if r.get("pct_peak") is not None else "-"
        lines.append(
            f"{r['model']:<28} {r.get('runtime', 'eager'):<14} {r['input']:>9} {r['detections']:>5} "
            f"{r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {g:>7} {gs:>8} {pct:>7}"
        )
    peak = rows[0].get("peak_gflops_per_s") if rows else None
    if peak:
        lines.append(f"conv peak (256->256 3x3 on 100x100, same run): {peak:.1f} GFLOP/s (multiply-add = 1)")
    base = rows[0] if rows else None
    for r in rows[1:]:
        lines.append(
            f"{r['model']} [{r.get('runtime', 'eager')}] / {base['model']} [{base.get('runtime', 'eager')}] "
            f"latency ratio: {r['median_ms'] / base['median_ms']:.2f}x"
        )
    return "\n".join(lines)
