"""Leave the process as a job found it: Hydra's default launcher runs every sweep job in one process.

What a finished job leaves behind, and who releases it:
- Keras' global state (layer names, the TensorFlow graph, JAX's compiled functions): `keras.backend.clear_session`.
- TensorFlow's gradient registry. Keras' TensorFlow optimizer sums gradients with the replica context's
  `all_reduce`, which in a traced step registers a `tf.custom_gradient` under a fresh `CustomGradient-<n>` name
  in a process-wide registry that TensorFlow never empties. Each entry's closure holds the traced step's graph,
  with the model's tensors and the optimizer's slots: on the tiny demo 2 graphs and about 44 MB a job (measured
  2026-12-01, TF 2.21, Keras 3). TensorFlow has no public call to drop them, so the entries that the job added
  are removed from the registry's private table; once a job is over nothing differentiates its graphs again.
- Cycles among the job's objects (models, callbacks, data modules): `gc.collect`.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

import keras

CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


def tensorflow_gradient_table() -> dict | None:
    """TensorFlow's table of registered gradient functions, or None when TensorFlow is not loaded (JAX with
    data from elsewhere) or keeps it elsewhere (a TensorFlow version this module does not know)."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.framework import ops

    table = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return table if isinstance(table, dict) else None


@contextlib.contextmanager
def released_after_job() -> Iterator[None]:
    """Run one job; afterwards release what it left in Keras' and TensorFlow's process-wide state (see the
    module docstring). Entries that existed before the job, such as another model's in a notebook, are kept."""
    before = set(tensorflow_gradient_table() or ())
    try:
        yield
    finally:
        keras.backend.clear_session(free_memory=True)
        table = tensorflow_gradient_table()
        if table is not None:  # TensorFlow may have been imported during the job
            for name in [name for name in table if name.startswith(CUSTOM_GRADIENT_PREFIX) and name not in before]:
                del table[name]
        gc.collect()
