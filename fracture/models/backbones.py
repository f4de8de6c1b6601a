"""Feature extractors: EfficientNetB3 from `keras.applications`, and a tiny CNN for tests and demos.

Each builder takes the model's input tensor and returns the backbone's last feature map. Building the
backbone on the caller's input tensor keeps its layers inline in one functional model, so the saved `.keras`
file holds only built-in layers and a layer such as `top_activation` stays reachable for Grad-CAM.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import keras

from fracture.errors import WeightsError
from fracture.io import atomic_path

EFFNET_WEIGHTS_FILE = "efficientnetb3_notop.h5"
# The last convolutional activation of each backbone: the default Grad-CAM target.
LAST_CONV_LAYER = {"efficientnet_b3": "top_activation", "tiny_cnn": "tiny_conv3_relu"}


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights (`$KERAS_HOME/models`, by default `~/.keras/models`)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def _place_local_weights(path: Path) -> None:
    """Copy a local ImageNet weights file into the Keras cache, where `keras.applications` looks first.

    Passing the path to `EfficientNetB3(weights=path)` would load the values but skip the extra ImageNet
    rescaling layer that Keras adds only for `weights="imagenet"`, silently mis-normalising the input.
    """
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path}. Set model.weights to imagenet, null or an existing {EFFNET_WEIGHTS_FILE}."
        )
    target = keras_cache_dir() / EFFNET_WEIGHTS_FILE
    if target.resolve() != path.resolve():
        with atomic_path(target) as staging:
            shutil.copyfile(path, staging)


def efficientnet_b3(inputs: keras.KerasTensor, weights: str | None = "imagenet") -> keras.KerasTensor:
    """EfficientNetB3 without its top, on `inputs` (float pixels in 0..255).

    Args:
        weights: `"imagenet"` (downloaded once and cached by Keras), None for random initialisation, or the
            path of a local `efficientnetb3_notop.h5`.
    """
    if weights not in (None, "imagenet"):
        _place_local_weights(Path(weights).expanduser())
        weights = "imagenet"
    try:
        backbone = keras.applications.EfficientNetB3(include_top=False, weights=weights, input_tensor=inputs)
    except Exception as error:  # Keras raises a bare Exception when the download fails
        if weights != "imagenet":
            raise
        raise WeightsError(
            f"could not load the ImageNet weights for EfficientNetB3 ({error}). Ways forward: "
            f"model.weights=null to train from random weights; model.weights=/path/to/{EFFNET_WEIGHTS_FILE} "
            f"for a local copy (it must be the official file); or put that file in {keras_cache_dir()}."
        ) from error
    return backbone.output


def tiny_cnn(inputs: keras.KerasTensor, weights: str | None = None, width: int = 16) -> keras.KerasTensor:
    """Three conv blocks: seconds to build and train on a CPU, for tests and the offline demo."""
    if weights is not None:
        warnings.warn("the tiny CNN has no pretrained weights; model.weights is ignored", stacklevel=2)
    x = keras.layers.Rescaling(1.0 / 255.0, name="tiny_rescale")(inputs)
    for block, filters in enumerate((width, width * 2, width * 4), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"tiny_conv{block}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"tiny_conv{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"tiny_conv{block}_relu")(x)
    return x


BACKBONES = {"efficientnet_b3": efficientnet_b3, "tiny_cnn": tiny_cnn}
