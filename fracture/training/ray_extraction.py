"""Feature extraction on Ray: `trainer.feature_cache_engine=ray` runs the frozen backbone on a pool of actors.

The training process still reads, decodes and augments the split (`FractureDataModule.view_batches`, the one
stream the local extraction reads, so augmented views are the very ones a local run draws from its seed),
and still names and writes the cache entry; only the backbone's passes, nearly all of the cost, go to the
actors, a few batches in flight per actor, and come back in order. The entry is the one a local run would
write, under the same key, so a run on one machine reuses features that a cluster extracted.

Each actor loads the backbone once per extraction from a `.keras` copy sent through Ray's object store (the
same weights: the key's digest is taken from the driver's model) and runs it on the engine that
`trainer.extraction_engine` names, chosen and checked as a local extraction does (`fracture.models.engines`).
"""

from __future__ import annotations

import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from fracture.ray_cluster import RaySettings, prepare_actor_backend, ray_session, require_ray

IN_FLIGHT_PER_ACTOR = 2  # one batch computing, one waiting: the actors never idle, the driver's memory stays small


class BackboneActor:
    """Holds one copy of the backbone on its inference engine and returns its features for batches."""

    def __init__(self, model_bytes: bytes, backend: dict, engine: str, images: int | None, precision: str):
        from fracture.models.engines import engine_for

        prepare_actor_backend(backend)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "backbone.keras"
            path.write_bytes(model_bytes)
            backbone = keras.saving.load_model(path, compile=False)
        self.forward = engine_for(backbone, engine, images, "trainer.extraction_engine", precision=precision)

    def features(self, batch: np.ndarray) -> np.ndarray:
        return self.forward(batch)

    def report(self) -> dict:
        return self.forward.report()


def model_bytes(model: keras.Model) -> bytes:
    """`model` as the bytes of a `.keras` file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "backbone.keras"
        model.save(path)
        return path.read_bytes()


class RayBackbones:
    """`FeatureCache`'s engine for Ray (see `fracture.training.extraction.LocalBackbone`).

    Args:
        settings: the cluster and the actors (`fracture.ray_cluster.RaySettings`).
        backend: `compilation_cache` and `fast_depthwise_conv` for the actors, as the entry point set them here.
    """

    def __init__(
        self, settings: RaySettings, backend: dict | None = None, engine: str = "auto", precision: str = "float32"
    ):
        require_ray()
        self.settings = settings
        self.backend = backend or {}
        self.engine = engine
        self.precision = precision
        self._report: dict = {}

    def report(self) -> dict:
        """The engine the first actor built for the last extraction, as `LocalBackbone.report` gives it."""
        return self._report

    def run(
        self, backbone: keras.Model, batches: Iterator[np.ndarray], images: int | None = None
    ) -> Iterator[tuple[np.ndarray, float]]:
        """(features, seconds waited for them) for each batch, in order; `images` is how many will come."""
        import ray

        with ray_session(self.settings) as settings:
            actor_class = ray.remote(BackboneActor).options(**settings.actor_options())
            weights = ray.put(model_bytes(backbone))
            actors = [
                actor_class.remote(weights, self.backend, self.engine, images, self.precision)
                for _ in range(settings.actors)
            ]
            pending: deque = deque()
            try:
                self._report = ray.get(actors[0].report.remote())
                for index, batch in enumerate(batches):
                    pending.append(actors[index % len(actors)].features.remote(batch))
                    if len(pending) >= IN_FLIGHT_PER_ACTOR * len(actors):
                        yield _wait(ray, pending.popleft())
                while pending:
                    yield _wait(ray, pending.popleft())
            finally:
                for actor in actors:
                    ray.kill(actor)


def _wait(ray, reference) -> tuple[np.ndarray, float]:
    waited = time.perf_counter()
    features = ray.get(reference)
    return features, time.perf_counter() - waited
