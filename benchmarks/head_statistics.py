"""How far the head's BatchNormalization statistics are from the clean activations it normalises at inference.

    python benchmarks/head_statistics.py <run>/checkpoints/best_model.keras <data root>

Prints, over the units of `head_dense`, the median ratio of the clean validation activations' variance to
`head_bn`'s moving variance, the median gap between their means (in moving standard deviations), and the
mean output per class with the validation ECE. A ratio far below 1 means inference divides by a spread that
training never saw, which squeezes the outputs together.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from fracture import FractureDataModule, load_checkpoint
from fracture.evaluation.metrics import expected_calibration_error


def main() -> None:
    ckpt, root = sys.argv[1], sys.argv[2]
    model, metadata = load_checkpoint(ckpt)
    datamodule = FractureDataModule(root, image_size=metadata["image_size"], batch_size=64, group_by=None)
    images = np.concatenate([batch.numpy() for batch, _ in datamodule.predict_dataloader("val")])
    labels = datamodule.files("val").labels
    activations = np.asarray(keras.Model(model.inputs, model.get_layer("head_dense").output).predict(images, verbose=0))
    norm = model.get_layer("head_bn")
    moving_mean, moving_var = np.asarray(norm.moving_mean), np.asarray(norm.moving_variance)
    ratio = np.median(activations.var(0) / moving_var)
    shift = np.median(np.abs(activations.mean(0) - moving_mean) / np.sqrt(moving_var))
    print(f"clean variance / moving variance, median over units: {ratio:.4f}; mean gap: {shift:.3f} moving std")
    outputs = np.asarray(model.predict(images, verbose=0)).reshape(-1)
    print(
        f"mean validation output: positive class {outputs[labels == 1].mean():.3f}, negative class "
        f"{outputs[labels == 0].mean():.3f}; validation ECE {expected_calibration_error(labels, outputs):.3f}"
    )


if __name__ == "__main__":
    main()
