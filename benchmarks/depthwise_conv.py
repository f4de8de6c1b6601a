"""Why EfficientNetB3 is slow on JAX on a CPU: depthwise against pointwise convolutions, per backend.

    python benchmarks/depthwise_conv.py

Times one compiled `DepthwiseConv2D` and one 1x1 `Conv2D` on activation shapes from EfficientNetB3 at
224 px, batch 16, on TensorFlow, on JAX with XLA's grouped convolution, and on JAX with fracture's tap-sum
depthwise convolution (`fracture.jax_depthwise`), each in its own subprocess, and prints the ratios to
TensorFlow. EfficientNet's MBConv blocks are built around depthwise convolutions, so a slow depthwise kernel
slows the whole network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SHAPES = [((16, 112, 112, 144), 3, 1), ((16, 56, 56, 192), 5, 2), ((16, 28, 28, 288), 3, 1), ((16, 14, 14, 816), 5, 1)]

WORKER = r"""
import json, sys, time
import numpy as np, keras
from fracture.jax_depthwise import enable_fast_depthwise_conv
shapes = json.loads(sys.argv[1])
enable_fast_depthwise_conv(sys.argv[2] == "taps")
results = []
for shape, kernel, stride in shapes:
    x = np.random.default_rng(0).random(shape).astype("float32")
    for name, layer in (("depthwise", keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same")),
                        ("pointwise", keras.layers.Conv2D(shape[-1], 1))):
        layer(x)
        if keras.backend.backend() == "jax":
            import jax
            step = jax.jit(lambda v: layer(v))
            run = lambda: step(x).block_until_ready()
        else:
            import tensorflow as tf
            step = tf.function(lambda v: layer(v))
            run = lambda: step(x).numpy()
        run()
        started = time.perf_counter()
        for _ in range(5):
            run()
        results.append((name, shape, kernel, (time.perf_counter() - started) / 5 * 1000))
print("RESULT " + json.dumps(results))
"""


def measure(backend: str, depthwise: str = "xla") -> list:
    env = {**os.environ, "KERAS_BACKEND": backend}
    command = [sys.executable, "-W", "ignore", "-c", WORKER, json.dumps(SHAPES), depthwise]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    runs = measure("tensorflow"), measure("jax", "xla"), measure("jax", "taps")
    header = ("layer", "input shape", "k", "TF ms", "JAX ms", "JAX/TF", "taps ms", "taps/TF")
    print("{:10} {:22} {:>2} {:>8} {:>8} {:>7} {:>8} {:>7}".format(*header))
    for (name, shape, kernel, tf_ms), (*_, jax_ms), (*_, taps_ms) in zip(*runs, strict=True):
        row = f"{name:10} {str(tuple(shape)):22} {kernel:>2} {tf_ms:8.1f} {jax_ms:8.1f} {jax_ms / tf_ms:7.1f}"
        print(f"{row} {taps_ms:8.1f} {taps_ms / tf_ms:7.1f}")


if __name__ == "__main__":
    main()
