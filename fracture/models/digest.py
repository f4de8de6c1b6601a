"""A model's identity for caches: a hash of its configuration and every weight."""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np


def model_digest(model: keras.Model) -> str:
    """A hash of a model's configuration and every weight, trainable or not.

    Layer names enter the hash by position, not as spelled: Keras numbers the layers it names itself per
    process ("rescaling", then "rescaling_1" for the next model built), so the same model built twice in one
    process (a notebook, an in-process sweep) would otherwise hash differently and miss every cache entry.
    """
    positions = {layer.name: f"layer-{index}" for index, layer in enumerate(every_layer(model))}
    config = by_position(model.get_config(), positions)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def every_layer(model: keras.Model) -> list[keras.layers.Layer]:
    """`model` and its layers, those of nested models included, depth first in their order."""
    layers = [model]
    for layer in getattr(model, "layers", []):
        layers += every_layer(layer)
    return layers


def by_position(config, positions: dict[str, str]):
    """`config` with every string that names a layer replaced by that layer's position."""
    if isinstance(config, dict):
        return {key: by_position(value, positions) for key, value in config.items()}
    if isinstance(config, list | tuple):
        return [by_position(value, positions) for value in config]
    if isinstance(config, str):
        return positions.get(config, config)
    return config
