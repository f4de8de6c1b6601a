"""The resume unit: how many epochs a stage's backup holds, and a training stream that skips exactly those."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from fracture.training.resume import KERAS_BACKUP_STATE, StageBackup, epoch_stream, epochs_to_skip


@pytest.mark.parametrize(
    "finished,current,end,skip",
    [
        (None, 0, 10, 0),  # no backup: a fresh stage
        (3, 0, 10, 3),  # three of ten epochs done
        (10, 0, 10, 0),  # the whole stage is done: Keras runs no epoch, nothing to skip
        (0, 0, 10, 0),
        (7, 5, 10, 2),  # a fine-tuning stage that starts at epoch 5 and had finished two of its epochs
    ],
)
def test_epochs_to_skip(finished, current, end, skip):
    assert epochs_to_skip(finished, current, end) == skip


def test_the_backup_says_how_many_epochs_it_holds(tmp_path):
    backup = StageBackup(tmp_path, "")
    assert backup.folder == tmp_path / "fit" and backup.finished_epochs() is None
    backup.folder.mkdir(parents=True)
    (backup.folder / KERAS_BACKUP_STATE).write_text(json.dumps({"epoch": 4, "batch": -1}))
    assert backup.finished_epochs() == 4
    assert StageBackup(tmp_path, "finetune").folder == tmp_path / "finetune"


def test_a_skipped_stream_continues_exactly_where_the_uninterrupted_one_would_be():
    def data():  # built afresh by each process, as the data module does: 5 steps of 2 per epoch
        return tf.data.Dataset.range(10).shuffle(10, seed=1, reshuffle_each_iteration=True).batch(2)

    uninterrupted = [batch.numpy() for batch in epoch_stream(data(), steps=5).take(15)]
    resumed = [batch.numpy() for batch in epoch_stream(data(), steps=5, skip_epochs=2).take(5)]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(uninterrupted[10:15]))
    assert not np.array_equal(np.stack(uninterrupted[0:5]), np.stack(uninterrupted[5:10]))  # reshuffled


def test_an_epoch_is_backed_up_only_after_the_checkpoints_and_the_log_have_it(tmp_path, synthetic_root):
    """A kill between a record of an epoch and its backup must not lose the record: the backup comes last (the
    epoch is then trained again), and the log replaces the row of an epoch trained again."""
    from fracture import FractureClassifier, FractureDataModule, Trainer
    from fracture.io import read_history
    from fracture.training.callbacks import CSVLogger, ModelCheckpoint

    backup_dir = tmp_path / "backup"
    seen = []

    class BackupWhenRecorded(keras.callbacks.Callback):  # runs after the checkpoint and the logger
        def on_epoch_end(self, epoch, logs=None):
            seen.append(StageBackup(backup_dir, "fit").finished_epochs())

    history = tmp_path / "history.csv"
    callbacks = [ModelCheckpoint(tmp_path / "checkpoints"), CSVLogger(history), BackupWhenRecorded()]
    datamodule = FractureDataModule(synthetic_root, image_size=32, batch_size=16, group_by="filename")
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8)
    Trainer(
        epochs=2, limit_train_batches=1, limit_val_batches=1, callbacks=callbacks, progress=False, backup_dir=backup_dir
    ).fit(classifier, datamodule)
    assert seen == [None, 1]  # at each epoch's end, the backup did not hold that epoch yet

    # As after a kill before epoch 2's backup: the log has rows for epochs 1 and 2 (0-based 0 and 1), and the
    # resumed run trains epoch 2 again.
    logger = CSVLogger(history)
    logger.on_train_begin()
    logger.on_epoch_end(1, {"loss": 0.5})
    rows = read_history(history)
    assert [row["epoch"] for row in rows] == [0, 1] and rows[1]["train/loss"] == 0.5
    assert len(history.read_text().splitlines()) == 3  # the header and one row per epoch
