"""The `tf.data` input pipeline: read, decode, resize, (cache), shuffle, batch, augment, prefetch.

Pixels stay in 0..255 as float32: EfficientNet rescales inside the model, so the pipeline must not.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def resize_image(image, image_size: tuple[int, int]) -> tf.Tensor:
    """Resize a uint8 RGB image (bilinear, antialiased) to `image_size`, keeping uint8.

    Training, evaluation and prediction all resize through this function, so a model sees the same pixels
    whichever way an image reaches it.
    """
    image = tf.image.resize(image, image_size, antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_16bit_png(contents: tf.Tensor) -> tf.Tensor:
    """True for a PNG whose IHDR chunk (always first, bit depth at byte 24) says 16 bits per sample."""
    return tf.logical_and(
        tf.equal(tf.strings.substr(contents, 0, 8), PNG_SIGNATURE),
        tf.equal(tf.strings.substr(contents, 24, 1), b"\x10"),
    )


def stretch_to_uint8(pixels: tf.Tensor) -> tf.Tensor:
    """Map the image's own minimum..maximum linearly onto 0..255, as `readers.to_uint8` does for prediction."""
    pixels = tf.cast(pixels, tf.float32)
    low, high = tf.reduce_min(pixels), tf.reduce_max(pixels)
    scaled = tf.math.divide_no_nan(pixels - low, high - low) * 255.0
    return tf.cast(tf.round(scaled), tf.uint8)


def decode_image(path: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Read a JPEG, PNG, BMP or GIF file as a uint8 RGB image of `image_size` (grayscale is repeated to 3 channels).

    16-bit PNGs (radiographs often hold 10-12 significant bits) are stretched from their own range, as the
    prediction reader does; a plain 8-bit conversion would keep only the top bits and give a black image.
    """
    contents = tf.io.read_file(path)
    image = tf.cond(
        is_16bit_png(contents),
        lambda: stretch_to_uint8(tf.io.decode_png(contents, channels=3, dtype=tf.uint16)),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    return tf.ensure_shape(resize_image(image, image_size), (*image_size, 3))


def make_dataset(
    paths: list[str],
    labels: np.ndarray,
    image_size: tuple[int, int],
    batch_size: int,
    *,
    training: bool,
    augmentation=None,
    cache: bool | str = False,
    shuffle_buffer: int = 2048,
    seed: int | None = None,
    drop_remainder: bool = False,
    skip_errors: bool = False,
) -> tf.data.Dataset:
    """Build a dataset of `(images, labels)` batches: images float32 `(B, H, W, 3)` in 0..255, labels float32 `(B, 1)`.

    With `training`, files are shuffled each epoch and `augmentation` is applied to batches. With `cache`
    (True for memory or a file path) decoded images are cached *before* augmentation, so every epoch still
    sees fresh random transforms. Every file must decode: `folders.scan_split` checks that up front, which
    keeps the dataset's length known and its order aligned with `paths`. A file deleted or replaced after that
    check fails to read; with `skip_errors` (training and validation streams) it is left out with a logged
    warning and the run goes on, and `FractureDataModule.recheck` reports it at the end.
    """
    autotune = tf.data.AUTOTUNE
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths, dtype=str), labels))

    def decode(path, label):
        return decode_image(path, image_size), label

    def decoded(ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = ds.map(decode, num_parallel_calls=autotune)
        return ds.ignore_errors(log_warning=True) if skip_errors else ds

    if cache:
        ds = decoded(ds)
        ds = ds.cache(cache if isinstance(cache, str) else "")
        if training:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        if training:  # shuffling file names is cheap, so shuffle them all
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        ds = decoded(ds)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda images, label: (tf.cast(images, tf.float32), label), num_parallel_calls=autotune)
    if training and augmentation is not None:
        ds = ds.map(lambda images, label: (augmentation(images, training=True), label), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def predict_full_batches(model, dataset: tf.data.Dataset, batch_size: int) -> np.ndarray:
    """P(positive) for every image of a batched `(images, labels)` dataset, in order.

    A short last batch is padded with zeros to `batch_size` and its padding dropped from the output, so the
    compiled predict step sees a single batch shape (JAX and XLA would compile again for a new one).
    """
    outputs = []
    for images, _ in dataset:
        count = int(images.shape[0])
        padded = np.zeros((batch_size, *images.shape[1:]), np.float32)
        padded[:count] = images.numpy()
        outputs.append(np.asarray(model.predict_on_batch(padded)).reshape(-1)[:count])
    return np.concatenate(outputs) if outputs else np.zeros(0, np.float32)
