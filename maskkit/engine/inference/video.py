"""Video input for ``maskkit predict`` (the ``[video]`` extra: opencv-python-headless).

Frames are read with OpenCV's ``VideoCapture``, sent through the same batched inference path
as images (:meth:`maskkit.engine.inference.Predictor.predict_many`), drawn, and written with
``VideoWriter`` (mp4v) at the source frame rate as ``<out>/<stem>_pred.mp4``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from maskkit.errors import DataError, MaskkitError
from maskkit.evaluation import predictions_to_coco_results
from maskkit.viz import draw_instances

__all__ = ["VIDEO_SUFFIXES", "is_video", "read_frames", "predict_video"]

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _cv2():
    try:
        import cv2
    except ImportError:
        raise MaskkitError("video input needs OpenCV: pip install 'maskkit[video]'") from None
    return cv2


def read_frames(path: str | Path) -> tuple[Iterator[torch.Tensor], float, tuple[int, int], int]:
    """``(frames, fps, (H, W), frame_count)``; frames are float ``[3, H, W]`` RGB in 0..1."""
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    h, w = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))

    def frames() -> Iterator[torch.Tensor]:
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = np.ascontiguousarray(bgr[..., ::-1])
                yield torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
        finally:
            cap.release()

    return frames(), float(fps), (h, w), count


def predict_video(
    predictor,
    path: str | Path,
    out_dir: str | Path,
    *,
    draw: bool = True,
    mask_threshold: float = 0.5,
    first_image_id: int = 1,
    index: list | None = None,
) -> list[dict]:
    """Predict every frame of ``path``; write ``<out>/<stem>_pred.mp4`` when ``draw``; return
    COCO results (``image_id`` numbers the frames from ``first_image_id``; each result also
    names its ``video`` and ``frame``). ``index`` (a list) receives one entry per frame."""
    cv2 = _cv2()
    path, out_dir = Path(path), Path(out_dir)
    frames, fps, (h, w), count = read_frames(path)
    writer = None
    if draw:
        out_path = out_dir / f"{path.stem}_pred.mp4"
        writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise MaskkitError(f"{out_path}: OpenCV cannot write an mp4v video here")
    kept: list[torch.Tensor] = []

    def remember(it):
        for frame in it:
            kept.append(frame)
            yield frame

    results: list[dict] = []
    try:
        preds = predictor.predict_many(remember(frames))
        for k, pred in enumerate(tqdm(preds, total=count or None, desc=path.name, unit="frame", dynamic_ncols=True)):
            frame = kept.pop(0)
            image_id = first_image_id + k
            rs = predictions_to_coco_results([pred], [image_id], predictor.label_to_cat_id or None, mask_threshold)
            for r in rs:
                r["video"], r["frame"] = str(path), k
            results += rs
            if index is not None:
                index.append(
                    {
                        "id": image_id,
                        "file_name": str(path),
                        "frame": k,
                        "height": h,
                        "width": w,
                        "num_instances": len(rs),
                    }
                )
            if writer is not None:
                rgb = draw_instances(frame, pred, predictor.class_names, predictor.score_thresh, mask_threshold)
                writer.write(np.ascontiguousarray(rgb.permute(1, 2, 0).numpy()[..., ::-1]))  # RGB -> BGR
    finally:
        if writer is not None:
            writer.release()
    if not results and index is not None and not any(e.get("file_name") == str(path) for e in index):
        raise DataError(f"{path}: the video has no readable frames")
    return results
