"""JAX's persistent compilation cache: compiled XLA programs kept on disk between runs.

Building EfficientNetB3 on JAX compiles a small XLA program for every distinct weight shape it
initialises, and each train or predict step is compiled again in every new process. With the cache, a
second run loads those programs instead: on a 2-core CPU the model build fell from about 26 s to about
4 s (`benchmarks/backend_throughput.py`). TensorFlow needs no such cache.
"""

from __future__ import annotations

from pathlib import Path

import keras

from fracture.io import DEFAULT_CACHE, cache_folder


def enable_compilation_cache(directory: str | Path | None = DEFAULT_CACHE) -> Path | None:
    """Cache every compiled program under `directory` when the backend is JAX ("default": `jax-compilation/`
    under the cache root, `fracture.io.cache_dir`); None or "" turns it off.

    Call it before the model is built. Returns the directory in use, or None.
    """
    if not directory or keras.backend.backend() != "jax":
        return None
    import jax

    directory = cache_folder(directory, "jax-compilation")
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # The defaults skip programs that compile in under a second, which are most of the build's.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return directory
