"""fracture's terminal output, shared by every part: one rich console on stderr, its progress bar and tables.

Without a terminal (a file, a pipe: a cluster job, `nohup`, CI) rich would cut every line at 80 columns, so
the console is made wide and lines are never cut or wrapped.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

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


def metrics_table(metrics: dict[str, float | int | str], title: str = "fracture run summary") -> Table:
    """A two-column table of metric names and values."""
    table = Table(title=title)
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table
