"""Checkpoints written by `fracture.train` on one backend are the same artifact on the other.

Each backend runs in its own subprocess (KERAS_BACKEND is fixed once Keras is imported).
"""

import io
import json
import zipfile

import h5py
import numpy as np
import pytest
from conftest import DEMO_SMALL, run_cli, run_python

BACKENDS = ("tensorflow", "jax")
PREDICT = """
import sys, numpy as np, keras
from fracture import read_metadata
def predict(path):
    model = keras.saving.load_model(path, safe_mode=True)
    size = read_metadata(path)["image_size"]
    images = np.random.default_rng(0).uniform(0, 255, (6, size, size, 3)).astype("float32")
    return model.predict(images, verbose=0)
np.savez(sys.argv[1], *[predict(path) for path in sys.argv[2:]])
"""


def train_on_each_backend(folder, *overrides: str) -> dict:
    """One short `fracture.train` run of the small demo config per backend; their best_model.keras paths."""
    paths = {}
    for backend in BACKENDS:
        result = run_cli(
            "fracture.train",
            *DEMO_SMALL,
            *overrides,
            "trainer.epochs=1",
            "evaluate=false",
            f"paths.data_dir={folder}/data",
            f"hydra.run.dir={folder}/{backend}",
            backend=backend,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        paths[backend] = folder / backend / "checkpoints" / "best_model.keras"
    return paths


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same small run config trained once on each backend."""
    return train_on_each_backend(tmp_path_factory.mktemp("artifacts"), "trainer.limit_train_batches=2")


@pytest.fixture(scope="module")
def predictions(checkpoints, tmp_path_factory) -> dict[tuple[str, str], np.ndarray]:
    """{(writer, reader): the reader backend's predictions with the writer's checkpoint}, one process per reader."""
    folder, writers = tmp_path_factory.mktemp("predictions"), list(checkpoints)
    found = {}
    for reader in BACKENDS:
        run_python(PREDICT, folder / f"{reader}.npz", *(checkpoints[writer] for writer in writers), backend=reader)
        with np.load(folder / f"{reader}.npz") as arrays:
            found |= {(writer, reader): arrays[f"arr_{index}"] for index, writer in enumerate(writers)}
    return found


@pytest.mark.parametrize("writer,reader", [("tensorflow", "jax"), ("jax", "tensorflow")])
def test_checkpoint_predicts_the_same_on_the_other_backend(predictions, writer, reader):
    own, other = predictions[writer, writer], predictions[writer, reader]
    assert own.shape == (6, 1)
    np.testing.assert_allclose(other, own, atol=1e-5)


def strip_volatile(value):
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


def weight_layout(ckpt) -> dict:
    with zipfile.ZipFile(ckpt) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        layout = {}
        h5.visititems(
            lambda name, item: (
                layout.update({name: (item.shape, str(item.dtype))}) if isinstance(item, h5py.Dataset) else None
            )
        )
    return layout


def archive_config(ckpt) -> dict:
    with zipfile.ZipFile(ckpt) as archive:
        return strip_volatile(json.loads(archive.read("config.json")))


def test_archives_are_structurally_identical(checkpoints):
    configs = {backend: archive_config(ckpt) for backend, ckpt in checkpoints.items()}
    assert configs["tensorflow"] == configs["jax"]
    assert "compile_config" not in configs["jax"]  # no backend-specific jit_compile travels with the model
    tf_layout, jax_layout = weight_layout(checkpoints["tensorflow"]), weight_layout(checkpoints["jax"])
    assert tf_layout == jax_layout and len(tf_layout) > 10
    assert not any(name.startswith("optimizer") for name in tf_layout)


@pytest.mark.backend
def test_an_efficientnet_archive_stores_its_integer_weights_as_int64(tmp_path):
    """EfficientNetB3's Normalization count is int64 on TensorFlow and int32 on JAX; fracture widens it."""
    from fracture import FractureClassifier, load_checkpoint, save_checkpoint

    model = FractureClassifier("efficientnet_b3", weights=None, image_size=32).configure_model()
    metadata = {"image_size": 32, "positive_class": "fractured", "negative_class": "not fractured"}
    ckpt = save_checkpoint(model, tmp_path / "best_model.keras", metadata)
    integers = {name: dtype for name, (_, dtype) in weight_layout(ckpt).items() if "int" in dtype}
    assert integers == {"layers/normalization/vars/2": "int64"}
    load_checkpoint(ckpt)  # and it loads back into this backend's own (int32 on JAX) variable


@pytest.mark.slow
def test_efficientnet_archives_written_by_train_are_identical_across_backends(tmp_path):
    effb3 = train_on_each_backend(tmp_path, "model=effb3", "model.weights=null", "trainer.limit_train_batches=1")
    assert weight_layout(effb3["tensorflow"]) == weight_layout(effb3["jax"])
    assert archive_config(effb3["tensorflow"]) == archive_config(effb3["jax"])


def test_metadata_survives_and_records_the_writer(checkpoints):
    from fracture import read_metadata

    tf_meta, jax_meta = (read_metadata(checkpoints[b]) for b in BACKENDS)
    assert tf_meta["backend"] == "tensorflow" and jax_meta["backend"] == "jax"
    for key in ("positive_class", "negative_class", "image_size", "threshold", "hparams"):
        assert tf_meta[key] == jax_meta[key]
