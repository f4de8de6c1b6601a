"""A model's identity for caches: a hash of its configuration and every weight."""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np


def model_digest(model: keras.Model) -> str:
    """A hash of a model's configuration and every weight, trainable or not."""
    digest = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()
