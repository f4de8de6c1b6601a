"""`model.json`: what a deployment needs to know besides the network, written beside every export.

An exported network maps a batch of (S, S, 3) float32 pixels in 0..255 to P(positive class). Everything
around that (how a file becomes those pixels, which class is positive, where to cut) is not in the
artifact, so it travels in this file. `Predictor` reads it back to run an exported `model.onnx`.
"""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fracture.errors import CheckpointError
from fracture.io import write_json_atomic

CONTRACT_NAME = "model.json"
# How a deployment outside Python turns the artifact's output p into the calibrated probability.
# Each result is then clipped to `params.bounds` ([1e-7, 1 - 1e-7] when a calibration has none).
CALIBRATION_FORMULAS = {
    "platt": "sigmoid(slope * logit(p) + intercept), logit(p) = ln(p / (1 - p)) with p clipped to [1e-7, 1 - 1e-7]; "
    "then clipped to bounds",
    "temperature": "sigmoid(logit(p) / temperature), logit as for platt; then clipped to bounds",
    "isotonic": "linear interpolation of p between knots_x and knots_y, clipped to the end knots; then to bounds",
}
CONTRACT_FORMAT = "fracture-export/1"
# Distributions whose versions decide what an artifact computes; recorded for whoever debugs a mismatch.
RECORDED_VERSIONS = (
    "fracture",
    "keras",
    "tensorflow",
    "jax",
    "numpy",
    "onnx",
    "onnxruntime",
    "tf2onnx",
    "jax2onnx",
    "ai-edge-litert",
)


def installed_versions() -> dict[str, str]:
    """Python's and each recorded distribution's version; missing ones are left out."""
    versions = {"python": platform.python_version()}
    for name in RECORDED_VERSIONS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def preprocessing(image_size: int) -> dict:
    """The input contract, in words a C++ or JavaScript deployment can follow."""
    return {
        "input_shape": ["batch", image_size, image_size, 3],
        "dtype": "float32",
        "layout": "NHWC",
        "channels": "RGB",
        "pixel_range": [0, 255],
        "normalization": "none: the network rescales internally; feed 0..255 values",
        "resize": f"bilinear with antialiasing to {image_size} x {image_size}, aspect ratio not kept, "
        "then rounded to whole values 0..255 (tf.image.resize(antialias=True))",
        "grayscale": "the single channel repeated on R, G and B",
        "high_bit_depth": "16-bit and float grey images stretched linearly from their minimum..maximum to 0..255",
        "dicom": "modality LUT (rescale slope and intercept), then the VOI LUT or window centre/width, stretched "
        "to 0..255; MONOCHROME1 inverted; the first frame of a multi-frame file",
        "output": "the network's P(positive class), shape [batch, 1]; apply `calibration` when it is set",
    }


def model_contract(metadata: dict, checkpoint_id: str, exporter_backend: str, artifacts: dict) -> dict:
    """The `model.json` content for a checkpoint's `metadata` and the `artifacts` written from it."""
    image_size = int(metadata["image_size"])
    return {
        "format": CONTRACT_FORMAT,
        "image_size": image_size,
        "preprocessing": preprocessing(image_size),
        "positive_class": metadata["positive_class"],
        "negative_class": metadata["negative_class"],
        "class_names": [metadata["negative_class"], metadata["positive_class"]],  # label 0, label 1
        "threshold": float(metadata.get("threshold", 0.5)),
        "threshold_source": metadata.get("threshold_source", "default"),
        "threshold_method": metadata.get("threshold_method"),
        "threshold_scale": metadata.get("threshold_scale", "raw"),
        # Apply to the artifact's output before comparing with the threshold (see `calibration_formula`).
        "calibration": metadata.get("calibration"),
        "calibration_formula": CALIBRATION_FORMULAS.get((metadata.get("calibration") or {}).get("method")),
        "checkpoint_id": checkpoint_id,
        "checkpoint_backend": metadata.get("backend"),
        "exported_with_backend": exporter_backend,
        "hparams": metadata.get("hparams", {}),
        "artifacts": artifacts,
        "versions": installed_versions(),
        "intended_use": "research and teaching only; not a medical device",
    }


def write_contract(folder: str | Path, contract: dict) -> Path:
    return write_json_atomic(Path(folder) / CONTRACT_NAME, contract)


def read_contract(artifact: str | Path) -> dict:
    """The `model.json` beside an exported artifact (or the file itself); `CheckpointError` when absent."""
    artifact = Path(artifact).expanduser()
    path = artifact if artifact.name == CONTRACT_NAME else artifact.parent / CONTRACT_NAME
    try:
        contract = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(
            f"{artifact} has no {CONTRACT_NAME} beside it; export with python -m fracture.export, which writes both."
        ) from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}).") from error
    if contract.get("format") != CONTRACT_FORMAT:
        raise CheckpointError(
            f"{path} has format {contract.get('format')!r}; this fracture reads {CONTRACT_FORMAT!r}. "
            "Re-export the checkpoint with this version."
        )
    return contract
