"""The HTTP service through FastAPI's test client: every endpoint, every error, and concurrent uploads."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_readers import ramp, write_dicom

from fracture.errors import ConfigError
from fracture.inference.predictor import load_predictor
from fracture.models.checkpoint import checkpoint_id, update_metadata
from fracture.serve import check_bind
from fracture.serving import NOTICE, ServeSettings, create_app
from fracture.serving.batching import BatchingWorker
from fracture.serving.worker import ModelWorker

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_checkpoint):
    path = tmp_path_factory.mktemp("serve") / "model.keras"
    path.write_bytes(tiny_checkpoint.read_bytes())
    update_metadata(path, threshold=0.4, threshold_source="val", threshold_method="youden")
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return load_predictor(checkpoint)


def client_for(predictor, checkpoint, worker=None, **settings) -> TestClient:
    return TestClient(create_app(predictor, checkpoint_id(checkpoint), ServeSettings(**settings), worker=worker))


@pytest.fixture()
def client(predictor, checkpoint):
    with client_for(predictor, checkpoint) as client:
        yield client


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_images(synthetic_root, count: int) -> list:
    return sorted((synthetic_root / "test").rglob("*.png"))[:count]


def test_health_and_info(client, checkpoint):
    assert client.get("/healthz").json() == {"status": "ok", "notice": NOTICE}
    info = client.get("/info").json()
    assert info["model"] == "tiny_cnn" and info["image_size"] == 64
    assert info["classes"] == {"positive": "fractured", "negative": "not fractured"}
    assert info["threshold"] == 0.4 and info["threshold_source"] == "val"
    assert info["checkpoint_id"] == checkpoint_id(checkpoint) and len(info["checkpoint_id"]) == 16
    assert info["backend"] in ("tensorflow", "jax") and info["versions"]["fracture"]


def test_page_is_served_from_the_package_with_no_outside_resources(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "not a medical device" in page and 'id="file"' in page
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", page), "the page must not load a CDN"


@pytest.mark.backend
def test_predict_matches_the_predictor(client, predictor, synthetic_root, checkpoint):
    for path in synthetic_images(synthetic_root, 3):
        body = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/png")}).json()
        expected = predictor.predict(path)
        assert body["probability"] == pytest.approx(expected.probability, abs=1e-6)
        assert body["label"] == expected.label and body["threshold"] == 0.4
        assert body["checkpoint_id"] == checkpoint_id(checkpoint) and body["filename"] == path.name
        assert body["latency_ms"] > 0 and body["notice"] == NOTICE


def test_dicom_upload(client, predictor, tmp_path):
    path = write_dicom(tmp_path / "scan.dcm", ramp(80, 96), "MONOCHROME2")
    body = client.post("/predict", files={"file": ("scan.dcm", path.read_bytes())}).json()
    assert body["probability"] == pytest.approx(predictor.predict(path).probability, abs=1e-6)
    # The DICOM magic is enough, whatever the upload's name.
    renamed = client.post("/predict", files={"file": ("upload", path.read_bytes())}).json()
    assert renamed["probability"] == body["probability"]


def test_explain_returns_the_overlay_png(client, predictor, synthetic_root):
    path = synthetic_images(synthetic_root, 1)[0]
    response = client.post("/explain", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    expected = predictor.explain(path)
    assert overlay.size == expected.overlay.size
    assert float(response.headers["X-Probability"]) == pytest.approx(expected.prediction.probability, abs=1e-5)
    assert response.headers["X-Label"] == expected.prediction.label


def test_uploads_above_the_cap_get_413(predictor, checkpoint):
    with client_for(predictor, checkpoint, max_upload_bytes=10_000) as client:
        big = np.random.default_rng(0).integers(0, 255, (120, 120), np.uint8)  # ~14 kB as PNG
        response = client.post("/predict", files={"file": ("big.png", png_bytes(big))})
        assert response.status_code == 413 and response.headers["X-Medical-Notice"] == "not a medical device"

        def chunks():  # no Content-Length: the cap must hold while the body streams in
            for _ in range(40):
                yield b"x" * 1000

        multipart = {"content-type": "multipart/form-data; boundary=b"}
        streamed = client.post("/predict", content=chunks(), headers=multipart)
        assert streamed.status_code == 413
        small = client.post("/predict", files={"file": ("small.png", png_bytes(big[:40, :40]))})
        assert small.status_code == 200


def test_images_above_the_pixel_cap_get_413_before_decoding(predictor, checkpoint, tmp_path):
    with client_for(predictor, checkpoint, max_pixels=100 * 100) as client:
        response = client.post("/predict", files={"file": ("wide.png", png_bytes(np.zeros((101, 100), np.uint8)))})
        assert response.status_code == 413 and "above the limit of 10,000 pixels" in response.json()["detail"]
        dicom = write_dicom(tmp_path / "big.dcm", ramp(101, 100), "MONOCHROME2").read_bytes()
        assert client.post("/predict", files={"file": ("big.dcm", dicom)}).status_code == 413
        fits = client.post("/predict", files={"file": ("fits.png", png_bytes(np.zeros((100, 100), np.uint8)))})
        assert fits.status_code == 200


def test_non_images_get_415_and_a_missing_file_422(client, tmp_path):
    response = client.post("/predict", files={"file": ("notes.jpg", b"this is not an image")})
    assert response.status_code == 415
    assert response.json()["detail"].startswith("notes.jpg: not a readable image")
    empty = client.post("/explain", files={"file": ("empty.png", b"")})
    missing = client.post("/predict", data={"something": "else"})
    unknown = client.get("/no-such-page")
    assert [r.status_code for r in (empty, missing, unknown)] == [415, 422, 404]
    for answer in (response, empty, missing, unknown):  # every error body has the notice, and no server path
        assert answer.json()["notice"] == NOTICE
        assert tempfile.gettempdir() not in answer.text and "/tmp" not in answer.text


def test_images_of_no_radiographs_shape_get_422(client):
    """A 1 x 1 px image used to be labelled "fractured" 0.976 with a 200."""
    for name, pixels in [("dot.png", np.full((1, 1), 128, np.uint8)), ("strip.png", np.zeros((3, 1000), np.uint8))]:
        response = client.post("/predict", files={"file": (name, png_bytes(pixels))})
        assert response.status_code == 422 and response.json()["detail"].startswith(f"{name}: ")
        assert response.json()["notice"] == NOTICE and "/tmp" not in response.text
    assert client.get("/info").json()["limits"]["min_side"] == 32


def test_bearer_token(predictor, checkpoint, synthetic_root):
    path = synthetic_images(synthetic_root, 1)[0]
    upload = {"file": (path.name, path.read_bytes())}
    with client_for(predictor, checkpoint, token=TOKEN) as client:
        assert client.post("/predict", files=upload).status_code == 401
        wrong = client.post("/predict", files=upload, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert client.get("/info").status_code == 401
        assert client.post("/explain", files=upload).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/predict", files=upload, headers=good).status_code == 200
        assert client.get("/info", headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200  # open by design


def test_every_response_says_not_a_medical_device(predictor, checkpoint, synthetic_root):
    path = synthetic_images(synthetic_root, 1)[0]
    with client_for(predictor, checkpoint, token=TOKEN, max_upload_bytes=50_000) as client:
        good = {"Authorization": f"Bearer {TOKEN}"}
        responses = [
            client.get("/"),
            client.get("/healthz"),
            client.get("/info", headers=good),
            client.post("/predict", files={"file": (path.name, path.read_bytes())}, headers=good),
            client.post("/explain", files={"file": (path.name, path.read_bytes())}, headers=good),
            client.post("/predict", files={"file": ("x.png", b"no")}, headers=good),  # 415
            client.post("/predict", files={"file": ("x.png", b"0" * 60_000)}, headers=good),  # 413
            client.post("/predict", headers=good),  # 422
            client.get("/info"),  # 401
        ]
        assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 415, 413, 422, 401]
        for response in responses:
            assert response.headers["X-Medical-Notice"] == "not a medical device"


@pytest.mark.backend
def test_concurrent_uploads_each_get_their_own_answer(client, predictor, synthetic_root):
    """32 uploads of 8 different images from 8 threads: every answer belongs to its own image."""
    paths = synthetic_images(synthetic_root, 8)
    expected = {path.name: predictor.predict(path).probability for path in paths}
    assert len(set(np.round(list(expected.values()), 6))) > 1  # the images really differ for the model

    def post(path):
        return path.name, client.post("/predict", files={"file": (path.name, path.read_bytes())}).json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, paths * 4))
    for name, body in answers:
        assert body["filename"] == name
        assert body["probability"] == pytest.approx(expected[name], abs=1e-6)


def test_uploads_arriving_together_share_a_batch_and_each_gets_its_own_answer(predictor, checkpoint, synthetic_root):
    paths = synthetic_images(synthetic_root, 8)
    expected = {path.name: predictor.predict(path).probability for path in paths}
    worker = BatchingWorker(ModelWorker(predictor), max_batch_size=8, batch_wait_ms=50, max_queued=64)

    def post(path):
        return path.name, client.post("/predict", files={"file": (path.name, path.read_bytes())}).json()

    with client_for(predictor, checkpoint, worker=worker) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, paths * 3))
    for name, body in answers:
        assert body["filename"] == name
        assert body["probability"] == pytest.approx(expected[name], abs=1e-5)  # a batch of others: same answer
    assert sum(worker.batch_sizes) == 24 and max(worker.batch_sizes) > 1  # they did share batches


def test_a_full_queue_answers_503_with_retry_after_at_once(predictor, checkpoint, synthetic_root):
    """One batch at a time of one image, a queue of 2, a model held for 0.5 s a batch: of 8 uploads at once,
    those beyond the one being predicted and the two waiting are refused at once, and the rest answered."""

    class SlowModel(ModelWorker):
        async def predict_many(self, images):
            await asyncio.sleep(0.5)
            return await super().predict_many(images)

    worker = BatchingWorker(SlowModel(predictor), max_batch_size=1, batch_wait_ms=0, max_queued=2)
    path = synthetic_images(synthetic_root, 1)[0]

    def post(_):
        started = time.monotonic()
        response = client.post("/predict", files={"file": (path.name, path.read_bytes())})
        return response, time.monotonic() - started

    with client_for(predictor, checkpoint, worker=worker) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    busy = [(response, seconds) for response, seconds in answers if response.status_code == 503]
    assert {response.status_code for response, _ in answers} == {200, 503}
    assert len(busy) >= 8 - 3 - 1  # one in the model, two queued; a thread may start after one has finished
    for response, seconds in busy:
        assert int(response.headers["Retry-After"]) >= 1 and seconds < 0.5  # refused without waiting
        assert "waiting for the model" in response.json()["detail"]
        assert response.headers["X-Medical-Notice"] == "not a medical device"


def test_bind_is_loopback_unless_asked(caplog):
    check_bind("127.0.0.1", allow_remote=False, token=None)
    check_bind("localhost", allow_remote=False, token=None)
    check_bind("::1", allow_remote=False, token=None)
    with pytest.raises(ConfigError, match="serve.allow_remote=true"):
        check_bind("0.0.0.0", allow_remote=False, token=None)
    with caplog.at_level(logging.WARNING, logger="fracture"):
        check_bind("0.0.0.0", allow_remote=True, token=TOKEN)
        assert "without a token" not in caplog.text
        check_bind("0.0.0.0", allow_remote=True, token=None)
    assert "without a token" in caplog.text
