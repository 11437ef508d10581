"""Upload decoding: every bad-upload category gives one clear DataError; 16-bit and CMYK
images are converted like files are by the data layer."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from serve_helpers import encode, png_header_only, png_rgb48

from maskkit.errors import DataError, ImageTooLargeError
from maskkit.serve.images import check_upload_size, decode_image


def test_rgb_png_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    t = decode_image(encode(Image.fromarray(arr)), "a.png")
    assert t.shape == (3, 12, 20) and t.dtype == torch.float32
    assert torch.equal((t * 255).round().to(torch.uint8), torch.from_numpy(arr).permute(2, 0, 1))


def test_16bit_gray_is_scaled_by_65535():
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    img = Image.fromarray(arr)  # mode I;16
    assert img.mode.startswith("I;16")
    t = decode_image(encode(img), "depth16.png")
    assert t.shape == (3, 2, 2)
    assert torch.allclose(t[0], torch.from_numpy(arr.astype(np.float32) / 65535.0))
    assert torch.equal(t[0], t[2])


def test_16bit_rgb_png_keeps_the_high_byte():
    rgb = np.zeros((3, 4, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32768, 256
    t = decode_image(png_rgb48(rgb), "rgb48.png")  # PIL reads 48-bit PNG as 8-bit RGB
    assert t.shape == (3, 3, 4)
    assert (t[:, 0, 0] * 255).round().tolist() == [255, 128, 1]


def test_cmyk_jpeg_is_converted_to_rgb():
    img = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # pure red in CMYK
    t = decode_image(encode(img, "JPEG"), "print.jpg")
    assert t.shape == (3, 8, 16)
    r, g, b = t.mean((1, 2)).tolist()
    assert r > 0.8 and g < 0.2 and b < 0.2


def test_exif_orientation_applied():
    img = Image.new("RGB", (30, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue(), "phone.jpg").shape == (3, 30, 10)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image|cannot decode"),
    ],
)
def test_not_an_image(data, match):
    with pytest.raises(DataError, match=match) as e:
        decode_image(data, "notes.txt")
    assert "notes.txt" in str(e.value) and "\n" not in str(e.value)


def test_truncated_jpeg():
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr), "JPEG")
    with pytest.raises(DataError, match="cut.jpg: cannot decode the image.*truncated"):
        decode_image(data[: len(data) // 2], "cut.jpg")


def test_decompression_bomb_refused_from_header():
    bomb = png_header_only(6000, 5000)  # 30 MP: above our 20 MP default, below PIL's own guard
    assert len(bomb) < 100
    with pytest.raises(ImageTooLargeError, match=r"bomb.png: the image is 6000x5000 = 30.0 MP, more than .* 20.0 MP"):
        decode_image(bomb, "bomb.png")
    # 10 gigapixels: PIL's guard fires inside Image.open; same error class, same limit named.
    with pytest.raises(ImageTooLargeError, match=r"big.png: refused as a decompression bomb .* limit is 20.0 MP"):
        decode_image(png_header_only(100_000, 100_000), "big.png")


def test_pixel_limit_is_configurable():
    data = encode(Image.new("RGB", (40, 30)))
    assert decode_image(data, "ok.png", max_pixels=1200).shape == (3, 30, 40)
    with pytest.raises(ImageTooLargeError, match="1200 px|0.0 MP"):
        decode_image(data, "ok.png", max_pixels=1199)


def test_byte_limit():
    check_upload_size(b"x" * 10, "a.png", max_bytes=10)
    with pytest.raises(ImageTooLargeError, match="a.png: the upload is larger than this server's limit"):
        check_upload_size(b"x" * 11, "a.png", max_bytes=10)
    with pytest.raises(DataError, match="empty"):
        check_upload_size(b"", "a.png")
