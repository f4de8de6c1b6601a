"""fracture on a GPU with JAX and without TensorFlow: speeds, matmul fractions, and a checkpoint to bring back.

For a machine that has JAX with CUDA, but neither TensorFlow nor network access, where only small pure-Python
wheels can be brought along: it imports JAX, numpy, Keras with its own dependencies, and fracture's `models`
package, which imports nothing beyond Keras (Hydra is not needed). It uses what runs without TensorFlow: the
classifier, its loss and metrics, and checkpoints (`fracture.models`), fed from arrays in memory. What it does
not use, because it needs TensorFlow: the data module (its `tf.data` stream, the decode cache), the `Trainer`
with the feature cache, evaluation, and export. Run it there with

    KERAS_BACKEND=jax python benchmarks/gpu_check.py --out gpu_check

(not yet timed on a GPU: each figure is `--calls` timed calls after two untimed ones, which compile).

For each precision policy (float32, mixed_float16, mixed_bfloat16) on EfficientNetB3 (random weights, the
notebook's head, base frozen) it times: a training step with the frozen base (uncached), a step of the head
on pooled features (what the feature cache trains), the backbone's forward pass, and prediction; and it gives
the backbone's FLOP rate as a fraction of this device's matmul rate in that precision (measured here).
It then writes `tiny_gpu.keras` (a tiny CNN, float32, with fracture's checkpoint metadata), the images it
was given and what it predicted for them, with matmuls at full float32 precision; bring the folder back and run

    python benchmarks/gpu_check.py --verify gpu_check                       # on a CPU: both backends

which loads the checkpoint on TensorFlow and on JAX and compares their predictions with the GPU's.
`gpu_check.json` holds every figure.
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
EFFICIENTNET_B3_GFLOP = 1.98  # per 224 px image, forward (fracture.benchmarking.report)
# The GPU's predictions are made with float32 matmuls at full precision, so a CPU's differ by float32 reordering
# through a few layers (about 1e-7); the export's parity check allows 1e-4, and so does this one.
TOLERANCE = 1e-4


class NoTensorFlow(importlib.abc.MetaPathFinder):
    """Refuses to import TensorFlow, to prove on a machine that has it that this script does not need it."""

    def find_spec(self, name, path, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"{name} is not available here (gpu_check.py --no-tensorflow)", name=name)
        return None


def timed_per_call(function, calls: int) -> float:
    """Seconds per call of `function` over `calls` calls, after two not counted; waits for the device."""
    import jax

    for _ in range(2):
        jax.block_until_ready(function())
    started = time.perf_counter()
    for _ in range(calls):
        result = function()
    jax.block_until_ready(result)
    return (time.perf_counter() - started) / calls


def matmul_tflops(dtype: str, size: int) -> float:
    """This device's matmul rate in `dtype` (float32 at JAX's default precision, which may use TF32)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), dtype)
    multiply = jax.jit(lambda x: x @ x)
    return 2 * size**3 / timed_per_call(lambda: multiply(a), 10) / 1e12


def policy_figures(policy: str, image_size: int, batch: int, calls: int) -> dict:
    import keras

    from fracture import FractureClassifier
    from fracture.models.head import split_at_head

    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    classifier = FractureClassifier(weights=None, image_size=image_size, freeze_base=True)
    model = classifier.compile(jit_compile=True)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, image_size, image_size, 3)).astype(np.float32)
    labels = rng.integers(0, 2, (batch, 1)).astype(np.float32)
    backbone, head = split_at_head(model)
    classifier.compile(jit_compile=True, model=head)
    features = np.asarray(backbone.predict_on_batch(images))
    seconds = {
        "frozen_base_step": timed_per_call(lambda: model.train_on_batch(images, labels), calls),
        "head_step": timed_per_call(lambda: head.train_on_batch(features, labels), calls),
        "backbone_forward": timed_per_call(lambda: backbone.predict_on_batch(images), calls),
        "predict": timed_per_call(lambda: model.predict_on_batch(images), calls),
    }
    figures = {f"{name}_img_s": batch / value for name, value in seconds.items()}
    figures["predict_single_ms"] = 1000 * timed_per_call(lambda: model.predict_on_batch(images[:1]), calls)
    gflop = EFFICIENTNET_B3_GFLOP * (image_size / 224) ** 2
    figures["backbone_tflops"] = figures["backbone_forward_img_s"] * gflop / 1000
    keras.config.set_dtype_policy("float32")
    return figures


