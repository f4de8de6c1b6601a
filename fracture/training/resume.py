"""Resuming a training stage from its per-epoch backup, so that a resumed run matches an uninterrupted one.

Each stage (`fit`, `head`, `finetune`) backs up after every epoch into `<backup_dir>/<stage>/`: Keras'
BackupAndRestore keeps weights, optimizer and epoch, `RandomStateBackup` the noise and dropout generators.
On the next `fit` with the same folder Keras restores that state; this module reads how many epochs the
backup holds, and makes the training stream draw and drop exactly the batches of those epochs, so that
epoch k sees the shuffle and augmentation it would have seen without the interruption.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras

from fracture.training.callbacks import RandomStateBackup
from fracture.training.distributed import outside_distribution

# Written by keras.callbacks.BackupAndRestore next to its checkpoint: {"epoch": <epochs finished>, ...}.
KERAS_BACKUP_STATE = "training_metadata.json"


class StageBackup:
    """The backup folder of one training stage."""

    def __init__(self, backup_dir: str | Path, stage: str):
        self.stage = stage or "fit"
        self.folder = Path(backup_dir) / self.stage

    def finished_epochs(self) -> int | None:
        """How many epochs (counted from the run's start) the backup holds; None when there is none."""
        state = self.folder / KERAS_BACKUP_STATE
        return int(json.loads(state.read_text())["epoch"]) if state.is_file() else None

    def discard_partial_files(self) -> None:
        """After a save that failed half-way (a full disk): remove every backup file that does not read whole.
        Keras' double backup copies the last state to `*.bkp` before it overwrites it, so one of the two is
        whole: a broken latest file is replaced by its `.bkp`."""
        for latest in [*self.folder.glob("*.weights.h5"), self.folder / KERAS_BACKUP_STATE]:
            previous = latest.with_name(latest.name + ".bkp")
            for path in (previous, latest):
                if path.exists() and not reads_whole(path):
                    path.unlink()
            if not latest.exists() and previous.exists():
                previous.replace(latest)

    def callbacks(self, write: bool = True) -> list[keras.callbacks.Callback]:
        """Back the stage up after every epoch; put them after checkpoints and loggers, so that an epoch counts
        as finished only once every record of it is written (see `Trainer._callbacks`). Without `write`, only
        restore from the backup (the training processes after the first, which write nothing)."""
        backup = BackupAndRestore if write else RestoreOnlyBackup
        keras_backup = backup(self.folder, double_checkpoint=True, delete_checkpoint=False)
        return [keras_backup, RandomStateBackup(self.folder, write=write)]


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, saving outside the distribution: Keras' saving builds a throwaway optimizer,
    whose variables under a distribution spanning several training processes would wait for the others, and
    only process 0 saves."""

    def _save_model(self):
        with outside_distribution():
            super()._save_model()


class RestoreOnlyBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore that restores the backup when training begins, and never saves one."""

    def on_epoch_end(self, epoch, logs=None):
        pass


def reads_whole(path: Path) -> bool:
    """Whether a backup file (HDF5 weights or JSON state) opens and reads in full."""
    try:
        if path.name.endswith((".json", ".json.bkp")):
            json.loads(path.read_text())
            return True
        with h5py.File(path, "r") as weights:
            weights.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
        return True
    except (OSError, ValueError, KeyError):
        return False


def epochs_to_skip(finished: int | None, current_epoch: int, end_epoch: int) -> int:
    """Epochs of this stage that a backup already holds, and that the stream must skip (0 when none, or when
    the backup holds the whole stage: Keras then runs no epoch at all)."""
    done = 0 if finished is None else finished - current_epoch
    return done if 0 < done < end_epoch - current_epoch else 0


def epoch_stream(train, steps: int, skip_epochs: int = 0):
    """One endless stream, `steps` batches an epoch, reshuffled and re-augmented at every repetition, so that
    epoch k's data depend only on the seed and k, not on how often Keras re-creates iterators; the first
    `skip_epochs` epochs' batches are drawn and dropped."""
    train = train.repeat()
    return train.skip(skip_epochs * steps) if skip_epochs else train
