"""The direction of `optimized_metric` is decided in one place (`metric_mode`), and the checkpoint, early
stopping, `metrics.json`, the sweep summary and Optuna all follow it. With `optimized_metric=val/loss` the
checkpoint used to keep the epoch with the highest validation loss while `metrics.json` reported the lowest."""

import json

import numpy as np
import pytest
from conftest import compose_config

from fracture import FractureClassifier, FractureDataModule, Trainer
from fracture.cli import build_all
from fracture.errors import ConfigError
from fracture.recipe import best_value
from fracture.sweeps import collect_jobs
from fracture.training.metric_names import metric_mode


@pytest.mark.parametrize(
    "name,mode,expected",
    [
        ("val/loss", "auto", "min"),
        ("train/loss", "auto", "min"),
        ("val/auc_approx", "auto", "max"),
        ("val/recall", "auto", "max"),
        ("val/auc_approx", "min", "min"),
        ("val/loss", "max", "max"),
    ],
)
def test_metric_mode(name, mode, expected):
    assert metric_mode(name, mode) == expected


def test_an_unknown_mode_is_one_config_error():
    with pytest.raises(ConfigError, match=r"the mode of val/loss must be one of .* \(optimized_mode in the config\)"):
        metric_mode("val/loss", "lowest")


def composed(tmp_path, *overrides):
    searched = ["callbacks=[model_checkpoint,early_stopping]", "hparams_search=effb3_optuna"]
    return compose_config(tmp_path, *searched, *overrides, hydra_config=True)


@pytest.mark.parametrize(
    "overrides,mode,direction",
    [
        ([], "max", "maximize"),
        (["optimized_metric=val/loss"], "min", "minimize"),
        (["optimized_metric=val/precision", "optimized_mode=min"], "min", "minimize"),
    ],
)
def test_the_checkpoint_early_stopping_and_optuna_follow_the_mode(tmp_path, overrides, mode, direction):
    cfg = composed(tmp_path, *overrides)
    assert cfg.callbacks.model_checkpoint.mode == mode and cfg.callbacks.early_stopping.mode == mode
    assert cfg.hydra.sweeper.direction == direction
    checkpoint, stopping = build_all(cfg.callbacks)
    assert checkpoint.mode == mode and stopping.mode == mode  # Keras' EarlyStopping, built


def test_with_val_loss_the_checkpoint_keeps_the_lowest_loss_and_metrics_agree(tmp_path, synthetic_root):
    from fracture.training.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(tmp_path / "checkpoints", monitor="val/loss")
    datamodule = FractureDataModule(synthetic_root, image_size=32, batch_size=16, group_by="filename")
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8)
    trainer = Trainer(epochs=4, limit_train_batches=2, limit_val_batches=2, callbacks=[checkpoint], progress=False)
    trainer.fit(classifier, datamodule)
    losses = [row["val/loss"] for row in trainer.history]
    assert len(set(losses)) == len(losses)  # distinct values, so the highest and the lowest are different epochs
    assert checkpoint.best_epoch == 1 + int(np.argmin(losses)) and checkpoint.best_score == min(losses)
    assert best_value(trainer.history, "val/loss") == min(losses)


def test_the_sweep_summary_puts_the_lowest_first_for_a_minimised_metric(tmp_path):
    for job, value in enumerate([0.4, 0.2, float("nan"), 0.3]):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps({"optimized_metric": value}))
    assert [row["job"] for row in collect_jobs(tmp_path, mode="min")] == [1, 3, 0, 2]
    assert [row["job"] for row in collect_jobs(tmp_path, mode="max")] == [0, 3, 1, 2]
