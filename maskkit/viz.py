"""Drawing: instances (ground truth or predictions: masks, boxes, "name 0.93" labels; crowd
regions grey) on images, and training curves from ``metrics.jsonl``. Masks are blended in one
at a time over their own crop (:func:`maskkit.masks.mask_crops`), so compact masks (a model's
:class:`~maskkit.masks.BoxMasks`, a dataset's RLE masks) are never expanded to N full-image
arrays; boxes and labels use torchvision's ``draw_bounding_boxes``; curves use matplotlib's
Agg canvas (no display needed).
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from maskkit import metrics_log
from maskkit.errors import MaskkitError
from maskkit.masks import is_compact, mask_crops

__all__ = ["draw_instances", "save_image", "plot_metrics", "instance_colors"]

CROWD_COLOR = (160, 160, 160)  # crowd = ignore region: grey, whatever its class


def instance_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct saturated colours: hues spaced by the golden ratio, so neighbours in the
    list (neighbouring instances) differ strongly whatever ``n`` is."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.1 + i * 0.618033988749895) % 1.0, 0.85, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` float 0..1 or uint8 -> uint8 (plain tensor, on CPU)."""
    image = torch.as_tensor(image).as_subclass(torch.Tensor).detach().cpu()
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise MaskkitError(f"draw_instances: expected an image [3, H, W], got shape {list(image.shape)}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.dtype == torch.uint8:
        return image.clone()
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _font() -> str | None:
    """A TrueType font shipped with matplotlib (a maskkit dependency), else PIL's tiny default."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return str(path) if path.is_file() else None
    except ImportError:
        return None


def _fields(instances: dict, h: int, w: int) -> tuple:
    """(boxes [N, 4], labels list, scores [N] | None, crowd bool [N], masks | None) of a target or
    prediction, checked against each other and the image size; masks compact or a dense
    ``[N, H, W]`` / ``[N, 1, H, W]`` tensor."""
    boxes = (
        torch.as_tensor(instances.get("boxes", torch.zeros(0, 4)))
        .as_subclass(torch.Tensor)
        .detach()
        .cpu()
        .float()
        .reshape(-1, 4)
    )
    n = boxes.shape[0]
    labels = instances.get("labels")
    labels = torch.as_tensor(labels).cpu().reshape(-1).tolist() if labels is not None else [None] * n
    scores = instances.get("scores")
    scores = torch.as_tensor(scores).detach().cpu().float().reshape(-1) if scores is not None else None
    crowd = instances.get("iscrowd")
    crowd = torch.as_tensor(crowd).cpu().reshape(-1).bool() if crowd is not None else torch.zeros(n, dtype=torch.bool)
    masks = instances.get("masks")
    if is_compact(masks):
        if len(masks) != n or tuple(masks.image_size) != (h, w):
            raise MaskkitError(
                f"draw_instances: {len(masks)} masks of {masks.image_size} do not match {n} boxes on a {h}x{w} image"
            )
    elif masks is not None:
        masks = torch.as_tensor(masks).as_subclass(torch.Tensor).detach().cpu()
        if masks.dim() == 4:
            masks = masks[:, 0]
        if masks.shape[0] != n or tuple(masks.shape[-2:]) != (h, w):
            raise MaskkitError(f"draw_instances: masks {list(masks.shape)} do not match {n} boxes on a {h}x{w} image")
    if len(labels) != n or (scores is not None and scores.numel() != n) or crowd.numel() != n:
        raise MaskkitError(
            f"draw_instances: boxes, labels, scores and iscrowd disagree on the number of instances ({n})"
        )

    return boxes, labels, scores, crowd, masks


def _caption(label, class_names: list[str] | None, crowd: bool, score: float | None) -> str:
    """ "name 0.93" ("crowd name" for crowd regions; the label number without class names)."""
    if label is None:
        name = ""
    elif class_names is not None and 1 <= int(label) <= len(class_names):
        name = class_names[int(label) - 1]
    else:
        name = str(int(label))
    if crowd:
        name = f"crowd {name}".strip()
    if score is not None:
        name = f"{name} {score:.2f}".strip()
    return name


def draw_instances(
    image: torch.Tensor,
    instances: dict,
    class_names: list[str] | None = None,
    score_thresh: float = 0.0,
    mask_threshold: float = 0.5,
) -> torch.Tensor:
    """Overlay ``instances`` on ``image`` -> uint8 ``[3, H, W]``.

    ``image``: ``[3, H, W]`` float in 0..1 or uint8. ``instances``: a target or a prediction of
    the data contract: ``boxes [N, 4]`` xyxy px, ``labels [N]`` (1..K, named by
    ``class_names[label - 1]``), optional ``scores [N]`` (instances below ``score_thresh`` are
    skipped; labels read "name 0.93"), optional ``masks`` (compact, :mod:`maskkit.masks`, binarised
    at their own threshold; or dense ``[N, H, W]`` / ``[N, 1, H, W]``, probabilities binarised at
    ``>= mask_threshold``, or binary) and ``iscrowd [N]`` (crowd regions drawn grey, labelled
    "crowd"). Each instance gets its own colour. With no instances the image comes back
    unchanged. Memory: the image and one mask's crop at a time, whatever N is.
    """
    canvas = _to_uint8(image)
    h, w = canvas.shape[-2:]
    boxes, labels, scores, crowd, masks = _fields(instances, h, w)
    n = boxes.shape[0]
    keep = torch.ones(n, dtype=torch.bool) if scores is None else scores >= score_thresh
    idx = keep.nonzero().flatten().tolist()
    if not idx:
        return canvas
    palette = instance_colors(len(idx))
    colors, texts = [], []
    for j, i in enumerate(idx):
        texts.append(_caption(labels[i], class_names, bool(crowd[i]), None if scores is None else scores[i].item()))
        colors.append(CROWD_COLOR if crowd[i] else palette[j])

    if masks is not None:
        _blend_masks(canvas, masks, idx, colors, crowd, mask_threshold)
    size = max(10, min(h, w) // 40)
    font = _font()
    canvas = draw_bounding_boxes(
        canvas,
        boxes[idx],
        labels=texts if any(texts) else None,
        colors=colors,
        width=max(1, min(h, w) // 300 + 1),
        font=font,
        font_size=size if font else None,
        label_colors="white",
        label_background_colors=colors,
        fill_labels=True,
    )
    return canvas


def _blend_masks(canvas: torch.Tensor, masks, idx: list[int], colors: list, crowd: torch.Tensor, threshold: float):
    """Blend the masks of instances ``idx`` into ``canvas`` (uint8 ``[3, H, W]``, in place), one
    mask at a time over its crop: crowd regions first and fainter (alpha 0.35), so objects
    painted over them stay visible, then the objects (alpha 0.5), each over what is below it."""
    order = [j for j, i in enumerate(idx) if crowd[i]] + [j for j, i in enumerate(idx) if not crowd[i]]
    subset = masks[torch.tensor([idx[j] for j in order], dtype=torch.int64)]
    for j, (r0, c0, crop) in zip(order, mask_crops(subset, threshold)):
        alpha = 0.35 if crowd[idx[j]] else 0.5
        region = canvas[:, r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]]
        crop = crop.cpu()
        color = torch.tensor(colors[j], dtype=torch.float32)[:, None]
        region[:, crop] = (region[:, crop].float() * (1 - alpha) + color * alpha).round().clamp(0, 255).to(torch.uint8)


def save_image(image_uint8: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a uint8 ``[3, H, W]`` image as PNG (parent folders created)."""
    path = Path(path)
    if image_uint8.dtype != torch.uint8 or image_uint8.dim() != 3:
        raise MaskkitError(f"save_image: expected uint8 [3, H, W], got {image_uint8.dtype} {list(image_uint8.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_uint8.cpu().permute(1, 2, 0).numpy()).save(path, format="PNG")
    return path


# --------------------------------------------------------------------------- curves
def plot_metrics(jsonl_path: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Training curves from ``metrics.jsonl`` (format: :mod:`maskkit.metrics_log`) to a PNG.

    ``loss*`` keys (``loss``, ``loss/cls``, ...) go in one panel, ``lr`` in one, ``*/AP*`` and
    ``*/AR*`` summary figures (``bbox/AP``, ``eval/proposals/segm/AR@100``; per-category
    ``AP-<name>`` left out) in one, in %. Each series is drawn at the steps where it was
    logged; nan values are skipped. A file whose lines hold none of these keys gives a figure
    saying so (training never fails on its plot); a missing file or a malformed line raises
    :class:`DataError` naming the line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(jsonl_path)
    series = metrics_log.series(metrics_log.read_records(path))
    _panel_of = metrics_log.panel_of
    panels = [p for p in ("loss", "lr", "eval") if any(_panel_of(k) == p for k in series)]
    fig = Figure(figsize=(5 * max(1, len(panels)), 4), dpi=100)
    FigureCanvasAgg(fig)
    if not panels:
        fig.text(0.5, 0.5, f"no finite loss, lr or AP/AR values in {path.name}", ha="center", va="center")
    titles = {"loss": "losses", "lr": "learning rate", "eval": "evaluation (%)"}
    for n, panel in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), n)
        for key, (xs, ys) in sorted(series.items()):
            if _panel_of(key) == panel:
                ys = [100 * y for y in ys] if panel == "eval" else ys
                ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=key)
        if panel == "loss" and all(y > 0 for k, (_, ys) in series.items() if _panel_of(k) == "loss" for y in ys):
            ax.set_yscale("log")
        ax.set_title(titles[panel])
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
