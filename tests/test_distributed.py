"""Training on several JAX processes (fracture.training.distributed, fracture.local_processes).

The processes talk over 127.0.0.1 only (the coordinator is bound there) and every run has a timeout."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_SMALL, REPO_ROOT, run_cli, start_cli

from fracture.data.shards import TrainingShard, class_balanced_shard, shard_sizes
from fracture.data.synthetic import write_synthetic_dataset
from fracture.errors import ConfigError, DataError
from fracture.local_processes import process_command, without_spawn_keys
from fracture.processes import free_loopback_port
from fracture.training.distributed import check_backend, find_process_group, first_host, needs_starting

PROBE = REPO_ROOT / "tests" / "distributed_probe.py"


# ------------------------------------------------------------------ who is who, without processes
def test_explicit_settings_come_first_then_slurm_and_none_means_start_them_here():
    slurm = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_ID": "4242"}
    explicit = find_process_group(2, 1, "10.0.0.1:1234", environ=slurm)
    assert (explicit.process_id, explicit.num_processes, explicit.coordinator) == (1, 2, "10.0.0.1:1234")
    from_slurm = find_process_group(environ=slurm)
    assert (from_slurm.process_id, from_slurm.num_processes, from_slurm.coordinator) == (2, 4, "gpu07:24242")
    assert not from_slurm.is_chief and from_slurm.source == "SLURM"
    with pytest.raises(ConfigError, match="started 4 tasks"):
        find_process_group(2, environ=slurm)
    assert needs_starting(find_process_group(2, environ={}))
    assert not find_process_group(1, environ={}).multi


def test_bad_settings_are_one_line_each():
    with pytest.raises(ConfigError, match="outside 0..1"):
        find_process_group(2, 2, "127.0.0.1:1", environ={})
    with pytest.raises(ConfigError, match="needs trainer.coordinator"):
        find_process_group(2, 0, None, environ={})
    with pytest.raises(ConfigError, match="at least 1"):
        find_process_group(0, environ={})
    with pytest.raises(ConfigError, match="keras-team/keras#20585"):
        check_backend(find_process_group(2, 0, "127.0.0.1:1", environ={}), "tensorflow")


def test_first_host_of_slurm_node_lists():
    assert first_host("node[03-05,09],gpu1") == "node03"
    assert first_host("a12,b3") == "a12"
    assert first_host("solo") == "solo"


def test_shards_hold_every_file_once_and_the_classes_in_proportion():
    labels = np.array([1] * 13 + [0] * 30)
    np.random.default_rng(0).shuffle(labels)
    shards = [class_balanced_shard(labels, rank, 3) for rank in range(3)]
    together = np.sort(np.concatenate(shards))
    np.testing.assert_array_equal(together, np.arange(len(labels)))
    positives = [int(labels[shard].sum()) for shard in shards]
    assert max(positives) - min(positives) <= 1 and sum(positives) == 13
    assert shard_sizes(labels, 3) == [len(shard) for shard in shards]


def test_every_process_runs_the_steps_of_the_smallest_shard():
    labels = np.array([1] * 17 + [0] * 17)  # shards of 18 and 16 files
    shards = [TrainingShard.of(rank, 2, global_batch=8) for rank in range(2)]
    assert [shard.local_batch for shard in shards] == [4, 4]
    assert [shard.steps(labels) for shard in shards] == [(4, 16), (4, 16)]
    assert TrainingShard.of(0, 1, global_batch=8) is None  # one process trains on all of train
    with pytest.raises(DataError, match="holds 16 files, fewer than one local batch of 20"):
        TrainingShard.of(0, 2, global_batch=40).steps(labels)


def test_a_process_command_carries_its_place_and_a_resume_command_leaves_it_out(tmp_path):
    overrides = ["trainer.num_processes=2", "trainer.epochs=3"]
    command = process_command(overrides, 1, 4321, tmp_path / "run")
    assert command[:3] == [sys.executable, "-m", "fracture.train"]
    assert "trainer.process_id=1" in command and "trainer.coordinator=127.0.0.1:4321" in command
    assert f"hydra.run.dir='{(tmp_path / 'run').resolve()}'" in command
    assert "hydra/job_logging=disabled" in command
    assert without_spawn_keys(command[3:]) == overrides


def test_the_global_batch_must_split_evenly(tmp_path):
    from fracture import FractureDataModule

    module = FractureDataModule(tmp_path, batch_size=6, group_by=None)
    with pytest.raises(ConfigError, match="multiple of trainer.num_processes=4"):
        module.shard_training(0, 4)


# ------------------------------------------------------------------ two processes
@pytest.fixture(scope="module")
def shard_data(tmp_path_factory) -> Path:
    # 17 per class: the shards differ by a file of each class, so the equal step count is put to the test.
    return write_synthetic_dataset(tmp_path_factory.mktemp("shards"), 17, 4, 2, image_size=48)


def probe(*args: str, out: Path) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    name = args[0] if args[0] == "union" else f"group-{args[3]}"
    with open(out / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, str(PROBE), *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=log)


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [process.wait(max(1.0, deadline - time.monotonic())) for process in processes]
    finally:
        for process in processes:
            process.kill()


def test_two_processes_train_as_one_on_the_union_of_their_shards(shard_data, tmp_path):
    port = str(free_loopback_port())
    group = [probe("group", str(shard_data), str(tmp_path), str(rank), port, out=tmp_path) for rank in (0, 1)]
    codes = wait_all(group, 240)
    assert codes == [0, 0], [(p.read_text()[-2000:]) for p in tmp_path.glob("*.log")]
    assert wait_all([probe("union", str(shard_data), str(tmp_path), out=tmp_path)], 240) == [0]

    first, second, union = (np.load(tmp_path / f"{name}.npy") for name in ("process0", "process1", "union"))
    assert first.shape[0] == 5  # the weights before the first step and after each of 4
    np.testing.assert_array_equal(first, second)  # one model, held by both
    steps = np.abs(np.diff(union, axis=0)).max(axis=1)
    assert steps.min() > 1e-3  # every step moved the weights, so agreeing after it says something
    # Float32 rounds each sum to about 1e-7 of its size; the two processes add the halves of the batch in
    # another order than one process does, so an SGD step may differ by some 1e-6 of its size. A shard's
    # wrong batch would differ by the size of a step.
    np.testing.assert_array_equal(first[0], union[0])
    assert np.abs(first - union).max(axis=1)[1:].max() < 1e-3 * steps.min()

    listed = [(tmp_path / f"shard{rank}.txt").read_text().splitlines() for rank in (0, 1)]
    shards = [dict(line.split("\t") for line in lines) for lines in listed]
    assert not set(shards[0]) & set(shards[1])
    assert len(shards[0]) + len(shards[1]) == 34
    assert [sorted(shard.values()).count("1") for shard in shards] in ([9, 8], [8, 9])


@pytest.mark.slow  # about 25 s; the default suite stays under 15 minutes (the two-process equality test stays)
def test_a_peer_that_dies_stops_the_survivor_in_bounded_time(shard_data, tmp_path):
    port = str(free_loopback_port())
    survivor = probe("group", str(shard_data), str(tmp_path), "0", port, out=tmp_path)
    dying = probe("group", str(shard_data), str(tmp_path), "1", port, "--die-at-step", "2", out=tmp_path)
    assert wait_all([dying], 240) == [9]
    died = time.monotonic()
    # The peer timeout of the probe is 5 s; JAX's coordination service notices a missed heartbeat within it.
    (code,) = wait_all([survivor], 120)
    waited = time.monotonic() - died
    assert code != 0 and waited < 60
    output = (tmp_path / "group-0.log").read_text()
    assert "another task died" in output or "heartbeat" in output, output[-3000:]


@pytest.mark.slow
def test_num_processes_two_through_the_cli_writes_one_run_folder_from_process_0(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "fracture.train",
        *DEMO_SMALL,
        "trainer.epochs=2",
        "trainer.num_processes=2",
        "model.freeze_base=true",  # the feature cache: each process extracts its own shard
        "eval.bootstrap_resamples=50",
        f"hydra.run.dir={run_dir}",
        f"paths.log_dir={tmp_path}",
        backend="jax",
        timeout=500,
        env={"FRACTURE_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    printed = result.stdout + result.stderr
    assert "starting 2 training processes" in printed
    written = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert "checkpoints/best_model.keras" in written and "metrics.json" in written and "report.md" in written
    assert "rank1.log" in written and not any(name.startswith("rank0") for name in written)
    rank1 = (run_dir / "rank1.log").read_text()
    assert "training as process 1 of 2" in rank1 and "run folder:" not in rank1
    for output in (rank1, printed):  # each process extracted its own part of train and of val
        assert "caching train_shard features" in output and "caching val_part features" in output
        assert "caching val features" not in output
    assert not (run_dir / "backup").exists()  # finished: process 0 removed its backup

    # The checkpoint process 0 wrote predicts the same on both backends.
    image = sorted(REPO_ROOT.glob("data/synthetic/test/*/*.png"))[0]  # the demo's own data
    code = (
        "import sys; from fracture import load_predictor as p; print(p(sys.argv[1]).predict(sys.argv[2]).probability)"  # noqa: E501
    )
    probabilities = []
    for backend in ("jax", "tensorflow"):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        checkpoint = str(run_dir / "checkpoints" / "best_model.keras")
        done = subprocess.run(
            [sys.executable, "-c", code, checkpoint, str(image)], env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-2000:]
        probabilities.append(float(done.stdout.split()[-1]))
    assert abs(probabilities[0] - probabilities[1]) < 1e-5


@pytest.mark.slow
def test_sigterm_stops_every_process_after_the_same_batch_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*DEMO_SMALL, "data.train_per_class=48", "data.image_size=64", "trainer.epochs=8"]
    overrides += ["trainer.num_processes=2", "eval.bootstrap_resamples=50", f"paths.log_dir={tmp_path}"]
    env = {"FRACTURE_CACHE_DIR": str(tmp_path)}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    started = start_cli("fracture.train", *overrides, f"hydra.run.dir={run_dir}", backend="jax", env=env, **pipes)
    backup_state = run_dir / "backup" / "fit" / "training_metadata.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and started.poll() is None and not backup_state.is_file():
        time.sleep(0.1)
    started.send_signal(signal.SIGTERM)  # a scheduler's pre-emption reaches the command; it tells both
    _, stderr = started.communicate(timeout=120)
    assert started.returncode == 143, stderr.decode()[-3000:]
    assert "Resume with:" in stderr.decode() and "trainer.process_id" not in stderr.decode()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert "interrupted by SIGTERM" in (run_dir / "rank1.log").read_text()

    resumed = run_cli("fracture.train", *overrides, f"resume={run_dir}", backend="jax", timeout=500, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
    with open(run_dir / "history.csv") as file:
        assert [int(row["epoch"]) for row in csv.DictReader(file)] == list(range(8))


def test_when_one_local_process_fails_the_others_are_stopped_and_its_code_returned(tmp_path, monkeypatch, capsys):
    import fracture.local_processes as local

    behaviour = {0: "import time; time.sleep(120)", 1: "import sys, time; time.sleep(0.5); sys.exit(3)"}
    monkeypatch.setattr(local, "process_command", lambda _o, rank, _p, _r: [sys.executable, "-c", behaviour[rank]])
    monkeypatch.setattr(local, "STOP_GRACE_S", 1.0)
    started = time.monotonic()
    assert local.run_local_processes(2, [], tmp_path) == 3
    assert time.monotonic() - started < 30
    error = capsys.readouterr().err
    assert "training process 1 exited with code 3" in error and "rank1.log" in error and "[0]" in error
