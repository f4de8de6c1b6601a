"""One process's part of the training files when several processes train together (`fracture.training.distributed`).

Each class's files are dealt out in turn over the processes, so every file is in exactly one shard and each
shard holds the classes in the same proportion. `data.batch_size` stays the global batch: each process feeds
an equal part of it, and all run the same number of steps, as many full local batches as the smallest shard
holds (a process that ran out of batches early would leave the others waiting in a collective).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fracture.errors import ConfigError, DataError


def class_balanced_shard(labels: np.ndarray, process_id: int, num_processes: int) -> np.ndarray:
    """Indices of this process's shard: each class's files dealt out in turn, so that every file is in exactly
    one shard and each shard holds the classes in the same proportion (counts differ by at most one per class).
    The order within the shard is the files' order; the stream reshuffles it every epoch."""
    labels = np.asarray(labels).reshape(-1)
    picked = [np.flatnonzero(labels == value)[process_id::num_processes] for value in np.unique(labels)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, int)


def shard_sizes(labels: np.ndarray, num_processes: int) -> list[int]:
    return [len(class_balanced_shard(labels, rank, num_processes)) for rank in range(num_processes)]


@dataclass(frozen=True)
class TrainingShard:
    """This process's place in a group of `num_processes` and the images it feeds per step (`local_batch`)."""

    process_id: int
    num_processes: int
    local_batch: int

    @classmethod
    def of(cls, process_id: int, num_processes: int, global_batch: int) -> TrainingShard | None:
        """The shard of process `process_id`, or None for a single process (which trains on all of train)."""
        if global_batch % num_processes:
            raise ConfigError(
                f"data.batch_size={global_batch} must be a multiple of trainer.num_processes={num_processes} "
                "(it is the global batch, split evenly among the processes)."
            )
        return cls(process_id, num_processes, global_batch // num_processes) if num_processes > 1 else None

    def indices(self, train_labels: np.ndarray) -> np.ndarray:
        """Which of train's files are this process's (`class_balanced_shard`)."""
        return class_balanced_shard(train_labels, self.process_id, self.num_processes)

    def steps(self, train_labels: np.ndarray) -> tuple[int, int]:
        """(steps per epoch, images each epoch draws from this shard): the same for every process."""
        smallest, local = min(shard_sizes(train_labels, self.num_processes)), self.local_batch
        if smallest < local:
            raise DataError(f"a training shard holds {smallest} files, fewer than one local batch of {local}.")
        return smallest // local, smallest // local * local
