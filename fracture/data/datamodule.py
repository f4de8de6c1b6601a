"""`FractureDataModule`: everything about the data, in the spirit of a Lightning DataModule."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from fracture.data.augmentation import build_augmentation
from fracture.data.folders import SplitFiles, scan_root
from fracture.data.pipeline import make_dataset
from fracture.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class FractureDataModule:
    """Binary X-ray data from a folder of `train/`, `val/` and optional `test/` splits, one folder per class.

    Args:
        root: folder holding the splits (the Kaggle dataset's layout).
        image_size: side of the square images fed to the model, in pixels.
        batch_size: images per batch.
        positive_class: folder name of the positive class (label 1), matched case-insensitively.
        negative_class: folder name of the negative class (label 0).
        val_fraction: share of `train/` held out for validation when `root` has no `val/` folder. The cut
            keeps groups (copies of one source image) on one side and keeps the class balance.
        group_by: `"filename"` groups Kaggle-style files by the name part before the first `-` or `.`;
            None makes every file its own group.
        augmentation: keyword arguments of `build_augmentation`, or None for no augmentation.
        cache: cache decoded images in memory (True) or in a file (a path) across epochs.
        shuffle_buffer: shuffle buffer size when caching.
        seed: seed for shuffling, splitting and augmentation.

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
        group_by: str | None = "filename",
        augmentation: dict | None = None,
        cache: bool | str = False,
        shuffle_buffer: int = 2048,
        seed: int = 42,
    ):
        if image_size < 32:
            raise ConfigError(f"data.image_size must be at least 32 pixels, got {image_size}.")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}.")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction}.")
        if group_by not in ("filename", None):
            raise ConfigError(f"data.group_by must be 'filename' or null, got {group_by!r}.")
        self.root = Path(root).expanduser()
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.class_names = (positive_class, negative_class)
        self.val_fraction = val_fraction
        self.group_by = group_by
        self.augmentation_options = None if augmentation is None else dict(augmentation)
        self.cache = cache
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self._splits: dict[str, SplitFiles] | None = None

    # ------------------------------------------------------------------ scanning
    def setup(self) -> FractureDataModule:
        """Scan and check the image folders once; later calls are free."""
        if self._splits is None:
            splits = scan_root(self.root, self.class_names, self.group_by)
            if "val" not in splits:
                splits["train"], splits["val"] = self._hold_out_val(splits["train"])
            # Folders list one class after the other; a fixed shuffle makes any first few evaluation
            # batches (limit_val_batches) hold both classes, and keeps prediction order reproducible.
            rng = np.random.default_rng(self.seed)
            self._splits = {name: files.subset(rng.permutation(len(files))) for name, files in splits.items()}
        return self

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

    def has_split(self, split: str) -> bool:
        return split in self.setup()._splits

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: images per class, groups and skipped files."""
        positive, negative = self.class_names
        return {
            name: {
                positive: files.class_counts()[1],
                negative: files.class_counts()[0],
                "groups": len(set(files.groups)),
                "skipped": len(files.skipped),
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

    def _dataset(self, split: str, training: bool):
        files = self.files(split)
        augmentation = None
        if training and self.augmentation_options is not None:
            augmentation = build_augmentation(**self.augmentation_options, seed=self.seed)
        return make_dataset(
            files.paths,
            files.labels,
            (self.image_size, self.image_size),
            self.batch_size,
            training=training,
            augmentation=augmentation,
            cache=self.cache,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            drop_remainder=training and self.drops_remainder(split),
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
        return self._dataset(split, training=False)

    def labels(self, split: str) -> np.ndarray:
        return self.files(split).labels
