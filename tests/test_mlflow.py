"""logger=mlflow and format=mlflow: runs, resumes, sweeps, a real tracking server (killed mid-run), the model.

Every server here listens on 127.0.0.1 only and is stopped by the test (tests/mlflow_server.py)."""

from __future__ import annotations

import json
import os
import signal
import sys

import keras
import mlflow
import pytest
from conftest import DEMO_SMALL, compose_config, run_cli
from mlflow_server import MLflowServer, free_port

from fracture.errors import ConfigError
from fracture.run_folder import RunFolder
from fracture.tracking.mlflow_logger import UNSENT_FILE, MLflowLogger
from fracture.train_job import train

TINY_RUN = [*DEMO_SMALL, "trainer.epochs=2", "eval.bootstrap_resamples=50", "logger=mlflow"]


def client_for(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(uri)


def only_run(client, experiment: str = "train"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [run.info.run_name for run in runs]
    return runs[0]


def steps(client, run_id: str, key: str) -> list[int]:
    return [point.step for point in client.get_metric_history(run_id, key)]


def artifact_paths(client, run_id: str, folder: str | None = None) -> set[str]:
    return {entry.path for entry in client.list_artifacts(run_id, folder)}


def test_a_run_logs_its_settings_epochs_figures_and_files_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_config(tmp_path, *TINY_RUN, f"paths.data_dir={tmp_path}/data", f"logger.mlflow.tracking_uri={uri}")
    metrics = train(cfg)

    client = client_for(uri)
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"] == run.info.run_id
    params = run.data.params
    assert params["model.optimizer.lr"] == str(cfg.model.optimizer.lr) and params["trainer.epochs"] == "2"
    assert params["run_info.packages.keras"] == keras.__version__ and "run_info.git_commit" in params
    assert run.data.tags["fracture.backend"] == keras.backend.backend()
    assert run.data.tags["fracture.data"].endswith("synthetic") and run.data.tags["fracture.devices"]
    # Every epoch once, under its slash name; evaluation's figures once, at the last epoch.
    assert steps(client, run.info.run_id, "val/loss") == [0, 1]
    assert steps(client, run.info.run_id, "train/auc_approx") == [0, 1]
    assert steps(client, run.info.run_id, "test/auroc") == [1]
    assert run.data.metrics["val/auroc"] == pytest.approx(metrics["val/auroc"])
    files = artifact_paths(client, run.info.run_id)
    assert {"report.md", "metrics.json", "history.csv", "split.csv", "val_predictions.csv", "plots"} <= files
    assert artifact_paths(client, run.info.run_id, "checkpoints") == {"checkpoints/best_model.keras"}
    assert "plots/val_roc.png" in artifact_paths(client, run.info.run_id, "plots")
    assert not (tmp_path / "run" / UNSENT_FILE).exists()


def test_a_resumed_run_continues_its_mlflow_run(tmp_path):
    """The run folder names its MLflow run; a resume logs into it, and a setting it changed becomes a tag."""
    uri, folder = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "run"
    first = MLflowLogger(folder, tracking_uri=uri, experiment_name="resume")
    first.begin({"trainer.epochs": "2", "seed": "1"}, {"fracture.backend": "x"})
    first.on_epoch_end(0, {"loss": 0.9})
    first.end(RunFolder(folder), {}, "KILLED")
    client = client_for(uri)
    assert only_run(client, "resume").info.status == "KILLED"

    again = MLflowLogger(folder, tracking_uri=uri, experiment_name="resume")
    again.begin({"trainer.epochs": "4", "seed": "1", "new.key": "3"}, {})
    again.on_epoch_end(1, {"loss": 0.5})
    again.end(RunFolder(folder), {"test/auroc": 0.7, "status": "finished", "best/checkpoint": "a path"}, "FINISHED")
    run = only_run(client, "resume")
    assert run.info.status == "FINISHED"
    assert run.data.params == {"trainer.epochs": "2", "seed": "1", "new.key": "3"}
    assert run.data.tags["fracture.resumed_with.trainer.epochs"] == "4"
    assert steps(client, run.info.run_id, "train/loss") == [0, 1]
    assert run.data.metrics["test/auroc"] == 0.7 and "best/checkpoint" not in run.data.metrics


def test_a_sweep_is_one_parent_run_with_a_nested_run_per_job(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_cli(
        "fracture.train",
        "-m",
        *TINY_RUN,
        "trainer.fast_dev_run=true",
        f"paths.data_dir={tmp_path}/data",
        f"hydra.sweep.dir={tmp_path}/sweep",
        f"logger.mlflow.tracking_uri={uri}",
        "model.optimizer.lr=1e-3,3e-4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(uri)
    experiment = client.get_experiment_by_name("train").experiment_id
    parent_id = json.loads((tmp_path / "sweep" / "mlflow_parent.json").read_text())["run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and "summary.csv" in artifact_paths(client, parent_id)
    assert "sweep/best_optimized_metric" in parent.data.metrics
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    names = sorted(child.info.run_name for child in children)
    assert names == ["job 0: model.optimizer.lr=0.001", "job 1: model.optimizer.lr=0.0003"]
    assert all(child.info.status == "FINISHED" for child in children)
    assert len(client.search_runs([experiment])) == 3  # the parent and its two jobs, nothing else


def test_mlflow_missing_is_one_line_naming_the_extra(monkeypatch):
    from fracture.tracking.mlflow_client import require_mlflow

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[mlflow\]'"):
        require_mlflow()


def test_a_tracking_server_that_is_down_is_one_clear_error_for_a_run_and_a_sweep(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    from fracture.tracking.mlflow_sweep import MLflowSweep

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = compose_config(tmp_path, *TINY_RUN, f"logger.mlflow.tracking_uri={down}", hydra_config=True)
    with pytest.raises(ConfigError, match=f"the MLflow tracking server {down} does not answer"):
        MLflowLogger(tmp_path / "run", tracking_uri=down).begin({}, {})
    HydraConfig.instance().set_config(cfg)
    with pytest.raises(SystemExit) as stopped:  # before any job starts
        MLflowSweep().on_multirun_start(cfg)
    assert stopped.value.code == 2
    assert not (tmp_path / "run").exists()


class KillAfterFirstEpoch(keras.callbacks.Callback):
    """Kill a process group at the end of the first epoch (listed before the loggers, so they see it gone)."""

    def __init__(self, pid: int):
        super().__init__()
        self.pid = pid

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def test_a_tracking_server_run_and_the_server_killed_mid_run(tmp_path, capsys):
    """Against a real `mlflow server` on loopback: a short run is logged there; then the server is killed
    after the first epoch of a second run, which still trains to the end and keeps what the server missed."""
    data = f"paths.data_dir={tmp_path}/data"
    with MLflowServer(tmp_path / "server") as server:
        cfg = compose_config(tmp_path / "a", *TINY_RUN, data, f"logger.mlflow.tracking_uri={server.uri}")
        train(cfg)
        run = only_run(client_for(server.uri))
        assert run.info.status == "FINISHED" and steps(client_for(server.uri), run.info.run_id, "val/loss") == [0, 1]
        assert "report.md" in artifact_paths(client_for(server.uri), run.info.run_id)

        killer = [
            f"+callbacks.kill_server._target_={__name__}.KillAfterFirstEpoch",
            f"+callbacks.kill_server.pid={server.process.pid}",
        ]
        cfg = compose_config(tmp_path / "b", *TINY_RUN, data, f"logger.mlflow.tracking_uri={server.uri}", *killer)
        metrics = train(cfg)

    folder = tmp_path / "b" / "run"
    assert metrics["status"] == "finished" and (folder / "checkpoints" / "best_model.keras").is_file()
    unsent = json.loads((folder / UNSENT_FILE).read_text())
    assert {(m["key"], m["step"]) for m in unsent["metrics"]} >= {("val/loss", 0), ("val/loss", 1), ("test/auroc", 1)}
    assert "report.md" in unsent["files"] and "checkpoints/best_model.keras" in unsent["files"]
    assert "did not take" in RunFolder(folder).metrics()["mlflow/unsent"]
    assert "did not take" in capsys.readouterr().out
    # What the server stored before it died: the second run, with its parameters, still RUNNING.
    stored = client_for(server.database)
    second = [
        r
        for r in stored.search_runs([stored.get_experiment_by_name("train").experiment_id])
        if r.info.run_id == json.loads((folder / "mlflow.json").read_text())["run_id"]
    ]
    assert second and second[0].info.status == "RUNNING" and second[0].data.params["trainer.epochs"] == "2"
