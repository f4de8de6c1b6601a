"""The data module's files: scanned from class folders or label tables, grouped so that no group crosses a
split, and cut into train/val/test.

A group holds the files that must stay on one side of a cut: copies of one radiograph (the content audit,
`group_by="content"`), a file-name prefix (`"filename"`), and every image of one patient when a label table
says whose image it is. Content and patient groups are united: a group is a connected component of both
relations (`splits.united_groups`), so two views of one patient and a copy of either stay together.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from fracture.data.folders import SplitFiles, data_root, filename_group, scan_root
from fracture.data.geometry import ShapeLimits
from fracture.data.splits import grouped_fold, grouped_split, read_split_csv, united_groups
from fracture.data.tables import TableSource, scan_tables
from fracture.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def check_settings(image_size, batch_size, val_fraction, group_by, split, test_fraction, folds, fold) -> None:
    """Refuse out-of-range data settings before anything is scanned, naming the config key."""
    if image_size < 32:
        raise ConfigError(f"data.image_size must be at least 32 pixels, got {image_size}.")
    if batch_size < 1:
        raise ConfigError(f"data.batch_size must be positive, got {batch_size}.")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction}.")
    if group_by not in ("content", "filename", None):
        raise ConfigError(f"data.group_by must be 'content', 'filename' or null, got {group_by!r}.")
    if split not in ("given", "grouped"):
        raise ConfigError(f"data.split must be 'given' or 'grouped', got {split!r}.")
    if not 0.0 <= test_fraction < 1.0 - val_fraction:
        raise ConfigError(
            f"data.test_fraction must be at least 0 and leave room for training beside "
            f"data.val_fraction={val_fraction}: [0, {1.0 - val_fraction:g}), got {test_fraction}."
        )
    if folds is not None and split != "grouped":
        raise ConfigError("data.folds needs data.split=grouped: cross-validation folds are cut by group.")
    if folds is not None and not (folds >= 2 and 0 <= fold < folds):
        raise ConfigError(f"data.folds must be at least 2 and data.fold in [0, folds), got {folds} and {fold}.")


def scan_records(
    root: Path, source: TableSource | None, class_names: tuple[str, str], group_by: str | None, limits: ShapeLimits
) -> tuple[dict[str, SplitFiles], int]:
    """({split: checked files}, image files under `root` that no table row names) from the class folders
    under `root`, or from the label tables of `source`."""
    if source is None:
        return scan_root(root, class_names, group_by, limits), 0
    data_root(root)
    splits, unlisted = scan_tables(source, class_names, limits)
    if group_by == "filename":
        for files in splits.values():
            files.groups = [
                filename_group(Path(p), class_names[1 - int(y)]) for p, y in zip(files.paths, files.labels, strict=True)
            ]
    return splits, unlisted


def audit_files(splits: dict[str, SplitFiles], class_names: tuple[str, str]) -> list[tuple[Path, str, str]]:
    """(path, split, class) of every file, for the content audit of a label table's images."""
    return [
        (Path(path), files.name, class_names[1 - int(label)])
        for files in splits.values()
        for path, label in zip(files.paths, files.labels, strict=True)
    ]


def use_content_groups(splits, root: Path, files, audit_cache, audit_options: dict, limits: ShapeLimits) -> None:
    """Replace each file's group by its content group from the (cached) dataset audit of `files` (None: the
    class folders under `root`)."""
    # OpenCV and faiss load only when content groups are used
    from fracture.data.audit import AuditSettings, cached_audit

    known = {field.name for field in dataclasses.fields(AuditSettings)} - {"min_side", "max_aspect"}
    if unknown := set(audit_options) - known:
        raise ConfigError(f"data.audit has no setting(s) {sorted(unknown)}; it has {sorted(known)}.")
    settings = AuditSettings(**audit_options, min_side=limits.min_side, max_aspect=limits.max_aspect)
    group_of = cached_audit(root, audit_cache, settings, files).group_of()
    for split in splits.values():
        split.groups = [group_of.get(Path(path).relative_to(root).as_posix(), path) for path in split.paths]


