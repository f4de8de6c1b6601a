"""Hydra multirun: job folders, summary.csv, failed jobs recorded, Optuna and joblib."""

import csv

import pytest
from conftest import DEMO_SMALL, run_cli


def sweep(tmp_path, *overrides, timeout=900):
    return run_cli(
        "fracture.train",
        "-m",
        *DEMO_SMALL,
        "trainer.fast_dev_run=true",
        "eval.bootstrap_resamples=50",
        f"paths.data_dir={tmp_path}/data",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *overrides,
        timeout=timeout,
    )


def summary_rows(tmp_path):
    with open(tmp_path / "sweep" / "summary.csv") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow  # about 25-40 s on 2 cores; the default suite stays under 15 minutes
def test_grid_sweep_writes_job_folders_and_a_summary(tmp_path):
    result = sweep(tmp_path, "model.optimizer.lr=1e-3,3e-4", "data.batch_size=16,32")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    rows = summary_rows(tmp_path)
    assert len(rows) == 4 and all(row["status"] == "ok" for row in rows)
    objectives = [float(row["optimized_metric"]) for row in rows]
    assert objectives == sorted(objectives, reverse=True)
    assert {row["overrides"].split("model.optimizer.lr=")[1].split()[0] for row in rows} == {"0.001", "0.0003"}
    assert "sweep summary" in result.stdout + result.stderr


@pytest.mark.slow  # about 20 s; the submitit sweep with a failing job (tests/test_launchers.py) stays by default
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    result = sweep(tmp_path, "data.image_size=48,8")  # 8 px is refused by the data module
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["overrides"].split("data.image_size=")[-1].split()[0]: row for row in summary_rows(tmp_path)}
    assert rows["48"]["status"] == "ok"
    assert rows["8"]["status"] == "failed" and "image_size must be at least 32" in rows["8"]["error"]


@pytest.mark.slow  # about 25-40 s on 2 cores; the default suite stays under 15 minutes
def test_optuna_search_reports_the_best_parameters(tmp_path):
    result = sweep(
        tmp_path, "hparams_search=effb3_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=2"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_params" in best and "model.optimizer.lr" in best
    assert len(summary_rows(tmp_path)) == 3


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel(tmp_path):
    result = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.optimizer.lr=1e-3,3e-4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["status"] for row in summary_rows(tmp_path)] == ["ok", "ok"]
