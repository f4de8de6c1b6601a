"""Checkpoints: atomic `.keras` files with fracture metadata inside, reloaded to equal predictions."""

import zipfile

import keras
import numpy as np
import pytest

from fracture import FractureClassifier, load_checkpoint, read_metadata, save_checkpoint
from fracture.errors import CheckpointError
from fracture.models.checkpoint import update_metadata

pytestmark = pytest.mark.backend


@pytest.fixture()
def trained_model():
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8)
    model = classifier.compile()
    images = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.train_on_batch(images, np.array([[0], [1]] * 4, dtype="float32"))
    return model, images


def test_reloaded_checkpoint_predicts_the_same(tmp_path, trained_model):
    model, images = trained_model
    path = save_checkpoint(model, tmp_path / "best_model.keras", {"threshold": 0.37, "positive_class": "fractured"})
    plain = keras.saving.load_model(path)  # a plain Keras load works: no custom objects needed
    reloaded, metadata = load_checkpoint(path)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(plain.predict(images, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)
    assert metadata == {"threshold": 0.37, "positive_class": "fractured"}
    assert [p.name for p in tmp_path.iterdir()] == ["best_model.keras"]  # no staging files left


def test_metadata_update_keeps_the_model(tmp_path, trained_model):
    model, images = trained_model
    path = save_checkpoint(model, tmp_path / "m.keras", {"threshold": 0.5})
    assert update_metadata(path, threshold=0.42)["threshold"] == 0.42
    assert read_metadata(path)["threshold"] == 0.42
    np.testing.assert_allclose(
        keras.saving.load_model(path).predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )


def test_wrong_files_raise_checkpoint_errors(tmp_path, trained_model):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.keras")
    (tmp_path / "notes.keras").write_text("hello")
    with pytest.raises(CheckpointError, match="not a fracture checkpoint"):
        load_checkpoint(tmp_path / "notes.keras")
    plain = tmp_path / "plain.keras"
    trained_model[0].save(plain)  # a Keras model, but not written by fracture
    with pytest.raises(CheckpointError, match="not a fracture checkpoint"):
        load_checkpoint(plain)
    with zipfile.ZipFile(tmp_path / "broken.keras", "w") as archive:
        archive.writestr("fracture.json", "{}")
    with pytest.raises(CheckpointError, match="could not load the model"):
        load_checkpoint(tmp_path / "broken.keras")
