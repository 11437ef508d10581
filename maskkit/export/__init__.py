"""Export and deployment: a model file -> one ONNX graph of its whole pipeline, and the runtimes.

- ``onnx.py``        :func:`export_model` / :func:`export_file` (trace, metadata, runtime settings)
- ``centermask.py``  the CenterMask graph, built from the model's own pieces
- ``sharpmask.py``   the DeepMask/SharpMask proposal graph, likewise
- ``fuse.py``        the fused eval modules the graphs and the fused eager path share
- ``runtime.py``     :class:`OnnxRunner`: ONNX Runtime / OpenVINO with NumPy pre/post-processing
                     (imports neither torch nor the rest of maskkit's engine)
- ``numpy_ops.py``   the runner's NumPy twins of the torch pre/post-processing (tested equal)
- ``onnx_model.py``  an ``.onnx`` file behind the module interface the engine runs; :func:`load_any`

Nothing here imports torch at package import, so ``maskkit.export.runtime`` runs where only
NumPy and ONNX Runtime are installed.
"""
