"""The `tf.data` input pipeline: read, decode, resize, (cache), shuffle, batch, augment, prefetch.

Pixels stay in 0..255 as float32: EfficientNet rescales inside the model, so the pipeline must not.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fracture.data.images import read_xray


def resize_image(image, image_size: tuple[int, int]) -> tf.Tensor:
    """Resize a uint8 RGB image (bilinear, antialiased) to `image_size`, keeping uint8.

    Training, evaluation and prediction all resize through this function, so a model sees the same pixels
    whichever way an image reaches it. An image that already has `image_size` comes back as it is: resizing
    it samples every pixel at its own centre and returns the same pixels (checked on 190 radiographs of the
    project's test data and in `tests/test_datamodule.py`), at 1.5 ms an image on a 2-core CPU.
    """
    image = tf.convert_to_tensor(image, tf.uint8)

    def resized():
        scaled = tf.image.resize(image, image_size, antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(scaled, 0.0, 255.0)), tf.uint8)

    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.constant(image_size)))
    return tf.cond(same_size, lambda: image, resized)


def read_pixels(path) -> np.ndarray:
    """`read_xray` for a path that `tf.numpy_function` passes as bytes (a 0-d array outside `tf.data`); the
    scan has already applied the shape limits."""
    return read_xray(np.asarray(path).item().decode(), limits=None)


def decode_image(path: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Read an image file as a uint8 RGB image of `image_size`, with the reader that prediction uses
    (`fracture.data.images.read_xray`: EXIF orientation, 16-bit range, palette, alpha and grey handled one way),
    then `resize_image`. TensorFlow's own decoders differed: they ignore EXIF orientation, and their JPEG
    decoding and so every JPEG's probability differed slightly from prediction's."""
    image = tf.numpy_function(read_pixels, [path], tf.uint8, stateful=False)
    image = tf.ensure_shape(image, (None, None, 3))
    return tf.ensure_shape(resize_image(image, image_size), (*image_size, 3))


def numpy_rows(lookup, inputs: list, dtype: tf.DType, row_shape: tuple[int, ...]) -> tf.Tensor:
    """`lookup(*inputs)` (NumPy indexing of an in-memory or memory-mapped array) run inside a `tf.data` map.

    `tf.numpy_function` forgets the shape of what it returns; the rows' shape is restored here, since Keras
    and the ops after it need it."""
    rows = tf.numpy_function(lookup, inputs, dtype, stateful=False)
    return tf.ensure_shape(rows, (None, *row_shape))


def make_dataset(
    paths: list[str],
    labels: np.ndarray,
    image_size: tuple[int, int],
    batch_size: int,
    *,
    training: bool,
    augmentation=None,
    decoded=None,
    seed: int | None = None,
    drop_remainder: bool = False,
    skip_errors: bool = False,
    per_epoch: int | None = None,
) -> tf.data.Dataset:
    """Build a dataset of `(images, labels)` batches: images float32 `(B, H, W, 3)` in 0..255, labels float32 `(B, 1)`.

    With `training`, files are shuffled each epoch and `augmentation` is applied to batches. With `decoded` (a
    `fracture.data.decoded.DecodedImages` of `paths`), images are decoded once and served from it, in the same
    order as without it; augmentation still comes after, so every epoch sees fresh random transforms. Every
    file must decode: `folders.scan_split` checks that up front, which keeps the dataset's length known and
    its order aligned with `paths`. A file deleted or replaced after that check fails to read; with
    `skip_errors` (training and validation streams) it is left out with a logged warning and the run goes on,
    and `FractureDataModule.recheck` reports it at the end. `per_epoch` limits the files a training epoch
    draws (see `epoch_order`).
    """
    autotune = tf.data.AUTOTUNE
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    if decoded is not None:
        images, present = decoded.load(), decoded.present
        ds = tf.data.Dataset.from_tensor_slices((present, labels[present]))
    else:
        ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths, dtype=str), labels))
    if training:
        ds = epoch_order(ds, len(labels), seed, per_epoch)
    if decoded is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)

        def gather(indices, batch_labels):
            return numpy_rows(lambda i: images[i], [indices], tf.uint8, (*image_size, 3)), batch_labels

        ds = ds.map(gather, num_parallel_calls=autotune)
    else:
        ds = ds.map(lambda path, label: (decode_image(path, image_size), label), num_parallel_calls=autotune)
        ds = ds.ignore_errors(log_warning=True) if skip_errors else ds
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda images, label: (tf.cast(images, tf.float32), label), num_parallel_calls=autotune)
    if training and augmentation is not None:
        ds = tf.data.Dataset.zip(ds, augmentation.seeds()).map(
            lambda batch, seed: (augmentation.tf_apply(batch[0], seed), batch[1]), num_parallel_calls=autotune
        )
    return ds.prefetch(autotune)


def epoch_order(ds: tf.data.Dataset, count: int, seed: int | None, per_epoch: int | None = None) -> tf.data.Dataset:
    """`ds`'s `count` elements (file names, or indices of decoded images or cached features) in a new order
    every epoch: the same orders for the same seed, whichever stream is shuffled. Shuffling names or indices
    is cheap, so the buffer holds them all. With `per_epoch`, each epoch draws only that many of the shuffled
    elements (the training processes' shards differ by a file or two, and every process must run the same
    number of steps); the ones left out differ from epoch to epoch."""
    ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return ds if per_epoch is None or per_epoch >= count else ds.take(per_epoch)


def view_dataset(images: np.ndarray, batch_size: int, views: int, augmentation=None) -> tf.data.Dataset:
    """Batches of `views` copies of decoded uint8 `images`, in order: float32 `(views, B, H, W, 3)` in 0..255.

    View 0 is the image as evaluation sees it; views 1.. are drawn from `augmentation`
    (`fracture.data.augmentation`), each from its own seed of `augmentation.seeds()`. The stream adds no
    prefetch and maps in order: the feature cache asks for a batch when the backbone is done with the last, so
    that they do not compete for the cores (a prefetching stream ran at 23 to 45 img/s from one run to the next
    on 2 cores; this one at 31 to 34 with two views).
    """
    if views > 1 and augmentation is None:
        raise ValueError("views beyond the first need an augmentation")

    def with_views(indices, seeds):
        batch = tf.cast(numpy_rows(lambda i: images[i], [indices], tf.uint8, images.shape[1:]), tf.float32)
        return tf.stack([batch] + [augmentation.tf_apply(batch, seeds[view]) for view in range(views - 1)])

    batches = tf.data.Dataset.range(len(images)).batch(batch_size)
    seeds = augmentation.seeds().batch(views - 1) if views > 1 else tf.data.Dataset.from_tensors([0]).repeat()
    return tf.data.Dataset.zip(batches, seeds).map(with_views)


def predict_full_batches(predict, dataset: tf.data.Dataset, batch_size: int) -> np.ndarray:
    """P(positive) for every image of a batched `(images, labels)` dataset, in order, from `predict` (a batch
    of images -> its outputs, such as `model.predict_on_batch`).

    A short last batch is padded with zeros to `batch_size` and its padding dropped from the output, so the
    compiled predict step sees a single batch shape (JAX and XLA would compile again for a new one).
    """
    outputs = []
    for images, _ in dataset:
        count = int(images.shape[0])
        padded = np.zeros((batch_size, *images.shape[1:]), np.float32)
        padded[:count] = images.numpy()
        outputs.append(np.asarray(predict(padded)).reshape(-1)[:count])
    return np.concatenate(outputs) if outputs else np.zeros(0, np.float32)
