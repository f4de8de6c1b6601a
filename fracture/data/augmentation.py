"""Training-time augmentation written as Keras preprocessing layers.

The layers are wrapped in `keras.layers.Pipeline`, which stays `tf.data`-compatible on every Keras backend,
so the same augmentation runs inside the input pipeline on TensorFlow and on JAX.
"""

from __future__ import annotations

import keras


def build_augmentation(
    rotation_degrees: float = 20.0,
    zoom: float = 0.2,
    horizontal_flip: bool = True,
    contrast: float = 0.0,
    fill_mode: str = "nearest",
    seed: int | None = None,
) -> keras.layers.Pipeline | None:
    """The notebook's augmentation (rotation, zoom, horizontal flip), plus optional contrast.

    Args:
        rotation_degrees: maximum rotation either way, in degrees (the notebook's `rotation_range`).
        zoom: maximum zoom in or out, as a fraction of the image size (the notebook's `zoom_range`).
        horizontal_flip: flip left-right at random.
        contrast: maximum contrast change as a fraction; 0 turns it off.
        fill_mode: how pixels outside the rotated or zoomed image are filled.
        seed: seed for the random layers, for reproducible runs.

    Returns:
        A pipeline that expects float pixels in 0..255, or None when every transform is off.
    """
    layers = []
    if horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if rotation_degrees:
        layers.append(keras.layers.RandomRotation(rotation_degrees / 360.0, fill_mode=fill_mode, seed=seed))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode=fill_mode, seed=seed))
    if contrast:
        # value_range keeps the 0..255 pixel scale that EfficientNet expects.
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed))
    return keras.layers.Pipeline(layers, name="augmentation") if layers else None
