"""Rich terminal output: a live progress bar per epoch and a summary table at the end of a run.

Without a terminal (a file, a pipe: a cluster job, `nohup`, CI) rich would cut every line at 80 columns, so
the console is made wide and each epoch is written as one plain, whole line instead of a bar.
"""

from __future__ import annotations

import keras
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fracture.training.metric_names import slash_logs

# Wide enough for any line fracture writes; nothing pads to it (bars and tables take their content's width).
LOG_WIDTH = 1000


def make_console() -> Console:
    """A console on stderr: rich's layout on a terminal, lines that are never cut or wrapped elsewhere."""
    terminal = Console(stderr=True)
    return terminal if terminal.is_terminal else Console(stderr=True, width=LOG_WIDTH, soft_wrap=True)


console = make_console()


def progress_bar(*extra_columns) -> Progress:
    """fracture's rich progress bar (description, bar, n/N, elapsed, remaining), on stderr; use it as a context."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=console,
        transient=False,
    )


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


def summary_table(metrics: dict[str, float | int | str], title: str = "fracture run summary") -> Table:
    """A two-column table of metric names and values."""
    table = Table(title=title)
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table
