"""The service on Ray Serve: `python -m fracture.serve ckpt_path=... engine=ray serve.replicas=2`.

Every replica is a Ray actor that loads the checkpoint once and serves the app of `create_app`, so the page,
the API, the upload limits, the token and the notices are those of the local service. What differs is who
runs it: Ray Serve's HTTP proxy spreads requests over the replicas, and within a replica `/predict` requests
that arrive together are predicted in one batch (Ray Serve's `serve.batch`: at most `max_batch_size` images,
waiting at most `batch_wait_ms` for the batch to fill), each answer still its own image's. `/explain` runs
one image at a time. Each replica works on at most 2 x `max_batch_size` requests; past `max_queued` more waiting
for one, Ray Serve answers 503 at once instead of queueing without bound.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

import numpy as np
from ray import serve

from fracture.errors import CheckpointError
from fracture.ray_cluster import RaySettings, prepare_actor_backend, ray_session
from fracture.serving.app import ServeSettings, create_app
from fracture.serving.worker import ModelWorker, Result


@dataclass(frozen=True)
class ReplicaSpec:
    """What each replica builds its service from, and how requests are batched in it."""

    ckpt_path: str
    settings: ServeSettings
    gradcam_layer: str | None = None
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    runtime: str = "auto"  # the inference engine (fracture.models.engines)
    backend: dict = field(default_factory=dict)


class RayBatchingWorker:
    """`ModelWorker`'s interface, with predictions collected into batches by Ray Serve."""

    def __init__(self, worker: ModelWorker, max_batch_size: int, batch_wait_ms: float):
        self.worker = worker
        self._predict_many.set_max_batch_size(max_batch_size)
        self._predict_many.set_batch_wait_timeout_s(batch_wait_ms / 1000.0)

    @serve.batch
    async def _predict_many(self, images: list[np.ndarray]) -> list[Result]:
        return await self.worker.predict_many(images)

    async def predict(self, pixels: np.ndarray, explain: bool = False) -> Result:
        if explain:
            return await self.worker.predict(pixels, explain=True)
        return await self._predict_many(pixels)

    def close(self) -> None:
        self.worker.close()


@serve.ingress()
class FractureReplica:
    """One replica: the checkpoint loaded and warmed up, behind the local service's app."""

    def __init__(self, spec: ReplicaSpec):
        from fracture.inference.predictor import load_predictor
        from fracture.models.checkpoint import checkpoint_id

        prepare_actor_backend(spec.backend)
        predictor = load_predictor(spec.ckpt_path, spec.gradcam_layer, spec.settings.max_pixels, runtime=spec.runtime)
        predictor.warm_up()
        worker = RayBatchingWorker(ModelWorker(predictor), spec.max_batch_size, spec.batch_wait_ms)
        self._service = create_app(predictor, checkpoint_id(spec.ckpt_path), spec.settings, worker=worker)

    def __serve_build_asgi_app__(self):
        return self._service  # (Ray Serve's replica class has an `app` of its own)


def start_replicas(spec: ReplicaSpec, ray_settings: RaySettings, host: str, port: int, max_queued: int) -> None:
    """Deploy `ray_settings.actors` replicas behind Ray Serve's proxy on host:port; returns once they answer.

    Ray must be initialised (`ray_session`)."""
    serve.start(http_options={"host": host, "port": port})
    deployment = serve.deployment(
        FractureReplica,
        name="fracture",
        num_replicas=ray_settings.actors,
        max_ongoing_requests=2 * spec.max_batch_size,  # one batch predicting, the next one filling
        max_queued_requests=max_queued,
        ray_actor_options=ray_settings.actor_options(),
    )
    try:
        serve.run(deployment.bind(spec), name="fracture", route_prefix="/", blocking=False)
    except RuntimeError as error:  # Ray Serve's own words: the replicas' tracebacks are in the log above
        raise CheckpointError(f"the Ray Serve replicas did not start: {error}") from error


def _stop(_signum, _frame):
    raise KeyboardInterrupt


def serve_on_ray(spec: ReplicaSpec, ray_settings: RaySettings, host: str, port: int, max_queued: int) -> None:
    """Serve until Ctrl-C or SIGTERM, then remove the replicas; a Serve and a Ray started here are shut down."""
    with ray_session(ray_settings):
        # Set after ray.init, whose core worker otherwise answers SIGTERM by aborting, with no shutdown.
        signal.signal(signal.SIGTERM, _stop)
        try:
            start_replicas(spec, ray_settings, host, port, max_queued)
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            if ray_settings.address:
                serve.delete("fracture")  # a shared cluster keeps its Serve and the other applications on it
            else:
                serve.shutdown()
