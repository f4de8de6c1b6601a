"""DICOM exports as a data source: every file's header read once, joined with a label table by a header.

A PACS export names its files by UIDs; who, which study and which view are in each header (`PatientID`,
`StudyInstanceUID`, `SeriesInstanceUID`, `BodyPartExamined`, `ViewPosition`, `Laterality`), and the labels
are in a separate table keyed by one of them (`data.dicom_key`, e.g. `StudyInstanceUID`). `header_rows`
reads every header without its pixel data, caches them keyed by the folder's files (size and modification
time) like the audit, and gives one row per file: its path, its header fields and the label table's columns
for its key. A file whose header lacks the key, or whose key no label row has, is left out and said so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from fracture.cache_entry import file_state, read_entry, write_entry
from fracture.data.folders import is_ignored
from fracture.data.images import is_dicom
from fracture.errors import DataError
from fracture.io import cache_folder

log = logging.getLogger(__name__)

HEADER_FIELDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "BodyPartExamined",
    "ViewPosition",
    "Laterality",
)
INDEX_FORMAT = "fracture-dicom-headers/1"


def dicom_files(root: Path) -> list[Path]:
    """Every DICOM file under `root` (by suffix, or by the `DICM` mark for files named by UIDs alone; the
    label table beside them has neither)."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not is_ignored(path.relative_to(root)):
            try:
                if is_dicom(path):
                    found.append(path)
            except OSError:
                continue
    return found


def read_headers(files: list[Path], root: Path) -> list[dict[str, str]]:
    """One record per file: its path relative to `root` and the header fields (empty where absent)."""
    import pydicom

    records = []
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as error:  # pydicom raises several kinds for a damaged header
            records.append({"path": path.relative_to(root).as_posix(), "error": f"unreadable header ({error})"})
            continue
        fields = {name: str(header.get(name, "") or "") for name in HEADER_FIELDS}
        records.append({"path": path.relative_to(root).as_posix(), **fields})
    return records


def cached_headers(root: Path, cache_dir) -> list[dict[str, str]]:
    """`read_headers` of every DICOM file under `root`, read once per folder content (cache in `cache_dir`)."""
    files = dicom_files(root)
    digest = hashlib.sha256(INDEX_FORMAT.encode())
    for path in files:
        digest.update(file_state(path, path.relative_to(root).as_posix()))
    key = digest.hexdigest()[:24]
    folder = cache_folder(cache_dir, "dicom")
    entry = None if folder is None else folder / f"headers-{key}.json"
    if entry is not None and read_entry(entry, key) is not None:
        return json.loads(entry.read_text())
    log.info("reading the headers of %d DICOM files under %s", len(files), root)
    records = read_headers(files, root)
    if entry is not None:
        with write_entry(entry, key) as staging:
            staging.write_text(json.dumps(records))
    return records


def header_rows(root: Path, labels: list[dict[str, str]], key: str, cache_dir) -> tuple[list[dict], list[tuple]]:
    """(rows, problems): each DICOM file's header fields with the label row of its `key`, and (path, reason)
    for files left out. A label row that no file's header matches is a problem too."""
    records = cached_headers(root, cache_dir)
    if not records:
        raise DataError(f"no DICOM file under {root}; data=dicom reads a folder of DICOM files.")
    if labels and key not in labels[0]:
        raise DataError(f"the label table has no column {key!r} (data.dicom_key); its columns are {sorted(labels[0])}.")
    by_key = {row[key]: row for row in labels}
    rows, problems, matched = [], [], set()
    for record in records:
        path = str(root / record["path"])
        if "error" in record:
            problems.append((path, record["error"]))
        elif not record.get(key):
            problems.append((path, f"its header has no {key}, the key that joins it to the label table"))
        elif record[key] not in by_key:
            problems.append((path, f"no row of the label table has {key}={record[key]}"))
        else:
            matched.add(record[key])
            rows.append({**by_key[record[key]], **record})
    problems += [
        (f"{key}={value}", "in the label table, but no DICOM file's header has it")
        for value in by_key
        if value not in matched
    ]
    return rows, problems
