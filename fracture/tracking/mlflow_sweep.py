"""`MLflowSweep`: a Hydra sweep with `logger=mlflow` as one parent MLflow run, each job's run nested under it.

The parent is made in the process that starts the sweep, before any job, so it is one run whichever
launcher runs the jobs (in-process, joblib, submitit, Ray): its id is written to `<sweep dir>/mlflow_parent.json`,
and each job's logger reads it there (`sweep_parent_run`, the `fracture.mlflow_sweep_run` resolver of
conf/logger/mlflow.yaml). When the sweep ends, the parent gets the sweep's `summary.csv` (and Optuna's
results), the best job's objective, and its end. Registered in conf/hydra/default.yaml for every sweep;
it does nothing unless the config's loggers include `mlflow`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fracture.console import console
from fracture.errors import user_errors
from fracture.io import write_json_atomic
from fracture.tracking.mlflow_client import connect, experiment_id
from fracture.tracking.tracker import FINISHED, flatten

PARENT_FILE = "mlflow_parent.json"
SWEEP_FILES = ("summary.csv", "cross_validation.json", "optimization_results.yaml")


def sweep_record() -> dict | None:
    """In a sweep's job, what `MLflowSweep` recorded in the sweep folder; None in a single run or a sweep
    without MLflow."""
    try:
        hydra = HydraConfig.get()
    except ValueError:  # not started by Hydra
        return None
    if hydra.mode != RunMode.MULTIRUN:
        return None
    path = Path(hydra.sweep.dir) / PARENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def sweep_parent_run() -> str | None:
    """In a sweep's job, the id of the sweep's parent MLflow run, else None."""
    record = sweep_record()
    return record["run_id"] if record else None


def sweep_job_name() -> str:
    """In a sweep's job, `job <n>: <the values it was given of what the sweep varies>`, else ""."""
    record = sweep_record()
    if record is None:
        return ""
    hydra = HydraConfig.get()
    varied = [item for item in hydra.overrides.task if item.split("=", 1)[0].lstrip("+~") in record["swept"]]
    return f"job {hydra.job.num}: {' '.join(varied)}".strip()


def swept_keys(overrides: list[str], searched: dict) -> list[str]:
    """The keys a sweep varies: those given several values on its command line, and the sweeper's own."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return sorted({item.get_key_element().lstrip("+~") for item in parsed if item.is_sweep_override()} | set(searched))


def mlflow_settings(config: DictConfig) -> DictConfig | None:
    """The `logger.mlflow` node of a composed config, or None when MLflow is not among its loggers."""
    logger = config.get("logger")
    return logger.get("mlflow") if isinstance(logger, DictConfig) else None


class MLflowSweep(Callback):
    """Open the sweep's parent run before its jobs, close it after them (see the module's docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        settings = mlflow_settings(config)
        if settings is None:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        with user_errors():  # a server that does not answer: one line, before any job starts
            client = connect(settings.tracking_uri, settings.request_timeout, settings.request_retries)
        experiment = experiment_id(client, settings.experiment_name, settings.tracking_uri)
        tags = {"fracture.kind": "sweep", "fracture.sweep_dir": str(sweep_dir)}
        run = client.create_run(experiment, run_name=f"sweep {sweep_dir.name}", tags=tags)
        overrides = list(config.hydra.overrides.task)
        client.log_param(run.info.run_id, "sweep.overrides", " ".join(overrides)[:6000])
        searched = OmegaConf.select(config, "hydra.sweeper.params")  # what Optuna searches (null for a grid)
        searched = OmegaConf.to_container(searched, resolve=False) if isinstance(searched, DictConfig) else {}
        for key, value in (flatten(searched, "sweep.params.") if searched else {}).items():
            client.log_param(run.info.run_id, key, value[:6000])
        sweep_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "tracking_uri": settings.tracking_uri,
            "experiment_id": experiment,
            "run_id": run.info.run_id,
            "swept": swept_keys(overrides, searched),
        }
        write_json_atomic(sweep_dir / PARENT_FILE, record)
        console.print(f"MLflow: sweep run {run.info.run_id} in experiment {settings.experiment_name!r}")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """After `SweepSummary` (Hydra ends callbacks in reverse order; this one is listed before it)."""
        settings = mlflow_settings(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        if settings is None or not (sweep_dir / PARENT_FILE).is_file():
            return
        run_id = json.loads((sweep_dir / PARENT_FILE).read_text())["run_id"]
        try:
            client = connect(settings.tracking_uri, settings.request_timeout, settings.request_retries)
            for name in SWEEP_FILES:
                if (sweep_dir / name).is_file():
                    client.log_artifact(run_id, str(sweep_dir / name))
            best = best_objective(sweep_dir)
            if best is not None:
                client.log_metric(run_id, "sweep/best_optimized_metric", best)
            client.set_terminated(run_id, status=FINISHED)
        except Exception as error:  # the jobs' results are in the sweep folder; the parent run is a summary
            console.print(f"[yellow]MLflow: the sweep's run {run_id} could not be completed: {error}[/yellow]")


def best_objective(sweep_dir: Path) -> float | None:
    """The first row's `optimized_metric` in `summary.csv` (best first), when it has one."""
    path = sweep_dir / "summary.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as file:
        first = next(csv.DictReader(file), None)
    try:
        return float(first["optimized_metric"]) if first else None
    except (KeyError, TypeError, ValueError):
        return None
