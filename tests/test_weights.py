"""Pretrained weights: clear errors when ImageNet weights cannot be had, and local files are checked."""

import os
import subprocess
import sys

import pytest

from fracture.errors import WeightsError
from fracture.models.backbones import efficientnet_b3

OFFLINE_BUILD = """
import keras
from fracture import FractureClassifier, WeightsError
try:
    FractureClassifier("efficientnet_b3", weights="imagenet", image_size=32).configure_model()
except WeightsError as error:
    print("WEIGHTS-ERROR:", error)
"""


def test_offline_imagenet_download_names_the_ways_forward(tmp_path):
    # An empty Keras cache and a proxy that refuses connections make the download fail, as offline.
    env = {
        **os.environ,
        "KERAS_HOME": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
    result = subprocess.run([sys.executable, "-c", OFFLINE_BUILD], env=env, capture_output=True, text=True, timeout=300)
    assert "WEIGHTS-ERROR:" in result.stdout, result.stderr[-2000:]
    message = result.stdout.split("WEIGHTS-ERROR:", 1)[1]
    assert "model.weights=null" in message
    assert "efficientnetb3_notop.h5" in message
    assert str(tmp_path / "models") in message


def test_missing_local_weights_file(tmp_path):
    import keras

    with pytest.raises(WeightsError, match="weights file not found"):
        efficientnet_b3(keras.Input((32, 32, 3)), weights=str(tmp_path / "nope.h5"))
