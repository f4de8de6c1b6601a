"""The notebook's classification head, and the split of a model into backbone and head."""

from __future__ import annotations

import math

import keras

HEAD_PREFIX = "head_"


def notebook_head(
    features: keras.KerasTensor, dense_units: int = 512, noise_stddev: float = 0.25, dropout: float = 0.25
) -> keras.KerasTensor:
    """GaussianNoise, GlobalAveragePooling2D, Dense(relu), BatchNormalization, GaussianNoise, Dropout, sigmoid.

    Every layer is named with the `head_` prefix, which is how a loaded model tells head from backbone.
    The output layer computes in float32 even under a mixed-precision policy, so probabilities stay exact.
    """
    x = keras.layers.GaussianNoise(noise_stddev, name="head_noise_in")(features)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.GaussianNoise(noise_stddev, name="head_noise_out")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="head_output")(x)


def split_at_head(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(backbone, head) models that share `model`'s layers, split at the head's global average pooling.

    The backbone maps images to pooled features, the head maps those to the output. The head is the chain of
    `head_`-prefixed layers, which must start with GlobalAveragePooling2D, or GaussianNoise and then that
    pooling (the notebook's head). That noise is added to the maps before they are averaged; the average of
    h*w independent N(0, s^2) draws is N(0, s^2 / (h*w)), so the head model adds noise of that spread to the
    pooled features instead: the same distribution, from h*w times fewer random numbers, and h*w times less
    to store and read (49 times for EfficientNetB3 at 224 px).
    """
    head_layers = [layer for layer in model.layers if layer.name.startswith(HEAD_PREFIX)]
    noise = next((layer for layer in head_layers[:1] if isinstance(layer, keras.layers.GaussianNoise)), None)
    start = 0 if noise is None else 1
    pool = head_layers[start] if len(head_layers) > start else None
    pools_flat = isinstance(pool, keras.layers.GlobalAveragePooling2D) and not pool.keepdims
    if not pools_flat or pool.data_format != "channels_last":
        raise ValueError(
            f"{model.name}'s head must start with GlobalAveragePooling2D (after an optional GaussianNoise) "
            "to train on cached features; set trainer.feature_cache=false."
        )
    maps = head_layers[0].input
    height, width, channels = maps.shape[1:]
    pooled = keras.layers.GlobalAveragePooling2D(name="backbone_pool")(maps)
    backbone = keras.Model(model.inputs, pooled, name="fracture_backbone")
    x = inputs = keras.Input((channels,), name="features")
    if noise is not None:
        spread = noise.stddev / math.sqrt(height * width)
        x = keras.layers.GaussianNoise(spread, seed=noise.seed, name="pooled_noise")(x)
    for layer in head_layers[start + 1 :]:
        x = layer(x)
    return backbone, keras.Model(inputs, x, name="fracture_head")
