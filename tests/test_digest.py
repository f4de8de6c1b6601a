"""A model's digest: the same model built twice in one process hashes the same (Keras numbers the layers it
names itself), and any change of weights or structure hashes differently."""

import keras
import numpy as np
import pytest

from fracture.models.digest import model_digest

pytestmark = pytest.mark.backend  # weights are read through the backend


def small_model(activation: str | None = None) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation)(keras.layers.Rescaling(0.5)(inputs))  # both named by Keras
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def test_the_same_model_built_twice_in_one_process_has_one_digest():
    first, second = small_model(), small_model()
    assert first.layers[1].name != second.layers[1].name  # "rescaling" and "rescaling_1": the names differ
    assert model_digest(first) == model_digest(second)


def test_other_weights_or_another_structure_change_the_digest():
    model = small_model()
    changed = small_model()
    kernel = changed.layers[2].kernel
    kernel.assign(np.asarray(kernel) + 1e-3)
    assert model_digest(changed) != model_digest(model)
    assert model_digest(small_model("relu")) != model_digest(model)  # the same weights, another activation
    nested = keras.Sequential([small_model()])  # the same layers inside another model: another model
    assert model_digest(nested) != model_digest(model)
