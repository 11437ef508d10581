"""The FastAPI app of ``maskkit serve``: one HTML page and a small JSON API.

Routes (all answers JSON unless noted; errors are ``{"error": "<one line>"}`` with a 4xx)::

    GET  /                          the page (maskkit/serve/static/index.html)
    GET  /api/health                {"status": "ok"}
    GET  /api/info                  model name, system, classes, input size, bundled examples
    GET  /api/examples/{name}       a bundled synthetic example (PNG)
    POST /api/predict               form field "image" -> COCO results (list of dicts), for scripts;
                                    query: score_thr (default 0.3), top_n, image_id (default 1)
    POST /api/analyze               form field "image" -> {id, width, height, detections, ...}
                                    (the page's call: every detection, for the sliders)
    GET  /api/overlay/{id}.png      overlay PNG of a cached analysis; query: score_thr, top_n
    GET  /api/results/{id}.json     COCO results of a cached analysis (a download); same query

Status codes: 400 not an image / truncated / unconvertible, 413 too many bytes or pixels,
404 unknown example or an analysis no longer cached, 422 malformed query. Uploads are
decoded in memory (:mod:`maskkit.serve.images`); Starlette spools large multipart bodies to
the system temp directory only.
"""

from __future__ import annotations

import json
from importlib import resources

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from maskkit.errors import ImageTooLargeError, MaskkitError
from maskkit.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, check_upload_size, decode_image
from maskkit.serve.session import Analysis, ServeSession

__all__ = ["create_app"]

_MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around the file


def _page() -> str:
    return resources.files("maskkit.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _install_error_handling(app: FastAPI, max_bytes: int) -> None:
    """Every error answers ``{"error": "<one line>"}``: MaskkitError -> 400 (413 when too
    large), HTTP errors keep their status, malformed requests -> 422; bodies whose
    Content-Length is over ``max_bytes`` are refused before they are read."""

    @app.exception_handler(MaskkitError)
    async def _maskkit_error(request: Request, exc: MaskkitError) -> JSONResponse:
        return _error(413 if isinstance(exc, ImageTooLargeError) else 400, str(exc))

    @app.middleware("http")
    async def _body_limit(request: Request, call_next):
        # Refuse an oversized body from its header, before the multipart parser reads it.
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + _MULTIPART_SLACK:
            return _error(
                413,
                f"the upload is {int(length) / 2**20:.1f} MiB, more than this server's limit of "
                f"{max_bytes / 2**20:.1f} MiB (maskkit serve --max-upload-mb)",
            )
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        hint = (
            " (send the image as multipart form field 'image', e.g. curl -F image=@photo.jpg)"
            if any("image" in p for p in problems)
            else ""
        )
        return _error(422, "; ".join(problems) + hint)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # a maskkit bug: logged by uvicorn too
        return _error(500, f"internal error ({type(exc).__name__}: {exc}); the server keeps running")


def _add_page_routes(
    app: FastAPI, session: ServeSession, examples: dict[str, bytes], max_pixels: int, max_bytes: int
) -> None:
    """The page, the health check, the model description and the bundled examples."""
    page = _page()

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/info")
    def info() -> dict:
        return {
            **session.info.as_json(),
            "examples": [{"name": n, "url": f"api/examples/{n}"} for n in examples],
            "max_pixels": max_pixels,
            "max_bytes": max_bytes,
        }

    @app.get("/api/examples/{name}")
    def example(name: str) -> Response:
        if name not in examples:
            raise HTTPException(404, f"no bundled example named {name!r}")
        return Response(examples[name], media_type="image/png")


def create_app(
    session: ServeSession, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> FastAPI:
    """The app serving ``session``'s model; uploads above ``max_bytes`` bytes or ``max_pixels``
    pixels are refused with 413."""
    app = FastAPI(title=f"maskkit serve: {session.info.name}", docs_url=None, redoc_url=None)
    _install_error_handling(app, max_bytes)
    examples = dict(session.examples)

    def _read(upload: UploadFile) -> Analysis:
        name = upload.filename or "upload"
        data = upload.file.read(max_bytes + 1)
        check_upload_size(data, name, max_bytes)
        return session.analyze(decode_image(data, name, max_pixels), name=name)

    def _cached(analysis_id: str) -> Analysis:
        analysis = session.get(analysis_id)
        if analysis is None:
            raise HTTPException(404, f"analysis {analysis_id} is no longer held by the server: upload the image again")
        return analysis

    _add_page_routes(app, session, examples, max_pixels, max_bytes)

    @app.post("/api/predict")
    def predict(
        image: UploadFile = File(...),
        score_thr: float = Query(0.3, ge=0.0, le=1.0),
        top_n: int | None = Query(None, ge=0),
        image_id: int = 1,
    ) -> JSONResponse:
        analysis = _read(image)
        return JSONResponse(session.coco_results(analysis, score_thr, top_n, image_id))

    @app.post("/api/analyze")
    def analyze(image: UploadFile = File(...)) -> dict:
        a = _read(image)
        h, w = a.size
        return {
            "id": a.id,
            "name": a.name,
            "width": w,
            "height": h,
            "seconds": round(a.seconds, 3),
            "detections": session.detections(a),
        }

    @app.get("/api/overlay/{analysis_id}.png")
    def overlay(
        analysis_id: str, score_thr: float = Query(0.0, ge=0.0, le=1.0), top_n: int | None = Query(None, ge=0)
    ) -> Response:
        return Response(session.overlay_png(_cached(analysis_id), score_thr, top_n), media_type="image/png")

    @app.get("/api/results/{analysis_id}.json")
    def results(
        analysis_id: str,
        score_thr: float = Query(0.0, ge=0.0, le=1.0),
        top_n: int | None = Query(None, ge=0),
        image_id: int = 1,
    ) -> Response:
        body = json.dumps(session.coco_results(_cached(analysis_id), score_thr, top_n, image_id))
        return Response(
            body,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="results-{analysis_id}.json"'},
        )

    return app
