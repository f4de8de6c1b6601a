"""Grad-CAM (Selvaraju et al., 2017) and Grad-CAM++ (Chattopadhyay et al., 2018) for the fracture
probability, on any Keras backend.

The model is split at the target convolutional layer into `features` (image -> activations) and `head`
(activations -> probability). The heatmap is the ReLU of the activation channels weighed by the gradient of
the probability: Grad-CAM weighs each channel by its mean gradient; Grad-CAM++ by a sum of its positive
gradients weighted per position (the closed form for an exponential score, with the second and third
derivatives as powers of the first), which spreads the map over several instances of a class instead of
the strongest one. Only taking the gradient differs between backends; everything else is `keras.ops`.
"""

from __future__ import annotations

import difflib

import keras
import numpy as np
from keras import ops

from fracture.errors import ConfigError

METHODS = ("gradcam", "gradcam_pp")


def channel_weights(gradients, activations, method: str):
    """(B, 1, 1, C) weights of the activation channels for `method`."""
    if method == "gradcam":
        return ops.mean(gradients, axis=(1, 2), keepdims=True)
    squared, cubed = gradients**2, gradients**3
    total = ops.sum(activations, axis=(1, 2), keepdims=True)
    denominator = 2.0 * squared + total * cubed
    alpha = squared / ops.where(denominator != 0, denominator, ops.ones_like(denominator))
    return ops.sum(alpha * ops.relu(gradients), axis=(1, 2), keepdims=True)


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
    """Grad-CAM (or Grad-CAM++) heatmaps for a fracture classifier.

    Args:
        model: the classifier (image in 0..255 -> P(fractured)).
        layer_name: the convolutional layer to explain; its output must be (B, h, w, C).
        method: `gradcam` or `gradcam_pp` (`METHODS`).
    """

    def __init__(self, model: keras.Model, layer_name: str, method: str = "gradcam"):
        if method not in METHODS:
            raise ConfigError(f"explanation method must be one of {METHODS}, got {method!r}.")
        self.method = method
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
        weights = channel_weights(gradients, activations, self.method)
        cam = ops.relu(ops.sum(weights * activations, axis=-1))
        peak = ops.max(cam, axis=(1, 2), keepdims=True)
        cam = ops.where(peak > 0, cam / ops.maximum(peak, 1e-12), ops.zeros_like(cam))
        probabilities = self.head(activations, training=False)
        return ops.convert_to_numpy(cam), ops.convert_to_numpy(probabilities).reshape(-1)
