"""Uploaded bytes -> an image tensor, in memory, with one clear error per bad upload.

Decoding goes through PIL and the data layer's mode handling
(:func:`maskkit.data.coco.pil_to_tensor`): 16-bit grayscale is scaled by 1/65535, CMYK,
palette, grayscale and alpha images are converted to RGB, EXIF orientation is applied (as
:func:`maskkit.data.coco.load_image` does for files). The pixel count is checked from the
header *before* decoding, so a decompression bomb (a tiny file that decodes to gigapixels)
is refused without allocating it.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from maskkit.data.coco import pil_to_tensor
from maskkit.errors import DataError, ImageTooLargeError

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_BYTES", "decode_image", "check_upload_size"]

DEFAULT_MAX_PIXELS = 20_000_000  # 20 MP: a phone photo is 12 MP
DEFAULT_MAX_BYTES = 30 * 1024 * 1024


def check_upload_size(data: bytes, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """:class:`DataError` for an empty upload, :class:`ImageTooLargeError` above ``max_bytes``."""
    if not data:
        raise DataError(f"{name}: the upload is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{name}: the upload is larger than this server's limit of {max_bytes / 2**20:.1f} MiB "
            "(maskkit serve --max-upload-mb)"
        )


def decode_image(data: bytes, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Image file bytes -> float32 ``[3, H, W]`` in 0..1, RGB (the data contract).

    Raises :class:`DataError` naming ``name`` when the bytes are not an image, are truncated
    or use a colour mode that cannot be converted to RGB, and :class:`ImageTooLargeError`
    when the header announces more than ``max_pixels`` pixels.
    """
    if not data:
        raise DataError(f"{name}: the upload is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL's own bomb guard (89 MP) warns: make it an error like ours.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageTooLargeError(
                        f"{name}: the image is {w}x{h} = {w * h / 1e6:.1f} MP, more than this server's limit of "
                        f"{max_pixels / 1e6:.1f} MP (maskkit serve --max-pixels)"
                    )
                img.load()  # decode now: truncated files fail here
                img = ImageOps.exif_transpose(img)
                return pil_to_tensor(img)
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(
            f"{name}: refused as a decompression bomb ({e}); this server's limit is {max_pixels / 1e6:.1f} MP"
        ) from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image (no image format recognised)") from None
    except (OSError, SyntaxError, ValueError, TypeError, MemoryError) as e:
        raise DataError(f"{name}: cannot decode the image ({e})") from None
