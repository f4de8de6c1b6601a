"""Save and load `.keras` checkpoints atomically, with fracture's metadata inside the same archive.

A `.keras` file is a zip archive. Next to Keras' own members we store `fracture.json` (class names, image
size, decision threshold, backend, ...). Keras ignores the extra member, so the file still loads with plain
`keras.saving.load_model` on any backend, and the metadata travels with the model.

Checkpoints hold the model for inference and evaluation, without its compile state: no optimizer slots and
no `compile_config`. That keeps them small and makes the archive the same whichever backend wrote it; the
compile config would otherwise carry the writer's `jit_compile`, and a JAX-written `jit_compile=true`
would make a TensorFlow CPU loader run XLA, about 15 times slower. While a run is unfinished, the
optimizer state lives in its `backup/` folder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

from fracture.errors import CheckpointError
from fracture.io import atomic_path
from fracture.models.schema import CheckpointMetadata

METADATA_MEMBER = "fracture.json"
CONFIG_MEMBER, WEIGHTS_MEMBER = "config.json", "model.weights.h5"  # Keras' own members


def metadata_json(metadata: dict) -> str:
    """The text of the fracture member for `metadata` (a schema's `to_json()`)."""
    return json.dumps(metadata, indent=2, sort_keys=True)


def _widen_integers(group: h5py.Group) -> None:
    """Store every signed integer weight as int64, whichever backend wrote it.

    EfficientNet's Normalization layer counts the samples it adapted to in an integer weight, which
    TensorFlow saves as int64 and JAX as int32; the archives would differ by that dtype alone. Both backends
    load an int64 count into their own variable.
    """
    for name, item in list(group.items()):
        if isinstance(item, h5py.Group):
            _widen_integers(item)
        elif item.dtype.kind == "i" and item.dtype != np.int64:
            data, attrs = item[()], dict(item.attrs)
            del group[name]
            group.create_dataset(name, data=np.asarray(data, np.int64))
            group[name].attrs.update(attrs)


def _portable_weights(weights_h5: bytes) -> bytes:
    """The `model.weights.h5` member without the optimizer's variables and with integers widened to int64."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.h5", Path(folder) / "out.h5"
        source.write_bytes(weights_h5)
        with h5py.File(source, "r") as full, h5py.File(target, "w") as lean:
            for name in full:
                if name != "optimizer":
                    full.copy(full[name], lean, name=name)
            lean.attrs.update(full.attrs)
            _widen_integers(lean)
        return target.read_bytes()


def _rewrite_archive(source: Path, target: Path, metadata: dict, strip_compile_state: bool = False) -> None:
    """Copy the archive `source` to `target` with `metadata` as its fracture member."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == METADATA_MEMBER:
                continue
            if strip_compile_state and item.filename == CONFIG_MEMBER:
                config = json.loads(data)
                config.pop("compile_config", None)
                data = json.dumps(config)
            elif strip_compile_state and item.filename == WEIGHTS_MEMBER:
                data = _portable_weights(data)
            new.writestr(item, data)
        new.writestr(METADATA_MEMBER, metadata_json(metadata))


def save_checkpoint(model: keras.Model, path: str | Path, metadata: CheckpointMetadata | dict) -> Path:
    """Write `model` and `metadata` to `path`; readers see the old file or the new one, never a torn one."""
    path = Path(path)
    if isinstance(metadata, dict):
        metadata = CheckpointMetadata.from_json(metadata, str(path))
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / path.name  # Keras' own archive, before fracture rewrites it
        model.save(saved)
        with atomic_path(path) as staging:
            _rewrite_archive(saved, staging, metadata.to_json(), strip_compile_state=True)
    return path


def read_schema(path: str | Path) -> CheckpointMetadata:
    """The fracture metadata stored in a checkpoint; `CheckpointError` if the file is not a fracture checkpoint
    or was written by a newer fracture."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Pass the path of a best_model.keras written by fracture.train."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            stored = json.loads(archive.read(METADATA_MEMBER))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path} is not a fracture checkpoint ({error}). Pass a .keras file written by fracture.train."
        ) from error
    return CheckpointMetadata.from_json(stored, str(path))


def read_metadata(path: str | Path) -> dict:
    """`read_schema` as a plain dict of the schema's fields (and its `format`)."""
    return read_schema(path).to_json()


def update_metadata(path: str | Path, **changes) -> dict:
    """Rewrite fields of a checkpoint's metadata in place, atomically and all at once (e.g. the threshold
    and the calibration that evaluation chose together)."""
    path = Path(path)
    metadata = read_schema(path).replace(**changes).to_json()
    with atomic_path(path) as staging:
        _rewrite_archive(path, staging, metadata)
    return metadata


# Layers whose config carries Python code (a lambda's bytecode), which loading would run.
CODE_LAYERS = {"Lambda", "TFOpLambda"}


def refuse_code(path: str | Path) -> None:
    """Refuse an archive whose model config holds a layer that carries code, before Keras reads it."""
    with zipfile.ZipFile(path) as archive:
        if CONFIG_MEMBER not in archive.namelist():
            return  # not a model archive at all: Keras' own error says so
        config = archive.read(CONFIG_MEMBER).decode()
    found = sorted(layer for layer in CODE_LAYERS if f'"class_name": "{layer}"' in config.replace('":"', '": "'))
    if found:
        raise CheckpointError(
            f"{path} holds a {' and a '.join(found)} layer, whose Python code would run when it is loaded. "
            "fracture loads only code-free checkpoints (Keras safe mode); retrain or re-save the model without it."
        )


def load_checkpoint(path: str | Path, compile: bool = True) -> tuple[keras.Model, dict]:
    """Load a checkpoint in Keras' safe mode, after refusing any that carries code; returns model and metadata."""
    metadata = read_metadata(path)
    refuse_code(Path(path).expanduser())
    try:
        model = keras.saving.load_model(Path(path).expanduser(), compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise CheckpointError(f"could not load the model in {path}: {error}") from error
    return model, metadata


def checkpoint_id(path: str | Path) -> str:
    """A short content hash that names exactly one checkpoint file (the first 16 hex digits of its SHA-256)."""
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