def write_tiny_checkpoint(out: Path) -> dict:
    """A tiny float32 classifier, its inputs and its predictions at full float32 matmul precision."""
    import jax
    import keras

    from fracture import FractureClassifier
    from fracture.models.checkpoint import save_checkpoint
    from fracture.models.schema import CheckpointMetadata

    keras.utils.set_random_seed(1)
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)
    model = classifier.compile()
    images = np.random.default_rng(1).uniform(0, 255, (16, 64, 64, 3)).astype(np.float32)
    labels = (np.arange(16) % 2).reshape(-1, 1).astype(np.float32)
    model.fit(images, labels, epochs=2, batch_size=8, verbose=0)  # weights that are not the initial ones
    metadata = CheckpointMetadata(
        "fractured", "not fractured", 64, classifier.hparams(), keras.backend.backend(), keras.__version__
    )
    save_checkpoint(model, out / "tiny_gpu.keras", metadata)
    with jax.default_matmul_precision("highest"):
        predictions = np.asarray(model.predict_on_batch(images), np.float64).reshape(-1)
    np.save(out / "tiny_gpu_images.npy", images)
    np.save(out / "tiny_gpu_predictions.npy", predictions)
    return {"checkpoint": "tiny_gpu.keras", "images": len(images)}


def measure(out: Path, image_size: int, batch: int, calls: int) -> dict:
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    size = 8192 if on_gpu else 1024
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "device": f"{device.platform}: {getattr(device, 'device_kind', device)}",
        "jax": jax.__version__,
        "keras": keras.__version__,
        "tensorflow_imported": "tensorflow" in sys.modules,
        "image_size": image_size,
        "batch": batch,
        "matmul_tflops": {dtype: matmul_tflops(dtype, size) for dtype in ("float32", "float16", "bfloat16")},
        "policies": {},
    }
    for policy in POLICIES:
        print(f"gpu_check: {policy} ...", flush=True)
        figures = policy_figures(policy, image_size, batch, calls)
        compute = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
        figures["matmul_fraction"] = figures["backbone_tflops"] / report["matmul_tflops"][compute]
        report["policies"][policy] = figures
    report["tiny"] = write_tiny_checkpoint(out)
    report["tensorflow_imported"] = "tensorflow" in sys.modules
    return report


def verify(folder: Path) -> dict:
    """Predict the GPU's images with its checkpoint on TensorFlow and JAX, each in a fresh process."""
    code = (
        "import sys, numpy as np; from fracture.models.checkpoint import load_checkpoint; "
        "model, _ = load_checkpoint(sys.argv[1], compile=False); "
        "np.save(sys.argv[3], np.asarray(model.predict_on_batch(np.load(sys.argv[2])), np.float64).reshape(-1))"
    )
    expected = np.load(folder / "tiny_gpu_predictions.npy")
    differences = {}
    for backend in ("tensorflow", "jax"):
        target = folder / f"tiny_cpu_{backend}.npy"
        arguments = [str(folder / "tiny_gpu.keras"), str(folder / "tiny_gpu_images.npy"), str(target)]
        subprocess.run(
            [sys.executable, "-c", code, *arguments], env={**os.environ, "KERAS_BACKEND": backend}, check=True
        )
        differences[backend] = float(np.max(np.abs(np.load(target) - expected)))
    return differences


def print_report(report: dict) -> None:
    print(
        f"{report['device']}; JAX {report['jax']}, Keras {report['keras']}; TensorFlow imported: "
        f"{report['tensorflow_imported']}; {report['image_size']} px, batch {report['batch']}"
    )
    rates = ", ".join(f"{dtype} {value:.1f}" for dtype, value in report["matmul_tflops"].items())
    print(f"matmul TFLOP/s: {rates}")
    for policy, figures in report["policies"].items():
        print(
            f"{policy:15s} frozen-base step {figures['frozen_base_step_img_s']:8.1f} img/s | head step "
            f"{figures['head_step_img_s']:10.0f} img/s | backbone {figures['backbone_forward_img_s']:8.1f} img/s "
            f"({figures['matmul_fraction']:.0%} of matmul) | predict {figures['predict_img_s']:8.1f} img/s, "
            f"one image {figures['predict_single_ms']:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--verify", type=Path, help="a folder written by a GPU run: compare on this CPU")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per figure")
    parser.add_argument("--no-tensorflow", action="store_true", help="refuse to import TensorFlow (for a test)")
    args = parser.parse_args()
    if args.verify:
        differences = verify(args.verify)
        print(f"largest difference from the GPU's predictions: {differences} (tolerance {TOLERANCE})")
        raise SystemExit(0 if all(value <= TOLERANCE for value in differences.values()) else 1)
    if args.no_tensorflow:
        sys.meta_path.insert(0, NoTensorFlow())
    args.out.mkdir(parents=True, exist_ok=True)
    report = measure(args.out, args.image_size, args.batch, args.calls)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print_report(report)


if __name__ == "__main__":
    main()
