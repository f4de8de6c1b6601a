"""The augmentation: where its transforms move a pixel, its ranges, fill modes, contrast, and its seeds in tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from fracture import FractureDataModule
from fracture.data.augmentation import Augmentation, Transform, build_augmentation
from fracture.errors import ConfigError

SIZE = 64
CENTRE = (SIZE - 1) / 2.0


def dot(x: int, y: int) -> np.ndarray:
    """A batch of one black image with a bright 3x3 square centred on pixel (x, y)."""
    image = np.zeros((1, SIZE, SIZE, 3), np.float32)
    image[0, y - 1 : y + 2, x - 1 : x + 2] = 255.0
    return image


def centre_of_brightness(image: np.ndarray) -> tuple[float, float]:
    weights = image[..., 0]
    ys, xs = np.indices(weights.shape)
    return float((xs * weights).sum() / weights.sum()), float((ys * weights).sum() / weights.sum())


def warp(transform: Transform, images: np.ndarray) -> np.ndarray:
    """`images` under `transform`, as `Augmentation` resamples them."""
    import cv2

    matrix = transform.matrix(SIZE, SIZE)
    return np.stack([cv2.warpAffine(image, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR) for image in images])


@pytest.mark.parametrize(
    ("transform", "start", "end"),
    [
        (Transform(True, 0.0, 1.0, 1.0), (10, 32), (SIZE - 1 - 10, 32)),  # mirrored left-right
        (Transform(False, 90.0, 1.0, 1.0), (10, 32), (32, SIZE - 1 - 10)),  # counter-clockwise: left goes down
        (Transform(False, 0.0, 0.5, 1.0), (42, 32), (CENTRE + 2 * (42 - CENTRE), 32)),  # zoom 0.5: twice as far
        (Transform(True, 90.0, 1.0, 1.0), (10, 32), (32, 10)),  # mirrored first, then rotated
    ],
)
def test_a_transform_moves_a_pixel_where_its_matrix_says(transform, start, end):
    moved = centre_of_brightness(warp(transform, dot(*start))[0])
    assert moved == pytest.approx(end, abs=0.6)


def test_draws_stay_within_the_settings_and_cover_them():
    draws = Augmentation(rotation_degrees=20, zoom=0.2, contrast=0.3).draw(np.random.default_rng(0), 2000)
    degrees, zooms = np.array([t.degrees for t in draws]), np.array([t.zoom for t in draws])
    contrasts, flips = np.array([t.contrast for t in draws]), np.array([t.flip for t in draws])
    assert -20 <= degrees.min() < -19 and 19 < degrees.max() <= 20
    assert 0.8 <= zooms.min() < 0.81 and 1.19 < zooms.max() <= 1.2
    assert 0.7 <= contrasts.min() < 0.71 and 1.29 < contrasts.max() <= 1.3
    assert 0.45 < flips.mean() < 0.55
    still = Augmentation(rotation_degrees=0, zoom=0, horizontal_flip=False).draw(np.random.default_rng(0), 50)
    assert all(t == Transform(False, 0.0, 1.0, 1.0) for t in still)


def test_each_image_gets_the_transform_drawn_from_the_batch_seed():
    augmentation = Augmentation(seed=0)
    images = np.concatenate([dot(10 + 4 * k, 20 + 2 * k) for k in range(6)])
    augmented = augmentation(images, seed=123)
    drawn = augmentation.draw(np.random.default_rng(123), len(images))
    for image, original, transform in zip(augmented, images, drawn, strict=True):
        np.testing.assert_allclose(image, warp(transform, original[None])[0], atol=1e-3)
    np.testing.assert_array_equal(augmentation(images, seed=123), augmented)
    assert not np.allclose(augmentation(images, seed=124), augmented)


def test_flip_alone_mirrors_or_keeps_each_image_exactly():
    images = np.random.default_rng(1).uniform(0, 255, (16, SIZE, SIZE, 3)).astype(np.float32)
    augmented = build_augmentation(rotation_degrees=0, zoom=0, horizontal_flip=True)(images, seed=5)
    mirrored = [np.allclose(a, x[:, ::-1], atol=1e-3) for a, x in zip(augmented, images, strict=True)]
    kept = [np.allclose(a, x, atol=1e-3) for a, x in zip(augmented, images, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True)) and any(mirrored) and any(kept)


def test_fill_modes_fill_what_comes_from_outside_the_image():
    grey = np.full((1, SIZE, SIZE, 3), 100.0, np.float32)
    zoom_out = Transform(False, 0.0, 1.19, 1.0)
    for mode, corner in (("nearest", 100.0), ("constant", 0.0)):
        augmentation = Augmentation(rotation_degrees=0, zoom=0.2, horizontal_flip=False, fill_mode=mode)
        augmentation.draw = lambda rng, count: [zoom_out] * count
        out = augmentation(grey, seed=0)
        assert out[0, 0, 0, 0] == pytest.approx(corner) and out[0, SIZE // 2, SIZE // 2, 0] == pytest.approx(100.0)


def test_contrast_scales_each_channel_about_its_mean():
    images = np.random.default_rng(2).uniform(80, 170, (4, SIZE, SIZE, 3)).astype(np.float32)
    augmentation = Augmentation(rotation_degrees=0, zoom=0, horizontal_flip=False, contrast=0.4)
    augmented = augmentation(images, seed=9)
    factors = [t.contrast for t in augmentation.draw(np.random.default_rng(9), len(images))]
    for image, original, factor in zip(augmented, images, factors, strict=True):
        np.testing.assert_allclose(image.mean(axis=(0, 1)), original.mean(axis=(0, 1)), rtol=1e-4)
        np.testing.assert_allclose(image.std(axis=(0, 1)), factor * original.std(axis=(0, 1)), rtol=1e-3)


def test_in_tf_data_every_epoch_is_new_and_the_seed_repeats_the_run():
    images = np.random.default_rng(3).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)

    def two_epochs(seed):
        augmentation = Augmentation(seed=seed)
        batches = tf.data.Dataset.from_tensors(images)
        ds = tf.data.Dataset.zip(batches, augmentation.seeds()).map(augmentation.tf_apply, num_parallel_calls=2)
        return [batch.numpy() for batch in ds.repeat(2)]

    first, second = two_epochs(7)
    assert first.shape == images.shape and first.dtype == np.float32
    assert not np.allclose(first, second)  # a new draw each epoch
    again = two_epochs(7)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)
    assert not np.allclose(two_epochs(8)[0], first)


@pytest.mark.parametrize(
    "settings",
    [{"fill_mode": "mirror"}, {"zoom": 1.0}, {"rotation_degrees": -5}, {"contrast": 1.5}],
)
def test_bad_settings_fail_when_the_data_module_is_made(synthetic_root, settings):
    with pytest.raises(ConfigError, match="data.augmentation"):
        FractureDataModule(synthetic_root, image_size=SIZE, augmentation=settings, group_by=None)


def test_the_cost_benchmark_prints_both_rows_and_their_ratio():
    import subprocess
    import sys

    script = "benchmarks/augmentation_cost.py"
    command = [sys.executable, script, "--image-size", "32", "--batch", "4", "--repeats", "2"]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [line for line in printed.splitlines() if "ms/img" in line]
    assert len(rows) == 2 and rows[0].startswith("keras layers") and rows[1].startswith("fracture Augmentation")
    assert all("x, CPU" in row for row in rows)
