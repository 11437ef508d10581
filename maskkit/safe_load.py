"""Reading untrusted weight files without running their code.

``read_state_dict(path)`` returns ``{name: Tensor}`` from

- ``.pth`` / ``.pt``: ``torch.load(weights_only=True)`` (torch's own restricted unpickler:
  tensors, containers and numbers only). detectron2 checkpoints wrap the state dict as
  ``{"model": state_dict, "optimizer": ..., "iteration": ...}``; the ``model`` entry is taken.
- ``.pkl``: detectron2's model-zoo pickles, ``{"model": {name: numpy.ndarray}, "__author__": ...}``,
  read with a restricted :class:`pickle.Unpickler` whose ``find_class`` only resolves the
  globals that rebuild numpy arrays (``numpy.core.multiarray._reconstruct`` / ``numpy._core``,
  ``numpy.core.numeric._frombuffer`` for protocol 5, ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy.core.multiarray.scalar``), plain builtin containers and ``_codecs.encode`` (how
  protocol-2 pickles from Python 3 store bytes). Any other global (``os.system``,
  ``builtins.eval``, ...) is refused with a :class:`MaskkitError` *before* anything is
  called, so a payload never runs. The standard
  library has no ready-made safe unpickler for numpy pickles (``torch.load(weights_only=True)``
  refuses numpy's reconstruct functions unless they are allow-listed globally), hence this
  small class.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from maskkit.errors import CheckpointError, first_line

__all__ = ["read_state_dict", "SafeUnpickler", "ALLOWED_GLOBALS"]

# (module, name) pairs a detectron2 .pkl may reference: numpy array reconstruction (numpy 1.x
# "numpy.core", numpy 2.x "numpy._core") and builtin containers.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]  # protocol 5
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("collections", "OrderedDict")]
    # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1"): a
    # pure function (text -> bytes), needed to read numpy arrays from such files.
    + [("_codecs", "encode")]
    + [
        ("builtins", n)
        for n in (
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "bytearray",
            "int",
            "float",
            "str",
            "bytes",
            "complex",
            "bool",
        )
    ]
)


def _numpy_globals() -> list:
    """The numpy objects of :data:`ALLOWED_GLOBALS` for ``torch.serialization.safe_globals``,
    each under the name the pickle spells (``numpy.core.*`` from numpy 1, ``numpy._core.*``
    from numpy 2), resolved in the installed numpy without touching its deprecated alias."""
    import importlib

    out: list = [np.ndarray, np.dtype]
    out += [
        type(np.dtype(t))
        for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)
    ]  # numpy 2 pickles dtypes by their class
    private = "numpy._core." if hasattr(np, "_core") else "numpy.core."
    for module, name in sorted(ALLOWED_GLOBALS):
        if module.startswith(("numpy.core.", "numpy._core.")):
            obj = getattr(importlib.import_module(private + module.split(".", 2)[2]), name, None)
            if obj is not None:
                out.append((obj, f"{module}.{name}"))
    return out


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`; ``file_name`` is
    named in the error raised for anything else."""

    def __init__(self, fh, file_name: str):
        super().__init__(fh, encoding="latin1")  # detectron2 .pkl files may come from Python 2
        self.file_name = file_name

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise CheckpointError(
                f"{self.file_name}: refused to unpickle global {module}.{name} "
                "(only numpy arrays and plain containers are allowed in a weights .pkl)"
            )
        if module.startswith("numpy._core.") and not hasattr(np, "_core"):
            module = "numpy.core." + module.split(".", 2)[2]  # a numpy-2 pickle read with numpy 1.x
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise CheckpointError(f"{self.file_name}: refused a persistent id in a weights .pkl")


def _describe(e: Exception) -> str:
    """``Type: first line`` (the type says more than a bare message from a pickle library)."""
    return f"{type(e).__name__}: {first_line(e)}" if str(e).strip() else type(e).__name__


def _unwrap(obj, path: Path) -> dict:
    """detectron2's ``{"model": sd, ...}`` wrapper -> sd; a bare state dict passes through."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path}: no state dict found (expected a dict of tensors, or {{'model': dict}} as detectron2 writes)"
        )
    return obj


def _to_tensor(name: str, value, path: Path) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise CheckpointError(f"{path}: tensor {name!r} is an object array, not numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(value)
    raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor or array")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``{name: Tensor}`` of a ``.pth``/``.pt``/``.pkl`` weights file, without running pickled code.

    Raises :class:`CheckpointError` (one line naming the file) for a missing or unreadable
    file, a refused pickle global, or contents that are not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        try:
            with open(path, "rb") as fh:
                obj = SafeUnpickler(fh, str(path)).load()
        except CheckpointError:
            raise
        except Exception as e:  # truncated/corrupt pickles raise many types
            raise CheckpointError(f"{path}: unreadable pickle ({_describe(e)})") from None
    elif suffix in (".pth", ".pt"):
        try:
            # torch's weights-only unpickler, plus numpy array reconstruction (detectron2 .pth
            # files converted from .pkl may hold numpy arrays).
            with torch.serialization.safe_globals(_numpy_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()
            reason = next((ln for ln in first if "global" in ln.lower()), first[0] if first else "")
            raise CheckpointError(f"{path}: refused by torch.load(weights_only=True): {reason.strip()}") from None
        except Exception as e:
            raise CheckpointError(f"{path}: unreadable torch file ({_describe(e)})") from None
    else:
        raise CheckpointError(f"{path}: unknown weights format {suffix!r} (expected .pth, .pt or .pkl)")
    sd = _unwrap(obj, path)
    return {str(k): _to_tensor(str(k), v, path) for k, v in sd.items()}
