"""`FractureDataModule`: everything about the data, in the spirit of a Lightning DataModule."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fracture.data.augmentation import build_augmentation
from fracture.data.decoded import DecodedImages
from fracture.data.folders import SplitFiles
from fracture.data.geometry import MAX_ASPECT, MIN_SIDE, ShapeLimits
from fracture.data.health import FileProblem, fingerprints, recheck_split, skipped_problems
from fracture.data.pipeline import make_dataset, view_dataset
from fracture.data.records import (
    SplitCut,
    audit_files,
    check_settings,
    scan_records,
    unite_patients,
    use_content_groups,
)
from fracture.data.shards import TrainingShard
from fracture.data.splits import write_split_csv
from fracture.data.tables import table_source
from fracture.errors import ConfigError, DataError
from fracture.io import DEFAULT_CACHE, cache_folder

log = logging.getLogger(__name__)


class FractureDataModule:
    """Binary X-ray data: a folder of `train/`, `val/` and optional `test/` splits with one folder per class,
    or the images that label tables list (`table`).

    Args:
        root: folder holding the splits (the Kaggle dataset's layout), or the folder that a table's paths are
            relative to (None: the first table's folder).
        table: one or more label tables (CSV or Parquet, `fracture.data.tables`) instead of class folders.
        columns: with `table`, which column holds what: `path`, `label`, and optionally `patient`, `study`,
            `split` and `subgroups` (a list of columns such as body parts or views, reported per subgroup).
        label_values: `{"positive": [...], "negative": [...]}`, the table values of each class (matched
            case-insensitively; default: 1/yes/true/positive/fractured and 0/no/false/negative/not fractured).
        split_values: the table values of each split (default: train, val/valid/validation, test).
        from_path: fields read from each path value instead of a column: `{field: regular expression with
            one group}` (MURA's patient and study folders).
        find_by_name: find a table's file names anywhere under `root` (FracAtlas lists bare names).
        header: whether the tables' first line names their columns (MURA's lists have none: columns "0", ...).
        dicom_key: the files under `root` are a DICOM export: their headers give the rows, joined with the
            table's labels by this header field (`fracture.data.dicom_index`); `dicom_cache` keeps the headers.
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
        root: str | Path | None,
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
        table: str | Path | list | None = None,
        columns: dict | None = None,
        label_values: dict | None = None,
        split_values: dict | None = None,
        from_path: dict | None = None,
        find_by_name: bool = False,
        header: bool = True,
        dicom_key: str | None = None,
        dicom_cache: str | Path | None = DEFAULT_CACHE,
    ):
        check_settings(image_size, batch_size, val_fraction, group_by, split, test_fraction, folds, fold)
        tables = {"columns": columns, "label_values": label_values, "split_values": split_values}
        tables |= {"from_path": from_path, "find_by_name": find_by_name, "header": header}
        self.root, self.source = table_source(table, root, dicom_key=dicom_key, dicom_cache=dicom_cache, **tables)
        self.unlisted_files = 0
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.class_names = (positive_class, negative_class)
        self.group_by = group_by
        self.augmentation_options = None if augmentation is None else dict(augmentation)
        self.decode_cache = decode_cache
        self._decoded: dict[str, DecodedImages] = {}
        self.seed = seed
        self.augmentation()  # a wrong setting fails here, not when the first training batch is drawn
        self.cut = SplitCut(split, split_file, val_fraction, test_fraction, folds, fold, seed)
        self.audit_cache = cache_folder(audit_cache, "audit")
        self.audit_options = dict(audit or {})
        self.shape_limits = ShapeLimits(int(min_side), float(max_aspect))
        self._splits: dict[str, SplitFiles] | None = None
        self._parts: dict[str, SplitFiles] = {}  # `all`, and parts made evaluable by `add_split`
        self._fingerprints: dict[str, np.ndarray] = {}
        self.run_problems: list[FileProblem] = []
        self.shard: TrainingShard | None = None  # this process's part of train: see `shard_training`

    # ------------------------------------------------------------------ scanning
    def setup(self) -> FractureDataModule:
        """Scan and check the image folders once; later calls are free."""
        if self._splits is None:
            limits = self.shape_limits
            splits, self.unlisted_files = scan_records(self.root, self.source, self.class_names, self.group_by, limits)
            if self.group_by == "content":
                files = audit_files(splits, self.class_names) if self.source else None
                use_content_groups(splits, self.root, files, self.audit_cache, self.audit_options, limits)
            unite_patients(splits, self.source, self.group_by)
            splits = self.cut.apply(splits, self.root, self.source)
            # Folders list one class after the other; a fixed shuffle makes any first few evaluation
            # batches (limit_val_batches) hold both classes, and keeps prediction order reproducible.
            rng = np.random.default_rng(self.seed)
            self._splits = {name: files.subset(rng.permutation(len(files))) for name, files in splits.items()}
            self._fingerprints = {name: fingerprints(files.paths) for name, files in self._splits.items()}
        return self

    def recheck(self) -> list[FileProblem]:
        """Drop files deleted or broken since `setup`, keep replaced ones that still decode; returns what changed."""
        found = []
        self._parts.pop("all", None)  # pooled again from the rechecked splits
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

    def write_split(self, path: str | Path) -> Path:
        """Save the cut in use as `split.csv` (path relative to the root, split, class folder, group)."""
        rows = []
        for name, files in self.setup()._splits.items():
            for file, label, group in zip(files.paths, files.labels, files.groups, strict=True):
                rows.append((self.relative(file), name, self.class_names[1 - int(label)], group))
        return write_split_csv(path, rows)

    def files(self, split: str) -> SplitFiles:
        """The checked files of `split`: `train`, `val`, `test`, `all` (every split's, for evaluating a model on
        data it was not trained on), or a part added by `add_split`."""
        splits = self.setup()._splits
        if split == "all" and "all" not in self._parts:
            self._parts["all"] = SplitFiles.pooled(list(splits.values()))
        if split in self._parts:
            return self._parts[split]
        if split not in splits:
            raise DataError(f"{self.root} has no {split}/ split; present: {sorted(splits)} (and all).")
        return splits[split]

    def add_split(self, name: str, files: SplitFiles) -> None:
        """Make a part of a split evaluable by name (an external site's held-out part, see `fracture.eval`)."""
        self._parts[name] = files

    def shared_with_train(self, split: str) -> tuple[int, int]:
        """(files, groups) of `split` whose group also has files in train: leakage that inflates its scores."""
        train_groups = set(self.files("train").groups)
        shared = [group for group in self.files(split).groups if group in train_groups]
        return len(shared), len(set(shared))

    def has_split(self, split: str) -> bool:
        return split in self.setup()._splits or split == "all" or split in self._parts

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
                "in_subfolders": 0 if self.source else sum(len(Path(self.relative(p)).parts) > 3 for p in files.paths),
            }
            for name, files in self.setup()._splits.items()
        }

    # ------------------------------------------------------------------ training shards
    def shard_training(self, process_id: int, num_processes: int) -> None:
        """Train this process on its shard of the training files only (`fracture.data.shards`); `batch_size`
        stays the global batch, of which this process feeds `training_batch_size`. The other splits are whole."""
        self.shard = TrainingShard.of(process_id, num_processes, self.batch_size)

    @property
    def training_split(self) -> str:
        """The part of train that this process trains on: `train`, or its shard (`train_shard`)."""
        if self.shard is None:
            return "train"
        if "train_shard" not in self._parts:
            train = self.files("train")
            self._parts["train_shard"] = train.subset(self.shard.indices(train.labels))
        return "train_shard"

    @property
    def training_batch_size(self) -> int:
        """Images this process feeds per training step (the global batch over the processes)."""
        return self.batch_size if self.shard is None else self.shard.local_batch

    def training_steps(self) -> tuple[int, int | None]:
        """(steps per epoch, images each epoch draws from this process's shard, None: all)."""
        if self.shard is None:
            return self.num_batches("train", training=True), None
        return self.shard.steps(self.files("train").labels)

    # ------------------------------------------------------------------ datasets
    def drops_remainder(self, split: str) -> bool:
        """Training batches are all full, so that a compiled train step sees one batch shape (JAX and XLA
        compile again for every new shape). The few images cut from an epoch are others at the next
        reshuffle. Evaluation keeps every image."""
        local = self.training_batch_size if split == "train_shard" else self.batch_size
        return split in ("train", "train_shard") and len(self.files(split)) >= local

    def num_batches(self, split: str, training: bool = False) -> int:
        """Batches per pass over `split` (with `training`, as `train_dataloader` cuts them)."""
        if training and split == "train" and self.shard is not None:
            return self.training_steps()[0]
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
        per_epoch = self.training_steps()[1] if training else None
        return make_dataset(
            files.paths,
            files.labels,
            (self.image_size, self.image_size),
            self.training_batch_size if training else self.batch_size,
            training=training,
            augmentation=self.augmentation() if training else None,
            decoded=decoded,
            seed=self.seed,
            drop_remainder=training and self.drops_remainder(split),
            skip_errors=skip_errors,
            per_epoch=per_epoch,
        )

    def train_dataloader(self):
        """Shuffled, augmented training batches (of this process's shard, with `shard_training`)."""
        return self._dataset(self.training_split, training=True)

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
        """The training augmentation (`fracture.data.augmentation.Augmentation`, seeded), or None when it is off."""
        if self.augmentation_options is None:
            return None
        return build_augmentation(**self.augmentation_options, seed=self.seed)

    def labels(self, split: str) -> np.ndarray:
        return self.files(split).labels
