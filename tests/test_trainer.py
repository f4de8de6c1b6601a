"""Trainer loops on tiny synthetic data: fit, limits, fast_dev_run, overfitting, checkpoints."""

import warnings

import keras
import numpy as np
import pytest

from fracture import FractureClassifier, FractureDataModule, Trainer, load_checkpoint, read_metadata
from fracture.errors import ConfigError
from fracture.training.callbacks import ModelCheckpoint

pytestmark = pytest.mark.backend


def tiny():
    return FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)


def test_fit_logs_slash_metrics_and_keeps_the_best_checkpoint(tmp_path, synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=16, augmentation={}, group_by="filename")
    checkpoint = ModelCheckpoint(tmp_path / "checkpoints", monitor="val/auc_approx")
    trainer = Trainer(epochs=2, callbacks=[checkpoint], progress=False)
    classifier = tiny()
    metrics = trainer.fit(classifier, datamodule)
    assert {"train/loss", "train/auc_approx", "val/loss", "val/auc_approx", "val/precision", "val/recall"} <= set(
        metrics
    )
    assert trainer.current_epoch == 2 and len(trainer.history) == 2
    val_auc = [row["val/auc_approx"] for row in trainer.history]
    assert checkpoint.best_epoch == 1 + int(np.argmax(val_auc))  # the first epoch with the highest val/auc_approx
    assert checkpoint.best_score == pytest.approx(max(val_auc))
    assert checkpoint.best_score == pytest.approx(trainer.history[checkpoint.best_epoch - 1]["val/auc_approx"])
    metadata = read_metadata(checkpoint.best_path)
    assert metadata["positive_class"] == "fractured" and metadata["threshold"] == 0.5
    assert metadata["epoch"] == checkpoint.best_epoch and metadata["image_size"] == 64
    # One full save; epoch 2 rewrote the values in its layout, and holds the model as training left it.
    assert checkpoint.writer.full_saves == 1 and read_metadata(checkpoint.last_path)["epoch"] == 2
    images = next(iter(datamodule.val_dataloader()))[0].numpy()
    last, _ = load_checkpoint(checkpoint.last_path)
    np.testing.assert_array_equal(last.predict_on_batch(images), classifier.model.predict_on_batch(images))


def test_fast_dev_run_uses_one_batch_and_one_epoch(synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=4, group_by="filename")
    seen = []

    class CountBatches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    trainer = Trainer(epochs=5, fast_dev_run=True, callbacks=[CountBatches()], progress=False)
    classifier = tiny()
    trainer.fit(classifier, datamodule)
    assert seen == [0] and trainer.current_epoch == 1
    # TensorFlow's one batch runs eagerly (tracing costs more than it saves); JAX's stays compiled.
    assert classifier.model.run_eagerly == (keras.backend.backend() == "tensorflow")


def test_a_second_fit_continues_the_epoch_count(synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename")
    trainer = Trainer(epochs=1, limit_train_batches=1, limit_val_batches=1, progress=False)
    classifier = tiny()
    trainer.fit(classifier, datamodule)
    trainer.fit(classifier, datamodule, epochs=2, learning_rate=1e-4)
    assert trainer.current_epoch == 3 and len(trainer.history) == 3
    assert float(classifier.model.optimizer.learning_rate) == pytest.approx(1e-4)


def test_overfitting_two_batches_drives_the_loss_down(synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=8, augmentation=None, group_by="filename")
    classifier = FractureClassifier(
        "tiny_cnn", weights=None, image_size=64, dense_units=16, noise_stddev=0.0, dropout=0.0
    )
    trainer = Trainer(epochs=25, overfit_batches=2, progress=False)
    trainer.fit(classifier, datamodule)
    losses = [epoch["train/loss"] for epoch in trainer.history]
    assert losses[-1] < 0.5 * losses[0]


def test_validate_test_and_predict(synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename")
    trainer = Trainer(epochs=1, limit_train_batches=2, progress=False)
    classifier = tiny()
    trainer.fit(classifier, datamodule)
    assert set(trainer.validate(classifier, datamodule)) >= {"val/loss", "val/auc_approx"}
    assert set(trainer.test(classifier, datamodule)) >= {"test/loss", "test/auc_approx"}
    probabilities = trainer.predict(classifier, datamodule, "test")
    assert probabilities.shape == (16,) and np.all((probabilities >= 0) & (probabilities <= 1))


def test_mixed_precision_keeps_a_float32_output(synthetic_root):
    trainer = Trainer(precision="mixed_bfloat16", progress=False)
    model = trainer.build(tiny())
    assert model.get_layer("tiny_conv1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("head_output").dtype_policy.compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_bad_trainer_settings():
    with pytest.raises(ConfigError, match="precision"):
        Trainer(precision="float8")
    with pytest.raises(ConfigError, match="jit_compile"):
        Trainer(jit_compile="sometimes")


def test_unlogged_checkpoint_monitor_is_a_config_error(tmp_path, synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename")
    trainer = Trainer(
        epochs=1, fast_dev_run=True, progress=False, callbacks=[ModelCheckpoint(tmp_path, monitor="val/f1")]
    )
    with pytest.raises(ConfigError, match="val/f1"):
        trainer.fit(tiny(), datamodule)


def test_mixed_float16_trains_with_loss_scaling(synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=48, batch_size=8, group_by="filename")
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8)
    trainer = Trainer(precision="mixed_float16", fast_dev_run=True, progress=False)
    metrics = trainer.fit(classifier, datamodule)
    assert isinstance(classifier.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert classifier.model.get_layer("tiny_conv1").compute_dtype == "float16"
    assert classifier.model.output.dtype == "float32" and np.isfinite(metrics["train/loss"])


def test_more_devices_than_visible_is_a_config_error():
    with pytest.raises(ConfigError, match="device"):
        Trainer(devices=64)


def test_a_model_that_takes_another_image_size_than_the_data_fails_before_the_data_is_read(tmp_path):
    """The folder does not exist either: the size mismatch must be the error, not the scan's."""
    datamodule = FractureDataModule(tmp_path / "nowhere", image_size=64, batch_size=4, group_by="filename")
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8)
    trainer = Trainer(epochs=1, progress=False)
    message = r"model.image_size=48 but data.image_size=64: .* set data.image_size"
    for call in (trainer.fit, trainer.validate, trainer.test, trainer.predict):
        with pytest.raises(ConfigError, match=message):
            call(classifier, datamodule)
    assert classifier.model is None  # nothing was built


def test_streamed_validation_ends_without_keras_saying_training_was_interrupted(synthetic_root):
    """Streamed images (no decode cache) may skip a file that fails mid-run, so the validation stream's length
    is unknown and Keras warned "Your input ran out of data; interrupting training" at each pass's end."""
    datamodule = FractureDataModule(
        synthetic_root, image_size=48, batch_size=16, group_by="filename", decode_cache=False
    )
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8)
    trainer = Trainer(epochs=2, limit_train_batches=2, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(classifier, datamodule)
        metrics = trainer.validate(classifier, datamodule)
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert len(trainer.history) == 2 and "val/loss" in trainer.history[-1] and "val/loss" in metrics
