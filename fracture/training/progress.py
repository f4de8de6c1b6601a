"""Training's progress: a live progress bar per epoch on a terminal, one plain whole line per epoch elsewhere
(a file, a pipe: a cluster job, `nohup`, CI), on fracture's console (`fracture.console`)."""

from __future__ import annotations

import keras
from rich.progress import Progress, TextColumn

from fracture.console import console, progress_bar
from fracture.training.metric_names import slash_logs


def _format_logs(logs: dict[str, float], keys=("train/loss", "train/auc_approx", "val/loss", "val/auc_approx")) -> str:
    return "  ".join(f"{key} {logs[key]:.4f}" for key in keys if key in logs)


class RichProgress(keras.callbacks.Callback):
    """Show one progress bar per epoch with the running loss, and a line of metrics when the epoch ends.

    Args:
        steps_per_epoch: batches per epoch, for the bar's length (None shows an open-ended bar).
        epochs: the number of the last epoch, for the `epoch i/N` label.
        description: a prefix such as the training stage.
    """

    def __init__(self, steps_per_epoch: int | None, epochs: int, description: str = ""):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.description = description
        self._progress: Progress | None = None
        self._task = None

    def _label(self, epoch: int) -> str:
        return f"{self.description} epoch {epoch + 1}/{self.epochs}".strip()

    def on_train_begin(self, logs=None):
        if console.is_terminal:
            self._progress = progress_bar(TextColumn("{task.fields[metrics]}"))
            self._progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        if self._progress is not None:
            self._task = self._progress.add_task(self._label(epoch), total=self.steps_per_epoch, metrics="")

    def on_train_batch_end(self, batch, logs=None):
        if self._progress is not None:
            self._progress.update(self._task, completed=batch + 1, metrics=_format_logs(slash_logs(logs)))

    def on_epoch_end(self, epoch, logs=None):
        metrics = _format_logs(slash_logs(logs))
        if self._progress is not None:
            self._progress.update(self._task, metrics=metrics)
        else:  # a log file: one whole line per epoch
            console.print(f"{self._label(epoch)}  {metrics}", markup=False, highlight=False)

    def on_train_end(self, logs=None):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
