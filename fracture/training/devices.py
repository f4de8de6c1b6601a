"""Data parallelism over several accelerators (or simulated CPU devices), per backend.

- JAX: `keras.distribution.DataParallel` shards each batch across the devices.
- TensorFlow: `tf.distribute.MirroredStrategy` replicates the model and splits each batch.

The batch size stays the *global* batch: with `devices=N`, each device sees `batch_size / N` images per
step, so keep the batch size divisible by N, and consider scaling the learning rate with the global batch.

Across several processes (`fracture.training.distributed`), the devices are every process's, and each process
feeds its own part of the global batch.
"""

from __future__ import annotations

import contextlib

import keras

from fracture.errors import ConfigError


def available_devices() -> list[str]:
    """Accelerators if there are any, else the CPU devices the backend sees."""
    if keras.backend.backend() == "jax":
        return keras.distribution.list_devices()
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [device.name for device in (gpus or tf.config.list_logical_devices("CPU"))]


def resolve_devices(devices: int | str) -> list[str]:
    """The devices to use for `trainer.devices` (a count, or "all")."""
    found = available_devices()
    count = len(found) if devices == "all" else int(devices)
    if not 1 <= count <= len(found):
        raise ConfigError(f"trainer.devices={devices}, but only {len(found)} device(s) are visible: {found}.")
    return found[:count]


class DataParallel:
    """A context for building, compiling and fitting a model on several devices (a no-op for one)."""

    def __init__(self, devices: list, across_processes: bool = False):
        self.devices = devices
        self.across_processes = across_processes
        self._strategy = None
        if len(devices) > 1 and keras.backend.backend() == "jax":
            # Across processes, each feeds its own shard: Keras must not cut the stream a second time.
            self._strategy = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=not across_processes)
        elif len(devices) > 1:
            import tensorflow as tf

            self._strategy = tf.distribute.MirroredStrategy(devices)

    @property
    def devices_per_process(self) -> int:
        if not self.across_processes:
            return len(self.devices)
        import jax

        return jax.local_device_count()

    def scope(self):
        """Keras' JAX distribution or TensorFlow's strategy, for the duration of the block only: the process's
        global distribution is restored afterwards, so other models in it are not affected."""
        return self._strategy.scope() if self._strategy is not None else contextlib.nullcontext()
