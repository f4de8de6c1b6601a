"""Audit a dataset from its pixels: what every file is, which files are copies, and which copies cross splits.

`audit_dataset(root)` reads each file once, in a streaming pass over a thread pool, and keeps only small
per-file records and features (never the images): byte and pixel hashes, size, mode and format, a global
descriptor and ORB keypoints (`fracture.data.content`). Then `fracture.data.groups` links the files that show
the same radiograph, whatever their names. The result is cached under `cache_dir`, keyed by every file's
path, size and modification time and by the method's settings, so a second audit of an unchanged folder, and
every training run with `data.group_by=content`, reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fracture.cache_entry import file_state, read_entry, write_entry
from fracture.console import console, progress_bar
from fracture.data.content import DESCRIPTOR_SIZE, global_descriptor, grey_thumbnail, local_features
from fracture.data.folders import SPLITS, data_root, is_ignored
from fracture.data.geometry import MAX_ASPECT, MIN_SIDE, ShapeLimits
from fracture.data.groups import Link, components, group_links, near_duplicate_links
from fracture.data.images import UnreadableImage, header_kind, read_xray
from fracture.errors import DataError
from fracture.io import cache_folder

log = logging.getLogger(__name__)

METHOD_VERSION = 8  # bump when features or rules change, so that old caches are not reused (8: read_xray's pixels)


@dataclass
class AuditSettings:
    """How near-duplicates are decided (see `fracture.data.groups`)."""

    neighbours: int = 10
    # Groups are few, so each group's representatives can be compared with many more candidates; copies of
    # one radiograph that were cropped or framed differently can be far apart by descriptor.
    group_neighbours: int = 100
    min_similarity: float = 0.96
    min_matches: int = 10
    min_correlation: float = 0.95
    keypoints: int = 300
    workers: int = 2
    # Files of a shape no radiograph has are recorded with that reason and left out (fracture.data.geometry).
    min_side: int = MIN_SIDE
    max_aspect: float = MAX_ASPECT


@dataclass
class FileRecord:
    """One file under `<root>/<split>/<class>/`, readable or not."""

    path: str  # relative to the root, with forward slashes
    split: str
    label: str  # the class folder's name
    bytes: int
    sha256: str
    error: str | None = None
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    pixel_sha256: str = ""


@dataclass
class Audit:
    """Every file's record, its content group (-1 for unreadable files), and the links that joined files of
    different splits or classes (the evidence behind cross-split groups and label conflicts)."""

    root: str
    records: list[FileRecord]
    groups: list[int]
    links: list[Link] = field(default_factory=list)
    settings: AuditSettings = field(default_factory=AuditSettings)

    def group_of(self) -> dict[str, str]:
        """Relative path -> group id (`g0007`), for readable files."""
        return {r.path: f"g{g:04d}" for r, g in zip(self.records, self.groups, strict=True) if g >= 0}


def list_files(root: Path) -> list[tuple[Path, str, str]]:
    """(path, split, class folder) of every file under `<root>/<split>/<class>/`, system clutter left out."""
    found = []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(
            p for p in split_dir.iterdir() if p.is_dir() and not is_ignored(p.relative_to(split_dir))
        ):
            for path in sorted(class_dir.rglob("*")):
                if path.is_file() and not is_ignored(path.relative_to(class_dir)):
                    found.append((path, split, class_dir.name))
    if not found:
        raise DataError(
            f"no files under {root}/<split>/<class>/; expected train/ (and val/, test/) with class folders."
        )
    return found


def read_file(path: Path, split: str, label: str, root: Path, settings: AuditSettings):
    """The record of one file and, if it decodes and can be a radiograph, its (descriptor, local features).

    The pixels are the ones training and prediction see (`fracture.data.images.read_xray`: EXIF orientation,
    16-bit range, DICOM), so copies are found among the images the model is given."""
    data = path.read_bytes()
    record = FileRecord(path.relative_to(root).as_posix(), split, label, len(data), hashlib.sha256(data).hexdigest())
    try:
        record.mode, record.format = header_kind(path)
        pixels = read_xray(path, limits=None)
    except UnreadableImage as error:
        record.error = str(error)
        return record, None
    record.height, record.width = pixels.shape[:2]
    if problem := ShapeLimits(settings.min_side, settings.max_aspect).problem(record.width, record.height):
        record.error = problem
        return record, None
    record.pixel_sha256 = hashlib.sha256(pixels.tobytes()).hexdigest()
    grey = grey_thumbnail(Image.fromarray(pixels))
    return record, (global_descriptor(grey), local_features(grey, settings.keypoints))


def stream_records(root: Path, settings: AuditSettings, files) -> Iterator[tuple[FileRecord, tuple | None]]:
    """Records and features of `files` in order, decoding `settings.workers` files at a time."""
    with progress_bar() as progress, ThreadPoolExecutor(settings.workers) as pool:
        task = progress.add_task("reading files", total=len(files))
        window = 4 * settings.workers  # a few files in flight: memory stays flat, whatever the folder's size
        pending = []
        for path, split, label in files:
            pending.append(pool.submit(read_file, path, split, label, root, settings))
            if len(pending) >= window:
                yield pending.pop(0).result()
                progress.advance(task)
        for future in pending:
            yield future.result()
            progress.advance(task)


def audit_dataset(root: str | Path, settings: AuditSettings | None = None, files=None) -> Audit:
    """Read every file under `root` and group the readable ones by content (see the module doc). `files`:
    (path, split, class) of the files to audit instead of `<root>/<split>/<class>/` (a label table's, under
    `root`)."""
    root = data_root(root)
    settings = settings or AuditSettings()
    files = list_files(root) if files is None else sorted(files)
    records, descriptors, features, readable = [], [], [], []
    for record, content in stream_records(root, settings, files):
        records.append(record)
        if content is not None:
            readable.append(len(records) - 1)
            descriptors.append(content[0])
            features.append(content[1])
    matrix = np.stack(descriptors) if descriptors else np.zeros((0, DESCRIPTOR_SIZE), np.float32)
    with progress_bar() as progress:
        task = progress.add_task("matching neighbours", total=None)
        links = near_duplicate_links(
            matrix,
            features,
            [records[i].pixel_sha256 for i in readable],
            settings.neighbours,
            settings.min_similarity,
            settings.min_matches,
            settings.min_correlation,
            settings.workers,
            lambda done, total: progress.update(task, completed=done, total=total),
        )
    labels = components(len(readable), links)
    with progress_bar() as progress:  # often the audit's longest step: without a bar it looks stuck
        task = progress.add_task("matching groups", total=None)
        links += group_links(
            labels,
            matrix,
            features,
            settings.group_neighbours,
            settings.min_matches,
            settings.min_correlation,
            workers=settings.workers,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    labels = components(len(readable), links)
    groups = [-1] * len(records)
    for position, index in enumerate(readable):
        groups[index] = int(labels[position])
    # Renumber groups in file order, so that ids do not depend on the graph library's numbering.
    order = {label: number for number, label in enumerate(dict.fromkeys(g for g in groups if g >= 0))}
    groups = [order[g] if g >= 0 else -1 for g in groups]
    # Keep the evidence a person may want to see: links across splits or classes (the contact sheet's
    # pairs). The many links among one split's copies would only bloat the cache.
    links = [Link(readable[k.a], readable[k.b], k.similarity, k.matches, k.correlation, k.same_pixels) for k in links]
    kept = [k for k in links if (records[k.a].split, records[k.a].label) != (records[k.b].split, records[k.b].label)]
    return Audit(str(root), records, groups, kept, settings)


def folder_fingerprint(root: Path, settings: AuditSettings, files=None) -> str:
    """A hash of every file's path, split, class, size and modification time, and of the method and settings."""
    digest = hashlib.sha256(json.dumps([METHOD_VERSION, asdict(settings)], sort_keys=True).encode())
    for path, split, label in list_files(root) if files is None else sorted(files):
        digest.update(file_state(path, path.relative_to(root).as_posix(), split, label))
    return digest.hexdigest()[:24]


