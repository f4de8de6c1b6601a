"""Cache entries that are checked when read: a data file, and a record of its key, size and checksum beside it.

A cache saves work only if what it hands back is what was stored. Each entry fracture keeps between runs (the
feature cache's features, decoded images, audits) is a data file plus a small JSON record written *after* the
data file is in place: the entry's key, the file's size and its SHA-256. Reading checks all three, so a file
that was truncated, zeroed, edited, or left without its record by a killed run is discarded with one warning
and rebuilt by the caller, never trusted and never a traceback.

Data files are written under a staging name and renamed into place (`fracture.io.atomic_path`), so a file
never changes under a reader's memory map (a rename leaves the mapped file alive), and two runs that fill one
entry at once each leave a whole file: the last rename and the last record win, and both describe the same
content.

Entries are never needed, only reused, so the cache can be kept to a size: each read that passes the check
touches the record, whose modification time is then the entry's last use, and `prune_entries` deletes the
least recently used entries first (`python -m fracture.cache`; with `$FRACTURE_CACHE_MAX_GB` set, every new
entry under the cache root prunes it to that size). Deleting an entry under a reader is safe: a memory map
keeps a removed file alive, and a reader that finds the entry gone rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fracture.errors import ConfigError
from fracture.io import atomic_path, cache_root, write_json_atomic

MAX_SIZE_VARIABLE = "FRACTURE_CACHE_MAX_GB"
RECORD_SUFFIX = ".check"


class DamagedCacheEntry(UserWarning):
    """A cache entry failed its check and was discarded; it is rebuilt."""


def record_path(data: Path) -> Path:
    """The record that vouches for `data`."""
    return data.with_name(data.name + RECORD_SUFFIX)  # JSON, named so that globs for the data miss it


def file_state(path: str | Path, *names: str) -> bytes:
    """One line of a cache key: `names` (the file's path, or its name and what else identifies it), its size
    and its modification time, so that an entry keyed by it is not reused once the file changes."""
    stat = os.stat(path)
    return ("\0".join([*names, str(stat.st_size), str(stat.st_mtime_ns)]) + "\n").encode()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _problem(data: Path, key) -> tuple[str | None, dict]:
    """(what is wrong with the entry, or None; its record's extra fields)."""
    record = record_path(data)
    try:
        stored = json.loads(record.read_text())
    except FileNotFoundError:
        return "its record is missing", {}
    except (OSError, ValueError) as error:
        return f"its record does not read ({error})", {}
    if not isinstance(stored, dict) or stored.get("key") != key:
        return "its record belongs to another key", {}
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        return "its data file is missing", {}
    if size != stored.get("bytes"):
        return f"its data file has {size} bytes, the record says {stored.get('bytes')}", {}
    if file_sha256(data) != stored.get("sha256"):
        return "its data file's checksum does not match the record", {}
    return None, stored.get("extra", {})


def read_entry(data: str | Path, key) -> dict | None:
    """The extra fields stored with a whole entry for `key` at `data`, or None when there is none to use.

    An entry that exists but fails its check is deleted, with one `DamagedCacheEntry` warning naming it."""
    data = Path(data)
    if not data.exists() and not record_path(data).exists():
        return None
    problem, extra = _problem(data, key)
    if problem is None:
        with contextlib.suppress(OSError):  # a read-only shared cache is still used, only not pruned by use
            os.utime(record_path(data))
        return extra
    warnings.warn(f"discarding the cache entry {data}: {problem}; it is rebuilt.", DamagedCacheEntry, stacklevel=2)
    data.unlink(missing_ok=True)
    record_path(data).unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def write_entry(data: str | Path, key, extra: dict | None = None) -> Iterator[Path]:
    """A staging file to fill with the entry's data; when the block succeeds it is renamed to `data` and sealed
    with a record of `key`, its size, its checksum and `extra` (which the block may still fill in)."""
    data = Path(data)
    extra = {} if extra is None else extra
    with atomic_path(data) as staging:
        yield staging
        size, digest = staging.stat().st_size, file_sha256(staging)
    write_json_atomic(record_path(data), {"key": key, "bytes": size, "sha256": digest, "extra": extra})
    limit = size_limit()
    if limit is not None and data.resolve().is_relative_to(cache_root().resolve()):
        prune_entries(cache_root(), limit, keep=[data])


@dataclass(frozen=True)
class StoredEntry:
    """A sealed entry on disk: its data file, the bytes it and its record take, and when it was last used."""

    data: Path
    bytes: int
    last_used: float  # the record's modification time (seconds since the epoch)


def stored_entries(folder: str | Path) -> list[StoredEntry]:
    """Every sealed entry (a data file and its record) under `folder`, least recently used first. Files that
    are not entries (a staging file being written, JAX's compilation cache, someone else's `x` and `x.check`
    in a folder given by mistake: only a record fracture wrote counts) are not listed."""
    entries = []
    for record in Path(folder).rglob(f"*{RECORD_SUFFIX}"):
        data = record.with_name(record.name.removesuffix(RECORD_SUFFIX))
        try:
            state = record.stat()
            if state.st_size > 1_000_000 or not is_record(json.loads(record.read_text())):
                continue
            entries.append(StoredEntry(data, state.st_size + data.stat().st_size, state.st_mtime))
        except (OSError, ValueError):  # half an entry, one just pruned, or not a record: never deleted here
            continue
    return sorted(entries, key=lambda entry: entry.last_used)


def is_record(value) -> bool:
    """Whether `value` has the fields `write_entry` gives every record."""
    return isinstance(value, dict) and {"key", "bytes", "sha256"} <= set(value) and isinstance(value["sha256"], str)


def prune_entries(folder: str | Path, max_bytes: int, keep: Iterable[Path] = ()) -> list[StoredEntry]:
    """Delete the least recently used entries under `folder` until its entries take at most `max_bytes`
    (never those in `keep`); returns the deleted ones. Folders left empty are removed."""
    kept = {Path(path).resolve() for path in keep}
    entries = stored_entries(folder)
    total = sum(entry.bytes for entry in entries)
    deleted = []
    for entry in entries:
        if total <= max_bytes:
            break
        if entry.data.resolve() in kept:
            continue
        entry.data.unlink(missing_ok=True)
        record_path(entry.data).unlink(missing_ok=True)
        total -= entry.bytes
        deleted.append(entry)
        with contextlib.suppress(OSError):  # not empty, or already gone
            if entry.data.parent != Path(folder):
                entry.data.parent.rmdir()
    return deleted


def size_limit() -> int | None:
    """`$FRACTURE_CACHE_MAX_GB` in bytes, or None when it is not set."""
    value = os.environ.get(MAX_SIZE_VARIABLE, "").strip()
    if not value:
        return None
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = -1.0
    if not gigabytes >= 0:
        raise ConfigError(f"{MAX_SIZE_VARIABLE}={value!r}: give the cache's largest size in GB, e.g. 20.")
    return int(gigabytes * 1e9)
