"""Hydra multirun support: record every job, failed ones too, and summarise the sweep at its end."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.table import Table
from sklearn.metrics import roc_auc_score

from fracture.console import console, metrics_table
from fracture.io import write_json_atomic, write_text_atomic
from fracture.run_folder import RunFolder
from fracture.training.metric_names import metric_mode


def collect_jobs(sweep_dir: Path, objective: str = "optimized_metric", mode: str = "max") -> list[dict]:
    """One row per job folder: its overrides, status, objective and final metrics; best objective first (the
    highest, or with `mode="min"` the lowest), jobs without one last."""
    rows = []
    for job_dir in sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        row = {"job": int(job_dir.name), "overrides": " ".join(overrides or [])}
        job = RunFolder(job_dir)
        if (error := job.failure()) is not None:
            row.update(status="failed", error=error)
        elif metrics := job.metrics():
            scalars = {
                k: v for k, v in metrics.items() if isinstance(v, int | float) and not k.startswith("best/train")
            }
            row.update(status="ok", **scalars)
        else:
            row.update(status="unfinished")
        rows.append(row)

    sign = 1.0 if mode == "min" else -1.0

    def best_first(row):
        value = row.get(objective)
        return (value is None or (isinstance(value, float) and math.isnan(value)), sign * (value or 0.0))

    return sorted(rows, key=best_first)


def write_summary(sweep_dir: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(sweep_dir / "summary.csv", buffer.getvalue())


def jobs_table(rows: list[dict], objective: str, metric_name: str) -> Table:
    """The jobs as a table; the overrides column shows only what differs between jobs (summary.csv has all)."""
    shared = set.intersection(*(set(row["overrides"].split()) for row in rows)) if rows else set()
    table = Table(title=f"sweep summary, best {metric_name} first")
    for column in ("job", "overrides", "status", metric_name, "val/sensitivity", "val/specificity", "epochs"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row["status"] if row["status"] != "failed" else f"[red]failed: {row['error']}[/red]"
        values = [row.get(key) for key in (objective, "val/sensitivity", "val/specificity", "epochs")]
        cells = [f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v)) for v in values]
        varying = " ".join(item for item in row["overrides"].split() if item not in shared)
        table.add_row(str(row["job"]), varying, status, *cells)
    return table


CV_METRICS = ("val/auroc", "val/sensitivity", "val/specificity", "val/group/auroc", "optimized_metric")


def cross_validation_summary(sweep_dir: Path, rows: list[dict]) -> dict | None:
    """For a sweep over `data.fold`: each figure's mean and standard deviation over the folds, and the
    AUROC of all folds' validation predictions pooled (each image is predicted once, by the model that did
    not train on it). None when the jobs are not folds."""
    folds = [row for row in rows if row["status"] == "ok" and "data.fold=" in row["overrides"]]
    if len(folds) < 2:
        return None
    summary: dict = {"folds": len(folds)}
    for key in CV_METRICS:
        values = [row[key] for row in folds if isinstance(row.get(key), int | float)]
        if len(values) == len(folds):
            summary[f"{key}/mean"] = float(np.mean(values))
            summary[f"{key}/std"] = float(np.std(values, ddof=1))
    labels, probabilities = [], []
    for row in folds:
        predictions = sweep_dir / str(row["job"]) / "val_predictions.csv"
        if not predictions.is_file():
            return summary
        with open(predictions, newline="") as file:
            for record in csv.DictReader(file):
                labels.append(int(record["label"]))
                probabilities.append(float(record["probability"]))
    summary["pooled_out_of_fold/auroc"] = float(roc_auc_score(labels, probabilities))
    summary["pooled_out_of_fold/images"] = len(labels)
    return summary


class SweepSummary(Callback):
    """At the end of a multirun, write `<sweep dir>/summary.csv` and print a table of the jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        metric = config.get("optimized_metric", "optimized_metric")
        rows = collect_jobs(sweep_dir, mode=metric_mode(metric, config.get("optimized_mode", "auto")))
        path = write_summary(sweep_dir, rows)
        console.print(jobs_table(rows, "optimized_metric", metric))
        console.print(f"sweep summary: {path}")
        folds = cross_validation_summary(sweep_dir, rows)
        if folds is not None:
            write_json_atomic(sweep_dir / "cross_validation.json", folds)
            console.print(metrics_table(folds, title="cross-validation over folds"))
