"""Checkpoints: atomic `.keras` files with fracture metadata inside, reloaded to equal predictions."""

import json
import zipfile

import keras
import numpy as np
import pytest

from fracture import FractureClassifier, load_checkpoint, read_metadata, save_checkpoint
from fracture.errors import CheckpointError
from fracture.models.checkpoint import update_metadata
from fracture.models.schema import CheckpointMetadata

pytestmark = pytest.mark.backend
CLASSES = {"positive_class": "fractured", "negative_class": "not fractured", "image_size": 32}


@pytest.fixture()
def trained_model():
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8)
    model = classifier.compile()
    images = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.train_on_batch(images, np.array([[0], [1]] * 4, dtype="float32"))
    return model, images


def test_reloaded_checkpoint_predicts_the_same(tmp_path, trained_model):
    model, images = trained_model
    path = save_checkpoint(model, tmp_path / "best_model.keras", {**CLASSES, "threshold": 0.37})
    plain = keras.saving.load_model(path)  # a plain Keras load works: no custom objects needed
    reloaded, metadata = load_checkpoint(path)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(plain.predict(images, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)
    assert metadata == CheckpointMetadata(**CLASSES, threshold=0.37).to_json()
    assert metadata["format"] == "fracture-checkpoint/2"
    assert [p.name for p in tmp_path.iterdir()] == ["best_model.keras"]  # no staging files left


def test_metadata_update_keeps_the_model(tmp_path, trained_model):
    model, images = trained_model
    path = save_checkpoint(model, tmp_path / "m.keras", CLASSES)
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
        archive.writestr("fracture.json", json.dumps({"format": "fracture-checkpoint/2", **CLASSES}))
    with pytest.raises(CheckpointError, match="could not load the model"):
        load_checkpoint(tmp_path / "broken.keras")


def write_metadata(path, stored: dict):
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("fracture.json", json.dumps(stored))
    return path


def test_a_checkpoint_of_a_newer_format_is_refused_and_an_older_one_upgraded(tmp_path, trained_model):
    model = trained_model[0]
    newer = tmp_path / "newer.keras"
    model.save(newer)
    write_metadata(newer, {"format": "fracture-checkpoint/3", **CLASSES})
    with pytest.raises(CheckpointError, match=r"written by a newer fracture \(checkpoint format 3"):
        load_checkpoint(newer)
    older = tmp_path / "older.keras"
    model.save(older)  # version 1 stored an evaluation's temperature as its own key
    write_metadata(older, {"format": "fracture-checkpoint/1", **CLASSES, "threshold": 0.4, "temperature": 1.7})
    upgraded = read_metadata(older)
    assert upgraded["calibration"] == {"method": "temperature", "params": {"temperature": 1.7}}
    assert upgraded["threshold_scale"] == "calibrated" and upgraded["format"] == "fracture-checkpoint/2"
    # The threshold moves through the calibration, so every label stays as version 1 gave it.
    assert upgraded["threshold"] == pytest.approx(1 / (1 + np.exp(-np.log(0.4 / 0.6) / 1.7)))


def test_metadata_outside_the_schema_is_refused(tmp_path, trained_model):
    with pytest.raises(CheckpointError, match=r"unknown \['colour'\], missing \['image_size'\]"):
        save_checkpoint(
            trained_model[0], tmp_path / "m.keras", {"positive_class": "a", "negative_class": "b", "colour": 1}
        )
    path = save_checkpoint(trained_model[0], tmp_path / "m.keras", CLASSES)
    with pytest.raises(CheckpointError, match=r"unknown \['treshold'\]"):
        update_metadata(path, treshold=0.3)
