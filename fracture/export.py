"""Export a checkpoint for deployment: `python -m fracture.export ckpt_path=... format=onnx|saved_model|tflite|all`,
or `format=mlflow` for an MLflow model (`fracture.tracking.mlflow_model`), registered with `export.register_as=NAME`.

Writes the artifacts and `model.json` (see `fracture.deployment`), runs the parity check and prints its
table. `verify_only=true` re-checks an existing export. Exits with code 2 when the check fails.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import keras
from omegaconf import DictConfig, ListConfig
from rich.table import Table

from fracture.cli import CONFIG_DIR, prepare_backend
from fracture.console import console
from fracture.deployment.parity import ParityResult
from fracture.deployment.recipe import default_export_dir, export_checkpoint, parity_failure, verify_export
from fracture.errors import ExportError, user_errors
from fracture.models.exporters import parse_formats
from fracture.tracking.mlflow_client import require_mlflow


def parity_table(results: list[ParityResult], title: str) -> Table:
    table = Table(title=title)
    for column in ("format", "max |probability difference|", "tolerance", "images", "parity"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for r in results:
        verdict = "[green]ok[/green]" if r.passed else "[red]FAILED[/red]"
        table.add_row(r.format, f"{r.max_abs_difference:.2e}", f"{r.tolerance:.0e}", str(r.images), verdict)
    return table


def export(cfg: DictConfig) -> list[ParityResult]:
    requested = list(cfg.format) if isinstance(cfg.format, ListConfig) else [str(cfg.format)]
    keras_formats = [name for name in requested if name != "mlflow"]
    if cfg.export.register_as and "mlflow" not in requested:
        raise ExportError("export.register_as registers an MLflow model: add format=mlflow.")
    prepare_backend(cfg)
    options = dict(verify_inputs=list(cfg.verify_inputs), tolerance=float(cfg.tolerance))
    folder = Path(cfg.export.dir).expanduser() if cfg.export.dir else default_export_dir(cfg.ckpt_path)
    results = export_keras_formats(cfg, keras_formats, folder, options) if keras_formats else []
    if "mlflow" in requested:
        results.append(export_mlflow(cfg, folder, options))
    return results


def export_keras_formats(cfg: DictConfig, requested: list[str], folder: Path, options: dict) -> list[ParityResult]:
    formats, left_out = parse_formats(requested)
    for name in left_out:
        console.print(f"[yellow]{name} left out: {keras.backend.backend()} cannot export it (TensorFlow can)[/yellow]")
    if cfg.verify_only:
        results = verify_export(cfg.ckpt_path, formats, folder, **options)
        console.print(parity_table(results, f"parity of the export of {cfg.ckpt_path}"))
        if failure := parity_failure(results):
            raise failure
        return results
    folder, results = export_checkpoint(cfg.ckpt_path, formats, folder, **options)
    console.print(parity_table(results, f"exported on {keras.backend.backend()} to {folder}"))
    console.print(f"artifacts and model.json in {folder}")
    return results


def export_mlflow(cfg: DictConfig, folder: Path, options: dict) -> ParityResult:
    """`format=mlflow`: the MLflow model in `<folder>/mlflow_model/`, checked, and registered when asked."""
    require_mlflow()
    from fracture.tracking import mlflow_model

    if cfg.verify_only:
        result = mlflow_model.verify_mlflow_model(cfg.ckpt_path, folder, **options)
        console.print(parity_table([result], f"parity of the MLflow model in {folder}"))
        if failure := parity_failure([result]):
            raise failure
        return result
    model_dir, result = mlflow_model.export_mlflow_model(cfg.ckpt_path, folder, **options)
    console.print(parity_table([result], f"MLflow model written on {keras.backend.backend()} to {model_dir}"))
    console.print(f"serve it with: mlflow models serve -m {model_dir} --env-manager local -h 127.0.0.1 -p 5001")
    if cfg.export.register_as:
        uri = str(cfg.export.tracking_uri)
        version = mlflow_model.register_model(model_dir, Path(cfg.ckpt_path), cfg.export.register_as, uri)
        console.print(f"registered as models:/{cfg.export.register_as}/{version} at {uri}")
        console.print(
            f"serve it with: mlflow models serve -m models:/{cfg.export.register_as}/{version} --env-manager local"
        )
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors():
        export(cfg)


if __name__ == "__main__":
    main()
