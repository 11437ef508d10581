"""Reading image files as the data contract's float32 ``[3, H, W]`` RGB in 0..1 (the modes PIL
decodes, EXIF orientation, the decompression-bomb limit, float images holding NaN)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from maskkit.errors import DataError

__all__ = ["load_image", "pil_to_tensor", "PIXEL_LIMIT_ENV"]

# PIL modes holding 16-bit (or wider integer) samples: scaled by 1/65535, not 1/255.
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


PIXEL_LIMIT_ENV = "MASKKIT_MAX_IMAGE_PIXELS"  # raises PIL's decompression-bomb limit (~179 MP refused)


def load_image(path: str | Path) -> torch.Tensor:
    """Read any PIL-readable image as float32 ``[3, H, W]`` in 0..1, RGB.

    - EXIF orientation is applied (the returned size is the upright one).
    - Grayscale (``L``, ``1``) is replicated to 3 channels; palette (``P``) is looked up.
    - Alpha (``RGBA``, ``LA``, ``PA``) is DROPPED: the colour channels are kept as stored,
      not composited on a background (what OpenCV's ``imread`` does too).
    - 16-bit grayscale (``I;16*``/``I``) is scaled by 1/65535 (full 16-bit range to 0..1);
      float images (``F``) are taken as 0..255 and clipped; one holding NaN or infinity is
      refused (:class:`DataError` naming the file), not turned into colours.

    Raises :class:`DataError` naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    limit = os.environ.get(PIXEL_LIMIT_ENV)
    try:
        if limit:
            Image.MAX_IMAGE_PIXELS = int(limit) if int(limit) > 0 else None
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, inside the try
            img = ImageOps.exif_transpose(img)
            return pil_to_tensor(img)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except DataError as e:  # what the pixels hold (NaN, ...): the same problem, with the file named
        raise DataError(f"{path}: {e}") from None
    except Image.DecompressionBombError as e:
        raise DataError(
            f"{path}: {e.args[0].split('.')[0] if e.args else 'too many pixels'} (PIL's "
            f"decompression-bomb guard); to open it set {PIXEL_LIMIT_ENV}=<pixels> (0 = no limit)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """Decoded PIL image -> float32 ``[3, H, W]`` in 0..1, RGB (modes as in :func:`load_image`)."""
    return torch.from_numpy(np.ascontiguousarray(_pil_to_rgb_array(img).transpose(2, 0, 1)))


def _pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """Decoded PIL image -> float32 ``[H, W, 3]`` in 0..1 (see :func:`load_image` for modes)."""
    mode = img.mode
    if mode in _WIDE_INT_MODES:
        # 16-bit PNG/TIFF: PIL's convert("RGB") would clip at 255 instead of scaling.
        gray = np.asarray(img).astype(np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.asarray(img).astype(np.float32)
        if not np.isfinite(gray).all():  # a 32-bit float TIFF can hold them; no colour means NaN
            bad = "NaN" if np.isnan(gray).any() else "infinite"
            raise DataError(f"the image holds {bad} values (32-bit float pixels); only finite values can be read")
        return np.repeat(np.clip(gray / 255.0, 0.0, 1.0)[:, :, None], 3, axis=2)
    if mode != "RGB":
        # L/1 -> replicated, P -> palette colours, RGBA/LA/PA -> alpha dropped, CMYK/YCbCr -> RGB.
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0
