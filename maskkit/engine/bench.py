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


def build_runtime(model: nn.Module, runtime: str, workdir: str | None = None) -> nn.Module:
    """``model`` (with ``model.info``) on ``runtime`` (see :data:`RUNTIMES`) as a module taking
    ``[image]``; ``onnxruntime`` exports to ``workdir`` first."""
    if runtime == "eager":
        return model
    if runtime in ("fused", "fused_cl"):
        from maskkit.export.fuse import fuse_model

        return fuse_model(model, channels_last=runtime == "fused_cl")
    if runtime in ("onnxruntime", "openvino"):
        from maskkit.export.onnx_model import OnnxModel

        if workdir is None:
            raise MaskkitError("the onnxruntime runtime needs a folder for the exported file")
        return OnnxModel(_exported(model, workdir), threads=torch.get_num_threads(), backend=runtime)
    raise MaskkitError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")


# model -> its exported file: one export serves both ONNX runtimes of the SAME model object. Keyed
# by the object itself (weakly), never by a fixed file name: a second model timed with the same
# folder once ran the first model's graph (benchmarks/export_runtimes.md, SharpMask timings).
_EXPORTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _exported(model: nn.Module, workdir: str) -> Path:
    from maskkit.engine.export import export_model

    path = _EXPORTS.get(model)
    if path is None or not path.is_file():
        fd, name = tempfile.mkstemp(prefix=f"{type(model).__name__.lower()}-", suffix=".onnx", dir=workdir)
        os.close(fd)
        path = export_model(model, name)
        _EXPORTS[model] = path
    return path


def _row(name: str, runtime: str, timing: tuple, image: Tensor, gflops: float | None, peak: float | None) -> dict:
    median, times, out = timing
    h, w = image.shape[-2:]
    achieved = gflops / (median / 1000) if gflops is not None else None
    return {
        "model": name,
        "runtime": runtime,
        "input": f"{h}x{w}",
        "detections": len(out["boxes"]),
        "median_ms": median,
        "min_ms": min(times),
        "gflops": gflops,
        "gflops_per_s": achieved,
        "pct_peak": 100 * achieved / peak if achieved is not None and peak else None,
    }


def run_bench(
    model_name: str,
    size: int | None = None,
    vs: str | None = None,
    iters: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    detections: int = 50,
    num_classes: int = 80,
    flops: bool = True,
    runtimes: tuple[str, ...] = ("eager",),
) -> list[dict]:
    """Time preset ``model_name`` on each of ``runtimes`` (and the peer ``vs``, eager) on the same
    image -> one row per (model, runtime): ``dict(model, runtime, input, detections, median_ms,
    gflops, gflops_per_s, pct_peak, ...)``; the first row carries ``peak_gflops_per_s``."""
    cfg = get_config(model_name, num_classes)
    if not system_of(cfg).benchmarked:
        raise MaskkitError(f"bench measures CenterMask presets; {model_name!r} is a {cfg.model.system} model")
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise MaskkitError(f"--runtime {','.join(bad) or '(none)'}: choose from {', '.join(RUNTIMES)}")
    if device != "cpu" and any(r != "eager" for r in runtimes):
        raise MaskkitError("--runtime fused/fused_cl/onnxruntime are measured on the CPU (--device cpu)")
    overrides = ["model.fcos.score_thresh=0.0", f"model.fcos.detections_per_image={detections}"]
    if size:
        overrides.append(f"model.min_size_test={size}")
    model = build(get_config(model_name, num_classes, overrides), backbone_weights=False).to(device).eval()
    h, w = bench_image_size(model.cfg.min_size_test, model.cfg.max_size_test)
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    gflops = centermask_gflops(model, h, w) if flops else None
    with tempfile.TemporaryDirectory(prefix="maskkit-bench-") as tmp:
        timed = {(model_name, r): build_runtime(model, r, tmp) for r in runtimes}
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
        f"{'model':<28} {'runtime':<12} {'input':>9} {'dets':>5} {'median ms':>10} {'min ms':>8} {'GFLOPs':>7} "
        f"{'GFLOP/s':>8} {'% peak':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        g = f"{r['gflops']:.1f}" if r["gflops"] is not None else "-"
        gs = f"{r['gflops_per_s']:.1f}" if r.get("gflops_per_s") is not None else "-"
        pct = f"{r['pct_peak']:.0f}%" if r.get("pct_peak") is not None else "-"
        lines.append(
            f"{r['model']:<28} {r.get('runtime', 'eager'):<12} {r['input']:>9} {r['detections']:>5} "
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
