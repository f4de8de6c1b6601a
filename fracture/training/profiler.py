"""Per-phase timing of a training loop (`debug=profiler`): data wait, train step, callbacks, validation."""

from __future__ import annotations

import time
from collections import defaultdict

import keras
from rich.table import Table


class _Marker(keras.callbacks.Callback):
    """Records when Keras reaches it; one sits first and one last in the callback list."""

    def __init__(self, profiler: PhaseProfiler, position: str):
        super().__init__()
        self.profiler, self.position = profiler, position

    def on_train_batch_begin(self, batch, logs=None):
        if self.position == "first":
            self.profiler.mark("batch_begin")

    def on_train_batch_end(self, batch, logs=None):
        self.profiler.mark(f"batch_end_{self.position}")

    def on_test_begin(self, logs=None):
        if self.position == "first":
            self.profiler.mark("test_begin")

    def on_test_end(self, logs=None):
        if self.position == "last":
            self.profiler.mark("test_end")


class PhaseProfiler:
    """Times the phases of `model.fit` from callback hooks.

    - data: from the end of one training batch's callbacks to the start of the next batch (input waiting);
    - train step: from a batch's start to the first callback seeing its end (the step itself);
    - callbacks: from the first to the last callback at a batch's end (progress bars, loggers, ...);
    - validation: the evaluation at the end of each epoch.

    Wrap the callback list with `first` and `last`. On JAX, asynchronous dispatch can move step time into
    whichever phase first waits for a result.
    """

    def __init__(self):
        self.first, self.last = _Marker(self, "first"), _Marker(self, "last")
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._times: dict[str, float] = {}

    def _add(self, phase: str, start: str, now: float) -> None:
        if start in self._times:
            self.totals[phase] += now - self._times[start]
            self.counts[phase] += 1

    def mark(self, event: str) -> None:
        now = time.perf_counter()
        if event == "batch_begin":
            self._add("data", "batch_end_last", now)
        elif event == "batch_end_first":
            self._add("train step", "batch_begin", now)
        elif event == "batch_end_last":
            self._add("callbacks", "batch_end_first", now)
        elif event == "test_end":
            self._add("validation", "test_begin", now)
            self._times.pop("batch_end_last", None)  # the next epoch's first wait includes no validation
        self._times[event] = now

    def table(self) -> Table:
        table = Table(title="time per phase")
        for column in ("phase", "total s", "calls", "mean ms", "share"):
            table.add_column(column, justify="left" if column == "phase" else "right")
        overall = sum(self.totals.values()) or 1.0
        for phase in ("data", "train step", "callbacks", "validation"):
            total, calls = self.totals.get(phase, 0.0), self.counts.get(phase, 0)
            mean = 1000 * total / calls if calls else 0.0
            table.add_row(phase, f"{total:.2f}", str(calls), f"{mean:.1f}", f"{total / overall:.0%}")
        return table
