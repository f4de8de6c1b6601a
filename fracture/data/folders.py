"""Find labelled images in a folder tree laid out as `<root>/<split>/<class>/<image>`.

This is the layout of the Kaggle "Bone Fracture Detection using X-rays" dataset (`train/fractured`,
`train/not fractured`, `val/...`). Every file is checked up front, so that a corrupt or non-image file is
skipped with a warning instead of stopping a long training run half-way through an epoch.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from fracture.data.geometry import DEFAULT_LIMITS, ShapeLimits
from fracture.data.images import UnreadableImage, is_dicom, read_xray
from fracture.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Picture formats that training reads (through `fracture.data.images.read_xray`, as prediction does), and DICOM.
TRAINABLE_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "TIFF"}


@dataclass
class SplitFiles:
    """The images of one split: parallel lists of paths, 0/1 labels and group ids.

    A group id names the source image that a file was derived from, so that augmented copies of one
    radiograph can be kept together when splitting or reporting. Files that could not be read are listed
    in `skipped` as `(path, reason)` pairs. A label table (`fracture.data.tables`) may also say each image's
    patient and study, and subgroup columns (body part, view, hardware): None / {} where it does not.
    """

    name: str
    paths: list[str]
    labels: np.ndarray
    groups: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    patients: list[str] | None = None
    studies: list[str] | None = None
    subgroups: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices, name: str | None = None) -> SplitFiles:
        indices = np.asarray(indices, dtype=int)

        def pick(values):
            return None if values is None else [values[i] for i in indices]

        return SplitFiles(
            name=name or self.name,
            paths=pick(self.paths),
            labels=self.labels[indices],
            groups=pick(self.groups),
            skipped=list(self.skipped),
            patients=pick(self.patients),
            studies=pick(self.studies),
            subgroups={column: pick(values) for column, values in self.subgroups.items()},
        )

    @staticmethod
    def pooled(splits: list[SplitFiles], name: str = "all") -> SplitFiles:
        """Every file of `splits` in one list (to be cut again); patients and studies only if all have them."""

        def joined(values):
            return None if any(v is None for v in values) else [x for v in values for x in v]

        columns = set.intersection(*(set(files.subgroups) for files in splits)) if splits else set()
        return SplitFiles(
            name,
            [p for f in splits for p in f.paths],
            np.concatenate([f.labels for f in splits]),
            [g for f in splits for g in f.groups],
            [s for f in splits for s in f.skipped],
            patients=joined([f.patients for f in splits]),
            studies=joined([f.studies for f in splits]),
            subgroups={c: [x for f in splits for x in f.subgroups[c]] for c in sorted(columns)},
        )

    def class_counts(self) -> dict[int, int]:
        return {label: int(np.sum(self.labels == label)) for label in (1, 0)}


# Files that operating systems and archivers leave in folders; never data.
SYSTEM_CLUTTER = {"__MACOSX", "Thumbs.db", "desktop.ini", "@eaDir"}


def is_ignored(path: Path) -> bool:
    """Hidden files and folders (`.DS_Store`, `._x.jpg`), and system clutter anywhere in `path`."""
    return any(part.startswith(".") or part in SYSTEM_CLUTTER for part in path.parts)


def filename_group(path: Path, class_name: str) -> str:
    """The group id of a Kaggle-style file: its class and the name part before the first '-' or '.'.

    `10-rotated1-rotated2.jpg` in `fractured` belongs to group `fractured/10`.
    """
    return f"{class_name}/{re.split(r'[-.]', path.name, maxsplit=1)[0]}"


def unreadable_reason(path: Path, limits: ShapeLimits = DEFAULT_LIMITS) -> str | None:
    """Why `path` cannot be used as a training image, or None when it decodes cleanly and its shape can be a
    radiograph (`limits`). A DICOM file is read whole, as training will read it (`read_xray`)."""
    if is_dicom(path):
        try:
            read_xray(path, limits=limits)
        except UnreadableImage as error:
            return str(error)
        return None
    try:
        with Image.open(path) as image:
            if image.format not in TRAINABLE_FORMATS:
                return f"{image.format} images are not supported; convert to PNG or JPEG"
            if problem := limits.problem(*image.size):
                return problem
            # Decoding at reduced scale still reads the whole stream, so truncation is caught cheaply.
            image.draft("L", (64, 64))
            image.load()
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for corrupt or non-image files
        return f"not a readable image ({error})"
    return None


def unreadable_reasons(paths: list[Path], limits: ShapeLimits = DEFAULT_LIMITS, workers: int = 8) -> list[str | None]:
    """`unreadable_reason` of each path, in order, read by `workers` threads (Pillow releases the GIL)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(partial(unreadable_reason, limits=limits), paths))