def unite_patients(splits: dict[str, SplitFiles], source: TableSource | None, group_by: str | None) -> None:
    """Put a patient's images in one group with every copy of them; say so when a table gives neither."""
    if all(files.patients is not None for files in splits.values()):
        pooled = SplitFiles.pooled(list(splits.values()))
        united = united_groups(pooled.groups, pooled.patients)
        start = 0
        for files in splits.values():
            files.groups, start = united[start : start + len(files)], start + len(files)
    elif source is not None and group_by is None:
        log.warning(
            "%s names no patient (data.columns.patient) and data.group_by is null: nothing keeps a patient's "
            "images, or copies of one radiograph, on one side of a split.",
            source.tables[0],
        )


def recut(splits: dict[str, SplitFiles], names_of, source: str, root: Path) -> dict[str, SplitFiles]:
    """Pool the splits and cut them again: `names_of(pooled)` gives each file's split ('' leaves it out)."""
    pooled = SplitFiles.pooled(list(splits.values()))
    names = names_of(pooled)
    result = {}
    for name in ("train", "val", "test"):
        indices = np.flatnonzero(names == name)
        if len(indices):
            result[name] = pooled.subset(indices, name)
            result[name].skipped = pooled.skipped if name == "train" else []  # counted once
    if "train" not in result or "val" not in result:
        raise DataError(f"{source} left no train or no val files under {root}.")
    log.info("%s: %s", source, {name: len(files) for name, files in result.items()})
    return result


def assigned_names(relative: list[str], assigned: dict[str, str], source: str, root: Path) -> np.ndarray:
    """Each file's split from a `split.csv` (relative path -> split); files it does not name are left out."""
    missing = [r for r in relative if r not in assigned]
    if missing:
        log.warning("%d file(s) are not in %s and are left out, e.g. %s", len(missing), source, missing[0])
    gone = set(assigned) - set(relative)
    if gone:
        raise DataError(f"{len(gone)} file(s) of {source} are missing under {root}, e.g. {min(gone)}.")
    return np.array([assigned.get(r, "") for r in relative], dtype=object)


def hold_out_val(train: SplitFiles, val_fraction: float, seed: int, root: Path) -> tuple[SplitFiles, SplitFiles]:
    """(train, val) from a train split alone: whole groups held out, stratified by label."""
    folds = max(2, round(1.0 / val_fraction))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    try:
        train_idx, val_idx = next(splitter.split(train.paths, train.labels, groups=train.groups))
    except ValueError as error:
        raise DataError(f"cannot hold out a validation split from {root / 'train'}: {error}") from error
    log.info("No val/ folder under %s: held out %d of %d images for validation.", root, len(val_idx), len(train))
    val = train.subset(val_idx, "val")
    val.skipped = []  # skipped files were counted with train/
    return train.subset(train_idx, "train"), val


@dataclasses.dataclass(frozen=True)
class SplitCut:
    """How the scanned splits become train/val/test: `data.split`, `data.split_file` and their settings."""

    split: str
    split_file: str | Path | None
    val_fraction: float
    test_fraction: float
    folds: int | None
    fold: int
    seed: int

    def apply(self, splits: dict[str, SplitFiles], root: Path, source: TableSource | None) -> dict[str, SplitFiles]:
        """The scanned splits cut again by a `split.csv` or by group, or as given (val held out of train if none)."""
        if "train" not in splits and self.split == "given" and self.split_file is None:
            where = source.tables[0] if source else root
            raise DataError(f"{where} says no split (no data.columns.split); cut one with data.split=grouped.")
        if self.split_file is not None:
            assigned, named = read_split_csv(self.split_file), f"data.split_file={self.split_file}"

            def assigned_to(pooled: SplitFiles) -> np.ndarray:
                relative = [Path(path).relative_to(root).as_posix() for path in pooled.paths]
                return assigned_names(relative, assigned, named, root)

            return recut(splits, assigned_to, named, root)
        if self.split == "grouped":
            return recut(splits, self._grouped_names, "data.split=grouped", root)
        if "val" not in splits:
            splits["train"], splits["val"] = hold_out_val(splits["train"], self.val_fraction, self.seed, root)
        return splits

    def _grouped_names(self, pooled: SplitFiles) -> np.ndarray:
        if self.folds is not None:
            return grouped_fold(pooled.labels, pooled.groups, self.folds, self.fold, self.seed)
        return grouped_split(pooled.labels, pooled.groups, self.val_fraction, self.test_fraction, self.seed)
