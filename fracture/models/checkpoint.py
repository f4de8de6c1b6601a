"""Save and load `.keras` checkpoints atomically, with fracture's metadata inside the same archive.

A `.keras` file is a zip archive. Next to Keras' own members we store `fracture.json` (class names, image
size, decision threshold, backend, ...). Keras ignores the extra member, so the file still loads with plain
`keras.saving.load_model` on any backend, and the metadata travels with the model.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import keras

from fracture.errors import CheckpointError

METADATA_MEMBER = "fracture.json"


def _temporary_sibling(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".keras", dir=path.parent)
    os.close(handle)
    return Path(name)


def save_checkpoint(model: keras.Model, path: str | Path, metadata: dict) -> Path:
    """Write `model` and `metadata` to `path`; readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_sibling(path)
    try:
        model.save(staging)
        with zipfile.ZipFile(staging, "a") as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, sort_keys=True))
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def read_metadata(path: str | Path) -> dict:
    """The fracture metadata stored in a checkpoint; `CheckpointError` if the file is not a fracture checkpoint."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Pass the path of a best_model.keras written by fracture.train."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(METADATA_MEMBER))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path} is not a fracture checkpoint ({error}). Pass a .keras file written by fracture.train."
        ) from error


def update_metadata(path: str | Path, **changes) -> dict:
    """Rewrite the metadata of a checkpoint in place (atomically), e.g. to store a new decision threshold."""
    path = Path(path)
    metadata = {**read_metadata(path), **changes}
    staging = _temporary_sibling(path)
    try:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(staging, "w") as target:
            for item in source.infolist():
                if item.filename != METADATA_MEMBER:
                    target.writestr(item, source.read(item))
            target.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, sort_keys=True))
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)
    return metadata


def load_checkpoint(path: str | Path, compile: bool = True) -> tuple[keras.Model, dict]:
    """Load a checkpoint in Keras' safe mode; returns the model and its metadata."""
    metadata = read_metadata(path)
    try:
        model = keras.saving.load_model(Path(path).expanduser(), compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise CheckpointError(f"could not load the model in {path}: {error}") from error
    return model, metadata
