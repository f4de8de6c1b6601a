"""The feature cache: with a frozen backbone, compute its pooled features once and train the head on them.

A frozen base computes the same features every epoch, and on a CPU it is almost all of the training step's
cost. The cache runs the backbone once per image and augmented view (`views`; view 0 is the un-augmented
image), stores its output maps averaged over space (the head's GlobalAveragePooling2D, moved to the
backbone's side; see `fracture.models.head.split_at_head`) as float16, and each epoch trains the head on one
randomly drawn view per image. The head is a second Keras model made of the *same* layer objects as the whole
model, so training it trains the whole model's head; the whole model is what gets saved.

Entries are keyed by the files' content, their order, the image size, the augmentation and seed (when views
are augmented), the backbone's weights and configuration and the dtype policy: any change makes a new entry.
In a folder they are `.npy` files read memory-mapped and reused by later runs, each checked against the
record written beside it (`fracture.cache_entry`): a damaged entry is discarded and extracted again. Without a
folder they live in memory for this process only.

The backbone's passes (`fracture.training.extraction`) run here or on Ray actors (`trainer.feature_cache_engine=ray`,
`fracture.training.ray_extraction`), with the same images, key and entry either way, on the inference engine of
`trainer.extraction_engine` (Keras' frozen graph, ONNX Runtime or OpenVINO: `fracture.models.engines`), which is
checked against Keras when built. The engine is not part of the key: every float32 engine's features agree
within 2^-10 of the largest, about one float16 step. The extraction's precision is part of it: bfloat16
(`trainer.extraction_precision`, OpenVINO on processors with bfloat16 instructions) is about twice as fast,
with features about 1% off.

Two differences from the uncached path, on purpose: the backbone runs in inference mode, so EfficientNet's
stochastic-depth dropout inside a frozen base is off (as Keras' transfer-learning guide advises for a
frozen base); and the head's first GaussianNoise is drawn on the pooled features with the spread that
pooling gives it, the same distribution from fewer draws. BatchNormalization, the second GaussianNoise and
Dropout train as before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fracture.cache_entry import read_entry, write_entry
from fracture.console import console
from fracture.data.pipeline import epoch_order, numpy_rows
from fracture.errors import DataError
from fracture.io import DEFAULT_CACHE, cache_folder, check_writable
from fracture.models.digest import model_digest
from fracture.training.distributed import gather_shards
from fracture.training.extraction import EXTRACT_BATCH, LocalBackbone, extract

CACHE_FORMAT = "fracture-features/5"  # 3: entries carry a checked record; 4: images read as prediction reads them;
# 5: augmented views resampled once (fracture.data.augmentation)
FEATURE_DTYPE = np.float16


def file_digest(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise DataError(f"cannot read {path} for the feature cache ({error.strerror or error}).") from error


def cache_key(
    paths: list[str],
    image_size: int,
    views: int,
    augmentation: dict | None,
    seed: int,
    backbone,
    precision: str = "float32",
) -> dict:
    """Everything the cached features depend on (`precision`: the extraction's); its hash names the entry."""
    files = hashlib.sha256("\n".join(file_digest(path) for path in paths).encode()).hexdigest()
    augmented = views > 1
    return {
        "format": CACHE_FORMAT,
        "files": files,
        "count": len(paths),
        "image_size": image_size,
        "views": views,
        "augmentation": augmentation if augmented else None,
        "seed": seed if augmented else None,
        "backbone": model_digest(backbone),
        "dtype_policy": keras.config.dtype_policy().name,
        "extraction_precision": precision,
    }


def key_name(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class FeatureCache:
    """Where cached features live (`folder`, or None for memory only), how many views per training image, and
    what runs the backbone to extract them (`engine`: a `LocalBackbone` by default)."""

    folder: str | Path | None = DEFAULT_CACHE  # "default": features/ under the cache root (fracture.io.cache_dir)
    views: int = 2
    engine: object = field(default_factory=LocalBackbone)

    def __post_init__(self):
        self.folder = cache_folder(self.folder or None, "features")
        self.extractions: list[dict] = []  # `extract`'s timing of every extraction, with its split

    def features(self, backbone: keras.Model, datamodule, split: str, views: int) -> np.ndarray:
        """`(views, N, c)` float16 pooled backbone features for the files of `split`, from the cache or computed."""
        paths = datamodule.files(split).paths
        augmentation = datamodule.augmentation_options
        precision = self.engine.precision
        key = cache_key(paths, datamodule.image_size, views, augmentation, datamodule.seed, backbone, precision)
        shape = (views, len(paths), *backbone.output.shape[1:])
        name = key_name(key)
        stored = None if self.folder is None else self.folder / f"{name}.npy"
        if stored is not None and read_entry(stored, key) is not None:
            console.print(f"feature cache: reusing {split} features ({len(paths)} images x {views}) from {stored}")
            return np.load(stored, mmap_mode="r")
        size = int(np.prod(shape)) * np.dtype(FEATURE_DTYPE).itemsize
        description = f"caching {split} features ({len(paths)} images x {views} view(s), {size / 1e9:.2f} GB)"
        batches = datamodule.view_batches(split, views, batch_size=EXTRACT_BATCH)

        def fill(out: np.ndarray) -> np.ndarray:
            timing = extract(self.engine, backbone, batches, out, EXTRACT_BATCH, description)
            self.extractions.append({"split": split, **timing})
            return out

        if stored is None:
            return fill(np.empty(shape, FEATURE_DTYPE))
        check_writable(self.folder, size)
        with write_entry(stored, key) as staging:
            out = fill(np.lib.format.open_memmap(staging, mode="w+", dtype=FEATURE_DTYPE, shape=shape))
            out.flush()
            del out
            # Mapped before the rename: the map stays valid whatever another run does to the name later.
            features = np.load(staging, mmap_mode="r")
        return features

    def whole_split_features(self, backbone: keras.Model, datamodule, split: str) -> np.ndarray:
        """`(1, N, c)` features of every file of `split`. With several training processes (which all validate on
        the whole split), each extracts every k-th file and the parts are gathered, so no image is extracted
        twice."""
        if datamodule.shard is None:
            return self.features(backbone, datamodule, split, 1)
        process_id, count = datamodule.shard.process_id, datamodule.shard.num_processes
        files = datamodule.files(split)
        parts = [np.arange(k, len(files), count) for k in range(count)]
        datamodule.add_split(f"{split}_part", files.subset(parts[process_id]))
        local = np.asarray(self.features(backbone, datamodule, f"{split}_part", 1)[0])
        gathered = gather_shards(local, [len(part) for part in parts])
        whole = np.empty((1, len(files), *local.shape[1:]), local.dtype)
        for part, rows in zip(parts, gathered, strict=True):
            whole[0, part] = rows
        return whole

    def training_data(self, backbone: keras.Model, datamodule) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        """(train, val) batches of `datamodule`'s cached features: train with `views` views per image (one
        when augmentation is off), shuffled as the streaming pipeline shuffles; val un-augmented, in order."""
        views = self.views if datamodule.augmentation() is not None else 1
        split = datamodule.training_split  # with several processes, this process's shard alone
        train_features = self.features(backbone, datamodule, split, views)
        val_features = self.whole_split_features(backbone, datamodule, "val")
        train = feature_batches(
            train_features,
            datamodule.labels(split),
            datamodule.training_batch_size,
            training=True,
            seed=datamodule.seed,
            drop_remainder=datamodule.drops_remainder(split),
            per_epoch=datamodule.training_steps()[1],
        )
        return train, feature_batches(val_features, datamodule.labels("val"), datamodule.batch_size, training=False)


def feature_batches(
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int | None = None,
    drop_remainder: bool = False,
    per_epoch: int | None = None,
) -> tf.data.Dataset:
    """`(features, labels)` batches as float32 and `(B, 1)`, from `(views, N, ...)` cached features.

    For training, the images are shuffled every epoch in the pipeline's order (`pipeline.epoch_order`, as
    `pipeline.make_dataset` shuffles file names), and each image's view is drawn at random each epoch. For
    evaluation, view 0 in file order.
    """
    views, count = features.shape[:2]
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(count), labels))
    if training:
        ds = epoch_order(ds, count, seed, per_epoch)
        choices = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(lambda r: r % views)
    else:
        choices = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()
    ds = tf.data.Dataset.zip(ds, choices).map(lambda pair, view: (pair[0], view, pair[1]))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def gather(indices, chosen):
        return features[chosen, indices].astype(np.float32)

    def load(indices, chosen, batch_labels):
        return numpy_rows(gather, [indices, chosen], tf.float32, features.shape[2:]), batch_labels

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def cache_decision(setting: bool | str, trains_backbone: bool, sampled: str | None, devices: int):
    """(use the cache?, why not) for a training stage. `setting` is `trainer.feature_cache`: auto, true or false.

    The cache needs a stage whose backbone does not train (`fracture.training.stages`): its features must not
    change while the head trains. `auto` also
    stays off for runs that sample a few batches (`sampled` names the setting) and for several devices,
    where extracting every image first would cost more than it saves.
    """
    if setting is False:
        return False, ""
    if trains_backbone:
        return False, "the backbone trains in this stage, so its features change"
    if setting == "auto" and sampled:
        return False, f"{sampled} trains on a few batches; extracting every image first would cost more"
    if devices > 1:
        return False, "the cached head trains on one device"
    return True, ""
