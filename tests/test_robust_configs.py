"""Robustness, configs: a typo in a key or group name gives Hydra's error with the valid choices, and values
out of range are refused with the allowed range before any heavy work. docs/robustness.md lists each case."""

import numpy as np
import pytest
from conftest import compose_config, run_cli

from fracture import FractureClassifier, OptimizerSpec
from fracture.cli import build, build_all
from fracture.errors import ConfigError


def build_job(cfg):
    """The objects that `train(cfg)` builds before it touches data or models."""
    build(cfg.data)
    build(cfg.model)
    build(cfg.trainer, callbacks=build_all(cfg.callbacks) + build_all(cfg.logger))


@pytest.mark.slow  # about 20-30 s; left the default suite when the Ray tests joined it
def test_a_typo_in_a_key_or_a_group_is_hydras_error_with_the_choices(tmp_path):
    key = run_cli("fracture.train", "trainer.epochz=3", f"hydra.run.dir={tmp_path}/a")
    assert key.returncode == 1 and "Traceback" not in key.stderr
    assert "Key 'epochz' is not in struct" in key.stderr
    group = run_cli("fracture.train", "model=effb4", f"hydra.run.dir={tmp_path}/b")
    assert group.returncode == 1 and "Traceback" not in group.stderr
    assert "Could not find 'model/effb4'" in group.stderr and "effb3" in group.stderr and "tiny" in group.stderr


def test_an_added_key_that_no_object_takes_is_an_error(tmp_path):
    cfg = compose_config(tmp_path, "+model.depth=3")
    with pytest.raises(ConfigError, match="depth"):
        build(cfg.model)


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.epochs=-1", "trainer.epochs must be at least 1, got -1"),
        ("trainer.epochs=0", "trainer.epochs must be at least 1, got 0"),
        ("data.val_fraction=1.0", "data.val_fraction must be between 0 and 1, got 1.0"),
        ("data.test_fraction=0.9", r"data.test_fraction must be at least 0 .*\[0, 0.85\), got 0.9"),
        ("data.image_size=16", "data.image_size must be at least 32 pixels, got 16"),
        ("data.batch_size=0", "data.batch_size must be positive, got 0"),
        ("model.optimizer.lr=0", "model.optimizer.lr must be above 0, got 0"),
        ("model.dropout=1.0", r"model.dropout must be in \[0, 1\)"),
        ("trainer.precision=float8", "trainer.precision must be one of"),
    ],
)
def test_out_of_range_values_are_refused_with_the_allowed_range(tmp_path, override, message):
    cfg = compose_config(tmp_path, "data.root=/somewhere", override)
    with pytest.raises(ConfigError, match=message):
        build_job(cfg)


def test_a_bad_value_fails_before_the_data_is_read(tmp_path):
    """The data root does not exist either: the range error must come first, before any scan."""
    result = run_cli(
        "fracture.train", "trainer.epochs=-1", f"data.root={tmp_path}/nowhere", f"hydra.run.dir={tmp_path}/r"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: trainer.epochs must be at least 1, got -1." in result.stderr


def test_a_model_image_size_apart_from_the_data_is_one_line_before_the_data_is_read(tmp_path):
    """model.image_size alone (the model configs follow data.image_size) failed in the first batch, deep in
    the backend or OpenVINO; the data root does not exist either, so the scan must not have started."""
    result = run_cli(
        "fracture.train",
        "model=tiny",
        "model.image_size=48",
        f"data.root={tmp_path}/nowhere",
        f"hydra.run.dir={tmp_path}/r",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: model.image_size=48 but data.image_size=224:" in result.stderr


def test_predict_refuses_a_batch_size_of_zero(tmp_path, tiny_checkpoint):
    result = run_cli(
        "fracture.predict",
        f"ckpt_path={tiny_checkpoint}",
        f"inputs=[{tmp_path}]",
        "batch_size=0",
        f"hydra.run.dir={tmp_path}/p",
    )
    assert result.returncode == 2 and "error: batch_size must be at least 1, got 0." in result.stderr


@pytest.mark.parametrize(
    "options,message",
    [
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"model.dropout must be in \[0, 1\)"),
        ({"noise_stddev": -1.0}, "model.noise_stddev must be at least 0"),
        ({"dense_units": 0}, "model.dense_units at least 1"),
        ({"optimizer": {"lr": 0.0}}, "model.optimizer.lr must be above 0"),
        ({"optimizer": {"lr": -1e-3}}, "model.optimizer.lr must be above 0"),
    ],
)
def test_out_of_range_model_settings_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        FractureClassifier("tiny_cnn", weights=None, image_size=32, **options)


def test_a_learning_rate_of_zero_is_refused_not_replaced():
    spec = OptimizerSpec(lr=1e-3)
    with pytest.raises(ConfigError, match="the learning rate must be above 0, got 0"):
        spec.build(learning_rate=0.0)
    assert float(np.asarray(spec.build(learning_rate=1e-5).learning_rate)) == pytest.approx(1e-5)