def find_class_dirs(split_dir: Path, class_names: tuple[str, str]) -> dict[int, Path]:
    """Map label (1 = positive, 0 = negative) to its class folder, matching names case-insensitively."""
    found = {child.name.lower(): child for child in split_dir.iterdir() if child.is_dir()}
    positive, negative = class_names
    missing = [name for name in class_names if name.lower() not in found]
    if missing:
        raise DataError(
            f"{split_dir} must hold one folder per class named {positive!r} and {negative!r}; "
            f"missing {missing}, found {sorted(child.name for child in found.values())}. "
            "Set data.positive_class / data.negative_class to your folder names."
        )
    extra = sorted(child.name for key, child in found.items() if key not in (positive.lower(), negative.lower()))
    extra = [name for name in extra if not is_ignored(Path(name))]
    if extra:
        log.warning("Ignoring folder(s) %s in %s: not one of the classes %r, %r", extra, split_dir, positive, negative)
    return {1: found[positive.lower()], 0: found[negative.lower()]}


def scan_split(
    split_dir: Path,
    class_names: tuple[str, str],
    group_by: str | None = "filename",
    workers: int = 8,
    limits: ShapeLimits = DEFAULT_LIMITS,
) -> SplitFiles:
    """List and check the images of one split folder (files in subfolders of a class folder count too)."""
    candidates: list[tuple[Path, int, str]] = []
    for label, class_dir in find_class_dirs(split_dir, class_names).items():
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and not is_ignored(path.relative_to(class_dir)):
                candidates.append((path, label, class_dir.name))
    reasons = unreadable_reasons([path for path, _, _ in candidates], limits, workers)

    paths, labels, groups, skipped = [], [], [], []
    for (path, label, class_name), reason in zip(candidates, reasons, strict=False):
        if reason:
            skipped.append((str(path), reason))
            continue
        paths.append(str(path))
        labels.append(label)
        groups.append(filename_group(path, class_name) if group_by == "filename" else str(path))
    if skipped:
        log.warning("Skipped %d unreadable file(s) in %s, e.g. %s: %s", len(skipped), split_dir, *skipped[0])
    files = SplitFiles(split_dir.name, paths, np.asarray(labels, dtype=np.int32), groups, skipped)
    empty = [class_names[1 - label] for label, count in files.class_counts().items() if count == 0]
    if empty:
        raise DataError(f"{split_dir} has no readable images for class(es) {empty}.")
    return files


def data_root(root: str | Path) -> Path:
    """`root` as a Path, `~` expanded; `DataError` when it is not a folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}. Set data.root to a folder that holds train/ and val/.")
    return root


def scan_root(
    root: str | Path,
    class_names: tuple[str, str],
    group_by: str | None = "filename",
    limits: ShapeLimits = DEFAULT_LIMITS,
) -> dict[str, SplitFiles]:
    """Scan every split folder (`train`, `val`, `test`) that exists under `root`."""
    root = data_root(root)
    splits = {
        name: scan_split(root / name, class_names, group_by, limits=limits) for name in SPLITS if (root / name).is_dir()
    }
    if "train" not in splits:
        present = sorted(child.name for child in root.iterdir() if child.is_dir())
        raise DataError(
            f"{root} has no train/ folder (found {present}); expected train/ and val/ with one folder per class."
        )
    return splits
