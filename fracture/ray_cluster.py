"""Connecting to Ray (`pip install -e '.[ray]'`): the one place that starts or joins a cluster for fracture.

Bulk prediction (`fracture.inference.ray_predict`), feature extraction (`fracture.training.ray_extraction`) and
the replicated service (`fracture.serving.ray_serve`) all start from `RaySettings` and `ray_session`:

    with ray_session(RaySettings(address="auto", actors=4)) as settings:
        ...  # Ray is initialised; `settings.actor_options()` sizes each model-holding actor

Without an address, a Ray of this machine's CPUs is started for the session and stopped after it, its node
on 127.0.0.1 and without the dashboard. (Ray still binds some ports on every interface; fracture's tests run
it inside a loopback-only network namespace.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fracture.errors import ConfigError
from fracture.processes import thread_env

INSTALL_HINT = "pip install -e '.[ray]'"
# What the actors must see as the driver does: the backend is chosen by environment before Keras is imported.
FORWARDED_ENV = ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "FRACTURE_CACHE_DIR", "JAX_PLATFORMS")


def require_ray():
    """Import Ray, or say in one line which extra brings it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data ships with the data extra of ray, which ours asks for)
    except ModuleNotFoundError as error:
        raise ConfigError(f"engine=ray needs the ray extra ({error}): {INSTALL_HINT}.") from error
    return ray


@dataclass
class RaySettings:
    """Where Ray runs and how the model-holding actors are sized.

    Args:
        address: an existing cluster ("auto", or "ray://host:10001"); None starts one on this machine.
        actors: model-holding actors (each loads the model once).
        cpus_per_actor: CPUs Ray reserves for each actor, and the threads its model uses; None shares this
            machine's CPUs (or the cluster's) among the actors, leaving a quarter of a CPU per actor for Ray
            Data's own tasks (on a 2-CPU Ray, actors that take every CPU starve them and the run hangs).
        num_cpus: CPUs of the Ray started here (None: all of them); ignored with an address.
    """

    address: str | None = None
    actors: int = 1
    cpus_per_actor: float | None = None
    num_cpus: int | None = None

    def __post_init__(self):
        if self.actors < 1:
            raise ConfigError(f"ray.actors must be at least 1, got {self.actors}.")
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise ConfigError(f"ray.cpus_per_actor must be positive, got {self.cpus_per_actor}.")

    def actor_cpus(self) -> float:
        if self.cpus_per_actor is not None:
            return float(self.cpus_per_actor)
        import ray

        total = ray.cluster_resources().get("CPU", 1.0)
        return max(0.25, round(total / self.actors - 0.25, 2))

    def actor_options(self) -> dict:
        """Ray options for each model-holding actor: its CPUs, and its environment (`actor_env`) with the
        model's threads at those CPUs rounded up (TensorFlow and XLA take whole threads)."""
        cpus = self.actor_cpus()
        return {"num_cpus": cpus, "runtime_env": {"env_vars": actor_env(max(1, math.ceil(cpus)))}}


def actor_env(threads: int) -> dict[str, str]:
    """An actor's environment: the driver's backend settings (`FORWARDED_ENV`; an actor's own environment
    replaces the session's), and TensorFlow's and XLA's CPU thread pools held to `threads`."""
    return {**forwarded_env(), **thread_env(threads)}


def prepare_actor_backend(backend: dict) -> None:
    """In an actor, the backend set-up that the entry point made in the driver (`fracture.cli.backend_options`)."""
    from fracture.compilation_cache import enable_compilation_cache
    from fracture.jax_depthwise import enable_fast_depthwise_conv

    enable_compilation_cache(backend.get("compilation_cache"))
    enable_fast_depthwise_conv(bool(backend.get("fast_depthwise_conv", False)))


def forwarded_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


@contextmanager
def ray_session(settings: RaySettings) -> Iterator[RaySettings]:
    """Ray initialised for the block: the cluster at `settings.address`, or one started here and stopped after.

    Joining a cluster leaves it running; a Ray that this process had already initialised is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        yield settings
        return
    options = {"runtime_env": {"env_vars": forwarded_env()}, "log_to_driver": True, "configure_logging": False}
    if settings.address:
        try:
            ray.init(address=settings.address, **options)
        except (ConnectionError, RuntimeError) as error:
            raise ConfigError(
                f"cannot reach the Ray cluster at ray.address={settings.address} ({error}); "
                "start it (ray start --head) or leave ray.address unset to start one here."
            ) from error
    else:
        # "local": a new Ray, always. With no address, ray.init would join the last cluster `ray start` made on
        # this machine (/tmp/ray/ray_current_cluster), even one that is gone or out of reach.
        ray.init(
            address="local",
            num_cpus=settings.num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **options,
        )
    try:
        yield settings
    finally:
        ray.shutdown()
