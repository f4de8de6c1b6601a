"""Write a Keras model as a SavedModel, an ONNX file or a TFLite flatbuffer, with Keras' own `model.export`.

Keras picks the converter for each backend and format: on TensorFlow, tf2onnx for ONNX and the TFLite
converter; on JAX, jax2tf for SavedModel and jax2onnx for ONNX. TFLite from JAX fails inside the TFLite
converter (jax2tf's uint32 random-seed variables), so that pair is refused up front with the way round it.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import keras
import numpy as np

from fracture.errors import ExportError

# format -> (file or folder name in the export folder, `model.export` format)
FORMATS = {
    "saved_model": ("saved_model", "tf_saved_model"),
    "onnx": ("model.onnx", "onnx"),
    "tflite": ("model.tflite", "litert"),
}
SUPPORTED = {
    "tensorflow": {"saved_model", "onnx", "tflite"},
    "jax": {"saved_model", "onnx"},
}


def parse_formats(requested: str | list[str], backend: str | None = None) -> tuple[list[str], list[str]]:
    """`"all"`, one format name or a list of them -> (formats to write, formats left out), in a fixed order.

    `"all"` means every format that this backend can export; the others are returned as left out.
    """
    backend = backend or keras.backend.backend()
    names = [requested] if isinstance(requested, str) else list(requested)
    if "all" in names:
        able = SUPPORTED.get(backend, set())
        return [name for name in FORMATS if name in able], [name for name in FORMATS if name not in able]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not names:
        raise ExportError(f"unknown export format {unknown or names}; choose from all, {', '.join(FORMATS)}.")
    return [name for name in FORMATS if name in names], []


def check_backend(formats: list[str], backend: str | None = None) -> None:
    """Refuse a format that this Keras backend cannot export, naming the backend that can."""
    backend = backend or keras.backend.backend()
    for name in formats:
        if name not in SUPPORTED.get(backend, set()):
            able = sorted(b for b, names in SUPPORTED.items() if name in names)
            raise ExportError(
                f"the {backend} backend cannot export {name}; run with KERAS_BACKEND={' or '.join(able)} "
                "(the .keras checkpoint loads on either backend)."
            )


@contextlib.contextmanager
def constants_as_variables(model: keras.Model):
    """Hold each Normalization layer's mean and variance in variables while tf2onnx converts the model.

    Keras keeps them as eager tensors that the traced function captures; tf2onnx turns captured tensors into
    extra graph inputs (EfficientNetB3's `normalization/Sub/y:0`), so ONNX Runtime would ask the caller for
    them. Variables are frozen into constants instead. The layers get their tensors back afterwards.
    """
    import tensorflow as tf

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Normalization)]
    saved = [(layer.mean, layer.variance) for layer in layers]
    try:
        for layer in layers:
            layer.mean = tf.Variable(layer.mean, trainable=False)
            layer.variance = tf.Variable(layer.variance, trainable=False)
        yield
    finally:
        for layer, (mean, variance) in zip(layers, saved, strict=True):
            layer.mean, layer.variance = mean, variance


def export_one(model: keras.Model, name: str, folder: Path) -> Path:
    """Export `model` in format `name` into `folder`; returns the artifact's path."""
    artifact_name, keras_format = FORMATS[name]
    target = folder / artifact_name
    through_tf2onnx = name == "onnx" and keras.backend.backend() == "tensorflow"
    try:
        with (
            constants_as_variables(model) if through_tf2onnx else contextlib.nullcontext(),
            contextlib.redirect_stdout(io.StringIO()),  # converters print progress we do not need
        ):
            model.export(str(target), format=keras_format, verbose=False)
    except ImportError as error:
        raise ExportError(f"exporting {name} needs the export extra ({error}): pip install 'fracture[export]'.") from (
            error
        )
    except Exception as error:  # converters raise many types; name the format and the cause
        raise ExportError(f"exporting {name} on {keras.backend.backend()} failed: {error}") from error
    return target


def export_formats(model: keras.Model, formats: list[str], folder: str | Path) -> dict[str, Path]:
    """Export `model` to every format in `formats` under `folder`: {format: artifact path}."""
    check_backend(formats)
    model(np.zeros((1, *model.input_shape[1:]), "float32"))  # Keras' ONNX export refuses a model never called
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: export_one(model, name, folder) for name in formats}
