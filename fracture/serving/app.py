"""The HTTP service: `create_app(predictor, ...)` returns a FastAPI app.

    POST /predict   multipart `file` (image or DICOM) -> JSON label, probability, threshold, checkpoint id, latency
    POST /explain   the same upload -> PNG overlay (the labelled X-ray beside its Grad-CAM heatmap)
    GET  /healthz   liveness;  GET /info: model, classes, threshold, backend, versions
    GET  /          a page to drop an X-ray on

Every response carries the header `X-Medical-Notice` and every JSON answer a `notice` field: the service is
for research and teaching, not a medical device.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and they
# refer to objects local to create_app.
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated

import keras
import uvicorn
from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from fracture import __version__
from fracture.data.geometry import MAX_ASPECT, MIN_SIDE, ShapeLimits
from fracture.data.images import TooManyPixels, UnreadableImage, UnsuitableImage, read_xray_bytes
from fracture.inference.predictor import Predictor
from fracture.serving.batching import ServiceBusy
from fracture.serving.worker import ModelWorker

NOTICE = "Research and teaching only: not a medical device. Do not use it to diagnose or to guide treatment."


@dataclass
class ServeSettings:
    """Limits and access control of the service.

    Args:
        max_upload_bytes: larger request bodies are refused with 413 before they are read in full.
        max_pixels: larger images are refused with 413 from their header, before decoding.
        token: when set, /predict, /explain and /info need `Authorization: Bearer <token>` (else 401).
        min_side, max_aspect: images of a shape no radiograph has are refused with 422 (`fracture.data.geometry`).
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 64_000_000
    token: str | None = None
    min_side: int = MIN_SIDE
    max_aspect: float = MAX_ASPECT


def create_app(predictor: Predictor, checkpoint_id: str, settings: ServeSettings | None = None, worker=None) -> FastAPI:
    """The service around a loaded `Predictor`; `checkpoint_id` names the checkpoint in every answer.

    `worker` runs the model calls: by default a `ModelWorker` (one at a time, in arrival order); a
    `fracture.serving.batching.BatchingWorker` predicts requests that arrive together in one batch (as
    `fracture.serve` does), and Ray Serve's replicas pass one batched by Ray (`fracture.serving.ray_serve`). It
    needs `await predict(pixels, explain)`, which may raise `ServiceBusy` (answered 503), and `close()`."""
    settings = settings or ServeSettings()
    limits = ShapeLimits(settings.min_side, settings.max_aspect)
    worker = worker or ModelWorker(predictor)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        worker.close()

    app = FastAPI(title="fracture", description=NOTICE, lifespan=lifespan)
    # Starlette counts the body as it arrives (Content-Length or chunked) and answers 413 past the cap,
    # before FastAPI has stored a multipart upload. Added before the notice, so the notice wraps its answer.
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_upload_bytes)

    @app.middleware("http")
    async def medical_notice(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Medical-Notice"] = "not a medical device"
        return response

    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials, settings.token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def run_model(upload: UploadFile, explain: bool):
        started = time.perf_counter()
        data = await upload.read()
        try:
            pixels = await run_in_threadpool(read_xray_bytes, data, upload.filename, settings.max_pixels, limits)
        except TooManyPixels as error:
            raise HTTPException(413, str(error)) from error
        except UnsuitableImage as error:
            raise HTTPException(422, f"{upload.filename or 'upload'}: {error}") from error
        except UnreadableImage as error:
            raise HTTPException(415, f"{upload.filename or 'upload'}: {error}") from error
        try:
            result = await worker.predict(pixels, explain=explain)
        except ServiceBusy as busy:
            raise HTTPException(503, str(busy), headers={"Retry-After": str(busy.retry_after_s)}) from busy
        return result, (time.perf_counter() - started) * 1000.0

    # Starlette's own errors (404, 405) and FastAPI's validation errors (422) carry the notice too.
    @app.exception_handler(StarletteHTTPException)
    async def errors_with_notice(_request: Request, error: StarletteHTTPException):
        return JSONResponse({"detail": error.detail, "notice": NOTICE}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_requests_with_notice(_request: Request, error: RequestValidationError):
        return JSONResponse({"detail": jsonable_encoder(error.errors()), "notice": NOTICE}, 422)

    @app.post("/predict", dependencies=[Depends(authorised)])
    async def predict(file: Annotated[UploadFile, File()]) -> dict:
        result, latency_ms = await run_model(file, explain=False)
        prediction = result.prediction
        return {
            "filename": file.filename,
            "label": prediction.label,
            "probability": prediction.probability,
            "threshold": prediction.threshold,
            "checkpoint_id": checkpoint_id,
            "latency_ms": round(latency_ms, 2),
            "notice": NOTICE,
        }

    @app.post("/explain", dependencies=[Depends(authorised)], response_class=Response)
    async def explain(file: Annotated[UploadFile, File()]) -> Response:
        result, latency_ms = await run_model(file, explain=True)
        prediction = result.prediction
        headers = {
            "X-Label": prediction.label,
            "X-Probability": f"{prediction.probability:.6f}",
            "X-Threshold": f"{prediction.threshold:.6f}",
            "X-Checkpoint-Id": checkpoint_id,
            "X-Latency-Ms": f"{latency_ms:.2f}",
        }
        return Response(result.overlay_png, media_type="image/png", headers=headers)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "notice": NOTICE}

    @app.get("/info", dependencies=[Depends(authorised)])
    async def info() -> dict:
        metadata = predictor.metadata
        return {
            "model": metadata.get("hparams", {}).get("backbone", "unknown"),
            "classes": {"positive": predictor.positive, "negative": predictor.negative},
            "threshold": predictor.threshold,
            "threshold_source": metadata.get("threshold_source"),
            "image_size": predictor.image_size,
            "checkpoint_id": checkpoint_id,
            "backend": keras.backend.backend(),
            "versions": {"fracture": __version__, "keras": keras.__version__},
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "min_side": settings.min_side,
                "max_aspect": settings.max_aspect,
            },
            "notice": NOTICE,
        }

    page = files("fracture.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    return app


def run_server(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Serve `app` with uvicorn until Ctrl-C."""
    uvicorn.run(app, host=host, port=port, log_level=log_level)
