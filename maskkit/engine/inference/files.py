"""``maskkit predict``: a model on images, folders, globs or videos -> COCO results JSON and overlays.

    maskkit predict --weights run/model_best.safetensors photo.jpg folder/ 'shots/*.png' clip.mp4

Images go through the one inference path (:class:`maskkit.engine.inference.Predictor`);
results are written with :func:`maskkit.evaluation.predictions_to_coco_results`.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from maskkit.atomic import atomic_write_text
from maskkit.engine.inference.predictor import Predictor, to_image_tensor
from maskkit.engine.inference.video import is_video, predict_video
from maskkit.errors import DataError, MaskkitError
from maskkit.evaluation import predictions_to_coco_results, write_results
from maskkit.viz import draw_instances, save_image

__all__ = ["IMAGE_SUFFIXES", "expand_inputs", "draw_prediction", "predict_files"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and globs -> paths; DataError when nothing matches."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES or is_video(q))
            if not found:
                raise DataError(f"{p}: folder holds no images")
            paths += found
        elif p.is_file():
            paths.append(p)
        elif any(c in item for c in "*?["):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not found:
                raise DataError(f"{item}: no file matches this pattern")
            paths += found
        else:
            raise DataError(f"{p}: no such file or folder")
    return paths


def draw_prediction(
    image: torch.Tensor, pred: dict, class_names: list[str], score_thresh: float, mask_threshold: float = 0.5
) -> torch.Tensor:
    """Overlay of one prediction: uint8 ``[3, H, W]`` (viz's drawing)."""
    return draw_instances(image, pred, class_names, score_thresh, mask_threshold)


def _load_or_skip(path: Path, failed: list[tuple[Path, str]]) -> torch.Tensor | None:
    """The image, or None after one ``maskkit: skipped`` line when it cannot be read."""
    try:
        return to_image_tensor(path)
    except (MaskkitError, OSError, ValueError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        failed.append((path, reason))
        print(f"maskkit: skipped {path}: {reason}", file=sys.stderr)
        return None


def _write_outputs(out: Path, results: list[dict], index: list[dict]) -> None:
    write_results(results, out / "results.json")
    atomic_write_text(out / "images.json", json.dumps(index, indent=1))


def predict_files(
    predictor: Predictor,
    paths: list[Path],
    out: str | Path,
    *,
    draw: bool = True,
    progress: bool = True,
    save_every_s: float = 10.0,
) -> dict:
    """Run ``predictor`` on image and video files; write ``out/results.json`` (COCO results,
    each with its ``file_name``), ``out/images.json`` (the image index) and, with ``draw``,
    ``<stem>_pred.png`` / ``<stem>_pred.mp4`` overlays. Returns counts and ``failed``
    (``[(path, reason)]``).

    An input that cannot be read is skipped with one ``maskkit: skipped`` line on stderr and
    the rest go on; the JSON files are rewritten (atomically) every ``save_every_s`` seconds and
    at the end, so an interrupted run keeps what it finished."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MaskkitError(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    threshold = predictor.mask_threshold
    images = [p for p in paths if not is_video(p)]
    videos = [p for p in paths if is_video(p)]
    results: list[dict] = []
    index: list[dict] = []
    failed: list[tuple[Path, str]] = []
    saved = time.monotonic()
    bar = tqdm(total=len(images), desc="predict", unit="img", dynamic_ncols=True, disable=not images or not progress)
    for start in range(0, len(images), predictor.batch_size):
        batch = images[start : start + predictor.batch_size]
        chunk = [(p, _load_or_skip(p, failed)) for p in batch]
        chunk = [(p, im) for p, im in chunk if im is not None]
        loaded = [im for _, im in chunk]
        for (path, image), pred in zip(chunk, predictor(loaded) if loaded else []):
            image_id = len(index) + 1
            rs = predictions_to_coco_results([pred], [image_id], predictor.label_to_cat_id or None, threshold)
            for r in rs:
                r["file_name"] = str(path)
            results += rs
            index.append(
                {
                    "id": image_id,
                    "file_name": str(path),
                    "height": int(image.shape[1]),
                    "width": int(image.shape[2]),
                    "num_instances": len(rs),
                }
            )
            if draw:
                save_image(
                    draw_prediction(image, pred, predictor.class_names, predictor.score_thresh, threshold),
                    out / f"{path.stem}_pred.png",
                )
        bar.update(len(batch))
        if time.monotonic() - saved > save_every_s:
            _write_outputs(out, results, index)
            saved = time.monotonic()
    bar.close()
    for video in videos:
        try:
            results += predict_video(
                predictor, video, out, draw=draw, mask_threshold=threshold, first_image_id=len(index) + 1, index=index
            )
        except (MaskkitError, OSError) as e:
            failed.append((video, " ".join(str(e).split())))
            print(f"maskkit: skipped {video}: {failed[-1][1]}", file=sys.stderr)
    _write_outputs(out, results, index)
    return {
        "images": len(images) - sum(not is_video(p) for p, _ in failed),
        "videos": len(videos),
        "instances": len(results),
        "out": str(out),
        "failed": failed,
    }
