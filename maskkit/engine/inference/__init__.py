"""Inference: the one path every verb sends images through, and what is built on it.

- ``predictor.py``  :func:`infer_batches` (batch -> device -> ``model(images)`` -> CPU) and
                    :class:`Predictor` (a model file, an ``.onnx`` file or a module; one image or many)
- ``evaluate.py``   run a model on a dataset split, then score it (:mod:`maskkit.evaluation`);
                    score a results file
- ``files.py``      ``maskkit predict``: files, folders, globs -> COCO results + overlays
- ``video.py``      video frames through the same path (OpenCV)

Never imports :mod:`maskkit.engine.training`.
"""
