"""One training process of tests/test_distributed.py (run with KERAS_BACKEND=jax):

    python distributed_probe.py group DATA OUT PROCESS_ID PORT [--die-at-step K]
    python distributed_probe.py union DATA OUT

`group`: process PROCESS_ID of 2 trains a tiny classifier through `Trainer(num_processes=2, ...)` for a few
steps on its shard, recording the weights before the first step and after every step in OUT/process<id>.npy,
and its shard's files in OUT/shard<id>.txt. `union`: one process trains the same classifier on the two shards'
batches side by side (the same global batch), recording OUT/union.npy. With --die-at-step, the process ends
itself abruptly at that step.
"""

import argparse
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fracture import FractureClassifier, FractureDataModule, Trainer

STEPS = 4
SEED = 7


class WeightRecorder(keras.callbacks.Callback):
    """Every weight, flattened, after each training step; optionally dies at a step (a peer that crashes)."""

    def __init__(self, path: Path, die_at_step: int | None = None):
        super().__init__()
        self.path, self.die_at_step, self.steps = path, die_at_step, []

    def on_train_begin(self, logs=None):
        self.steps.append(self.flat_weights())

    def flat_weights(self) -> np.ndarray:
        return np.concatenate([np.asarray(w, np.float64).ravel() for w in self.model.get_weights()])

    def on_train_batch_end(self, batch, logs=None):
        if self.die_at_step is not None and batch + 1 == self.die_at_step:
            os._exit(9)
        self.steps.append(self.flat_weights())

    def on_train_end(self, logs=None):
        np.save(self.path, np.stack(self.steps))


def datamodule(root: str) -> FractureDataModule:
    return FractureDataModule(root, image_size=32, batch_size=8, augmentation=None, group_by=None, seed=3)


def classifier() -> FractureClassifier:
    # Plain SGD: an update is the learning rate times the gradient, so float rounding in the gradient's sum
    # (two processes' halves, or one batch) changes it by a fraction of float32's precision, not more.
    # (Adam divides by the gradient's own size, and magnifies rounding where a gradient is near zero.)
    sgd = {"name": "sgd", "lr": 0.05}
    return FractureClassifier(backbone="tiny_cnn", weights=None, image_size=32, dense_units=16, optimizer=sgd)


def trainer(recorder, **processes) -> Trainer:
    options = {"feature_cache": False, "feature_cache_dir": None, "progress": False, "jit_compile": True}
    limits = {"limit_train_batches": STEPS, "limit_val_batches": 1}
    return Trainer(epochs=1, callbacks=[recorder], **limits, **options, **processes)


def run_group(data: str, out: Path, process_id: int, port: int, die_at_step: int | None) -> None:
    keras.utils.set_random_seed(SEED)
    recorder = WeightRecorder(out / f"process{process_id}.npy", die_at_step)
    group = {"num_processes": 2, "process_id": process_id, "coordinator": f"127.0.0.1:{port}", "peer_timeout_s": 5}
    fitter = trainer(recorder, **group)
    data_module = datamodule(data)
    fitter.fit(classifier(), data_module)
    shard = data_module.files(data_module.training_split)
    rows = (f"{path}\t{int(label)}" for path, label in zip(shard.paths, shard.labels, strict=True))
    (out / f"shard{process_id}.txt").write_text("\n".join(rows))


def run_union(data: str, out: Path) -> None:
    """The reference: one process, each global batch made of shard 0's local batch then shard 1's."""
    keras.utils.set_random_seed(SEED)
    shards = []
    for process_id in range(2):
        module = datamodule(data)
        module.setup()
        module.shard_training(process_id, 2)
        shards.append(module.train_dataloader())
    union = tf.data.Dataset.zip(*shards).map(lambda a, b: (tf.concat([a[0], b[0]], 0), tf.concat([a[1], b[1]], 0)))
    model = classifier()
    recorder = WeightRecorder(out / "union.npy")
    fitter = trainer(recorder)
    fitter.build(model)
    net = model.compile(**fitter.compile_options)
    fitter._build_metrics_apart_from_the_stream(net, 8)  # as Trainer.fit does before fitting
    net.fit(union.take(STEPS), epochs=1, steps_per_epoch=STEPS, callbacks=[recorder], verbose=0, shuffle=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["group", "union"])
    parser.add_argument("data")
    parser.add_argument("out", type=Path)
    parser.add_argument("process_id", type=int, nargs="?")
    parser.add_argument("port", type=int, nargs="?")
    parser.add_argument("--die-at-step", type=int)
    args = parser.parse_args()
    if args.mode == "group":
        run_group(args.data, args.out, args.process_id, args.port, args.die_at_step)
    else:
        run_union(args.data, args.out)


if __name__ == "__main__":
    main()
