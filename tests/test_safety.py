"""Nothing unsafe is loaded: no code-carrying checkpoint, no unsafe deserialiser anywhere in the package,
and out-of-range hyperparameters are refused before any model is built."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT

from fracture import FractureClassifier, OptimizerSpec
from fracture.errors import CheckpointError, ConfigError
from fracture.models.checkpoint import METADATA_MEMBER, load_checkpoint

# Ways to run code that a file supplies: unpickling, Keras' unsafe mode, eval/exec, YAML's full loader.
UNSAFE = {
    "pickle": re.compile(
        r"\b(c?pickle|dill|joblib|marshal|shelve)\.(loads?|Unpickler|open)\b"
        r"|^\s*import (c?pickle|dill|marshal|shelve)\b"
    ),
    "keras unsafe mode": re.compile(r"safe_mode\s*=\s*False|enable_unsafe_deserialization"),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\s*\("),
    "numpy pickles": re.compile(r"allow_pickle\s*=\s*True"),
    "yaml full loader": re.compile(r"yaml\.(load|load_all)\s*\((?![^)]*SafeLoader)|yaml\.unsafe_load|yaml\.full_load"),
    "torch.load": re.compile(r"torch\.load\s*\("),
}


def unsafe_lines(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            found += [f"{path}:{number}: {name}: {line.strip()}" for name, rx in UNSAFE.items() if rx.search(code)]
    return found


def test_the_package_never_deserialises_unsafely():
    assert unsafe_lines(REPO_ROOT / "fracture") == []


def test_the_scan_finds_each_unsafe_pattern(tmp_path):
    (tmp_path / "bad.py").write_text(
        "import pickle\n"
        "model = keras.saving.load_model(p, safe_mode=False)\n"
        "value = eval(text)\n"
        "arrays = np.load(p, allow_pickle=True)\n"
        "config = yaml.load(stream)\n"
        "ok = yaml.safe_load(stream); model.evaluate(x)  # fine\n"
    )
    kinds = [line.split(": ")[1] for line in unsafe_lines(tmp_path)]
    assert kinds == ["pickle", "keras unsafe mode", "eval/exec", "numpy pickles", "yaml full loader"]


def test_a_checkpoint_that_carries_code_is_refused(tmp_path):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(1)(keras.layers.Lambda(lambda x: x * 2.0)(keras.layers.Flatten()(inputs)))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with zipfile.ZipFile(path, "a") as archive:  # make it look like fracture's own
        archive.writestr(METADATA_MEMBER, json.dumps({"image_size": 8}))
    with pytest.raises(CheckpointError, match="Lambda layer, whose Python code would run"):
        load_checkpoint(path)


def test_damaged_or_foreign_checkpoints_give_one_clear_error(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "cut.keras"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="is not a fracture checkpoint"):
        load_checkpoint(truncated)
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError, match="is not a fracture checkpoint"):
        load_checkpoint(tmp_path / "model.h5")
    foreign = tmp_path / "other.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]).save(foreign)
    with pytest.raises(CheckpointError, match="Pass a .keras file written by fracture.train"):
        load_checkpoint(foreign)


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
