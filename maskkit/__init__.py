"""maskkit: CenterMask and SharpMask instance segmentation in PyTorch.

Public API::

    maskkit.list_models()                       # preset names
    maskkit.create_model(name, num_classes=K)   # a randomly initialised preset
    maskkit.load_model(path)                    # a trained model file (safetensors + config)
    maskkit.Predictor(path_or_model)(image)     # inference -> the data contract

Imports are lazy so ``maskkit --help`` starts fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "Predictor", "__version__"]


def create_model(name: str, num_classes: int | None = None, overrides=()):
    """Build preset ``name`` with ``num_classes`` classes (see :func:`maskkit.models.zoo.create_model`)."""
    from maskkit.models.zoo import create_model as _create

    return _create(name, num_classes=num_classes, overrides=overrides)


def list_models() -> list[str]:
    """Names of all model presets."""
    from maskkit.models.zoo import list_models as _list

    return _list()


def load_model(path, device: str = "cpu"):
    """Load a maskkit model file (safetensors with the config, class names and category-id
    mapping embedded); returns the model in eval mode."""
    from maskkit.checkpoint import load_model as _load

    return _load(path, device=device)


def __getattr__(name):
    if name == "Predictor":
        from maskkit.engine.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'maskkit' has no attribute {name!r}")
