"""The feature cache's backbone passes: what runs them (`LocalBackbone` here, or Ray actors) and `extract`, which
fills a cache entry with their features, batch by batch.

`backbone_runner` turns the trainer's settings into the runner: `trainer.feature_cache_engine` (local or ray),
`trainer.extraction_engine` (the inference engine, `fracture.models.engines`) and
`trainer.extraction_precision` (float32, or bfloat16 on OpenVINO).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import keras
import numpy as np

from fracture.console import progress_bar
from fracture.errors import ConfigError, DataError
from fracture.models.engines import PRECISIONS, Engine, choose_engine, engine_for
from fracture.training.distributed import on_this_process, outside_distribution

# Images per backbone call while extracting: measured on a 2-core CPU (EfficientNetB3, 224 px), 32 ran at
# 28 img/s against 24 for 16 and 27 for 64.
EXTRACT_BATCH = 32
ENGINE_SETTING = "trainer.extraction_engine"


class LocalBackbone:
    """Runs the backbone in this process, on the inference engine `engine` (`fracture.models.engines`: auto,
    keras, onnxruntime or openvino) at `precision` (float32, or bfloat16 on OpenVINO), built on first use and
    kept for the next split. (`fracture.training.ray_extraction.RayBackbones` runs it on Ray actors instead.)"""

    def __init__(self, engine: str = "auto", precision: str = "float32"):
        choose_engine(engine, setting=ENGINE_SETTING, precision=precision)  # a wrong name fails before any work
        self.requested = engine
        self.precision = precision
        self.built: Engine | None = None
        self._for: keras.Model | None = None  # the backbone `built` runs
        self._built_now = False

    def run(
        self, backbone: keras.Model, batches: Iterator[np.ndarray], images: int | None = None
    ) -> Iterator[tuple[np.ndarray, float]]:
        """(features, seconds in the backbone) for each batch, in order; `images` is how many will come."""
        self._built_now = False
        for batch in batches:
            with outside_distribution():  # each training process runs its own copy on its own shard
                if self._for is not backbone:
                    # Several training processes may convert the same backbone at once: each stores a whole file.
                    copy = on_this_process(backbone)
                    self.built = engine_for(copy, self.requested, images, ENGINE_SETTING, True, self.precision)
                    self._for, self._built_now = backbone, True
                called = time.perf_counter()
                features = self.built(batch)
            yield features, time.perf_counter() - called

    def report(self) -> dict:
        """The engine that ran the last extraction: its name, parity with Keras, and its set-up time if this
        extraction built it (0 when it reused the engine of an earlier split)."""
        return {**self.built.report(), "engine_setup_s": self.built.setup_s if self._built_now else 0.0}


def backbone_runner(name: str, ray_options: dict | None, engine: str = "auto", precision: str = "float32"):
    """What runs the backbone for the feature cache: `LocalBackbone`, or `RayBackbones` for "ray", each on
    the inference engine `engine` at `precision`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.extraction_precision must be one of {PRECISIONS}, got {precision!r}.")
    if name == "local":
        return LocalBackbone(engine, precision)
    if name != "ray":
        raise ConfigError(f"trainer.feature_cache_engine must be local or ray, got {name!r}.")
    from fracture.ray_cluster import RaySettings
    from fracture.training.ray_extraction import RayBackbones

    options = dict(ray_options or {})
    backend = options.pop("backend", None)
    return RayBackbones(RaySettings(**options), backend, engine, precision)


def extract(engine, backbone, batches, out: np.ndarray, batch_size: int, description: str) -> dict:
    """Fill `out` `(views, N, ...)` with `backbone`'s features, run by `engine` (`LocalBackbone` or
    `RayBackbones`), for `batches` of `(views, B, H, W, 3)` images.

    Every batch is padded to `batch_size`, so that a compiled step sees one shape. Returns the timing: images,
    seconds in all, seconds waiting on the backbone, and its first call (which pays for tracing and freezing)."""
    views, count = out.shape[:2]
    placed: deque[tuple[int, int, int]] = deque()  # (view, first image, images) of each padded batch sent

    def padded() -> Iterator[np.ndarray]:
        start = 0
        for stacked in batches:
            size = stacked.shape[1]
            for view in range(views):
                batch = np.zeros((batch_size, *stacked.shape[2:]), np.float32)
                batch[:size] = stacked[view]
                placed.append((view, start, size))
                yield batch
            start += size

    done, began, forward_s, first = 0, time.perf_counter(), 0.0, None
    with progress_bar() as bar:
        task = bar.add_task(description, total=count)
        for features, seconds in engine.run(backbone, padded(), images=count * views):
            view, start, size = placed.popleft()
            forward_s += seconds
            first = first or (forward_s, size)
            out[view, start : start + size] = features[:size]  # rounded to the entry's dtype
            if view == views - 1:
                done += size
                bar.advance(task, size)
    if done != count:
        raise DataError(f"read {done} of {count} images while caching features: did files change? Run again.")
    return {
        **engine.report(),
        "images": count * views,
        "seconds": time.perf_counter() - began,
        "forward_s": forward_s,
        "first_call_s": first[0],
        "first_call_images": first[1],
    }
