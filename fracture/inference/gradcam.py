"""Grad-CAM (Selvaraju et al., 2017) for the fracture probability, on any Keras backend.

The model is split at the target convolutional layer into `features` (image -> activations) and `head`
(activations -> probability). The heatmap weighs each activation channel by the mean gradient of the
probability with respect to it. Only taking that gradient differs between backends; everything else is
`keras.ops`.
"""

from __future__ import annotations

import difflib

import keras
import numpy as np
from keras import ops

from fracture.errors import ConfigError


def _gradient(head: keras.Model, activations):
    """d sum(head(activations)) / d activations, with the backend's own autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        activations = tf.convert_to_tensor(activations)
        with tf.GradientTape() as tape:
            tape.watch(activations)
            score = tf.reduce_sum(head(activations, training=False))
        return tape.gradient(score, activations)
    if backend == "jax":
        import jax

        return jax.grad(lambda a: head(a, training=False).sum())(activations)
    raise NotImplementedError(f"Grad-CAM supports the tensorflow and jax backends, not {backend}.")


class GradCAM:
    """Grad-CAM heatmaps for a fracture classifier.

    Args:
        model: the classifier (image in 0..255 -> P(fractured)).
        layer_name: the convolutional layer to explain; its output must be (B, h, w, C).
    """

    def __init__(self, model: keras.Model, layer_name: str):
        names = [layer.name for layer in model.layers]
        if layer_name not in names:
            close = difflib.get_close_matches(layer_name, names, n=3, cutoff=0.5)
            raise ConfigError(
                f"gradcam_layer={layer_name!r} is not a layer of this model"
                + (f"; did you mean {' or '.join(map(repr, close))}?" if close else "")
                + " Leave gradcam_layer=null for the backbone's last convolutional activation."
            )
        target = model.get_layer(layer_name).output
        self.features = keras.Model(model.inputs[0], target)
        self.head = keras.Model(target, model.outputs[0])

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps in 0..1 at the layer's resolution, shape (B, h, w), and the probabilities, shape (B,)."""
        activations = self.features(ops.convert_to_tensor(images, dtype="float32"), training=False)
        gradients = _gradient(self.head, activations)
        weights = ops.mean(gradients, axis=(1, 2), keepdims=True)
        cam = ops.relu(ops.sum(weights * activations, axis=-1))
        peak = ops.max(cam, axis=(1, 2), keepdims=True)
        cam = ops.where(peak > 0, cam / ops.maximum(peak, 1e-12), ops.zeros_like(cam))
        probabilities = self.head(activations, training=False)
        return ops.convert_to_numpy(cam), ops.convert_to_numpy(probabilities).reshape(-1)
