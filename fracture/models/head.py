"""The notebook's classification head."""

from __future__ import annotations

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
