"""The one thread that owns the model.

Keras models are not meant to be called from many threads at once, and Grad-CAM keeps state between its
forward and backward pass. The service therefore hands every model call to a single worker thread, in
arrival order, while decoding uploads and answering other requests goes on concurrently.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fracture.inference.predictor import Prediction, Predictor


@dataclass
class Result:
    """What the model says about one image; `overlay_png` only when an explanation was asked for."""

    prediction: Prediction
    overlay_png: bytes | None = None


class ModelWorker:
    """Runs `Predictor` calls one at a time on its own thread; `await worker.predict(pixels)` from async code."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fracture-model")

    def _run(self, pixels: np.ndarray, explain: bool) -> Result:
        prediction, _, heatmap = self.predictor.predict_batch([pixels], explain=explain)[0]
        if not explain:
            return Result(prediction)
        buffer = io.BytesIO()
        self.predictor.overlay(prediction, pixels, heatmap).save(buffer, format="PNG")
        return Result(prediction, buffer.getvalue())

    async def predict(self, pixels: np.ndarray, explain: bool = False) -> Result:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, pixels, explain)

    async def predict_many(self, images: list[np.ndarray]) -> list[Result]:
        """Several images in one batched model call (a batching front end collects them), one result each."""
        rows = await asyncio.get_running_loop().run_in_executor(self._executor, self.predictor.predict_batch, images)
        return [Result(prediction) for prediction, _, _ in rows]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
