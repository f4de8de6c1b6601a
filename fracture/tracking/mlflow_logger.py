"""`MLflowLogger` (`logger=mlflow`): each fracture run as an MLflow run, with its settings, curves and files.

    python -m fracture.train logger=mlflow                     # ./mlflow.db and ./mlruns/, MLflow's local default
    mlflow ui --backend-store-uri sqlite:///mlflow.db          # then open http://127.0.0.1:5000

What it logs: the parameters (the resolved config flattened, the package versions and the git commit), tags
(backend, devices, data, run folder), every epoch's metrics under their slash names (step = epoch, which goes
on across stages and resumes), and when the run has finished, evaluation's figures and the run folder's files
(report, plots, `metrics.json`, predictions, history, split, the best checkpoint), each once. `<run>/mlflow.json`
names the MLflow run: a resumed run continues it, and `fracture.export format=mlflow` logs its model into it.
In a sweep (`fracture.tracking.mlflow_sweep`), each job's run is nested under the sweep's parent run.

A tracking server that does not answer at the start is one error line. One that goes away during training
costs no training: what could not be sent is kept and sent again at the next epoch and at the run's end; what
is still unsent then stays in `<run>/mlflow_unsent.json` (the run folder holds all of it anyway), the run says so in
its output and in `metrics.json` (`mlflow/unsent`), and `python -m fracture.tracking.resend <run>` sends it
later (`fracture.tracking.resend`).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import keras

from fracture.io import write_json_atomic
from fracture.run_folder import RunFolder
from fracture.tracking.mlflow_client import (
    DEFAULT_TRACKING_URI,
    connect,
    experiment_id,
    read_run_record,
    write_run_record,
)
from fracture.tracking.tracker import FINISHED, RunTracker
from fracture.training.metric_names import slash_logs

log = logging.getLogger("fracture")

UNSENT_FILE = "mlflow_unsent.json"
# The run folder's files logged when a run finishes (those that exist), relative to the run folder.
ARTIFACTS = (
    "report.md",
    "metrics.json",
    "history.csv",
    "split.csv",
    "data_problems.csv",
    "val_predictions.csv",
    "test_predictions.csv",
    "plots",
    "checkpoints/best_model.keras",
)
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for a nested run
# MLflow's limits on a parameter's value and a tag's value, in characters.
MAX_PARAM_LENGTH, MAX_TAG_LENGTH = 6000, 8000


def log_run_file(client, run_id: str, run_dir: Path, name: str) -> None:
    """Log `run_dir/name` (a file or a folder) as the artifact `name`: `checkpoints/best_model.keras` goes to
    the artifact folder `checkpoints`, `plots/` becomes the artifact folder `plots`."""
    local, parent = run_dir / name, Path(name).parent
    if local.is_dir():
        client.log_artifacts(run_id, str(local), artifact_path=name)
    else:
        client.log_artifact(run_id, str(local), artifact_path=None if parent == Path() else str(parent))


def metric_key(name: str) -> str:
    """`name` with the characters MLflow refuses in a metric name (it takes letters, digits, `_-. :/`) as `_`."""
    return re.sub(r"[^\w.\- :/]", "_", name)


class MLflowLogger(keras.callbacks.Callback, RunTracker):
    """Log one run to MLflow; see the module's docstring for what goes where.

    Args:
        run_dir: the run folder (`<run>/mlflow.json` and, after an outage, `<run>/mlflow_unsent.json` go there).
        tracking_uri: an MLflow tracking URI: `sqlite:///<file>`, a folder, or `http://host:port` of a server.
        experiment_name: the MLflow experiment; created when missing.
        run_name: the MLflow run's name (None or "": the run folder's name).
        parent_run_id: nest this run under that one (a sweep's parent run).
        tags: more tags for the run.
        artifacts: the run folder's files to log when the run finishes.
        request_timeout: seconds a tracking server may take to answer one request (see `mlflow_client.connect`).
        request_retries: retries of a failed request before its records are kept for later.
    """

    def __init__(
        self,
        run_dir: str | Path,
        tracking_uri: str = DEFAULT_TRACKING_URI,
        experiment_name: str = "fracture",
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
        artifacts: tuple[str, ...] | list[str] = ARTIFACTS,
        request_timeout: int = 10,
        request_retries: int = 2,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.tracking_uri = str(tracking_uri)
        self.experiment_name = experiment_name
        self.run_name = run_name or self.run_dir.name
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.artifacts = list(artifacts)
        self.request_timeout, self.request_retries = request_timeout, request_retries
        self.client = None
        self.run_id: str | None = None
        self.unsent: list = []  # MLflow Metric, Param and RunTag entities not yet taken by the server
        self.unsent_files: list[str] = []
        self.epoch_keys: set[str] = set()
        self.last_step = 0
        self.ending: str | None = None  # the run's final status, once `end` is called

    # ------------------------------------------------------------------ the run's life
    def begin(self, params: dict[str, str], tags: dict[str, str]) -> None:
        """Start the MLflow run, or continue the one `<run>/mlflow.json` names (a resumed run)."""
        from mlflow.entities import Param, RunTag

        self.client = connect(self.tracking_uri, self.request_timeout, self.request_retries)
        tags = {**tags, **self.tags}
        record = read_run_record(self.run_dir)
        if record is not None and record["tracking_uri"] == self.tracking_uri:
            self.run_id = record["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            logged = self.client.get_run(self.run_id).data.params
            # MLflow refuses to change a logged parameter: what a resume changed is kept as a tag.
            tags.update({f"fracture.resumed_with.{k}": v for k, v in params.items() if k in logged and logged[k] != v})
            params = {key: value for key, value in params.items() if key not in logged}
            log.info("MLflow: continuing run %s at %s", self.run_id, self.tracking_uri)
        else:
            experiment = experiment_id(self.client, self.experiment_name, self.tracking_uri)
            run_tags = {PARENT_TAG: self.parent_run_id} if self.parent_run_id else {}
            self.run_id = self.client.create_run(experiment, run_name=self.run_name, tags=run_tags).info.run_id
            write_run_record(self.run_dir, self.tracking_uri, experiment, self.run_id)
            log.info("MLflow: run %s in experiment %r at %s", self.run_id, self.experiment_name, self.tracking_uri)
        self.unsent += [Param(key, value[:MAX_PARAM_LENGTH]) for key, value in params.items()]
        self.unsent += [RunTag(key, str(value)[:MAX_TAG_LENGTH]) for key, value in tags.items()]
        self._send()

    def on_train_begin(self, logs=None):
        if self.run_id is None:  # used as a plain Keras callback, without `tracked_run`
            self.begin({}, {})

    def on_epoch_end(self, epoch, logs=None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = slash_logs(logs)
        self.epoch_keys.update(metric_key(key) for key in metrics)
        self.last_step = epoch
        self.unsent += [Metric(metric_key(key), value, now, epoch) for key, value in metrics.items()]
        self._send()

    def end(self, run: RunFolder, metrics: dict, status: str) -> None:
        """Log the final figures and the run folder's files (when FINISHED), then end the MLflow run."""
        if self.run_id is None:
            return
        from mlflow.entities import Metric, RunTag

        self.ending = status
        if status == FINISHED:
            now = int(time.time() * 1000)
            for key, value in metrics.items():
                name = metric_key(key)
                if name in self.epoch_keys or isinstance(value, bool) or not isinstance(value, int | float):
                    continue  # epochs' values are logged already; texts are in metrics.json
                self.unsent.append(Metric(name, float(value), now, self.last_step))
            self.unsent.append(RunTag("fracture.status", str(metrics.get("status", "finished"))))
            self.unsent_files += [name for name in self.artifacts if (self.run_dir / name).exists()]
        self._send()
        self._terminate(status)
        if self.unsent or self.unsent_files:
            self._report_unsent(run)
        self.run_id = None

    # ------------------------------------------------------------------ sending, and keeping what was not sent
    def _send(self) -> None:
        """Send everything not yet sent; on failure keep it (in memory and in `mlflow_unsent.json`) for later."""
        from mlflow.entities import Metric, Param, RunTag

        if not self.unsent and not self.unsent_files:
            return
        try:
            if self.unsent:
                self.client.log_batch(
                    self.run_id,
                    metrics=[entry for entry in self.unsent if isinstance(entry, Metric)],
                    params=[entry for entry in self.unsent if isinstance(entry, Param)],
                    tags=[entry for entry in self.unsent if isinstance(entry, RunTag)],
                )
                self.unsent = []
            while self.unsent_files:
                log_run_file(self.client, self.run_id, self.run_dir, self.unsent_files[0])
                self.unsent_files.pop(0)
        except Exception as error:  # tracking must never stop training; what failed is kept, and said
            reason = (str(error).splitlines() or [type(error).__name__])[0][:300]
            log.warning(
                "MLflow at %s did not take the run's records (%s); kept, sent again later", self.tracking_uri, reason
            )
            self._write_unsent(reason)
        else:
            (self.run_dir / UNSENT_FILE).unlink(missing_ok=True)

    def _unsent_metrics(self) -> list:
        from mlflow.entities import Metric

        return [entry for entry in self.unsent if isinstance(entry, Metric)]

    def _write_unsent(self, reason: str) -> None:
        from mlflow.entities import Metric, Param

        values = self._unsent_metrics()
        metrics = [{"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp} for m in values]
        others = [
            {"kind": "param" if isinstance(entry, Param) else "tag", "key": entry.key, "value": entry.value}
            for entry in self.unsent
            if not isinstance(entry, Metric)
        ]
        record = {
            "tracking_uri": self.tracking_uri,
            "run_id": self.run_id,
            "reason": reason,
            "metrics": metrics,
            "params_and_tags": others,
            "files": self.unsent_files,
            "status": self.ending,  # how the run ended, for `resend` to tell MLflow
        }
        try:
            write_json_atomic(self.run_dir / UNSENT_FILE, record)
        except OSError as error:  # a full disk: the records stay in memory, the warning above stands
            log.warning("could not write %s: %s", self.run_dir / UNSENT_FILE, error)

    def _terminate(self, status: str) -> None:
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as error:  # the server is gone: the run stays RUNNING there, and the run folder says so
            log.warning("MLflow at %s could not be told that run %s ended: %s", self.tracking_uri, self.run_id, error)

    def _report_unsent(self, run: RunFolder) -> None:
        values = len(self._unsent_metrics())
        message = (
            f"MLflow at {self.tracking_uri} did not take {values} metric values and {len(self.unsent_files)} files "
            f"of run {self.run_id}; they are in {self.run_dir / UNSENT_FILE}, and python -m fracture.tracking.resend "
            f"{self.run_dir} sends them once it answers again"
        )
        print(f"warning: {message}")
        try:
            run.add_metrics({"mlflow/unsent": message})
        except OSError as error:
            log.warning("could not record it in metrics.json: %s", error)
