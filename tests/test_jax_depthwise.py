"""The tap-sum depthwise convolution computes what XLA's grouped convolution computes, forward and backward,
and Keras' JAX layers use it once enabled (in a fresh JAX process); on TensorFlow enabling it does nothing, and
where Keras has moved the function it replaces, enabling warns and changes nothing."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from conftest import run_python

from fracture.jax_depthwise import depthwise_conv_by_taps, enable_fast_depthwise_conv


def grouped_conv(inputs, kernel, strides, padding):
    """The reference: XLA's convolution with one group per channel, as Keras' JAX backend calls it."""
    return jax.lax.conv_general_dilated(
        inputs,
        kernel,
        (strides, strides),
        padding.upper(),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=inputs.shape[-1],
    )


@pytest.mark.parametrize(
    "size, kernel_size, strides, padding",
    [(9, 3, 1, "same"), (8, 3, 2, "same"), (9, 5, 2, "same"), (10, 5, 1, "valid"), (11, 3, 2, "valid")],
)
def test_taps_match_the_grouped_convolution_forward_and_backward(size, kernel_size, strides, padding):
    rng = np.random.default_rng(size + kernel_size)
    inputs = jnp.asarray(rng.normal(size=(2, size, size, 6)), "float32")
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 6, 1)), "float32")

    def reference(x, k):
        return grouped_conv(x, k.reshape(kernel_size, kernel_size, 1, 6), strides, padding)

    def taps(x, k):
        return depthwise_conv_by_taps(x, k, strides, padding)

    got = taps(inputs, kernel)
    assert got.shape == reference(inputs, kernel).shape
    np.testing.assert_allclose(got, reference(inputs, kernel), rtol=1e-5, atol=1e-5)

    # The same gradients for the inputs and the kernel, for fine-tuning through the backbone.
    def loss(conv):
        return lambda x, k: jnp.sum(jnp.sin(conv(x, k)))

    got_grads = jax.grad(loss(taps), (0, 1))(inputs, kernel)
    expected_grads = jax.grad(loss(reference), (0, 1))(inputs, kernel)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-4, atol=1e-4)


KERAS_LAYERS_ON_JAX = """
import numpy as np, keras
import fracture.jax_depthwise as fast
inputs = keras.Input((15, 15, 4))
x = keras.layers.DepthwiseConv2D(3, padding="same")(inputs)
x = keras.layers.DepthwiseConv2D(5, strides=2, padding="valid")(x)
x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)  # not covered: Keras' own
model = keras.Model(inputs, x)
images = np.random.default_rng(0).normal(size=(3, 15, 15, 4)).astype("float32")
before = np.asarray(model.predict(images, verbose=0))
calls = []
taps = fast.depthwise_conv_by_taps
fast.depthwise_conv_by_taps = lambda *args: calls.append(args[1].shape) or taps(*args)
assert fast.enable_fast_depthwise_conv()
after = np.asarray(keras.Model(inputs, x).predict(images, verbose=0))  # a new model: a newly traced step
np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
assert [tuple(shape) for shape in calls] == [(3, 3, 4, 1), (5, 5, 4, 1)], calls
assert not fast.enable_fast_depthwise_conv(False)
from keras.src.backend.jax import nn
assert nn.depthwise_conv is fast._keras_depthwise_conv
# A Keras release without that private function: a warning, and XLA's own convolution.
import warnings
del nn.depthwise_conv
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert fast.enable_fast_depthwise_conv() is False
assert any("XLA's own is used" in str(w.message) for w in caught), caught
print("OK")
"""


def test_keras_layers_on_jax_use_the_taps_where_they_apply(tmp_path):
    assert "OK" in run_python(KERAS_LAYERS_ON_JAX, backend="jax").stdout


def test_enabling_is_a_no_op_on_tensorflow():
    assert keras.backend.backend() == "tensorflow"
    assert enable_fast_depthwise_conv() is False
