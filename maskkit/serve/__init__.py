"""``maskkit serve``: a local web page (and a JSON endpoint) to try a model file on images.

- :mod:`maskkit.serve.session`: the loaded model, its description, analyses, overlays and
  COCO results (plain Python, no web framework).
- :mod:`maskkit.serve.images`: upload bytes -> image tensor with clear errors.
- :mod:`maskkit.serve.app`: the FastAPI app (needs ``pip install 'maskkit[serve]'``).

The command line lives in :mod:`maskkit.cli.serve`.
"""

from __future__ import annotations

__all__ = ["ServeSession", "create_app"]


def __getattr__(name):
    if name == "ServeSession":
        from maskkit.serve.session import ServeSession

        return ServeSession
    if name == "create_app":
        from maskkit.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'maskkit.serve' has no attribute {name!r}")
