"""What fracture's own worker processes on this machine share: their CPU thread pools and loopback ports.

Ray's actors (`fracture.ray_cluster`) and the training processes of `trainer.num_processes`
(`fracture.local_processes`) each get a share of the CPUs; left to themselves, TensorFlow and XLA would each
start a thread per core in every process and fight over the cores.
"""

from __future__ import annotations

import os
import socket


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that hold TensorFlow's and XLA's CPU thread pools to `threads` (set before the
    backend is imported; XLA_FLAGS keeps the flags it already has)."""
    xla = os.environ.get("XLA_FLAGS", "")
    xla += f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    return {
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": str(threads),
        "XLA_FLAGS": xla.strip(),
    }


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
