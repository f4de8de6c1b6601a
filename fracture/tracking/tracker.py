"""`RunTracker`: what a tracker is told about a run besides its epochs, and `tracked_run`, which tells it.

A tracker is also a Keras callback (it sees every epoch's metrics); `tracked_run` adds the rest: the settings
when the run begins, and at its end the final figures, the run folder's files, and how it ended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

from fracture.run_folder import RunFolder
from fracture.training.guards import TrainingInterrupted

# How a run ended, in the words trackers use (MLflow's run statuses).
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


class RunTracker:
    """Told by `tracked_run` when a run begins and ends; subclasses are Keras callbacks as well."""

    def begin(self, params: dict[str, str], tags: dict[str, str]) -> None:
        """The run starts (or a resumed run starts again): `params` are its settings, `tags` describe it."""

    def end(self, run: RunFolder, metrics: dict, status: str) -> None:
        """The run ended with `status` (FINISHED, FAILED or KILLED, which a resume continues); `metrics` are
        its final figures ({} unless FINISHED), and `run` holds its files."""


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """A nested config as `{"model.optimizer.lr": "0.001", ...}`; lists stay one value, as written."""
    if isinstance(tree, Mapping) and tree:
        flat: dict[str, str] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): "" if tree is None else str(tree)} if prefix else {}


def run_params(config: Mapping, run_info: Mapping) -> dict[str, str]:
    """A run's parameters: its resolved config, flattened, with the package versions and the git commit that
    `run_info.json` recorded (under `run_info.`), so that two runs can be compared by any of them."""
    params = flatten(config)
    params.update(flatten({"packages": run_info.get("packages", {})}, "run_info."))
    params["run_info.git_commit"] = str(run_info.get("git_commit"))
    params["run_info.backend"] = str(run_info.get("backend"))
    return params


def run_tags(run_info: Mapping, data_source: str, run_folder: str, user_tags=(), description: str = "") -> dict:
    """What a run is, for filtering runs: its backend, devices, data and folder, the commit, the user's tags."""
    tags = {
        "fracture.backend": str(run_info.get("backend")),
        "fracture.devices": ", ".join(run_info.get("devices", [])),
        "fracture.data": data_source,
        "fracture.run_folder": run_folder,
        "mlflow.source.git.commit": str(run_info.get("git_commit")),
    }
    if user_tags:
        tags["fracture.tags"] = ", ".join(map(str, user_tags))
    if description:
        tags["mlflow.note.content"] = description  # MLflow shows it as the run's description
    return tags


def ending_status(error: BaseException) -> str:
    """KILLED for a run that a resume can continue (Ctrl-C, SIGTERM, a full disk), FAILED for anything else."""
    return KILLED if isinstance(error, TrainingInterrupted | KeyboardInterrupt) else FAILED


@contextlib.contextmanager
def tracked_run(
    trackers: list[RunTracker], run: RunFolder, params: dict[str, str], tags: dict[str, str]
) -> Iterator[Callable[[dict], None]]:
    """Begin each tracker's run; yields `finish(metrics)`, which ends them as FINISHED with the final metrics.
    A run that raises instead ends as KILLED or FAILED (`ending_status`), and the error goes on."""
    for tracker in trackers:
        tracker.begin(params, tags)
    finished = False

    def finish(metrics: dict) -> None:
        nonlocal finished
        finished = True
        for tracker in trackers:
            tracker.end(run, metrics, FINISHED)

    try:
        yield finish
    except BaseException as error:
        for tracker in trackers:
            tracker.end(run, {}, ending_status(error))
        raise
    if not finished:
        for tracker in trackers:
            tracker.end(run, {}, FAILED)
