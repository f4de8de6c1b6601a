"""Data-parallel training over several processes (JAX only): who this process is, how the processes meet,
and how the training files are dealt out.

    group = find_process_group(num_processes=2, process_id=0, coordinator="127.0.0.1:12355")
    join(group)               # jax.distributed, its coordinator bound to the address it was given
    datamodule.shard_training(group.process_id, group.num_processes)   # fracture.data.shards

`find_process_group` reads, in this order: explicit settings (`trainer.num_processes`, `trainer.process_id`,
`trainer.coordinator`), submitit's `JobEnvironment` (a job of `hydra/launcher=slurm` or `submitit_local` with
`tasks_per_node` > 1), and SLURM's variables (`srun`). Each process drives its own devices (one, on a CPU);
`keras.distribution.DataParallel` spans all of them, and each process feeds its own shard
(`auto_shard_dataset=False`), so the global batch is the processes' local batches side by side. The processes'
collectives on a CPU go over gloo (TCP), which is JAX's default since 0.5.1.

TensorFlow is refused: Keras 3's `fit` does not run under `MultiWorkerMirroredStrategy` (keras#20585).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import keras
import numpy as np

from fracture.errors import ConfigError

# The coordinator's port when none is given: a job's own, so that two jobs on one node do not collide.
BASE_PORT = 20000
PORT_SPAN = 20000


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training processes; `source` says where that was read from."""

    process_id: int = 0
    num_processes: int = 1
    coordinator: str | None = None  # host:port of process 0's coordination service
    source: str = "single process"

    @property
    def multi(self) -> bool:
        return self.num_processes > 1

    @property
    def is_chief(self) -> bool:
        """Process 0 alone writes the run folder (checkpoints, metrics, plots, the report, backups)."""
        return self.process_id == 0

    def describe(self) -> str:
        if not self.multi:
            return "1 process"
        return f"process {self.process_id} of {self.num_processes} (coordinator {self.coordinator}, from {self.source})"


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `node[03-05,09],gpu1` -> `node03`."""
    match = re.match(r"([^,\[]+)(?:\[([^\],\-]+))?", nodelist.strip())
    if not match:
        raise ConfigError(f"cannot read the first host of the SLURM node list {nodelist!r}; set trainer.coordinator.")
    return match.group(1) + (match.group(2) or "")


def job_port(job_id: str) -> int:
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    return BASE_PORT + int(digits) % PORT_SPAN


def submitit_group(coordinator: str | None) -> ProcessGroup | None:
    """The group of a submitit job with several tasks, or None outside one (or without submitit)."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    try:
        import submitit
    except ModuleNotFoundError:
        return None
    env = submitit.JobEnvironment()
    if env.num_tasks < 2:
        return None
    # A local job's tasks all run on this machine: they meet on the loopback interface.
    host = "127.0.0.1" if env.cluster == "local" else env.hostnames[0]
    address = coordinator or f"{host}:{job_port(env.job_id)}"
    return ProcessGroup(env.global_rank, env.num_tasks, address, f"submitit ({env.cluster})")


def slurm_group(coordinator: str | None, environ=os.environ) -> ProcessGroup | None:
    """The group of an `srun` step with several tasks, from SLURM's variables, or None."""
    tasks = int(environ.get("SLURM_NTASKS", environ.get("SLURM_STEP_NUM_TASKS", "1")))
    if tasks < 2 or "SLURM_PROCID" not in environ:
        return None
    nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "127.0.0.1")
    address = coordinator or f"{first_host(nodes)}:{job_port(environ.get('SLURM_JOB_ID', '0'))}"
    return ProcessGroup(int(environ["SLURM_PROCID"]), tasks, address, "SLURM")


