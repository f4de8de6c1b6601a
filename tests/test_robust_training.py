"""Robustness, training faults: a NaN loss and Ctrl-C stop cleanly with every finished epoch saved, and an
output folder that cannot take the run's files is refused at start. docs/robustness.md lists each case."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import namedtuple

import keras
import numpy as np
import pytest
from conftest import DEMO_SMALL, REPO_ROOT, require_permission_checks, run_cli, start_cli

from fracture import FractureClassifier, FractureDataModule, Trainer, load_checkpoint
from fracture.errors import ConfigError
from fracture.training.callbacks import ModelCheckpoint
from fracture.training.guards import InterruptGuard, TrainingDiverged, TrainingInterrupted
from fracture.training.resume import StageBackup


class BreakWeightsInSecondEpoch(keras.callbacks.Callback):
    """What a too-high learning rate does, on cue: the weights turn NaN as epoch 2 starts."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            for weight in self.model.trainable_weights:
                weight.assign(np.full(weight.shape, np.nan, "float32"))


def test_a_nan_loss_stops_at_its_batch_and_the_last_good_checkpoint_stays(tmp_path, synthetic_root):
    checkpoint = ModelCheckpoint(tmp_path / "ckpt")
    trainer = Trainer(epochs=3, callbacks=[BreakWeightsInSecondEpoch(), checkpoint], progress=False)
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)
    with pytest.raises(TrainingDiverged, match="training loss became nan in epoch 2 at batch 1.*lower learning rate"):
        trainer.fit(classifier, FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename"))
    model, metadata = load_checkpoint(checkpoint.best_path)
    assert metadata["epoch"] == 1 and load_checkpoint(checkpoint.last_path)[1]["epoch"] == 1
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    assert np.all(np.isfinite(model.predict_on_batch(images)))


def test_a_diverging_run_exits_with_the_message_and_records_it_in_metrics_json(tmp_path):
    overrides = ("model.optimizer.lr=1e30", f"paths.data_dir={tmp_path}/data", f"hydra.run.dir={tmp_path}/run")
    result = run_cli("fracture.train", *DEMO_SMALL, *overrides)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: the validation loss became nan in epoch 1; the weights are no longer usable." in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["stopped/epoch"] == 1 and metrics["epochs"] == 0
    assert not (tmp_path / "run" / "checkpoints" / "best_model.keras").exists()  # no NaN weights saved


def training_past(run, overrides: list[str], epochs: int) -> subprocess.Popen:
    """`python -m fracture.train` into `run`, returned once `epochs` epochs are in its history.csv."""
    process = start_cli("fracture.train", *overrides, f"hydra.run.dir={run}", stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "history.csv").is_file() or len((run / "history.csv").read_text().splitlines()) <= epochs:
        assert process.poll() is None and time.monotonic() < deadline, f"{epochs} epoch(s) never finished"
        time.sleep(0.1)
    return process


def test_ctrl_c_stops_after_the_batch_saves_the_finished_epochs_and_prints_the_resume_command(tmp_path):
    run = tmp_path / "run"
    overrides = [*DEMO_SMALL, "trainer.epochs=12", f"paths.data_dir={tmp_path}/data"]
    process = training_past(run, overrides, epochs=2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs"] >= 2
    assert (run / "checkpoints" / "last.keras").is_file() and (run / "backup").is_dir()
    resume = stderr.split("Resume with:\n", 1)[1].strip()
    assert resume == shlex.join(["python", "-m", "fracture.train", *overrides, f"resume={run}"])

    original_config = (run / ".hydra" / "config.yaml").read_text()
    changed = ["data.image_size=64", "model.dense_units=128"]  # another model on other data: refused by name
    refused = run_cli("fracture.train", *shlex.split(resume)[3:], *changed)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "data.image_size (48 -> 64)" in refused.stderr and "model.dense_units (64 -> 128)" in refused.stderr

    # The printed command, plus a change a resume may make. It continues in the run's own folder: no new one.
    resumed = run_cli("fracture.train", *shlex.split(resume)[3:], "trainer.progress=false")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Interpolation" not in resumed.stderr  # Hydra warned on every resume
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs"] == 12
    assert len((run / "history.csv").read_text().splitlines()) == 13  # a header and every epoch once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]
    assert "resuming the run in" in (run / "train.log").read_text()  # its log is in the run's folder
    assert (run / ".hydra" / "config.yaml").read_text() == original_config  # what later resumes check against
    assert list((run / ".hydra").glob("resumed-*/config.yaml"))  # each resume's settings, beside it


def test_a_second_ctrl_c_stops_at_once_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    guard = InterruptGuard()
    with pytest.raises(KeyboardInterrupt), guard:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs between bytecodes: the first Ctrl-C only asks to stop
        assert guard.requested
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_asks_to_stop_after_the_batch_like_ctrl_c_and_the_handlers_are_restored():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    guard = InterruptGuard()
    with guard:
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler pre-empting the job
        time.sleep(0.1)
        assert guard.requested == signal.SIGTERM
        guard.on_epoch_begin(2)
        with pytest.raises(TrainingInterrupted, match="interrupted by SIGTERM in epoch 3 at batch 5") as stop:
            guard.on_train_batch_end(4)
    assert stop.value.signum == signal.SIGTERM
    assert {signum: signal.getsignal(signum) for signum in before} == before


@pytest.mark.slow
def test_sigterm_mid_epoch_keeps_the_finished_epochs_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    overrides = [*DEMO_SMALL, "trainer.epochs=4", f"paths.data_dir={tmp_path}/data"]
    process = training_past(run, overrides, epochs=1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-3000:]
    assert "interrupted by SIGTERM in epoch" in stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs"] >= 1
    resume = stderr.split("Resume with:\n", 1)[1].strip()
    resumed = run_cli("fracture.train", *shlex.split(resume)[3:], "trainer.progress=false")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs"] == 4
    assert len((run / "history.csv").read_text().splitlines()) == 5  # a header and every epoch once


def test_a_read_only_output_folder_is_refused_at_start(tmp_path):
    require_permission_checks()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    common = (*DEMO_SMALL, f"paths.data_dir={tmp_path}/data")
    run_dir = run_cli("fracture.train", *common, f"hydra.run.dir={locked}/run", unprivileged=True)
    assert run_dir.returncode == 2 and "Traceback" not in run_dir.stderr  # checked before Hydra makes the folder
    assert f"error: cannot write to {locked} (Permission denied)" in run_dir.stderr

    checkpoints = (f"callbacks.model_checkpoint.dirpath={locked}/ckpts", f"hydra.run.dir={tmp_path}/run")
    refused = run_cli("fracture.train", *common, *checkpoints, unprivileged=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"error: cannot write to {locked}/ckpts (Permission denied)" in refused.stderr
    assert not (tmp_path / "run" / "history.csv").exists()  # refused before the first epoch


def test_too_little_free_disk_is_refused_before_training(tmp_path, synthetic_root, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("fracture.io.shutil.disk_usage", lambda path: usage(10**9, 10**9, 50_000))
    trainer = Trainer(epochs=1, callbacks=[ModelCheckpoint(tmp_path / "ckpt")], progress=False)
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)
    with pytest.raises(ConfigError, match=r"only 0 MB free on the disk of .*ckpt; checkpoints and backups .* about"):
        trainer.fit(classifier, FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename"))
    assert trainer.history == [] and not (tmp_path / "ckpt" / "best_model.keras").exists()


def test_a_run_that_fails_before_training_begins_gets_no_second_error_from_the_progress_bar():
    """A Keras error before the first epoch used to be followed by `'NoneType' object has no attribute 'stop'`."""
    from fracture.training.progress import RichProgress

    RichProgress(steps_per_epoch=2, epochs=1).on_train_end()


# Fills the disk where Keras' double backup first copies the last epoch's state aside (`*.bkp`), as a real
# full disk did: the copy leaves a 0-byte file and raises ENOSPC, after the first epoch was saved whole.
FULL_DISK_IN_EPOCH_2 = """
import errno, os, shutil, sys
copy = shutil.copyfile
def copy_onto_a_full_disk(source, target, *args, **kwargs):
    if str(target).endswith(".bkp"):
        open(target, "wb").close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    return copy(source, target, *args, **kwargs)
shutil.copyfile = copy_onto_a_full_disk
from fracture.train import main
sys.argv = ["fracture.train", *sys.argv[1:]]
main()
"""


def test_a_disk_that_fills_during_a_run_stops_it_like_an_interruption(tmp_path):
    """It used to end in a 20-line OSError traceback and leave a 0-byte `.bkp` in the backup."""
    run = tmp_path / "run"
    overrides = [*DEMO_SMALL, "trainer.epochs=3", f"paths.data_dir={tmp_path}/data"]
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_IN_EPOCH_2, *overrides, f"hydra.run.dir={run}"],
        cwd=REPO_ROOT,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "is full" in line and "MB free) while saving epoch 2" in line and "need about" in line
    assert done.stderr.split("Resume with:\n", 1)[1].strip().endswith(f"resume={run}")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "disk_full" and metrics["epochs"] == 1
    assert not [path for path in run.rglob("*") if path.is_file() and path.stat().st_size == 0]  # no partial file
    assert not list(run.rglob("*.bkp")) and not list(run.rglob(".*-*"))  # nor staging files
    # Epoch 2's checkpoints were written, whole, before its backup met the full disk: the backup comes last, so
    # that an epoch counts as finished only when all its records are written. A resume trains epoch 2 again.
    model, metadata = load_checkpoint(run / "checkpoints" / "last.keras")
    assert metadata["epoch"] == 2 and load_checkpoint(run / "checkpoints" / "best_model.keras")[1]["epoch"] in (1, 2)
    assert StageBackup(run / "backup", "fit").finished_epochs() == 1
