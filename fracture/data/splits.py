"""Cut files into train/val/test, or into k cross-validation folds, so that no group crosses a boundary.

A group is every file that shows one radiograph (`fracture.data.audit`) or, when asked, one file-name
prefix. Both cuts use scikit-learn's `StratifiedGroupKFold`, which keeps groups whole and the class
balance close to the whole set's. The assignment is saved as `split.csv` (path, split, label, group) and can
be read back to train again on exactly the same cut. Training on several processes deals train's files out
among them by class (`fracture.data.shards`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from fracture.errors import ConfigError, DataError
from fracture.io import write_text_atomic

# Grouped train/val/test cuts are made of this many stratified group folds: fractions in steps of 5%.
SPLIT_FOLDS = 20


def _folds(labels: np.ndarray, groups: list[str], count: int, seed: int) -> np.ndarray:
    """The fold (0..count-1) of every file; each group lies in one fold."""
    distinct = len(set(groups))
    if distinct < count:
        raise DataError(f"only {distinct} groups of images: too few to cut into {count} parts without leakage.")
    fold_of = np.empty(len(labels), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=count, shuffle=True, random_state=seed)
    try:
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            fold_of[held_out] = fold
    except ValueError as error:  # e.g. a class with fewer images than parts
        raise DataError(f"cannot cut {len(labels)} images in {distinct} groups into {count} parts: {error}") from error
    return fold_of


def grouped_split(
    labels: np.ndarray, groups: list[str], val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """'train', 'val' or 'test' for every file, whole groups at a time, stratified by label."""
    if val_fraction <= 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"data.val_fraction ({val_fraction}) must be above 0 and data.test_fraction ({test_fraction}) at least "
            "0, together below 1."
        )
    smallest_class = int(np.bincount(labels).min()) if len(set(labels.tolist())) > 1 else 0
    count = max(2, min(SPLIT_FOLDS, len(set(groups)), smallest_class))  # scikit-learn's limits on n_splits
    fold_of = _folds(labels, groups, count, seed)
    val_folds = max(1, round(val_fraction * count))
    test_folds = round(test_fraction * count) if test_fraction > 0 else 0
    if val_folds + test_folds >= count:
        raise DataError(f"{len(set(groups))} groups are too few for val {val_fraction} and test {test_fraction}.")
    split = np.full(len(labels), "train", dtype=object)
    split[fold_of < val_folds] = "val"
    split[(fold_of >= val_folds) & (fold_of < val_folds + test_folds)] = "test"
    return split


def grouped_fold(labels: np.ndarray, groups: list[str], folds: int, fold: int, seed: int) -> np.ndarray:
    """'val' for the files of fold `fold` of `folds` (cross-validation), 'train' for the others."""
    if folds < 2 or not 0 <= fold < folds:
        raise ConfigError(f"data.fold must be in 0..{folds - 1} with data.folds={folds} (at least 2).")
    fold_of = _folds(labels, groups, folds, seed)
    return np.where(fold_of == fold, "val", "train").astype(object)


def united_groups(*keys: list[str | None]) -> list[str]:
    """A group id per file, joining every two files that share a value of any key (a content group, a patient
    id; None joins nothing): the connected components of all the relations. A component is named by its
    first file's first key."""
    count = len(keys[0])
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for values in keys:
        first: dict[str, int] = {}
        for index, value in enumerate(values):
            if value is None:
                continue
            other = first.setdefault(value, index)
            parent[root(index)] = root(other)
    names: dict[int, str] = {}
    return [names.setdefault(root(i), keys[0][i]) for i in range(count)]


def write_split_csv(path: str | Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """Write (relative path, split, class folder, group) rows as `split.csv`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "split", "label", "group"])
    writer.writerows(sorted(rows))
    return write_text_atomic(path, buffer.getvalue())


def read_split_csv(path: str | Path) -> dict[str, str]:
    """Relative path -> split, from a `split.csv` written by a run."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.split_file={path} not found; pass the split.csv of an earlier run.")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows or not {"path", "split"} <= set(rows[0]):
        raise ConfigError(f"{path} is not a split.csv (columns path, split, label, group).")
    unknown = {row["split"] for row in rows} - {"train", "val", "test"}
    if unknown:
        raise ConfigError(f"{path} names unknown splits {sorted(unknown)}; use train, val and test.")
    return {row["path"]: row["split"] for row in rows}
