"""Small timers shared by the benchmark's workers: a training-loop stopwatch and the machine's matmul rate."""

from __future__ import annotations

import time

import keras
import numpy as np


class LoopTimer(keras.callbacks.Callback):
    """Wall-clock marks of a `fit`: its start, each training batch's end, each epoch's training and validation.

    `process_start` is when the parent launched this process, so `first_step_s` counts imports and set-up.
    """

    def __init__(self, process_start: float):
        super().__init__()
        self.process_start = process_start
        self.train_begin: float | None = None
        self.batch_ends: list[float] = []
        self.epochs: list[dict[str, float]] = []  # per epoch: train_s, val_s, wall_s

    def on_train_begin(self, logs=None):
        self.train_begin = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._val_start = time.time()
        self._val_end = None

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ends.append(time.time())
        self._val_start = self.batch_ends[-1]

    def on_test_end(self, logs=None):
        self._val_end = time.time()

    def on_epoch_end(self, epoch, logs=None):
        end = time.time()
        val_s = (self._val_end - self._val_start) if self._val_end else 0.0
        self.epochs.append(
            {"train_s": self._val_start - self._epoch_start, "val_s": val_s, "wall_s": end - self._epoch_start}
        )

    @property
    def first_step_s(self) -> float:
        return self.batch_ends[0] - self.process_start

    def steady_rate(self, batch_size: int) -> float:
        """Images per second over the batches after the first (which pays for tracing and compiling)."""
        if len(self.batch_ends) < 2:
            raise ValueError("time at least two batches")
        return batch_size * (len(self.batch_ends) - 1) / (self.batch_ends[-1] - self.batch_ends[0])


def rate(batches, count_images, warmup: int = 1) -> float:
    """Images per second drawn from an iterable of batches, after `warmup` batches."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    start, images = time.perf_counter(), 0
    for batch in iterator:
        images += count_images(batch)
    return images / (time.perf_counter() - start)


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """The backend's float32 matrix-multiply rate, in GFLOP/s: the machine's practical FLOP ceiling."""
    a = keras.ops.convert_to_tensor(np.random.default_rng(0).random((size, size), np.float32))
    keras.ops.convert_to_numpy(keras.ops.matmul(a, a))  # warm up, and wait for it
    start = time.perf_counter()
    for _ in range(repeats):
        result = keras.ops.matmul(a, a)
    keras.ops.convert_to_numpy(result)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def median_ms(function, repeats: int, warmup: int = 2) -> float:
    """Median wall time of `function()` in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))
