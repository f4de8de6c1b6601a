"""Robustness, checkpoints: a kill during a save leaves the previous good file, damaged or foreign files give
one clear error, and nothing unsafe is loaded (no code-carrying checkpoint, no unsafe deserialiser anywhere
in the package). docs/robustness.md lists each case."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT

from fracture.errors import CheckpointError
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
        fields = {"positive_class": "fractured", "negative_class": "not fractured", "image_size": 8}
        archive.writestr(METADATA_MEMBER, json.dumps({"format": "fracture-checkpoint/2", **fields}))
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


WRITER = """
import sys
from fracture import load_checkpoint, save_checkpoint
model, metadata = load_checkpoint(sys.argv[1], compile=False)
for index in range(1, 10_000):
    save_checkpoint(model, sys.argv[2], {**metadata, "epoch": index})  # which save this is
    print(index, flush=True)
"""


def test_a_kill_during_a_save_leaves_the_previous_good_checkpoint(tmp_path, tiny_checkpoint):
    target = tmp_path / "best_model.keras"
    expected, _ = load_checkpoint(tiny_checkpoint)
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tiny_checkpoint), str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
    )
    try:
        completed = int(writer.stdout.readline())  # one good checkpoint exists
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".best_model-*.keras")):  # the next save is being written: kill it now
            assert time.monotonic() < deadline, "the writer never started a second save"
        writer.kill()
        writer.wait(timeout=30)
    finally:
        writer.kill()
    assert writer.returncode == -signal.SIGKILL
    model, metadata = load_checkpoint(target)
    assert metadata["epoch"] >= completed
    np.testing.assert_allclose(model.predict_on_batch(images), expected.predict_on_batch(images), atol=1e-6)
