"""fracture: train, evaluate and explain bone-fracture classifiers for X-ray images.

For research and teaching. It is not a medical device and must not be used for diagnosis.

Set `KERAS_BACKEND` (tensorflow or jax) before importing Keras or fracture's models, as for Keras itself.
Importing `fracture` changes nothing in the process: the names below load their modules (and Keras) on
first use, and no environment variable, matplotlib backend or Keras setting is touched.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "CheckpointError": "fracture.errors",
    "ConfigError": "fracture.errors",
    "DataError": "fracture.errors",
    "FractureError": "fracture.errors",
    "WeightsError": "fracture.errors",
    "FractureClassifier": "fracture.models.classifier",
    "OptimizerSpec": "fracture.models.classifier",
    "FractureDataModule": "fracture.data.datamodule",
    "Predictor": "fracture.inference.predictor",
    "load_predictor": "fracture.inference.predictor",
    "Trainer": "fracture.training.trainer",
    "enable_compilation_cache": "fracture.compilation_cache",
    "enable_fast_depthwise_conv": "fracture.jax_depthwise",
    "load_checkpoint": "fracture.models.checkpoint",
    "read_metadata": "fracture.models.checkpoint",
    "save_checkpoint": "fracture.models.checkpoint",
    "write_synthetic_dataset": "fracture.data.synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fracture' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
