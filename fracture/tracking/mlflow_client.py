"""Connecting to MLflow: the extra's import, a server's reachability, the experiment, the run-folder record.

Shared by the logger (`fracture.tracking.mlflow_logger`), the sweep's parent run (`mlflow_sweep`) and the
MLflow export (`fracture.tracking.mlflow_model`). MLflow is imported only here, when first used.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from fracture.errors import ConfigError
from fracture.io import write_json_atomic

# MLflow's own local default since 3.x: `mlflow ui` and `mlflow models serve` started in the same folder find it.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# `<run>/mlflow.json`: which MLflow run records this run folder (a resume continues it, an export logs into it).
RUN_RECORD = "mlflow.json"
# MLflow 3's UI opens an experiment in its GenAI view unless the experiment says it trains models.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def require_mlflow():
    """The `mlflow` module, or a one-line error naming the extra to install.

    MLflow's usage telemetry is off unless `MLFLOW_DISABLE_TELEMETRY=false`: nothing about a hospital's runs
    goes to a third party by default (and on a machine without internet its sender held up every exit).
    Its download progress bars, which fill a log with carriage returns, are off unless asked for.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # both read when mlflow is first imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "MLflow is not installed: pip install -e '.[mlflow]' (or pip install mlflow) for logger=mlflow and "
            "format=mlflow."
        ) from None
    return mlflow


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Refuse, in one line, an HTTP tracking server that does not answer its health check. A local store
    (SQLite, a folder) needs no server."""
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout).close()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(
            f"the MLflow tracking server {tracking_uri} does not answer ({reason}). Start it (mlflow server --host "
            "127.0.0.1 --port 5000), or leave out logger.mlflow.tracking_uri for the local store ./mlflow.db."
        ) from None


def connect(tracking_uri: str, request_timeout: int = 10, request_retries: int = 2):
    """An `MlflowClient` for `tracking_uri`, after checking that its server answers.

    MLflow's HTTP client retries a failed request 7 times with doubling waits (about 4 minutes) and waits
    120 s for an answer; a training run would stall that long at every epoch of an outage. These settings
    apply unless `MLFLOW_HTTP_REQUEST_MAX_RETRIES` or `MLFLOW_HTTP_REQUEST_TIMEOUT` are set.
    """
    mlflow = require_mlflow()
    check_reachable(tracking_uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(request_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(request_timeout))
    return mlflow.MlflowClient(tracking_uri)


def local_artifact_location(tracking_uri: str) -> str | None:
    """For a SQLite store, `mlruns/` beside its database file (MLflow's default would be relative to whichever
    folder a job happened to start in); None (the server's or store's own default) for anything else."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    database = Path(tracking_uri[len("sqlite:///") :]).expanduser().resolve()
    return (database.parent / "mlruns").as_uri()


def experiment_id(client, name: str, tracking_uri: str) -> str:
    """The id of experiment `name`, created when missing (by whichever of a sweep's jobs comes first)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, local_artifact_location(tracking_uri), tags=EXPERIMENT_TAGS)
    except MlflowException:  # another job created it in between
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def read_run_record(folder: str | Path) -> dict | None:
    """`{"tracking_uri", "experiment_id", "run_id"}` of the MLflow run that records `folder`, or None."""
    path = Path(folder) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def write_run_record(folder: str | Path, tracking_uri: str, experiment: str, run_id: str) -> Path:
    record = {"tracking_uri": tracking_uri, "experiment_id": experiment, "run_id": run_id}
    return write_json_atomic(Path(folder) / RUN_RECORD, record)
