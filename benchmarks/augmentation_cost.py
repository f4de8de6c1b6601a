"""What the notebook's augmentation costs per image: Keras 3's layers against fracture's one resampling.

    python benchmarks/augmentation_cost.py [--image-size 224] [--batch 32] [--repeats 20]

Both augment the same float32 batches with the same settings (flip, rotation 20 degrees, zoom 0.2, nearest
fill) inside `tf.data`, as training does: Keras' `RandomFlip`, `RandomRotation` and `RandomZoom` in a
`keras.layers.Pipeline` (what fracture used before 2026-12-04, and what the plain port uses), and
`fracture.data.augmentation.Augmentation`. It prints wall and CPU milliseconds per image and their ratios,
measured side by side in one run; on a machine with several cores, CPU time is what the backbone loses.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from fracture.data.augmentation import Augmentation


def keras_layers(seed: int) -> keras.layers.Pipeline:
    layers = keras.layers
    return layers.Pipeline(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(20 / 360, fill_mode="nearest", seed=seed),
            layers.RandomZoom(0.2, fill_mode="nearest", seed=seed),
        ]
    )


def per_image_ms(dataset: tf.data.Dataset, images: int) -> tuple[float, float]:
    """(wall, CPU) milliseconds per image to run through `dataset` once, after a first batch not counted."""
    iterator = iter(dataset)
    next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in iterator:
        pass
    return 1000 * (time.perf_counter() - wall) / images, 1000 * (time.process_time() - cpu) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    shape = (args.batch, args.image_size, args.image_size, 3)
    batch = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    batches = tf.data.Dataset.from_tensors(batch).repeat(args.repeats + 1)
    counted = args.repeats * args.batch
    pipeline, ours = keras_layers(seed=0), Augmentation(seed=0)
    rows = {
        "keras layers (flip, rotation, zoom)": batches.map(lambda images: pipeline(images, training=True)),
        "fracture Augmentation (one warpAffine)": tf.data.Dataset.zip(batches, ours.seeds()).map(ours.tf_apply),
    }
    figures = {name: per_image_ms(dataset, counted) for name, dataset in rows.items()}
    base_wall, base_cpu = next(iter(figures.values()))
    print(f"{counted} images of {args.image_size} px in batches of {args.batch}")
    for name, (wall, cpu) in figures.items():
        print(
            f"{name:40s} wall {wall:6.3f} ms/img  CPU {cpu:6.3f} ms/img  "
            f"(keras / this: wall {base_wall / wall:5.1f}x, CPU {base_cpu / cpu:5.1f}x)"
        )


if __name__ == "__main__":
    main()
