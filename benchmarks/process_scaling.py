"""Data parallel over processes on one machine, side by side in one run: 1 process x N threads against
N processes x 1 thread, on JAX.

    python benchmarks/process_scaling.py [--processes 2] [--image-size 224] [--out process_scaling.json]

Trains the notebook's EfficientNetB3 (random weights: speed does not depend on them, base frozen) on a synthetic
set through `fracture.Trainer`, timing each training step after the first epoch (which compiles), in two
modes: the uncached frozen-base step (the whole network runs, the head learns) and the head over cached
features (`trainer.feature_cache`), with fracture.train's tap-sum depthwise convolutions. The global batch is
the same in every row. Each layout runs as its own
processes with its thread pools held to its threads (`fracture.processes.thread_env`), and the coordinator on
127.0.0.1. Prints img/s per row and the ratio of N processes to 1, and writes them to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fracture.benchmarking.machine import processor_name

HERE = Path(__file__).resolve()
MODES = {"frozen-base step": False, "head over cached features": True}


def worker(args) -> None:
    """One training process: fit, and (process 0) write the median step time after the first epoch."""
    import keras
    import numpy as np

    from fracture import FractureClassifier, FractureDataModule, Trainer
    from fracture.jax_depthwise import enable_fast_depthwise_conv

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch, self.seconds = 0, []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch > 0:  # the first epoch compiles the step
                self.seconds.append(time.perf_counter() - self.began)

    keras.utils.set_random_seed(0)
    timer = StepTimer()
    group = {"num_processes": args.processes, "process_id": args.process_id, "coordinator": args.coordinator}
    if args.processes == 1:
        group = {}
    trainer = Trainer(
        epochs=args.epochs,
        callbacks=[timer],
        progress=False,
        feature_cache=args.cached,
        feature_cache_dir=None,
        **group,
    )
    # As fracture.train does on a JAX CPU (conf/backend: fast_depthwise_conv); after the Trainer, which joins
    # the distributed runtime before anything asks JAX for its backend.
    enable_fast_depthwise_conv(True)
    data = FractureDataModule(args.data, image_size=args.image_size, batch_size=args.batch_size, group_by=None)
    model = FractureClassifier(weights=None, image_size=args.image_size, freeze_base=True)
    trainer.fit(model, data)
    if args.process_id == 0:
        seconds = float(np.median(timer.seconds))
        result = {"step_s": seconds, "img_per_s": args.batch_size / seconds, "steps_timed": len(timer.seconds)}
        Path(args.result).write_text(json.dumps(result))


def run_layout(data: Path, processes: int, threads: int, cached: bool, args, scratch: Path) -> dict:
    from fracture.processes import free_loopback_port, thread_env

    result = scratch / f"p{processes}-{'cached' if cached else 'uncached'}.json"
    port = free_loopback_port()
    env = {**os.environ, **thread_env(threads), "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    epochs = args.head_epochs if cached else args.epochs
    common = [sys.executable, str(HERE), "--worker", "--data", str(data), "--result", str(result)]
    common += ["--processes", str(processes), "--coordinator", f"127.0.0.1:{port}", "--epochs", str(epochs)]
    common += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    common += ["--cached"] if cached else []
    started = time.perf_counter()
    with open(scratch / f"{result.stem}.log", "w") as log:
        workers = [
            subprocess.Popen([*common, "--process-id", str(rank)], env=env, stdout=log, stderr=subprocess.STDOUT)
            for rank in range(processes)
        ]
        codes = [worker.wait(timeout=args.timeout) for worker in workers]
    if any(codes):
        tail = (scratch / f"{result.stem}.log").read_text()[-3000:]
        raise SystemExit(f"a worker failed ({codes}):\n{tail}")
    return {**json.loads(result.read_text()), "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--per-class", type=int, default=48, help="training images per class")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the uncached rows (the first is not timed)")
    parser.add_argument("--head-epochs", type=int, default=20, help="epochs of the cached rows")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--out", type=Path, default=Path("process_scaling.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from fracture.data.synthetic import write_synthetic_dataset

    cpus = os.cpu_count() or 1
    threads = max(1, cpus // args.processes)
    print(f"processor: {processor_name()}; global batch {args.batch_size}, {args.image_size} px, EfficientNetB3 (JAX)")
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = write_synthetic_dataset(scratch / "data", args.per_class, 8, 1, image_size=args.image_size)
        for mode, cached in MODES.items():
            one = run_layout(data, 1, cpus, cached, args, scratch)
            many = run_layout(data, args.processes, threads, cached, args, scratch)
            ratio = many["img_per_s"] / one["img_per_s"]
            rows[mode] = {f"1x{cpus}": one, f"{args.processes}x{threads}": many, "ratio": ratio}
            print(
                f"{mode:27s} 1 process x {cpus} threads: {one['img_per_s']:8.1f} img/s | "
                f"{args.processes} processes x {threads} thread(s): {many['img_per_s']:8.1f} img/s | ratio {ratio:.2f}"
            )
    report = {"processor": processor_name(), "batch_size": args.batch_size, "image_size": args.image_size, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
