"""The resume unit: how many epochs a stage's backup holds, and a training stream that skips exactly those."""

import json

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
