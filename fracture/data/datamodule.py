"""`FractureDataModule`: everything about the data, in the spirit of a Lightning DataModule."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from fracture.data.augmentation import build_augmentation
from fracture.data.decoded import DecodedImages
from fracture.data.folders import SplitFiles, scan_root
from fracture.data.geometry import MAX_ASPECT, MIN_SIDE, ShapeLimits
from fracture.data.health import FileProblem, fingerprints, recheck_split, skipped_problems
from fracture.data.pipeline import make_dataset, view_dataset
from fracture.data.splits import grouped_fold, grouped_split, read_split_csv, write_split_csv
from fracture.errors import ConfigError, DataError
from fracture.io import DEFAULT_CACHE, cache_folder

log = logging.getLogger(__name__)


class FractureDataModule:
    """Binary X-ray data from a folder of `train/`, `val/` and optional `test/` splits, one folder per class.

    Args:
        root: folder holding the splits (the Kaggle dataset's layout).
        image_size: side of the square images fed to the model, in pixels.
        batch_size: images per batch.
        positive_class: folder name of the positive class (label 1), matched case-insensitively.
        negative_class: folder name of the negative class (label 0).
        val_fraction: share held out for validation when `root` has no `val/` folder, or with
            `split="grouped"`. The cut keeps groups (copies of one radiograph) whole and the class balance.
        group_by: `"content"` (the default, as in `conf/data`) groups files that show the same radiograph,
            found from their pixels by the dataset audit (cached per folder content, see
            `fracture.data.audit`); `"filename"` groups Kaggle-style files by the name part before the first
            `-` or `.`; None makes every file its own group (no audit).
        split: `"given"` keeps the folder's own train/val/test; `"grouped"` pools them and cuts them again by
            group (`val_fraction`, `test_fraction`), or into `folds` for cross-validation.
        test_fraction: share of the pooled files for the test split with `split="grouped"` (0: no test).
        folds: with `split="grouped"`, cut k cross-validation folds instead of train/val/test (no test split).
        fold: with `folds=k`, the fold (0..k-1) that validates; the other k-1 folds train.
        split_file: a `split.csv` written by an earlier run (`write_split`): use exactly its cut.
        audit_cache: where `group_by="content"` keeps the audit of each folder ("default": `audit/` under the
            cache root, `fracture.io.cache_dir`).
        audit: settings of that audit (`fracture.data.audit.AuditSettings` fields other than the shape limits,
            which are `min_side` and `max_aspect`); None keeps its defaults. `python -m fracture.audit` reads
            the same `data.audit` settings, so its report describes the groups training uses.
        augmentation: keyword arguments of `build_augmentation`, or None for no augmentation.
        decode_cache: decode each training and validation image once and serve later epochs from memory (True), a
            folder (a path), or "auto": memory when they fit in a quarter of the free memory, else a temporary
            folder. False decodes every epoch. See `fracture.data.decoded`.
        seed: seed for shuffling, splitting and augmentation.
        min_side: files smaller than this many px on a side are no radiographs; they are skipped with that
            reason (see `fracture.data.geometry`).
        max_aspect: so are files longer than `max_aspect`:1.

    Call `setup()` (or any `*_dataloader`) to scan the folders; bad folders raise `DataError` there.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 224,
        batch_size: int = 16,
        positive_class: str = "fractured",
        negative_class: str = "not fractured",
        val_fraction: float = 0.15,
        group_by: str | None = "content",
        augmentation: dict | None = None,
        decode_cache: bool | str = "auto",
        seed: int = 42,
        split: str = "given",
        test_fraction: float = 0.15,
        folds: int | None = None,
        fold: int = 0,
        split_file: str | Path | None = None,
        audit_cache: str | Path = DEFAULT_CACHE,
        audit: dict | None = None,
        min_side: int = MIN_SIDE,
        max_aspect: float = MAX_ASPECT,
    ):
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
        self.root = Path(root).expanduser()
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.class_names = (positive_class, negative_class)
        self.val_fraction = val_fraction
        self.group_by = group_by
        self.augmentation_options = None if augmentation is None else dict(augmentation)
        self.decode_cache = decode_cache
        self._decoded: dict[str, DecodedImages] = {}
        self.seed = seed
        self.split = split
        self.test_fraction = test_fraction
        self.folds, self.fold = folds, fold
        self.split_file = split_file
        self.audit_cache = cache_folder(audit_cache, "audit")
        self.audit_options = dict(audit or {})
        self.shape_limits = ShapeLimits(int(min_side), float(max_aspect))
        self._splits: dict[str, SplitFiles] | None = None
        self._fingerprints: dict[str, np.ndarray] = {}
        self.run_problems: list[FileProblem] = []

    # ------------------------------------------------------------------ scanning
    def setup(self) -> FractureDataModule:
        """Scan and check the image folders once; later calls are free."""
        if self._splits is None:
            splits = scan_root(self.root, self.class_names, self.group_by, self.shape_limits)
            if self.group_by == "content":
                self._use_content_groups(splits)
            if self.split_file is not None:
                splits = self._recut(splits, read_split_csv(self.split_file), f"data.split_file={self.split_file}")
            elif self.split == "grouped":
                splits = self._recut(splits, None, "data.split=grouped")
            elif "val" not in splits:
                splits["train"], splits["val"] = self._hold_out_val(splits["train"])
            # Folders list one class after the other; a fixed shuffle makes any first few evaluation
            # batches (limit_val_batches) hold both classes, and keeps prediction order reproducible.
            rng = np.random.default_rng(self.seed)
            self._splits = {name: files.subset(rng.permutation(len(files))) for name, files in splits.items()}
            self._fingerprints = {name: fingerprints(files.paths) for name, files in self._splits.items()}
        return self

    def recheck(self) -> list[FileProblem]:
        """Drop files deleted or broken since `setup`, keep replaced ones that still decode; returns what changed."""
        found = []
        for name, files in self.setup()._splits.items():
            self._splits[name], self._fingerprints[name], problems = recheck_split(
                files, self._fingerprints[name], self.shape_limits
            )
            found += problems
        self.run_problems += found
        return found

    def file_problems(self) -> list[FileProblem]:
        """Every file this run could not use as scanned: skipped at the scan, or changed while it ran."""
        return [p for files in self.setup()._splits.values() for p in skipped_problems(files)] + self.run_problems

    def relative(self, path: str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def _use_content_groups(self, splits: dict[str, SplitFiles]) -> None:
        """Replace each file's group by its content group from the (cached) dataset audit."""
        # OpenCV and faiss load only when content groups are used
        from fracture.data.audit import AuditSettings, cached_audit

        limits = self.shape_limits
        known = {field.name for field in dataclasses.fields(AuditSettings)} - {"min_side", "max_aspect"}
        if unknown := set(self.audit_options) - known:
            raise ConfigError(f"data.audit has no setting(s) {sorted(unknown)}; it has {sorted(known)}.")
        settings = AuditSettings(**self.audit_options, min_side=limits.min_side, max_aspect=limits.max_aspect)
        group_of = cached_audit(self.root, self.audit_cache, settings).group_of()
        for files in splits.values():
            files.groups = [group_of.get(self.relative(path), path) for path in files.paths]

    def _recut(self, splits: dict[str, SplitFiles], assigned: dict[str, str] | None, source: str):
        """Pool the given splits and cut them again: by `assigned` (relative path -> split) or by group."""
        pooled = SplitFiles(
            "all",
            [p for f in splits.values() for p in f.paths],
            np.concatenate([f.labels for f in splits.values()]),
            [g for f in splits.values() for g in f.groups],
            [s for f in splits.values() for s in f.skipped],
        )
        if assigned is None:
            if self.folds is not None:
                names = grouped_fold(pooled.labels, pooled.groups, self.folds, self.fold, self.seed)
            else:
                names = grouped_split(pooled.labels, pooled.groups, self.val_fraction, self.test_fraction, self.seed)
        else:
            relative = [self.relative(p) for p in pooled.paths]
            missing = [r for r in relative if r not in assigned]
            if missing:
                log.warning("%d file(s) are not in %s and are left out, e.g. %s", len(missing), source, missing[0])
            gone = set(assigned) - set(relative)
            if gone:
                raise DataError(f"{len(gone)} file(s) of {source} are missing under {self.root}, e.g. {min(gone)}.")
            names = np.array([assigned.get(r, "") for r in relative], dtype=object)
        result = {}
        for name in ("train", "val", "test"):
            indices = np.flatnonzero(names == name)
            if len(indices):
                result[name] = pooled.subset(indices, name)
                result[name].skipped = pooled.skipped if name == "train" else []  # counted once
        if "train" not in result or "val" not in result:
            raise DataError(f"{source} left no train or no val files under {self.root}.")
        log.info("%s: %s", source, {name: len(files) for name, files in result.items()})
        return result

    def write_split(self, path: str | Path) -> Path:
        """Save the cut in use as `split.csv` (path relative to the root, split, class folder, group)."""
        rows = []
        for name, files in self.setup()._splits.items():
            for file, label, group in zip(files.paths, files.labels, files.groups, strict=True):
                rows.append((self.relative(file), name, self.class_names[1 - int(label)], group))
        return write_split_csv(path, rows)

    def _hold_out_val(self, train: SplitFiles) -> tuple[SplitFiles, SplitFiles]:
        folds = max(2, round(1.0 / self.val_fraction))
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=self.seed)
        try:
            train_idx, val_idx = next(splitter.split(train.paths, train.labels, groups=train.groups))
        except ValueError as error:
            raise DataError(f"cannot hold out a validation split from {self.root / 'train'}: {error}") from error
        log.info(
            "No val/ folder under %s: held out %d of %d images for validation.", self.root, len(val_idx), len(train)
        )
        val = train.subset(val_idx, "val")
        val.skipped = []  # skipped files were counted with train/
        return train.subset(train_idx, "train"), val

    def files(self, split: str) -> SplitFiles:
        """The checked files of `split` (`train`, `val` or `test`)."""
        splits = self.setup()._splits
        if split not in splits:
            raise DataError(f"{self.root} has no {split}/ split; present: {sorted(splits)}.")
        return splits[split]

    def shared_with_train(self, split: str) -> tuple[int, int]:
        """(files, groups) of `split` whose group also has files in train: leakage that inflates its scores."""
        train_groups = set(self.files("train").groups)
        shared = [group for group in self.files(split).groups if group in train_groups]
        return len(shared), len(set(shared))

    def has_split(self, split: str) -> bool:
        return split in self.setup()._splits

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: images per class, groups, skipped files, and images found in subfolders of a class
        folder (`<split>/<class>/<subfolder>/...`), which are used like the others."""
        positive, negative = self.class_names
        return {
            name: {
                positive: files.class_counts()[1],
                negative: files.class_counts()[0],
                "groups": len(set(files.groups)),
                "skipped": len(files.skipped),
                "in_subfolders": sum(len(Path(self.relative(path)).parts) > 3 for path in files.paths),
            }
            for name, files in self.setup()._splits.items()
        }

    # ------------------------------------------------------------------ datasets
    def drops_remainder(self, split: str) -> bool:
        """Training batches are all full, so that a compiled train step sees one batch shape (JAX and XLA
        compile again for every new shape). The few images cut from an epoch are others at the next
        reshuffle. Evaluation keeps every image."""
        return split == "train" and len(self.files(split)) >= self.batch_size

    def num_batches(self, split: str, training: bool = False) -> int:
        """Batches per pass over `split` (with `training`, as `train_dataloader` cuts them)."""
        count = len(self.files(split))
        return (
            count // self.batch_size if training and self.drops_remainder(split) else math.ceil(count / self.batch_size)
        )

    def _dataset(self, split: str, training: bool, skip_errors: bool = True):
        """Batches of `split`. Streams skip a file that fails to read mid-run (see `recheck`); prediction, whose
        output must align with `files(split)`, does not (`skip_errors=False`): recheck before predicting."""
        files = self.files(split)
        # Streams read every epoch decode once; prediction reads once and must keep every file's row.
        decoded = self.decoded_images(split) if self.decode_cache and skip_errors else None
        return make_dataset(
            files.paths,
            files.labels,
            (self.image_size, self.image_size),
            self.batch_size,
            training=training,
            augmentation=self.augmentation() if training else None,
            decoded=decoded,
            seed=self.seed,
            drop_remainder=training and self.drops_remainder(split),
            skip_errors=skip_errors,
        )

    def train_dataloader(self):
        """Shuffled, augmented training batches."""
        return self._dataset("train", training=True)

    def val_dataloader(self):
        return self._dataset("val", training=False)

    def test_dataloader(self):
        return self._dataset("test", training=False)

    def predict_dataloader(self, split: str = "val"):
        """Batches of `split` in file order, without augmentation; labels align with `files(split).labels`."""
        return self._dataset(split, training=False, skip_errors=False)

    def view_batches(self, split: str, views: int = 1, batch_size: int | None = None) -> Iterator[np.ndarray]:
        """`views` copies of each image of `split` in file order, as float32 `(views, B, H, W, 3)` batches of
        `batch_size` (default: the data module's): view 0 as evaluation sees it, the others augmented as in
        training (the feature cache's input). The split is decoded once (see `decode_cache`)."""
        augmentation = self.augmentation() if views > 1 else None
        if views > 1 and augmentation is None:
            raise ConfigError(f"{views} views need an augmentation, but data.augmentation turns every transform off.")
        decoded = self.decoded_images(split)
        images = decoded.load()
        if len(decoded.present) != len(images):
            gone = len(images) - len(decoded.present)
            raise DataError(f"{gone} file(s) of {split} no longer decode since the scan; run again.")
        return view_dataset(images, batch_size or self.batch_size, views, augmentation).as_numpy_iterator()

    def decoded_images(self, split: str) -> DecodedImages:
        """The split's decoded images, shared by the training streams and the feature cache (see `decode_cache`)."""
        files = self.files(split)
        if split not in self._decoded or self._decoded[split].paths != files.paths:
            size = (self.image_size, self.image_size)
            self._decoded[split] = DecodedImages(files.paths, size, self.decode_cache or "auto")
        return self._decoded[split]

    def augmentation(self):
        """A new training augmentation pipeline (seeded), or None when augmentation is off."""
        if self.augmentation_options is None:
            return None
        return build_augmentation(**self.augmentation_options, seed=self.seed)

    def labels(self, split: str) -> np.ndarray:
        return self.files(split).labels
