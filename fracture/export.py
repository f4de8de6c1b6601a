"""Export a checkpoint for deployment: `python -m fracture.export ckpt_path=... format=onnx|saved_model|tflite|all`.

Writes the artifacts and `model.json` (see `fracture.deployment`), runs the parity check and prints its
table. `verify_only=true` re-checks an existing export. Exits with code 2 when the check fails.
"""

from __future__ import annotations

import logging

import hydra
import keras
from omegaconf import DictConfig, ListConfig
from rich.table import Table

from fracture.cli import CONFIG_DIR, prepare_backend, user_errors
from fracture.console import console
from fracture.deployment.exporters import parse_formats
from fracture.deployment.parity import ParityResult
from fracture.deployment.recipe import export_checkpoint, parity_failure, verify_export


def parity_table(results: list[ParityResult], title: str) -> Table:
    table = Table(title=title)
    for column in ("format", "max |probability difference|", "tolerance", "images", "parity"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for r in results:
        verdict = "[green]ok[/green]" if r.passed else "[red]FAILED[/red]"
        table.add_row(r.format, f"{r.max_abs_difference:.2e}", f"{r.tolerance:.0e}", str(r.images), verdict)
    return table


def export(cfg: DictConfig) -> list[ParityResult]:
    requested = list(cfg.format) if isinstance(cfg.format, ListConfig) else str(cfg.format)
    formats, left_out = parse_formats(requested)
    for name in left_out:
        console.print(f"[yellow]{name} left out: {keras.backend.backend()} cannot export it (TensorFlow can)[/yellow]")
    prepare_backend(cfg)
    options = dict(folder=cfg.export.dir, verify_inputs=list(cfg.verify_inputs), tolerance=float(cfg.tolerance))
    if cfg.verify_only:
        results = verify_export(cfg.ckpt_path, formats, **options)
        console.print(parity_table(results, f"parity of the export of {cfg.ckpt_path}"))
        if failure := parity_failure(results):
            raise failure
        return results
    folder, results = export_checkpoint(cfg.ckpt_path, formats, **options)
    console.print(parity_table(results, f"exported on {keras.backend.backend()} to {folder}"))
    console.print(f"artifacts and model.json in {folder}")
    return results


def quiet_converters() -> None:
    """tf2onnx and TensorFlow log every optimisation pass at INFO; the parity table is what matters."""
    for name in ("tf2onnx", "tensorflow", "absl", "jax2onnx", "onnx_ir", "jax"):
        logging.getLogger(name).setLevel(logging.WARNING)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    quiet_converters()
    with user_errors():
        export(cfg)


if __name__ == "__main__":
    main()
