"""Stopping a run safely: on a NaN or infinite loss, on Ctrl-C and on a full disk; and the disk a run's files need.

Both stops raise from the batch that triggers them, before Keras ends the epoch: the half-finished epoch is
neither validated nor checkpointed, so `best_model.keras`, `last.keras`, `history.csv` and the backup all
still describe the last finished epoch, and `resume=` repeats the interrupted one.
"""

from __future__ import annotations

import errno
import math
import shutil
import signal
import threading
from pathlib import Path

import keras
import numpy as np

from fracture.console import console
from fracture.errors import FractureError
from fracture.io import nearest_existing


class RunStopped(FractureError):
    """Training stopped inside epoch `epoch` (1-based) at batch `batch` (0: at its end); finished epochs are saved."""

    status = "stopped"

    def __init__(self, message: str, epoch: int, batch: int):
        super().__init__(message)
        self.epoch, self.batch = epoch, batch


class TrainingDiverged(RunStopped):
    status = "diverged"


class TrainingInterrupted(RunStopped):
    status = "interrupted"


class DiskFull(TrainingInterrupted):
    """The disk filled while an epoch's checkpoint or backup was saved: a stop like Ctrl-C's, which the
    entry point reports as an error (exit code 2) with the resume command."""

    status = "disk_full"


def disk_full(error: OSError, epoch: int, needed_bytes: int, folder: str | Path) -> DiskFull | None:
    """A `DiskFull` stop for an `OSError` that says the disk is full (ENOSPC, or a quota: EDQUOT), else None.

    `folder` is where the run saves (named when the error does not name its file); `epoch` is 1-based."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT) and "No space left on device" not in str(error):
        return None
    where = Path(error.filename).parent if error.filename else Path(folder)
    free = shutil.disk_usage(nearest_existing(where)).free
    return DiskFull(
        f"the disk of {where} is full ({free / 1e6:.0f} MB free) while saving epoch {epoch}: this run's checkpoints "
        f"and backups need about {needed_bytes / 1e6:.0f} MB. The epochs before it are saved and whole; free "
        "some space (or write elsewhere with paths.log_dir=...)",
        epoch,
        0,
    )


class DivergenceGuard(keras.callbacks.Callback):
    """Stop at the first NaN or infinite loss, naming where, before anything is saved.

    Put it first among the callbacks: its epoch-end check (the validation loss, which turns NaN when the last
    update of an epoch broke the weights) must run before the checkpoint and backup callbacks save them.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def _stop(self, loss: float, where: str, batch: int):
        raise TrainingDiverged(
            f"the {where} became {loss} in epoch {self.epoch}{f' at batch {batch}' if batch else ''}; the weights "
            "are no longer usable. The checkpoints of the finished epochs are kept. Start again with a lower "
            "learning rate (e.g. model.optimizer.lr divided by 10), or trainer.precision=float32 if mixed "
            "precision was on.",
            self.epoch,
            batch,
        )

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self._stop(loss, "training loss", batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("val_loss", 0.0))
        if not math.isfinite(loss):
            self._stop(loss, "validation loss", 0)


class InterruptGuard(keras.callbacks.Callback):
    """Ctrl-C once: finish the current batch, then stop with every finished epoch saved. Twice: stop at once.

    Use as a context manager around `model.fit` (it installs its SIGINT handler there, in the main thread only,
    and restores the previous one after) and as one of its callbacks.
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self.epoch = 1
        self._previous = None

    def __enter__(self) -> InterruptGuard:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait for the batch
        self.requested = True
        console.print("\n[yellow]Ctrl-C: stopping after this batch (press Ctrl-C again to stop at once)[/yellow]")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if self.requested:
            raise TrainingInterrupted(
                f"interrupted in epoch {self.epoch} at batch {batch + 1}; the epochs before it are saved",
                self.epoch,
                batch + 1,
            )


def checkpoint_bytes(model: keras.Model) -> int:
    """About the disk a run needs for `model`: best and last checkpoints, and a double backup with the
    optimizer's two slots per weight (Adam), which is 8 times the weights."""
    return 8 * sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights)
