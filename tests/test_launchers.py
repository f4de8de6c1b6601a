"""Sweeps beyond one process: Hydra's submitit launcher run locally (the code path of hydra/launcher=slurm) and its
Ray launcher, on a Ray it starts and on a running cluster (inside a loopback-only namespace, tests/loopback.py)."""

import csv
import sys

import pytest
from conftest import DEMO_SMALL, run_cli
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
{python} -m ray.scripts.scripts start --head --node-ip-address=127.0.0.1 --num-cpus=2 \\
    --include-dashboard=false --disable-usage-stats
trap '{python} -m ray.scripts.scripts stop --force' EXIT
ray_sweep {overrides} hydra.sweep.dir={tmp}/cluster hydra.launcher.ray.init.address=auto
"""


@pytest.mark.slow
def test_the_ray_launcher_sweeps_on_a_ray_it_starts_and_on_a_running_cluster(tmp_path):
    overrides = " ".join([*TINY_SWEEP, f"paths.data_dir={tmp_path}/data"])
    script = RAY_SWEEPS.replace("{overrides}", overrides).replace("{tmp}", str(tmp_path))
    script = script.replace("{python}", sys.executable)
    done = in_loopback(["bash", "-c", script], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for sweep in ("local", "cluster"):
        rows = summary(tmp_path / sweep, "model.optimizer.lr")
        assert sorted(rows) == ["0.0003", "0.001"], sweep
        assert all(row["status"] == "ok" for row in rows.values()), sweep
    assert "validated against ConfigStore" not in done.stderr
