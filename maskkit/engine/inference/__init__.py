"""Inference: the one path every verb sends images through, and what is built on it.

- ``predictor.py``  :func:`infer_batches` (batch -> device -> ``model(images)`` -> CPU) and
                    :class:`Predictor` (a model file, an ``.onnx`` file or a module; one image or many)
- ``evaluate.py``   run a model on a dataset split, then score it (:mod:`maskkit.evaluation`);
                    score a results file
- ``files.py``      ``maskkit predict``: files, folders, globs -> COCO results + overlays
- ``video.py``      video frames through the same path (OpenCV)

Never imports :mod:`maskkit.engine.training`.
"""

from maskkit.engine.inference.evaluate import evaluate_file, evaluate_model
from maskkit.engine.inference.files import predict_files
from maskkit.engine.inference.predictor import Predictor, infer_batches, to_image_tensor

__all__ = ["Predictor", "infer_batches", "to_image_tensor", "evaluate_model", "evaluate_file", "predict_files"]
