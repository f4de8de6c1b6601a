"""Deterministic mode and resuming: the same seed gives the same metrics, with or without an interruption."""

import keras
import pytest

from fracture import FractureClassifier, FractureDataModule, Trainer

pytestmark = pytest.mark.backend


def run(root, epochs, backup_dir=None, seed=7):
    """A fresh seeded job, as a new process would start it."""
    keras.utils.set_random_seed(seed)
    datamodule = FractureDataModule(root, image_size=48, batch_size=8, augmentation={}, seed=seed, group_by="filename")
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=16)
    trainer = Trainer(epochs=epochs, deterministic=True, progress=False, backup_dir=backup_dir)
    trainer.fit(classifier, datamodule)
    return trainer


def test_same_seed_same_metrics(synthetic_root):
    first, second = run(synthetic_root, 2), run(synthetic_root, 2)
    assert first.history == second.history


def test_resumed_training_matches_an_uninterrupted_run(tmp_path, synthetic_root):
    uninterrupted = run(synthetic_root, 4)
    run(synthetic_root, 2, backup_dir=tmp_path)  # stopped after epoch 2, its backup left behind
    resumed = run(synthetic_root, 4, backup_dir=tmp_path)
    assert resumed.current_epoch == 4 and len(resumed.history) == 2  # only epochs 3 and 4 were trained
    for resumed_epoch, reference in zip(resumed.history, uninterrupted.history[2:], strict=True):
        for key, value in reference.items():
            assert resumed_epoch[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_a_finished_stage_is_not_trained_again(tmp_path, synthetic_root):
    run(synthetic_root, 2, backup_dir=tmp_path)
    again = run(synthetic_root, 2, backup_dir=tmp_path)
    assert again.current_epoch == 2 and again.history == []
