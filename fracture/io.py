"""Small file helpers."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fracture.errors import ConfigError


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write to, renamed over `path` when the block succeeds.

    Readers see the old file or the new one, never a torn one; if the block fails, the sibling is removed.
    The sibling keeps `path`'s suffix, for writers that choose a format by it, and gets the mode a plain
    `open()` would give (0666 less the umask; `mkstemp` alone makes it private to this user).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.fchmod(handle, 0o666 & ~current_umask())
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)


# Every cache of fracture lives under one folder: $FRACTURE_CACHE_DIR, else ~/.cache/fracture (conf/paths:
# paths.cache_dir). Library arguments that take a cache folder accept "default" for their place under it.
CACHE_DIR_VARIABLE = "FRACTURE_CACHE_DIR"
DEFAULT_CACHE = "default"


def cache_root() -> Path:
    """The folder every cache lives under: $FRACTURE_CACHE_DIR, else ~/.cache/fracture."""
    return Path(os.environ.get(CACHE_DIR_VARIABLE) or "~/.cache/fracture").expanduser()


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cache (`audit`, `features`, `engines`, `jax-compilation`) under the cache root."""
    return cache_root() / kind


def cache_folder(value: str | Path | None, kind: str) -> Path | None:
    """A cache-folder argument as a path: "default" is `cache_dir(kind)`, None stays None (no folder)."""
    if value is None:
        return None
    return cache_dir(kind) if str(value) == DEFAULT_CACHE else Path(value).expanduser()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as staging:
        staging.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The per-epoch rows of a `history.csv` (fracture.training.callbacks.CSVLogger), as floats, one per epoch.

    A run that was killed and resumed can log an epoch twice; the later row wins.
    """
    with open(path, newline="") as file:
        rows = [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(file)]
    by_epoch = {row.get("epoch", index): row for index, row in enumerate(rows)}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def check_writable(folder: str | Path, needed_bytes: int = 0) -> None:
    """Refuse to start when `folder` cannot be written or its disk has less than `needed_bytes` free."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ConfigError(
            f"cannot write to {folder} ({error.strerror or error}); choose another output folder "
            "(hydra.run.dir=... or paths.log_dir=...)."
        ) from error
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise ConfigError(
            f"only {free / 1e6:.0f} MB free on the disk of {folder}; checkpoints and backups of this model need "
            f"about {needed_bytes / 1e6:.0f} MB. Free some space or write elsewhere (paths.log_dir=...)."
        )


def nearest_existing(folder: str | Path) -> Path:
    """`folder` if it exists, else its closest existing ancestor: where creating `folder` would first write."""
    folder = Path(folder).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