def find_process_group(
    num_processes: int = 1, process_id: int | None = None, coordinator: str | None = None, environ=os.environ
) -> ProcessGroup:
    """This process's group: explicit settings first, then submitit's job environment, then SLURM's variables.

    `num_processes` > 1 with `process_id` None asks the caller to start the processes itself (see
    `fracture.local_processes`); this returns the group without an id then, and `needs_starting` says so."""
    if num_processes < 1:
        raise ConfigError(f"trainer.num_processes must be at least 1, got {num_processes}.")
    if process_id is not None:
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"trainer.process_id={process_id} is outside 0..{num_processes - 1}.")
        if num_processes > 1 and not coordinator:
            raise ConfigError("trainer.process_id needs trainer.coordinator=host:port (process 0's address).")
        return ProcessGroup(process_id, num_processes, coordinator, "trainer settings")
    found = submitit_group(coordinator) or slurm_group(coordinator, environ)
    if found is not None:
        if num_processes > 1 and num_processes != found.num_processes:
            raise ConfigError(
                f"trainer.num_processes={num_processes}, but {found.source} started {found.num_processes} tasks."
            )
        return found
    return ProcessGroup(-1 if num_processes > 1 else 0, num_processes, coordinator, "to be started here")


def needs_starting(group: ProcessGroup) -> bool:
    """Whether the processes of `group` are still to be started on this machine (`trainer.num_processes=N`)."""
    return group.multi and group.process_id < 0


def check_backend(group: ProcessGroup, backend: str) -> None:
    if group.multi and backend != "jax":
        raise ConfigError(
            f"trainer.num_processes={group.num_processes} needs KERAS_BACKEND=jax: Keras 3's fit does not run "
            "under TensorFlow's MultiWorkerMirroredStrategy (keras-team/keras#20585)."
        )


def join(group: ProcessGroup, peer_timeout_s: int = 60) -> None:
    """Start JAX's distributed runtime for `group` (nothing for one process). Process 0's coordinator listens on
    the address it was given only, not on every interface; a process that stops answering for `peer_timeout_s`
    makes the others stop with JAX's error that another task died."""
    if not group.multi:
        return
    import jax

    if jax.distributed.is_initialized():
        return
    host, _, port = str(group.coordinator).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"trainer.coordinator must be host:port, got {group.coordinator!r}.")
    bind = f"{host}:{port}" if group.is_chief else None
    jax.distributed.initialize(
        coordinator_address=group.coordinator,
        num_processes=group.num_processes,
        process_id=group.process_id,
        coordinator_bind_address=bind,
        heartbeat_timeout_seconds=int(peer_timeout_s),
        initialization_timeout=max(60, int(peer_timeout_s)),
        shutdown_timeout_seconds=int(peer_timeout_s),
    )


def leave(group: ProcessGroup) -> None:
    """End the distributed runtime once training is over, so that process 0 evaluates on its own."""
    if group.multi:
        import jax

        if jax.distributed.is_initialized():
            jax.distributed.shutdown()


def any_process(flag: int, group: ProcessGroup) -> int:
    """The largest of every process's `flag` (0 when none raised one): how the processes agree to stop at the
    same batch when a signal reaches only some of them."""
    if not group.multi:
        return flag
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.array([flag], np.int32))))


def gather_shards(local: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Every training process's `local` rows (process k holds `sizes[k]` of them), in process order: each pads
    its rows to the longest, and one all-gather brings them all to every process."""
    if len(sizes) == 1:
        return [local]
    from jax.experimental import multihost_utils

    padded = np.zeros((max(sizes), *local.shape[1:]), local.dtype)
    padded[: len(local)] = local
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # (processes, longest, ...)
    return [gathered[k, :size] for k, size in enumerate(sizes)]


@contextmanager
def outside_distribution() -> Iterator[None]:
    """No Keras distribution for the block: models built and run in it stay on this process's own device."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def on_this_process(model: keras.Model) -> keras.Model:
    """`model`, or a copy of it on this process's device when its weights span several processes (a frozen
    backbone that each process runs on its own shard, with no collective and its own number of batches)."""
    value = getattr(model.weights[0], "value", None) if model.weights else None
    if getattr(value, "is_fully_addressable", True):
        return model
    with outside_distribution():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    return copy
