"""Deployment: export a checkpoint to SavedModel, ONNX and TFLite, describe it in `model.json`, and prove each
artifact against the `.keras` model (`python -m fracture.export`). Needs the export extra for ONNX and TFLite."""

from fracture.deployment.parity import ParityResult, check_parity
from fracture.errors import ExportError
from fracture.models.contract import read_contract
from fracture.models.exporters import FORMATS, export_formats

__all__ = ["FORMATS", "ExportError", "ParityResult", "check_parity", "export_formats", "read_contract"]
