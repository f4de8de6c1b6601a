"""fracture: train, evaluate and explain bone-fracture classifiers for X-ray images.

For research and teaching. It is not a medical device and must not be used for diagnosis.

Set `KERAS_BACKEND` (tensorflow or jax) before importing fracture, as for Keras itself.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, CPU feature notes) hides the messages that matter.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fracture.compilation_cache import enable_compilation_cache  # noqa: E402
from fracture.data.datamodule import FractureDataModule  # noqa: E402
from fracture.data.synthetic import write_synthetic_dataset  # noqa: E402
from fracture.errors import CheckpointError, ConfigError, DataError, FractureError, WeightsError  # noqa: E402
from fracture.inference.predictor import Predictor, load_predictor  # noqa: E402
from fracture.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint  # noqa: E402
from fracture.models.classifier import FractureClassifier, OptimizerSpec  # noqa: E402
from fracture.training.trainer import Trainer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FractureClassifier",
    "FractureDataModule",
    "FractureError",
    "OptimizerSpec",
    "Predictor",
    "Trainer",
    "WeightsError",
    "enable_compilation_cache",
    "load_checkpoint",
    "load_predictor",
    "read_metadata",
    "save_checkpoint",
    "write_synthetic_dataset",
]
