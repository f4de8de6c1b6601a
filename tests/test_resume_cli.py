"""Kill a real training process with SIGKILL, re-run the same command with resume=true, and compare."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, run_cli

from fracture.training.resume import StageBackup

COMMON = [
    "experiment=demo",
    "data.train_per_class=64",
    "data.val_per_class=16",
    "data.test_per_class=4",
    "data.image_size=48",
    "data.batch_size=8",
    "trainer.epochs=6",
    "trainer.deterministic=true",
    "trainer.progress=false",
    "callbacks=model_checkpoint",
    "evaluate=false",
]


def history_rows(run_dir):
    path = run_dir / "history.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


@pytest.mark.slow
def test_sigkill_then_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
    paths = [f"paths.data_dir={tmp_path}/data", f"paths.log_dir={tmp_path}/outputs"]
    reference = run_cli("fracture.train", *COMMON, *paths, f"hydra.run.dir={tmp_path}/reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fracture.train", *COMMON, *paths],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = tmp_path / "outputs" / "train" / "runs"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        run_dirs = list(runs.glob("*")) if runs.is_dir() else []
        if run_dirs and history_rows(run_dirs[0]) >= 2:
            time.sleep(0.3)  # into the third epoch
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = list(runs.glob("*"))[0]
    assert not (killed / "metrics.json").exists() and (killed / "backup").is_dir()
    # The backup, not history.csv, says where a resume starts: the kill may fall between their two writes.
    (stage,) = [folder.name for folder in (killed / "backup").iterdir()]
    finished_before = StageBackup(killed / "backup", stage).finished_epochs()
    assert finished_before >= 1

    resumed = run_cli("fracture.train", *COMMON, *paths, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming stage '{stage}' after {finished_before} finished epoch(s)" in resumed.stderr + resumed.stdout
    assert history_rows(killed) == 6  # each epoch once: none lost, none repeated
    metrics = json.loads((killed / "metrics.json").read_text())
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert metrics["epochs"] == expected["epochs"] == 6
    for key in ("train/loss", "val/loss", "val/auc_approx", "best/epoch", "best/val/auc_approx"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), key
    assert not (killed / "backup").exists()  # a finished run leaves nothing to resume
