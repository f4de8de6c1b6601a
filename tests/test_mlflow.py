"""logger=mlflow and format=mlflow: runs, resumes, sweeps, a real tracking server (killed mid-run), the model.

Every server here listens on 127.0.0.1 only and is stopped by the test (tests/mlflow_server.py)."""

from __future__ import annotations

import json
import os
import signal
import sys

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_SMALL, compose_config, run_cli
from mlflow_server import MLflowServer, ModelServer

from fracture.errors import ConfigError
from fracture.processes import free_loopback_port
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


def test_what_an_outage_kept_is_resent_later(tmp_path, monkeypatch, capsys):
    """Records that MLflow did not take are kept in the run folder; `fracture.tracking.resend` sends them, files
    and the run's end included, and a second resend says there is nothing left."""
    from fracture.tracking.resend import main as resend_main

    uri, folder = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "report.md").write_text("# report")
    (folder / "checkpoints" / "best_model.keras").write_bytes(b"weights")
    logger = MLflowLogger(
        folder, tracking_uri=uri, experiment_name="outage", artifacts=["report.md", "checkpoints/best_model.keras"]
    )
    logger.begin({"seed": "1"}, {"fracture.backend": "x"})

    def unreachable(*args, **kwargs):
        raise ConnectionError("Connection refused")

    for method in ("log_batch", "log_artifact", "log_artifacts", "set_terminated"):
        monkeypatch.setattr(logger.client, method, unreachable)
    logger.on_epoch_end(0, {"loss": 0.9, "val_loss": 1.0})
    logger.end(RunFolder(folder), {"test/auroc": 0.7}, "FINISHED")
    kept = json.loads((folder / UNSENT_FILE).read_text())
    assert kept["status"] == "FINISHED" and kept["files"] == ["report.md", "checkpoints/best_model.keras"]
    assert "python -m fracture.tracking.resend" in capsys.readouterr().out

    resend_main([str(folder)])
    client = client_for(uri)
    run = only_run(client, "outage")
    assert run.info.status == "FINISHED" and run.data.params == {"seed": "1"}
    assert steps(client, run.info.run_id, "val/loss") == [0] and run.data.metrics["test/auroc"] == 0.7
    assert artifact_paths(client, run.info.run_id) == {"report.md", "checkpoints"}
    assert not (folder / UNSENT_FILE).exists()
    with pytest.raises(SystemExit) as nothing_left:
        resend_main([str(folder)])
    assert nothing_left.value.code == 2


@pytest.mark.slow  # about 25 s; the single-run MLflow tests stay in the default suite
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

    down = f"http://127.0.0.1:{free_loopback_port()}"  # nothing listens there
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


@pytest.mark.slow  # about 20-30 s; left the default suite when the Ray tests joined it
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


def export_to_registry(tmp_path, checkpoint, uri: str, name: str = "fracture-tiny"):
    """`python -m fracture.export format=mlflow export.register_as=<name>`, in this process."""
    from fracture.export import export

    overrides = [f"ckpt_path={checkpoint}", "format=mlflow", f"export.dir={tmp_path}/export"]
    overrides += [f"export.register_as={name}", f"export.tracking_uri={uri}"]
    [result] = export(compose_config(tmp_path, *overrides, name="export"))
    return result


def predicted_by_fracture(tmp_path, checkpoint, inputs) -> list:
    """`python -m fracture.predict` on `inputs`, in this process."""
    from fracture.predict import predict

    listed = ",".join(f"'{path}'" for path in inputs)
    return predict(compose_config(tmp_path, f"ckpt_path={checkpoint}", f"inputs=[{listed}]", name="predict"))


@pytest.mark.backend
def test_the_registered_mlflow_model_answers_as_fracture_predict(
    tmp_path, tiny_checkpoint, synthetic_root, monkeypatch
):
    from fracture.models.checkpoint import checkpoint_id
    from fracture.tracking.mlflow_client import write_run_record
    from fracture.tracking.mlflow_model import register_model

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for models:/ URIs
    result = export_to_registry(tmp_path, tiny_checkpoint, uri)
    assert result.passed and result.images >= 12
    contract = json.loads((tmp_path / "export" / "model.json").read_text())
    assert contract["artifacts"]["mlflow"]["path"] == "mlflow_model"
    saved = mlflow.models.Model.load(str(tmp_path / "export" / "mlflow_model"))
    assert saved.metadata["fracture_checkpoint_id"] == checkpoint_id(tiny_checkpoint)
    assert saved.signature.inputs.input_names() == ["image", "path"]
    # A model from code: loading it runs fracture's file, and no pickled object is in it.
    assert saved.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert not list((tmp_path / "export" / "mlflow_model").rglob("*.pkl"))

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    inputs = [*sorted((synthetic_root / "val").rglob("*.png"))[:4], broken]
    expected = predicted_by_fracture(tmp_path, tiny_checkpoint, inputs)
    model = mlflow.pyfunc.load_model("models:/fracture-tiny/1")
    by_path = model.predict(pd.DataFrame({"path": [str(path) for path in inputs]}))
    by_bytes = model.predict(pd.DataFrame({"image": [path.read_bytes() for path in inputs]}))
    for answer in (by_path, by_bytes):
        assert list(answer["label"][:4]) == [p.label for p in expected[:4]]
        assert answer["probability"][:4].to_numpy() == pytest.approx([p.probability for p in expected[:4]], abs=1e-6)
        assert answer["threshold"][0] == expected[0].threshold
        assert np.isnan(answer["probability"][4]) and "not a readable image" in answer["error"][4]
    assert "not a readable image" in expected[4].error

    # A checkpoint whose run was logged to MLflow: its model version belongs to that run.
    run_folder = tmp_path / "trained"
    (run_folder / "checkpoints").mkdir(parents=True)
    copy = run_folder / "checkpoints" / "best_model.keras"
    copy.write_bytes(tiny_checkpoint.read_bytes())
    client = client_for(uri)
    training_run = client.create_run(client.create_experiment("train", (tmp_path / "mlruns").as_uri())).info.run_id
    write_run_record(run_folder, uri, "1", training_run)
    version = register_model(tmp_path / "export" / "mlflow_model", copy, "fracture-tiny", uri)
    assert version == 2
    assert client.get_model_version("fracture-tiny", "2").run_id == training_run


@pytest.mark.slow  # about 25 s: the scoring server imports MLflow, Keras and the backend before it answers
def test_mlflow_models_serve_answers_an_image_as_fracture_predict(tmp_path, tiny_checkpoint, synthetic_root):
    import base64
    import urllib.request

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    export_to_registry(tmp_path, tiny_checkpoint, uri)
    image = sorted((synthetic_root / "val").rglob("*.png"))[0]
    [expected] = predicted_by_fracture(tmp_path, tiny_checkpoint, [image])
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image.read_bytes()).decode()]]}}
    with ModelServer("models:/fracture-tiny/1", uri, tmp_path / "serve.log") as server:
        request = urllib.request.Request(
            f"{server.uri}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        [answer] = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    assert answer["label"] == expected.label and answer["threshold"] == expected.threshold
    assert answer["probability"] == pytest.approx(expected.probability, abs=1e-6)