def save_audit(audit: Audit, path: Path, key: str) -> None:
    """Write `audit` to `path` as a checked cache entry for `key` (see `fracture.cache_entry`)."""
    data = {
        "root": audit.root,
        "settings": asdict(audit.settings),
        "records": [asdict(r) for r in audit.records],
        "groups": audit.groups,
        "links": [asdict(k) for k in audit.links],
    }
    with write_entry(path, key) as staging:
        staging.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def load_audit(path: Path) -> Audit:
    data = json.loads(path.read_text())
    return Audit(
        data["root"],
        [FileRecord(**r) for r in data["records"]],
        data["groups"],
        [Link(**k) for k in data["links"]],
        AuditSettings(**data["settings"]),
    )


def cached_audit(root: str | Path, cache_dir: str | Path, settings: AuditSettings | None = None, files=None) -> Audit:
    """`audit_dataset(root, settings, files)`, computed once per folder content and then read from
    `cache_dir`; an entry that fails its check (truncated, edited) is discarded with a warning and computed
    again."""
    root, settings = data_root(root), settings or AuditSettings()
    fingerprint = folder_fingerprint(root, settings, files)
    cache = cache_folder(cache_dir, "audit") / f"audit-{fingerprint}.json"
    if read_entry(cache, fingerprint) is not None:
        log.info("content groups of %s from the cache %s", root, cache)
        return load_audit(cache)
    console.print(
        f"content audit of {root}: reading every file once to find copies of one radiograph (about 1.5 "
        "minutes for 9,463 files on 2 cores; cached for later runs). Skip it with data.group_by=filename or null."
    )
    audit = audit_dataset(root, settings, files)
    save_audit(audit, cache, fingerprint)
    return audit
