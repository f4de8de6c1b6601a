"""Sweeps beyond one process: Hydra's submitit launcher run locally (the code path of hydra/launcher=slurm) and its
Ray launcher, on a Ray it starts and on a running cluster (inside a loopback-only namespace, tests/loopback.py)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEMO_SMALL, run_cli, start_cli
from loopback import in_loopback

TINY_SWEEP = [*DEMO_SMALL, "trainer.fast_dev_run=true", "eval.bootstrap_resamples=50"]


def summary(sweep_dir, key: str) -> dict[str, dict]:
    """summary.csv's rows by the value each job gave `key` (its last override wins, as in Hydra)."""
    with open(sweep_dir / "summary.csv") as file:
        return {row["overrides"].split(f"{key}=")[-1].split()[0]: row for row in csv.DictReader(file)}


def test_a_submitit_local_sweep_runs_each_job_as_a_job_and_a_failed_one_costs_no_other(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "fracture.train",
        "-m",
        *TINY_SWEEP,
        f"paths.data_dir={tmp_path}/data",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=submitit_local",
        "data.image_size=48,8",  # 8 px is refused by the data module: that job fails, the other finishes
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validated against ConfigStore" not in result.stderr
    rows = summary(sweep_dir, "data.image_size")
    assert rows["48"]["status"] == "ok"
    assert rows["8"]["status"] == "failed" and "image_size must be at least 32" in rows["8"]["error"]
    job_logs = sorted((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2  # each job ran as a submitit job, in a process of its own


@pytest.mark.slow
def test_optuna_searches_over_the_submitit_launcher(tmp_path):
    result = run_cli(
        "fracture.train",
        "-m",
        *TINY_SWEEP,
        f"paths.data_dir={tmp_path}/data",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "hparams_search=effb3_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=submitit_local",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best_params" in (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert len(summary(tmp_path / "sweep", "model.optimizer.lr")) == 2
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2


RAY_SWEEPS = """
set -e
ray_sweep() {
    {python} -m fracture.train -m "$@" hydra/launcher=ray model.optimizer.lr=1e-3,3e-4
}
ray_sweep {overrides} hydra.sweep.dir={tmp}/local
{python} -m fracture.train -m {overrides} hydra.sweep.dir={tmp}/optuna hydra/launcher=ray \
    hparams_search=effb3_optuna hydra.sweeper.n_trials=2 hydra.sweeper.n_jobs=2
{python} -m ray.scripts.scripts start --head --node-ip-address=127.0.0.1 --num-cpus=2 \\
    --include-dashboard=false --disable-usage-stats
trap '{python} -m ray.scripts.scripts stop --force' EXIT
ray_sweep {overrides} hydra.sweep.dir={tmp}/cluster hydra.launcher.ray.init.address=auto
"""


@pytest.mark.slow
def test_the_ray_launcher_sweeps_on_a_ray_it_starts_with_optuna_too_and_on_a_running_cluster(tmp_path):
    overrides = " ".join([*TINY_SWEEP, f"paths.data_dir={tmp_path}/data"])
    script = RAY_SWEEPS.replace("{overrides}", overrides).replace("{tmp}", str(tmp_path))
    script = script.replace("{python}", sys.executable)
    done = in_loopback(["bash", "-c", script], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for sweep in ("local", "cluster"):
        rows = summary(tmp_path / sweep, "model.optimizer.lr")
        assert sorted(rows) == ["0.0003", "0.001"], sweep
        assert all(row["status"] == "ok" for row in rows.values()), sweep
    assert "best_params" in (tmp_path / "optuna" / "optimization_results.yaml").read_text()  # Optuna over Ray
    assert len(summary(tmp_path / "optuna", "model.optimizer.lr")) == 2
    assert "validated against ConfigStore" not in done.stderr


@pytest.mark.slow
def test_a_submitit_job_with_two_tasks_trains_with_two_ranks(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "fracture.train",
        "-m",
        *DEMO_SMALL,
        "trainer.epochs=2",
        "eval.bootstrap_resamples=50",
        f"paths.data_dir={tmp_path}/data",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=submitit_local",
        "hydra.launcher.tasks_per_node=2",
        backend="jax",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = summary(sweep_dir, "hydra.launcher.tasks_per_node").values() or [None]
    assert row["status"] == "ok", row
    logs = {path.name: path.read_text() for path in (sweep_dir / ".submitit").glob("*/*_log.*")}
    assert any("training as process 1 of 2" in text and "submitit (local)" in text for text in logs.values()), logs
    assert (sweep_dir / "0" / "checkpoints" / "best_model.keras").is_file()


def task_pids(job_id: str) -> list[int]:
    """The task processes of a submitit local job: the children of its controller, whose pid is the job id."""
    children = Path(f"/proc/{job_id}/task/{job_id}/children")
    return [int(pid) for pid in children.read_text().split()] if children.is_file() else []


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes_from_its_backup(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep = start_cli(
        "fracture.train",
        "-m",
        *DEMO_SMALL,
        "data.train_per_class=48",
        "data.image_size=64",
        "trainer.epochs=12",
        "eval.bootstrap_resamples=50",
        f"paths.data_dir={tmp_path}/data",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=submitit_local",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    backup_state = sweep_dir / "0" / "backup" / "fit" / "training_metadata.json"
    deadline, signalled = time.monotonic() + 300, []
    try:
        while time.monotonic() < deadline and not signalled and sweep.poll() is None:
            jobs = [path.name for path in (sweep_dir / ".submitit").glob("*") if path.name.isdigit()]
            if backup_state.is_file() and jobs:
                signalled = task_pids(jobs[0])
                for pid in signalled:  # what SLURM sends before pre-empting a job (submitit's USR2)
                    os.kill(pid, signal.SIGUSR2)
            time.sleep(0.1)
        output, _ = sweep.communicate(timeout=max(10, deadline - time.monotonic()))
    finally:
        sweep.kill()
    assert signalled, "the job finished before it could be pre-empted"
    assert sweep.returncode == 0, output.decode()[-3000:]
    logs = "".join(path.read_text() for path in (sweep_dir / ".submitit").glob("*/*_log.*"))
    assert "Requeued job" in logs and "requeued: resuming from the backup" in logs
    metrics = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs"] == 12
    with open(sweep_dir / "0" / "history.csv") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == list(range(12))  # every epoch once: the requeued attempt went on from the backup
    assert len(summary(sweep_dir, "trainer.epochs")) == 1
