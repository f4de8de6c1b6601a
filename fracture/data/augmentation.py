"""Training-time augmentation: the notebook's random flip, rotation and zoom as one affine resampling per image.

Keras' `ImageDataGenerator`, which the notebook uses, folds flip, rotation and zoom into one transform and
resamples each image once. Keras 3's preprocessing layers (`RandomFlip`, `RandomRotation`, `RandomZoom`) resample
once per layer, and on a 2-core Intel Xeon they cost 4.6 ms of CPU time per 224 px image, nearly a third of
what the frozen backbone's bfloat16 forward pass costs there (about 16 ms of CPU an image): the feature
cache's augmented views and every uncached epoch paid it. Here OpenCV's `warpAffine` resamples once, for 0.63
ms of CPU, `tf.data`'s share included (`python benchmarks/augmentation_cost.py` prints both, side by side).

The random draws are stateless: each batch comes with an integer seed from `seeds()`, a `tf.data` stream that
is fresh at every repetition (epoch) and the same for the same seed, so an augmented epoch depends only on the
seed and the epoch number, however many parallel calls `tf.data` makes and whether a resumed run skipped epochs.
It runs inside `tf.data` on every Keras backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from fracture.errors import ConfigError

# Keras' fill modes as OpenCV border modes ("reflect" is Keras' d c b a | a b c d | d c b a).
FILL_MODES = {
    "nearest": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "wrap": cv2.BORDER_WRAP,
    "constant": cv2.BORDER_CONSTANT,
}


@dataclass(frozen=True)
class Transform:
    """One image's draw: mirror it left-right, then rotate it by `degrees` (counter-clockwise) and sample it at
    `zoom` times its spacing about its centre (below 1 zooms in, as `ImageDataGenerator`'s zoom does), then
    scale its contrast about each channel's mean by `contrast`."""

    flip: bool
    degrees: float
    zoom: float
    contrast: float

    def matrix(self, height: int, width: int) -> np.ndarray:
        """The 2x3 matrix from input to output pixel coordinates, as `cv2.warpAffine` takes it."""
        centre = ((width - 1) / 2.0, (height - 1) / 2.0)
        rotate_and_scale = np.vstack([cv2.getRotationMatrix2D(centre, self.degrees, 1.0 / self.zoom), [0, 0, 1]])
        mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if self.flip else np.eye(3)
        return (rotate_and_scale @ mirror)[:2]


class Augmentation:
    """The notebook's augmentation (rotation, zoom, horizontal flip), plus optional contrast.

    Args:
        rotation_degrees: maximum rotation either way, in degrees (the notebook's `rotation_range`).
        zoom: maximum zoom in or out, as a fraction of the image size (the notebook's `zoom_range`; one factor
            for both axes, so a radiograph keeps its proportions).
        horizontal_flip: flip left-right at random.
        contrast: maximum contrast change as a fraction; 0 turns it off.
        fill_mode: how pixels from outside the image are filled: nearest, reflect, wrap or constant (black).
        seed: seed of the random draws, for reproducible runs (None: different every run).

    Call it on a `(B, H, W, 3)` float32 batch in 0..255 and an integer seed; `tf_apply` does so inside `tf.data`.
    """

    def __init__(
        self,
        rotation_degrees: float = 20.0,
        zoom: float = 0.2,
        horizontal_flip: bool = True,
        contrast: float = 0.0,
        fill_mode: str = "nearest",
        seed: int | None = None,
    ):
        if fill_mode not in FILL_MODES:
            raise ConfigError(f"data.augmentation.fill_mode must be one of {sorted(FILL_MODES)}, got {fill_mode!r}.")
        if rotation_degrees < 0 or not 0 <= zoom < 1 or not 0 <= contrast < 1:
            raise ConfigError(
                "data.augmentation needs rotation_degrees >= 0 and zoom and contrast in [0, 1), got "
                f"rotation_degrees={rotation_degrees}, zoom={zoom}, contrast={contrast}."
            )
        self.rotation_degrees, self.zoom, self.horizontal_flip = float(rotation_degrees), float(zoom), horizontal_flip
        self.contrast, self.fill_mode, self.seed = float(contrast), fill_mode, seed

    @property
    def is_identity(self) -> bool:
        return not (self.rotation_degrees or self.zoom or self.horizontal_flip or self.contrast)

    def draw(self, rng: np.random.Generator, count: int) -> list[Transform]:
        """`count` transforms drawn uniformly within the settings."""
        flips = rng.random(count) < 0.5 if self.horizontal_flip else np.zeros(count, bool)
        degrees = rng.uniform(-self.rotation_degrees, self.rotation_degrees, count)
        zooms = rng.uniform(1.0 - self.zoom, 1.0 + self.zoom, count)
        contrasts = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast, count)
        draws = zip(flips, degrees, zooms, contrasts, strict=True)
        return [Transform(bool(f), float(d), float(z), float(c)) for f, d, z, c in draws]

    def __call__(self, images: np.ndarray, seed: int) -> np.ndarray:
        """A new float32 batch: each image of `images` under its own transform, drawn from `seed`."""
        images = np.asarray(images, np.float32)
        height, width = images.shape[1:3]
        out = np.empty_like(images)
        border = FILL_MODES[self.fill_mode]
        for index, transform in enumerate(self.draw(np.random.default_rng(int(seed) & (2**63 - 1)), len(images))):
            matrix = transform.matrix(height, width)
            cv2.warpAffine(images[index], matrix, (width, height), out[index], cv2.INTER_LINEAR, border, 0.0)
            if self.contrast:
                mean = out[index].mean(axis=(0, 1), keepdims=True)
                np.clip((out[index] - mean) * transform.contrast + mean, 0.0, 255.0, out=out[index])
        return out

    def tf_apply(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """`self(images, seed)` as a `tf.data` op; the batch keeps its static shape."""
        augmented = tf.numpy_function(self, [images, seed], tf.float32, stateful=False)
        return tf.ensure_shape(augmented, images.shape)

    def seeds(self) -> tf.data.Dataset:
        """An endless stream of int64 seeds, one a batch: the same for the same `seed`, new at each repetition."""
        return tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)


def build_augmentation(**settings) -> Augmentation | None:
    """`Augmentation(**settings)` (see there for the settings and their defaults), or None when every transform
    is off."""
    augmentation = Augmentation(**settings)
    return None if augmentation.is_identity else augmentation
