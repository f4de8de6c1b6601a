"""`RunFolder`: one run's folder, the one owner of its records, its backup and how a resume finds it.

    outputs/train/runs/<time>/
      metrics.json     written only here (`write_metrics`, `add_metrics`): the training recipe's, a stop's,
                       then evaluation's figures added to them
      run_info.json    package versions, backend, devices, commit (`write_run_info`)
      failed.json      a sweep job that failed (`record_failure`), so that the sweep's summary lists it
      backup/          per-epoch training state while the run is unfinished (`backup_dir`); a folder that holds
                       one is a run that `resume=` can continue, and `finish` removes it

Everything is written atomically (`fracture.io`). The other files of a run (checkpoints, `history.csv`,
`split.csv`, `data_problems.csv`, plots, the report) are written by their own modules at the paths this folder
names (`file`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fracture.io import check_writable, write_json_atomic
from fracture.run_info import run_info

METRICS_FILE = "metrics.json"
FAILED_FILE = "failed.json"
BACKUP_FOLDER = "backup"


class RunFolder:
    """The folder of one run (training, evaluation or any entry point's), at `path`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ records
    def prepare(self) -> RunFolder:
        """Refuse a folder that cannot be written (before any heavy work), then record `run_info.json`."""
        check_writable(self.path)
        write_json_atomic(self.file("run_info.json"), run_info())
        return self

    def run_info(self) -> dict:
        """What `run_info.json` recorded ({} before `prepare`)."""
        path = self.file("run_info.json")
        return json.loads(path.read_text()) if path.is_file() else {}

    def metrics(self) -> dict:
        """What `metrics.json` holds now ({} before anything was recorded)."""
        path = self.file(METRICS_FILE)
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_metrics(self, metrics: dict) -> Path:
        """Replace `metrics.json` with `metrics`."""
        return write_json_atomic(self.file(METRICS_FILE), metrics)

    def add_metrics(self, metrics: dict) -> Path:
        """Add `metrics` to those already recorded (evaluation's figures beside training's)."""
        return write_json_atomic(self.file(METRICS_FILE), {**self.metrics(), **metrics})

    def record_failure(self, error: BaseException) -> Path:
        """Mark a sweep job as failed, so that the sweep's summary lists it instead of the sweep stopping."""
        return write_json_atomic(self.file(FAILED_FILE), {"error": f"{type(error).__name__}: {error}"})

    def failure(self) -> str | None:
        """The error a failed job recorded, or None."""
        path = self.file(FAILED_FILE)
        return json.loads(path.read_text())["error"] if path.is_file() else None

    # ------------------------------------------------------------------ backup and resume
    @property
    def backup_dir(self) -> Path:
        """Where the trainer backs up each stage after every epoch (`fracture.training.resume`)."""
        return self.file(BACKUP_FOLDER)

    @property
    def unfinished(self) -> bool:
        """Whether the run holds a backup: it stopped before it finished, and `resume=` can continue it."""
        return self.backup_dir.is_dir()

    def finish(self) -> None:
        """The run is complete: its backup is no longer needed."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)

    @staticmethod
    def latest_unfinished(runs_dir: str | Path) -> RunFolder | None:
        """The newest unfinished run under `runs_dir` (run folders are named by their start time)."""
        unfinished = sorted(path for path in Path(runs_dir).glob("*") if RunFolder(path).unfinished)
        return RunFolder(unfinished[-1]) if unfinished else None

    @staticmethod
    def to_resume(resume, runs_dir: str | Path) -> RunFolder | None:
        """The run that `resume=` continues: `true` is the newest unfinished one under `runs_dir`, a path names
        one; None when `resume` is off or names no unfinished run."""
        if resume is True:
            return RunFolder.latest_unfinished(runs_dir)
        run = RunFolder(Path(str(resume)).expanduser()) if resume else None
        return run if run is not None and run.unfinished else None
