"""The persistent compilation cache is filled on JAX (in a fresh process, as JAX reads the setting once)
and is a no-op on TensorFlow."""

import keras
import pytest
from conftest import run_python

from fracture import enable_compilation_cache

BUILD_AND_PREDICT = """
import sys, numpy as np
from fracture import FractureClassifier, enable_compilation_cache
print("CACHE", enable_compilation_cache(sys.argv[1]))
model = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=4).configure_model()
model.predict_on_batch(np.zeros((2, 32, 32, 3), "float32"))
"""


@pytest.mark.slow  # about 17 s; the default suite stays under 15 minutes
def test_compiled_programs_are_cached_on_jax_and_reused_by_the_next_process(tmp_path):
    done = run_python(BUILD_AND_PREDICT, tmp_path / "cache", backend="jax")
    assert f"CACHE {tmp_path / 'cache'}" in done.stdout
    first = sorted(path.name for path in (tmp_path / "cache").iterdir())
    assert len(first) > 5  # the build's initialisers and the predict step
    run_python(BUILD_AND_PREDICT, tmp_path / "cache", backend="jax")
    # Every program of the second process was found in the cache: it compiled and wrote nothing new.
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == first


def test_the_cache_is_a_no_op_on_tensorflow(tmp_path):
    assert keras.backend.backend() == "tensorflow"
    assert enable_compilation_cache(tmp_path / "cache") is None and not (tmp_path / "cache").exists()
    assert enable_compilation_cache(None) is None
