"""Side-by-side CPU figures for EfficientNetB3 (frozen base, the notebook's head): model build time and
training / prediction throughput, per backend and precision, each measured in a fresh subprocess.

    python benchmarks/backend_throughput.py [--image-size 224] [--batch 16] [--steps 6]
        [--configs tensorflow:float32,tensorflow:mixed_bfloat16,jax:float32,jax:float32:cache,jax:float32:cache,
                   jax:float32:cache:taps]

Random weights and random pixels: speed does not depend on their values. The first step (tracing and
compiling) is timed separately from the steady-state steps. Ratios are against the first configuration.
A `:cache` suffix runs JAX with a persistent compilation cache in a fresh temporary folder shared by all
`:cache` runs of this invocation: the first such run fills it (cold), later ones read it (warm). A `:taps`
suffix runs JAX's depthwise convolutions as fracture's tap sums (`fracture.jax_depthwise`) instead of XLA's
grouped convolution.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

WORKER = r"""
import json, sys, time
import numpy as np
import keras
from fracture import FractureClassifier, Trainer, enable_compilation_cache, enable_fast_depthwise_conv
size, batch, steps, precision = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
enable_compilation_cache(sys.argv[5] or None)
enable_fast_depthwise_conv(sys.argv[6] == "taps")
trainer = Trainer(precision=precision, progress=False)
classifier = FractureClassifier("efficientnet_b3", weights=None, image_size=size, freeze_base=True)
started = time.perf_counter()
trainer.build(classifier)
build = time.perf_counter() - started
model = classifier.compile(jit_compile=trainer.jit_compile)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
y = rng.integers(0, 2, (batch, 1)).astype("float32")
started = time.perf_counter(); model.train_on_batch(x, y); first_train = time.perf_counter() - started
started = time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, y)
train = steps * batch / (time.perf_counter() - started)
model.predict_on_batch(x)
started = time.perf_counter()
for _ in range(steps):
    model.predict_on_batch(x)
predict = steps * batch / (time.perf_counter() - started)
print("RESULT " + json.dumps(dict(build_s=build, first_step_s=first_train, train_img_s=train, predict_img_s=predict,
                                  jit_compile=trainer.jit_compile)))
"""


def measure(backend: str, precision: str, cache_dir: str, depthwise: str, args) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend}
    worker_args = [str(args.image_size), str(args.batch), str(args.steps), precision, cache_dir, depthwise]
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", WORKER, *worker_args], env=env, capture_output=True, text=True
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{backend}/{precision} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument(
        "--configs",
        default="tensorflow:float32,tensorflow:mixed_bfloat16,jax:float32,jax:float32:cache,jax:float32:cache,"
        "jax:float32:cache:taps",
    )
    args = parser.parse_args()
    configs = args.configs.split(",")
    results = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for config in configs:
            backend, precision, *options = config.split(":")
            cache = cache_dir if "cache" in options else ""
            results.append((config, measure(backend, precision, cache, "taps" if "taps" in options else "xla", args)))
    base = results[0][1]
    print(f"EfficientNetB3, frozen base, {args.image_size} px, batch {args.batch}, {args.steps} timed steps, CPU")
    print(
        f"{'backend:precision':28} {'jit':>5} {'build s':>8} {'1st step s':>10} {'train img/s':>12} {'x':>6} "
        f"{'predict img/s':>14} {'x':>6}"
    )
    for config, r in results:
        print(
            f"{config:28} {str(r['jit_compile']):>5} {r['build_s']:8.1f} {r['first_step_s']:10.1f} "
            f"{r['train_img_s']:12.1f} {r['train_img_s'] / base['train_img_s']:6.2f} "
            f"{r['predict_img_s']:14.1f} {r['predict_img_s'] / base['predict_img_s']:6.2f}"
        )


if __name__ == "__main__":
    main()
