"""A model's inference pass with its weights frozen into the graph, for repeated prediction on TensorFlow.

Keras runs inference on variables, which keeps TensorFlow's graph optimiser (Grappler) from folding each
BatchNormalization into the convolution before it and fusing the activations after. Turning the weights
into constants lets it. Measured on a 2-core CPU for EfficientNetB3 at 224 px: a single image in 38 ms
against 52 ms with `predict_on_batch`, batches of 32 at 43 img/s against 28. Freezing costs about 3 s once,
so it pays for warm use (a service, the feature cache's extraction), not for one cold prediction.
On JAX, `predict_on_batch` is already one compiled XLA program and is used as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np


def frozen_inference(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """`model(x, training=False)` as a function of a float32 batch, frozen on TensorFlow (see the module).

    The function keeps the weights the model has now: rebuild it after they change.
    """
    if keras.backend.backend() != "tensorflow":
        return lambda batch: np.asarray(model.predict_on_batch(batch))
    import tensorflow as tf

    # Not in TensorFlow's public API, but the converter that SavedModel-to-TFLite and tf2onnx are built on.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    forward = tf.function(lambda batch: model(batch, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(forward)

    def run(batch: np.ndarray) -> np.ndarray:
        return frozen(tf.constant(batch, tf.float32))[0].numpy()

    return run
