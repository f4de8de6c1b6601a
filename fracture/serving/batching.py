"""Predicting the uploads that arrive together in one batch: `BatchingWorker`, `ModelWorker`'s interface.

A model call on a batch of 8 costs far less than 8 calls on one image each (the backbone's matrix products
fill the cores better), so requests are queued and one collector takes them off the queue: the first one it
finds, then whatever else arrives within `batch_wait_ms`, up to `max_batch_size`. While the model works on a
batch, the next requests wait in the queue, so a busy service makes full batches without waiting at all.
Each request still gets its own image's answer. The queue is bounded: past `max_queued` waiting requests,
a new one is refused at once with `ServiceBusy` (the app answers 503 with Retry-After) instead of waiting
without bound. `/explain` (Grad-CAM needs its own backward pass) bypasses the queue.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np

from fracture.serving.worker import ModelWorker, Result


class ServiceBusy(Exception):
    """The queue is full; try again after `retry_after_s` seconds."""

    def __init__(self, queued: int, retry_after_s: int):
        super().__init__(f"{queued} requests are waiting for the model; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class BatchingWorker:
    """Collects `predict` calls into batched `ModelWorker.predict_many` calls (see the module)."""

    def __init__(self, worker: ModelWorker, max_batch_size: int = 8, batch_wait_ms: float = 5.0, max_queued: int = 64):
        if max_batch_size < 1 or max_queued < 1 or batch_wait_ms < 0:
            raise ValueError("max_batch_size and max_queued must be at least 1, batch_wait_ms at least 0")
        self.worker = worker
        self.max_batch_size, self.batch_wait_s, self.max_queued = max_batch_size, batch_wait_ms / 1000.0, max_queued
        self.batch_sizes: list[int] = []  # of every batch run, for /info and the tests
        self._seconds_per_batch = 0.1  # a first guess for Retry-After, replaced by the last batch's time
        self._queue: asyncio.Queue | None = None
        self._collector: asyncio.Task | None = None

    async def predict(self, pixels: np.ndarray, explain: bool = False) -> Result:
        if explain:
            return await self.worker.predict(pixels, explain=True)
        if self._queue is None:  # made here, in the server's event loop
            self._queue = asyncio.Queue()
            self._collector = asyncio.create_task(self._collect())
        if self._queue.qsize() >= self.max_queued:
            batches_ahead = math.ceil(self._queue.qsize() / self.max_batch_size) + 1
            raise ServiceBusy(self._queue.qsize(), max(1, math.ceil(batches_ahead * self._seconds_per_batch)))
        answer = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((pixels, answer))
        return await answer

    async def _next_batch(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return [(pixels, answer) for pixels, answer in batch if not answer.done()]  # a client that left

    async def _collect(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = time.monotonic()
            try:
                results = await self.worker.predict_many([pixels for pixels, _ in batch])
            except Exception as error:  # every request of the batch gets the error, the service goes on
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(error)
                continue
            self._seconds_per_batch = time.monotonic() - started
            self.batch_sizes.append(len(batch))
            for (_, answer), result in zip(batch, results, strict=True):
                if not answer.done():
                    answer.set_result(result)

    def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
        self.worker.close()
