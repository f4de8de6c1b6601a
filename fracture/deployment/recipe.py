"""Export a checkpoint and prove the result, with plain arguments: what `python -m fracture.export` runs.

Artifacts are written to a staging folder, checked against the `.keras` model there, and only then moved
into the export folder. An export that fails its check replaces nothing, so the previous good export stays.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import keras

from fracture.data.reference_images import reference_batch
from fracture.deployment.parity import DEFAULT_TOLERANCE, ParityResult, check_parity
from fracture.errors import CheckpointError, ExportError
from fracture.models.checkpoint import checkpoint_id, load_checkpoint
from fracture.models.contract import CONTRACT_NAME, model_contract, read_contract, write_contract
from fracture.models.exporters import FORMATS, check_backend, export_formats

RUNTIMES = {"saved_model": "tensorflow", "onnx": "onnxruntime", "tflite": "ai-edge-litert"}


def default_export_dir(ckpt_path: str | Path) -> Path:
    """`checkpoints/best_model.keras` -> `checkpoints/best_model_export/`, so two checkpoints never collide."""
    ckpt_path = Path(ckpt_path).expanduser()
    return ckpt_path.parent / f"{ckpt_path.stem}_export"


def parity_failure(results: list[ParityResult]) -> ExportError | None:
    failed = [r for r in results if not r.passed]
    if not failed:
        return None
    details = "; ".join(
        f"{r.format}: {r.error or f'max |difference| {r.max_abs_difference:.3g} > {r.tolerance:.3g}'}" for r in failed
    )
    return ExportError(f"parity check failed ({details}). The artifact does not compute what the checkpoint does.")


def move_into(staged: Path, target: Path) -> None:
    """Replace `target` (file or folder) by `staged`; the old one is removed only once the new one is in place."""
    retired = target.with_name(f".{target.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    staged.rename(target)
    if retired.is_dir():
        shutil.rmtree(retired)
    else:
        retired.unlink(missing_ok=True)


def update_contract(folder: Path, metadata: dict, identity: str, artifacts: dict) -> Path:
    """Write `model.json` with `artifacts` added to the entries of earlier exports of the same checkpoint
    (format=onnx, then format=tflite, then format=mlflow)."""
    try:
        previous = read_contract(folder / CONTRACT_NAME)
        earlier = previous["artifacts"] if previous["checkpoint_id"] == identity else {}
    except CheckpointError:  # no earlier model.json, or one of another format: start afresh
        earlier = {}
    return write_contract(folder, model_contract(metadata, identity, keras.backend.backend(), {**earlier, **artifacts}))


def export_checkpoint(
    ckpt_path: str | Path,
    formats: list[str],
    folder: str | Path | None = None,
    verify_inputs: list[str | Path] = (),
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[Path, list[ParityResult]]:
    """Export `ckpt_path` to `formats` in `folder` (default: beside it), check parity, write `model.json`.

    Raises `ExportError` (and leaves `folder` as it was) when a format cannot be exported on this backend or
    an artifact's probabilities differ from the checkpoint's by more than `tolerance`.
    """
    check_backend(formats)  # before loading anything heavy
    folder = Path(folder).expanduser() if folder else default_export_dir(ckpt_path)
    model, metadata = load_checkpoint(ckpt_path, compile=False)
    batch = reference_batch(int(metadata["image_size"]), list(verify_inputs))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as staging:
        staged = export_formats(model, formats, staging)
        results = check_parity(model, staged, batch, tolerance)
        if failure := parity_failure(results):
            raise failure
        for path in staged.values():
            move_into(path, folder / path.name)

    artifacts = {
        result.format: {
            "path": FORMATS[result.format][0],
            "runtime": RUNTIMES[result.format],
            "exported_with_backend": keras.backend.backend(),
            "parity_max_abs_difference": result.max_abs_difference,
            "parity_tolerance": result.tolerance,
            "parity_images": result.images,
        }
        for result in results
    }
    update_contract(folder, metadata, checkpoint_id(ckpt_path), artifacts)
    return folder, results


def verify_export(
    ckpt_path: str | Path,
    formats: list[str],
    folder: str | Path | None = None,
    verify_inputs: list[str | Path] = (),
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[ParityResult]:
    """Re-run the parity check on an existing export folder; `formats` absent from it are skipped when all."""
    folder = Path(folder).expanduser() if folder else default_export_dir(ckpt_path)
    contract = read_contract(folder / CONTRACT_NAME)
    if contract["checkpoint_id"] != checkpoint_id(ckpt_path):
        raise ExportError(
            f"{folder} was exported from checkpoint {contract['checkpoint_id']}, not from {ckpt_path}; "
            "export this checkpoint again, or point export.dir at its own export."
        )
    model, metadata = load_checkpoint(ckpt_path, compile=False)
    artifacts = {name: folder / FORMATS[name][0] for name in formats if name in contract["artifacts"]}
    if not artifacts:
        raise ExportError(f"{folder} holds no {' or '.join(formats)} export; run python -m fracture.export first.")
    batch = reference_batch(int(metadata["image_size"]), list(verify_inputs))
    return check_parity(model, artifacts, batch, tolerance)
