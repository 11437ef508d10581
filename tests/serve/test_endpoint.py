"""The JSON endpoint of a real ``maskkit serve`` subprocess: COCO results for a good image, a
4xx with a one-line message for each bad-upload category, and the server still answering."""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from serve_helpers import REPO, encode, get, png_header_only, png_rgb48, post_image, running_server

pytestmark = pytest.mark.usefixtures("needs_serve_extra")

RESULT_KEYS = {"image_id", "category_id", "bbox", "score", "segmentation", "segm_score"}


@pytest.fixture(scope="module")
def server(centermask_file):
    with running_server(centermask_file, "--max-upload-mb", "0.1") as base:
        yield base


def example_jpeg(server: str, name: str) -> bytes:
    """A bundled example re-encoded as JPEG (the PNG is above this server's 0.1 MiB limit)."""
    return encode(Image.open(io.BytesIO(get(server + f"api/examples/{name}")[1])).convert("RGB"), "JPEG")


def test_info_and_page(server):
    status, body = get(server + "api/info")
    info = json.loads(body)
    assert status == 200 and info["name"] == "centermask_lite_demo" and info["classes"] == ["person", "dog"]
    assert info["max_bytes"] == int(0.1 * 2**20) and len(info["examples"]) == 3
    status, page = get(server)
    assert status == 200 and b'id="overlay"' in page and b'id="detections"' in page
    status, png = get(server + info["examples"][0]["url"])
    assert status == 200 and Image.open(io.BytesIO(png)).size == (256, 256)


def test_predict_returns_coco_results_and_survives_bad_uploads(server):
    good = example_jpeg(server, "shapes-1.png")
    status, results = post_image(server + "api/predict?score_thr=0.5&image_id=42", good, "shapes.jpg")
    assert status == 200 and isinstance(results, list) and results
    assert all(set(r) == RESULT_KEYS and r["image_id"] == 42 and r["score"] >= 0.5 for r in results)
    assert {r["category_id"] for r in results} <= {1, 18}

    corrupt = bytearray(good)
    corrupt[len(corrupt) // 3 :] = b"\0" * (len(corrupt) - len(corrupt) // 3)
    bad = {
        "notes.txt": (b"this is not an image\n", 400, "notes.txt: not an image"),
        "cut.jpg": (good[: len(good) // 2], 400, "cut.jpg: cannot decode the image"),
        "empty.png": (b"", 400, "empty.png: the upload is empty"),
        "bomb.png": (png_header_only(6000, 5000), 413, "bomb.png: the image is 6000x5000 = 30.0 MP"),
        "giga.png": (png_header_only(100_000, 100_000), 413, "giga.png: refused as a decompression bomb"),
        "big.jpg": (good + b"\0" * 150_000, 413, "big.jpg: the upload is larger than this server's limit of 0.1 MiB"),
    }
    for name, (data, code, message) in bad.items():
        status, body = post_image(server + "api/predict", data, name)
        assert status == code, (name, body)
        assert message in body["error"] and "\n" not in body["error"], (name, body)
    status, body = post_image(server + "api/predict", good, "x.jpg", field="file")
    assert status == 422 and "form field 'image'" in body["error"]
    # A JPEG with zeroed data decodes (garbage pixels) or fails cleanly, never a 5xx.
    assert post_image(server + "api/predict", bytes(corrupt), "zeros.jpg")[0] in (200, 400)

    # Still serving: health, and the same good image gives the same results.
    assert get(server + "api/health") == (200, b'{"status":"ok"}')
    assert post_image(server + "api/predict?score_thr=0.5&image_id=42", good, "again.jpg") == (200, results)


def test_huge_body_refused_from_its_header(server):
    """A 1 GB body is answered 413 from its Content-Length, before the body is sent."""
    host, port = server.split("/")[2].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "the upload is 953.7 MiB" in json.loads(r.read())["error"]
    conn.close()
    assert get(server + "api/health")[0] == 200


def test_16bit_and_cmyk_uploads_are_converted(server):
    gray16 = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 16
    cmyk = Image.new("CMYK", (80, 64), (0, 200, 200, 10))
    rgb48 = np.stack([gray16, gray16 // 2, 65535 - gray16], axis=2).astype(np.uint16)
    uploads = {
        "depth.png": encode(Image.fromarray(gray16)),
        "print.jpg": encode(cmyk, "JPEG"),
        "rgb48.png": png_rgb48(rgb48),
    }
    for name, data in uploads.items():
        status, body = post_image(server + "api/analyze", data, name)
        assert status == 200, body
        assert (body["width"], body["height"], body["name"]) == (80, 64, name)


def test_analysis_views_and_downloads(server):
    status, a = post_image(server + "api/analyze", example_jpeg(server, "shapes-2.png"), "shapes-2.jpg")
    assert status == 200 and a["detections"]
    thr = a["detections"][len(a["detections"]) // 2]["score"]
    status, body = get(server + f"api/results/{a['id']}.json?score_thr={thr}&image_id=3")
    results = json.loads(body)
    assert status == 200 and len(results) == sum(d["score"] >= thr for d in a["detections"])
    status, png = get(server + f"api/overlay/{a['id']}.png?score_thr={thr}")
    assert status == 200 and Image.open(io.BytesIO(png)).size == (256, 256)
    assert get(server + "api/overlay/unknown.png")[0] == 404
    assert get(server + "api/examples/none.png")[0] == 404
    status, body = get(server + "api/no/such/route")
    assert status == 404 and json.loads(body) == {"error": "Not Found"}
    assert get(server + f"api/overlay/{a['id']}.png?score_thr=7")[0] == 422


def test_sharpmask_top_n_over_http(sharpmask_file):
    with running_server(sharpmask_file, "--max-proposals", "8") as base:
        info = json.loads(get(base + "api/info")[1])
        assert info["class_agnostic"] and info["max_detections"] == 8 and info["classes"] == ["object"]
        data = encode(Image.open(io.BytesIO(get(base + "api/examples/shapes-3.png")[1])).convert("RGB"), "JPEG")
        status, everything = post_image(base + "api/predict?score_thr=0", data, "s.jpg")
        assert status == 200 and len(everything) == 8 and {r["category_id"] for r in everything} == {1}
        status, top3 = post_image(base + "api/predict?score_thr=0&top_n=3", data, "s.jpg")
        assert status == 200 and top3 == everything[:3]


def test_bad_weights_is_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "maskkit", "serve", "--weights", str(tmp_path / "none.safetensors")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"maskkit: error: {tmp_path / 'none.safetensors'}: no such model file"]
