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
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM (pre-emption, a time limit) stopped training; `signum` says which."""

    status = "interrupted"

    def __init__(self, message: str, epoch: int, batch: int, signum: int = signal.SIGINT):
        super().__init__(message, epoch, batch)
        self.signum = signum


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

    SIGTERM, which schedulers send to pre-empt a job or at its time limit (SLURM, Kubernetes, Ray), is handled
    the same way, so a pre-empted run keeps its finished epochs and can be resumed.
    Use as a context manager around `model.fit` (it installs its SIGINT and SIGTERM handlers there, in the main
    thread only, and restores the previous ones after) and as one of its callbacks.

    With `agree` (a function from this process's signal, 0 for none, to the largest of every training
    process's: `fracture.training.distributed.any_process`), every process stops after the same batch, also
    when the signal reached only some of them.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, agree=None):
        super().__init__()
        self.requested: int | None = None  # the signal that asked to stop
        self.agree = agree
        self.epoch = 1
        self._previous: dict = {}

    def __enter__(self) -> InterruptGuard:
        self.requested = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self.handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt  # the second signal: the user (or scheduler) does not want to wait for the batch
        self.requested = signum
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        console.print(f"\n[yellow]{what}: stopping after this batch (once more to stop at once)[/yellow]")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if self.agree is not None:
            self.requested = self.agree(self.requested or 0) or None
        if self.requested:
            by = "" if self.requested == signal.SIGINT else f" by {signal.Signals(self.requested).name}"
            raise TrainingInterrupted(
                f"interrupted{by} in epoch {self.epoch} at batch {batch + 1}; the epochs before it are saved",
                self.epoch,
                batch + 1,
                self.requested,
            )


def checkpoint_bytes(model: keras.Model) -> int:
    """About the disk a run needs for `model`: best and last checkpoints, and a double backup with the
    optimizer's two slots per weight (Adam), which is 8 times the weights."""
    return 8 * sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights)
