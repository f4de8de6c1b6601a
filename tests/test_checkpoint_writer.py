"""Repeated checkpoints (`CheckpointWriter`): after the first full save, a rewrite of the variables' values that
stores exactly what a full save would, and a full save again whenever the layout cannot be reused."""

import io
import zipfile

import h5py
import keras
import numpy as np
import pytest

from fracture import FractureClassifier, load_checkpoint, save_checkpoint
from fracture.models import checkpoint_writer
from fracture.models.checkpoint_writer import CheckpointWriter
from fracture.models.schema import CheckpointMetadata

pytestmark = pytest.mark.backend
METADATA = CheckpointMetadata(positive_class="fractured", negative_class="not fractured", image_size=32)


def stored_datasets(path) -> dict[str, np.ndarray]:
    found = {}

    def keep(name, item):  # visititems stops at the first callback that returns anything but None
        if isinstance(item, h5py.Dataset):
            found[name] = item[()]

    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
        weights.visititems(keep)
    assert found, f"no weights stored in {path}"
    return found


def assert_same_datasets(first, second):
    left, right = stored_datasets(first), stored_datasets(second)
    assert list(left) == list(right)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


@pytest.fixture()
def frozen_base():
    """A classifier whose base is frozen, as in the recipe's head stage, and a batch to train it on."""
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8, freeze_base=True)
    model = classifier.compile()
    images = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    return classifier, model, images, np.array([[0], [1]] * 4, dtype="float32")


def test_later_checkpoints_store_what_a_full_save_stores(tmp_path, frozen_base):
    _, model, images, labels = frozen_base
    writer = CheckpointWriter()
    writer.save(model, tmp_path / "epoch1.keras", METADATA.replace(epoch=1))
    for epoch in (2, 3):
        model.train_on_batch(images, labels)
        writer.save(model, tmp_path / f"epoch{epoch}.keras", METADATA.replace(epoch=epoch))
    assert writer.full_saves == 1
    save_checkpoint(model, tmp_path / "full.keras", METADATA.replace(epoch=3))
    assert_same_datasets(tmp_path / "epoch3.keras", tmp_path / "full.keras")
    with zipfile.ZipFile(tmp_path / "epoch3.keras") as quick, zipfile.ZipFile(tmp_path / "full.keras") as full:
        assert quick.namelist() == full.namelist() and quick.read("config.json") == full.read("config.json")
    # The head trained between the saves: the rewrite holds the new values, not the first archive's.
    changed = [
        name
        for name, values in stored_datasets(tmp_path / "epoch1.keras").items()
        if not np.array_equal(values, stored_datasets(tmp_path / "epoch3.keras")[name])
    ]
    assert changed
    reloaded, metadata = load_checkpoint(tmp_path / "epoch3.keras")
    assert metadata["epoch"] == 3
    np.testing.assert_array_equal(reloaded.predict_on_batch(images), model.predict_on_batch(images))


def test_a_change_of_trainable_layers_or_of_model_saves_in_full(tmp_path, frozen_base):
    classifier, model, images, labels = frozen_base
    writer = CheckpointWriter()
    writer.save(model, tmp_path / "head.keras", METADATA)
    classifier.set_base_trainable(True)  # fine-tuning: the flags are in the configuration, which must change
    model.train_on_batch(images, labels)
    writer.save(model, tmp_path / "finetune.keras", METADATA)
    assert writer.full_saves == 2
    with zipfile.ZipFile(tmp_path / "head.keras") as head, zipfile.ZipFile(tmp_path / "finetune.keras") as tuned:
        assert head.read("config.json") != tuned.read("config.json")
    other = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8).compile()
    writer.save(other, tmp_path / "other.keras", METADATA)
    assert writer.full_saves == 3
    np.testing.assert_array_equal(
        load_checkpoint(tmp_path / "other.keras")[0].predict_on_batch(images), other.predict_on_batch(images)
    )


def test_a_layout_that_does_not_map_keeps_to_full_saves(tmp_path, frozen_base, monkeypatch):
    _, model, images, labels = frozen_base
    # As if Keras stored no layer names on the groups (or stored them otherwise): nothing maps.
    monkeypatch.setattr(checkpoint_writer, "variable_groups", lambda weights: {})
    writer = CheckpointWriter()
    writer.save(model, tmp_path / "a.keras", METADATA)
    model.train_on_batch(images, labels)
    writer.save(model, tmp_path / "b.keras", METADATA)
    assert writer.full_saves == 2
    np.testing.assert_array_equal(
        load_checkpoint(tmp_path / "b.keras")[0].predict_on_batch(images), model.predict_on_batch(images)
    )
    assert keras.saving.load_model(tmp_path / "b.keras") is not None
