"""`format=mlflow`: a checkpoint as an MLflow model (a `pyfunc`), for `mlflow models serve` and the registry.

    python -m fracture.export ckpt_path=.../best_model.keras format=mlflow export.register_as=fracture-effb3
    mlflow models serve -m models:/fracture-effb3/1 --env-manager local -h 127.0.0.1 -p 5001
    POST /invocations  {"dataframe_split": {"columns": ["image"], "data": [["<the file's bytes, base64>"]]}}

The model takes a table with an `image` column (a file's bytes) or a `path` column (a file the serving
machine can read) and answers, row by row, what `fracture.predict` answers: the calibrated probability, the
label, the threshold chosen on validation, and for an unreadable input an error instead. Inside, it is
fracture's `Predictor` over the checkpoint (the same reader, preprocessing and calibration), with the export's
`model.json` beside it; the serving environment needs fracture installed (`--env-manager local`).
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from PIL import Image

from fracture.data.images import UnreadableImage, read_xray_bytes
from fracture.data.reference_images import reference_batch
from fracture.deployment.parity import DEFAULT_TOLERANCE, ParityResult
from fracture.errors import ExportError
from fracture.inference.predictor import Prediction, Predictor, load_predictor
from fracture.models.checkpoint import checkpoint_id, read_metadata
from fracture.models.contract import model_contract, write_contract
from fracture.tracking.mlflow_client import connect, experiment_id, read_run_record

MODEL_FOLDER = "mlflow_model"
BATCH = 32  # rows predicted in one pass
COLUMNS = ["path", "probability", "label", "threshold", "error"]
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", "image", required=False), ColSpec("string", "path", required=False)]),
    outputs=Schema(
        [
            ColSpec("string", "path"),
            ColSpec("double", "probability", required=False),  # missing where the input could not be read
            ColSpec("string", "label", required=False),
            ColSpec("double", "threshold"),
            ColSpec("string", "error", required=False),  # why the input could not be read
        ]
    ),
)
# What the serving environment needs besides fracture itself (which pulls in the rest).
REQUIREMENTS = ("fracture", "keras", "mlflow", "pandas", "numpy", "pillow")


class FracturePyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc: a `Predictor` loaded from the model's `checkpoint` artifact."""

    def load_context(self, context) -> None:
        self.predictor: Predictor = load_predictor(context.artifacts["checkpoint"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        answers = []
        for start in range(0, len(model_input), BATCH):
            answers += predict_rows(self.predictor, model_input.iloc[start : start + BATCH])
        return pd.DataFrame([asdict(answer) for answer in answers], columns=COLUMNS)


def predict_rows(predictor: Predictor, table: pd.DataFrame) -> list[Prediction]:
    """One `Prediction` per row of `table`, from its `image` bytes when given, else from its `path`."""
    answers: list[Prediction | None] = [None] * len(table)
    readable = []  # (row, name, pixels or path)
    for index, row in enumerate(table.itertuples(index=False)):
        image, path = getattr(row, "image", None), getattr(row, "path", None)
        name = path if isinstance(path, str) else ""
        try:
            if isinstance(image, bytes | bytearray):
                readable.append((index, name, read_xray_bytes(bytes(image), name or None)))
            elif name:
                readable.append((index, name, name))
            else:
                raise UnreadableImage("the row has neither image bytes nor a path")
        except UnreadableImage as error:
            answers[index] = Prediction(name, None, None, predictor.threshold, str(error))
    predicted = predictor.predict_batch([item for _, _, item in readable])
    for (index, name, _), (prediction, _, _) in zip(readable, predicted, strict=True):
        prediction.path = name  # bytes were read as an array, which Predictor names "<array>"
        answers[index] = prediction
    return answers


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def requirements() -> list[str]:
    """Pinned to this environment's versions, for an MLflow environment manager other than `local`."""
    pinned = []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned + [f"{keras.backend.backend()}=={version(keras.backend.backend())}"]


def model_arguments(ckpt_path: Path, contract_file: Path, example: np.ndarray, metadata: dict) -> dict:
    """What `mlflow.pyfunc.save_model` and `log_model` are given: the pyfunc, its two artifacts (MLflow copies
    them into the model), the signature, one reference image as the input example, requirements, metadata."""
    return {
        "python_model": str(Path(__file__).with_name("mlflow_pyfunc.py")),
        "artifacts": {"checkpoint": str(ckpt_path), "contract": str(contract_file)},
        "signature": SIGNATURE,
        "input_example": pd.DataFrame({"image": [png_bytes(example)]}),
        "pip_requirements": requirements(),
        "metadata": metadata,
    }


def check_model_parity(model_dir: Path, ckpt_path: Path, images: np.ndarray, tolerance: float) -> ParityResult:
    """The saved MLflow model, loaded as MLflow loads it and fed PNG bytes, against `Predictor` on the pixels."""
    expected = [p.probability for p, _, _ in load_predictor(ckpt_path).predict_batch(list(images.astype(np.uint8)))]
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    answer = loaded.predict(pd.DataFrame({"image": [png_bytes(image) for image in images]}))
    difference = float(np.max(np.abs(answer["probability"].to_numpy(float) - np.asarray(expected, float))))
    return ParityResult("mlflow", difference, tolerance, len(images))


def export_mlflow_model(
    ckpt_path: str | Path,
    folder: str | Path,
    verify_inputs: list[str | Path] = (),
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[Path, ParityResult]:
    """Write `<folder>/mlflow_model/` from `ckpt_path` (with `model.json` inside and beside it), checked against
    the checkpoint before it replaces an earlier one. Returns its folder and the check's result."""
    from fracture.deployment.recipe import move_into, parity_failure, update_contract

    ckpt_path, folder = Path(ckpt_path).expanduser(), Path(folder).expanduser()
    metadata = read_metadata(ckpt_path)  # the model itself is loaded once, by the parity check's Predictor
    images = reference_batch(int(metadata["image_size"]), list(verify_inputs))
    identity = checkpoint_id(ckpt_path)
    entry = {"path": MODEL_FOLDER, "runtime": "mlflow pyfunc", "exported_with_backend": keras.backend.backend()}
    contract = model_contract(metadata, identity, keras.backend.backend(), {"mlflow": entry})
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as staging:
        contract_file = write_contract(staging, contract)
        staged = Path(staging) / MODEL_FOLDER
        described = {"fracture_checkpoint_id": identity, "fracture_contract": contract["format"]}
        mlflow.pyfunc.save_model(str(staged), **model_arguments(ckpt_path, contract_file, images[0], described))
        result = check_model_parity(staged, ckpt_path, images, tolerance)
        if failure := parity_failure([result]):
            raise failure
        move_into(staged, folder / MODEL_FOLDER)
    entry.update(
        parity_max_abs_difference=result.max_abs_difference, parity_tolerance=tolerance, parity_images=result.images
    )
    update_contract(folder, metadata, identity, {"mlflow": entry})
    return folder / MODEL_FOLDER, result


def verify_mlflow_model(
    ckpt_path: str | Path,
    folder: str | Path,
    verify_inputs: list[str | Path] = (),
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityResult:
    """Re-run the parity check on the MLflow model in `<folder>/mlflow_model/`, refusing one of another checkpoint."""
    model_dir = Path(folder).expanduser() / MODEL_FOLDER
    if not (model_dir / "MLmodel").is_file():
        raise ExportError(f"{model_dir} holds no MLflow model; run python -m fracture.export format=mlflow first.")
    exported_from = mlflow.models.Model.load(str(model_dir)).metadata.get("fracture_checkpoint_id")
    if exported_from != checkpoint_id(ckpt_path):
        raise ExportError(f"{model_dir} was exported from checkpoint {exported_from}, not from {ckpt_path}.")
    metadata = read_metadata(ckpt_path)  # the model itself is loaded once, by the parity check's Predictor
    images = reference_batch(int(metadata["image_size"]), list(verify_inputs))
    return check_model_parity(model_dir, Path(ckpt_path).expanduser(), images, tolerance)


def register_model(model_dir: Path, ckpt_path: Path, name: str, tracking_uri: str, experiment: str = "export") -> str:
    """Log the exported model folder to MLflow and register it as a new version of `name`; returns the version.

    The same files that passed the parity check are registered. They go into the run that trained the
    checkpoint when `<run>/mlflow.json` names one at this tracking URI (trained with `logger=mlflow`), else
    into a new run of `experiment`."""
    from mlflow.exceptions import MlflowException

    client = connect(tracking_uri)
    record = read_run_record(Path(ckpt_path).parent.parent)
    trained_here = record is not None and record["tracking_uri"] == tracking_uri
    if trained_here:
        run_id = record["run_id"]
    else:
        experiment_number = experiment_id(client, experiment, tracking_uri)
        tags = {"fracture.checkpoint": str(ckpt_path)}
        run_id = client.create_run(experiment_number, run_name=f"export {Path(ckpt_path).name}", tags=tags).info.run_id
    client.log_artifacts(run_id, str(model_dir), artifact_path="model")
    try:
        client.create_registered_model(name, description="fracture classifier; research and teaching only")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    version = client.create_model_version(name, source, run_id=run_id, tags={"fracture.checkpoint": str(ckpt_path)})
    if not trained_here:
        client.set_terminated(run_id)
    return version.version
