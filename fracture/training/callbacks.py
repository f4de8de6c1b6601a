"""Keras callbacks configured with fracture's slash-namespaced metric names."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import keras
import numpy as np

from fracture.errors import ConfigError
from fracture.io import atomic_path
from fracture.models.checkpoint import read_metadata
from fracture.models.checkpoint_writer import CheckpointWriter
from fracture.models.schema import CheckpointMetadata
from fracture.training.distributed import outside_distribution
from fracture.training.metric_names import metric_mode, slash_logs, to_keras


class ModelCheckpoint(keras.callbacks.Callback):
    """Keep the best model (by `monitor`) as `best_model.keras`, and the latest as `last.keras`.

    Unlike `keras.callbacks.ModelCheckpoint`, files are written atomically and carry fracture's metadata
    (set `metadata` before training; the Trainer does), and the best score is exposed for reports. After the
    first save, an epoch's checkpoint rewrites only the variables' values (`CheckpointWriter`: 0.6 s against
    2.3 s for EfficientNetB3 on 2 cores), and an epoch that is both the best and the last writes once and copies.
    """

    def __init__(
        self,
        dirpath: str,
        monitor: str = "val/auc_approx",
        mode: str = "auto",
        save_last: bool = True,
        filename: str = "best_model.keras",
    ):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = metric_mode(monitor, mode)
        self.save_last = save_last
        self.best_path = self.dirpath / filename
        self.last_path = self.dirpath / "last.keras"
        self.best_score = -math.inf if self.mode == "max" else math.inf
        self.best_epoch: int | None = None
        self.best_logs: dict[str, float] = {}
        self.metadata: CheckpointMetadata | None = None  # set by the Trainer before training
        # The whole model, when training fits a part of it (the feature cache fits the head alone).
        self.model_to_save: keras.Model | None = None
        self.writer = CheckpointWriter()

    def on_train_begin(self, logs=None):
        """Continue from a best model already in `dirpath` (a resumed run), so a worse one never replaces it."""
        if self.best_epoch is None and self.best_path.is_file():
            metadata = read_metadata(self.best_path)
            if metadata.get("monitor") == self.monitor:
                self.best_score, self.best_epoch = metadata["score"], metadata["epoch"]
                self.best_logs = metadata.get("logs", {})

    def _improved(self, score: float) -> bool:
        return score > self.best_score if self.mode == "max" else score < self.best_score

    def on_epoch_end(self, epoch, logs=None):
        logs = slash_logs(logs)
        if self.monitor not in logs:
            raise ConfigError(f"checkpoint monitor {self.monitor!r} was not logged; logged metrics: {sorted(logs)}.")
        score = logs[self.monitor]
        if self.metadata is None:
            raise ConfigError("ModelCheckpoint.metadata is unset: let a fracture Trainer run this callback.")
        metadata = self.metadata.replace(epoch=epoch + 1, monitor=self.monitor, score=score, logs=logs)
        paths = [self.last_path] if self.save_last else []
        if self._improved(score) or self.best_epoch is None:
            self.best_score, self.best_epoch, self.best_logs = score, epoch + 1, logs
            paths.insert(0, self.best_path)
        if not paths:
            return
        # Outside the distribution: Keras' saving builds a throwaway optimizer, whose variables under a
        # distribution spanning several training processes would wait for the others (only process 0 saves).
        with outside_distribution():
            first, *copies = paths
            self.writer.save(self.model_to_save or self.model, first, metadata)
        for path in copies:
            with atomic_path(path) as staging:
                shutil.copyfile(first, staging)


class RandomStateBackup(keras.callbacks.Callback):
    """Back up the model's non-trainable state, random-generator states included, next to BackupAndRestore.

    Keras' `save_weights` leaves out the seed-generator states of GaussianNoise and Dropout, so a resumed run
    would draw different noise than an uninterrupted one. Put this callback right after BackupAndRestore.
    """

    def __init__(self, backup_dir: str | Path, write: bool = True):
        super().__init__()
        self.path = Path(backup_dir) / "non_trainable_state.npz"
        self.write = write  # False: restore only (the training processes after the first write no backup)

    def on_train_begin(self, logs=None):
        if self.path.is_file():
            with np.load(self.path) as saved:
                for index, variable in enumerate(self.model.non_trainable_variables):
                    variable.assign(saved[f"v{index}"])

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        values = {f"v{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self.model.non_trainable_variables)}
        with atomic_path(self.path) as staging:
            np.savez(staging, **values)


def reduce_lr_on_plateau(monitor: str = "val/loss", **options) -> keras.callbacks.ReduceLROnPlateau:
    """`keras.callbacks.ReduceLROnPlateau` watching a slash-named metric."""
    return keras.callbacks.ReduceLROnPlateau(monitor=to_keras(monitor), **options)


def early_stopping(monitor: str = "val/auc_approx", mode: str = "auto", **options) -> keras.callbacks.EarlyStopping:
    """`keras.callbacks.EarlyStopping` watching a slash-named metric, in fracture's direction for it (Keras'
    own `auto` would minimise `val_auc_approx`: it maximises only names that contain `acc`)."""
    return keras.callbacks.EarlyStopping(monitor=to_keras(monitor), mode=metric_mode(monitor, mode), **options)


class CSVLogger(keras.callbacks.Callback):
    """One row per epoch in a CSV file with fracture's slash names (`epoch`, `train/loss`, `val/auc_approx`, ...).

    With `append`, a resumed run adds its epochs to the file it finds; its header is kept. An epoch that the
    resumed run trains again (the process was killed after logging it, before its backup) replaces its row.
    (Keras' own CSVLogger assumes Keras' `val_` names and would add empty columns for slash names.)
    """

    def __init__(self, filename: str | Path, append: bool = True):
        super().__init__()
        self.path = Path(filename)
        self.append = append
        self.columns: list[str] | None = None  # the header: the file's own when appending, else the first row's
        self.earlier_rows: list[dict[str, str]] = []  # the file's rows, until this run logs its first epoch

    def on_train_begin(self, logs=None):
        if not self.append:
            self.path.unlink(missing_ok=True)
        self.columns, self.earlier_rows = None, []
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as file:
                reader = csv.DictReader(file)
                self.earlier_rows = list(reader)
                self.columns = reader.fieldnames

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **slash_logs(logs)}
        kept = [earlier for earlier in self.earlier_rows if int(float(earlier["epoch"])) < epoch]
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite([])
        elif len(kept) < len(self.earlier_rows):  # epochs this run trains again: their old rows go
            self._rewrite(kept)
        self.earlier_rows = []
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, fieldnames=self.columns, extrasaction="ignore", restval="").writerow(row)

    def _rewrite(self, rows: list[dict]) -> None:
        """The header and `rows`, replacing the file atomically."""
        with atomic_path(self.path) as staging, open(staging, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.columns, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)
