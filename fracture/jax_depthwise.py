"""A faster depthwise convolution for Keras on JAX on a CPU.

EfficientNetB3 is built around depthwise convolutions. On a CPU, XLA runs them as grouped convolutions
(`feature_group_count` = channels), which it does not vectorise well. Written instead as a sum over the
kernel's taps, each an element-wise product of a strided slice of the padded input with one weight per
channel, the same convolution is a chain of element-wise operations that XLA fuses and vectorises. Measured
on a 2-core CPU (`benchmarks/backend_throughput.py`, EfficientNetB3, batch 16): JAX trained the frozen base
at 5.0 img/s with XLA's grouped convolution and at 25.2 img/s with the tap sums (TensorFlow: 40.7).

`enable_fast_depthwise_conv()` routes Keras' JAX depthwise convolution through that sum, in this process,
for the common case (channels last, two spatial dimensions, depth multiplier 1, no dilation); any other call
goes to Keras' own. It changes how the convolution is computed, not what: outputs agree with XLA's to float32
rounding, and so do their gradients (tests/test_jax_depthwise.py); saved models are unchanged. It does
nothing on TensorFlow, nor when JAX runs on a GPU, which keeps XLA's own (cuDNN has depthwise kernels of its
own; not measured here).
"""

from __future__ import annotations

import warnings

import keras

_keras_depthwise_conv = None  # Keras' own function, kept while ours is installed


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def depthwise_conv_by_taps(inputs, kernel, strides=1, padding="valid"):
    """Depthwise convolution of NHWC `inputs` with a `(kh, kw, channels, 1)` kernel as a sum of shifted
    products; "same" padding puts the odd pixel at the end, as XLA and TensorFlow do."""
    import jax
    import jax.numpy as jnp

    stride_h, stride_w = _pair(strides)
    kernel_h, kernel_w = kernel.shape[:2]
    batch, height, width, channels = inputs.shape
    if padding.lower() == "same":
        out_h, out_w = -(-height // stride_h), -(-width // stride_w)
        pad_h = max((out_h - 1) * stride_h + kernel_h - height, 0)
        pad_w = max((out_w - 1) * stride_w + kernel_w - width, 0)
        inputs = jnp.pad(inputs, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        out_h, out_w = (height - kernel_h) // stride_h + 1, (width - kernel_w) // stride_w + 1
    total = None
    for i in range(kernel_h):
        for j in range(kernel_w):
            end = (batch, i + (out_h - 1) * stride_h + 1, j + (out_w - 1) * stride_w + 1, channels)
            tap = jax.lax.slice(inputs, (0, i, j, 0), end, (1, stride_h, stride_w, 1)) * kernel[i, j, :, 0]
            total = tap if total is None else total + tap
    return total


def _depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """Keras' `depthwise_conv` signature; the taps for the case they cover, Keras' own otherwise."""
    inputs, kernel = keras.ops.convert_to_tensor(inputs), keras.ops.convert_to_tensor(kernel)
    channels_last = (data_format or keras.config.image_data_format()) == "channels_last"
    if channels_last and inputs.ndim == 4 and kernel.shape[-1] == 1 and _pair(dilation_rate) == (1, 1):
        return depthwise_conv_by_taps(inputs, kernel, strides, padding)
    return _keras_depthwise_conv(inputs, kernel, strides, padding, data_format, dilation_rate)


def enable_fast_depthwise_conv(enabled: bool = True) -> bool:
    """Install (or, with `enabled=False`, remove) the tap-sum depthwise convolution for this process.

    Only on the JAX backend running on a CPU; call it before the first compiled step, since programs
    compiled earlier keep the convolution they were traced with. Returns whether it is installed.
    """
    global _keras_depthwise_conv
    if keras.backend.backend() != "jax" or not (enabled or _keras_depthwise_conv):
        return False  # not JAX, or nothing installed to remove
    import jax

    try:  # where Keras' ops find the JAX depthwise convolution: a private module, which a release may move
        from keras.src.backend.jax import nn as jax_nn

        current = jax_nn.depthwise_conv
    except (ImportError, AttributeError):
        warnings.warn("this Keras has no keras.src.backend.jax.nn.depthwise_conv; XLA's own is used", stacklevel=2)
        return False
    if _keras_depthwise_conv is None:
        _keras_depthwise_conv = current
    on = enabled and jax.default_backend() == "cpu"
    jax_nn.depthwise_conv = _depthwise_conv if on else _keras_depthwise_conv
    return on
