"""Small file helpers."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary sibling and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return path


def write_json_atomic(path: str | Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The per-epoch rows of a Keras `CSVLogger` file, as floats, one per epoch.

    A run that was killed and resumed can log an epoch twice; the later row wins.
    """
    with open(path, newline="") as file:
        rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]
    by_epoch = {row.get("epoch", index): row for index, row in enumerate(rows)}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]
