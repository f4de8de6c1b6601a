"""Predict new X-rays: `python -m fracture.predict ckpt_path=... inputs=[a.jpg,folder/,scan.dcm]`.

Prints a table, writes `predictions.csv` and, with `explain=true`, one overlay PNG per image into the run
folder. Exits with code 1 when any input could not be read (the others are still predicted).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.table import Table

from fracture.cli import CONFIG_DIR, prepare_backend, user_errors
from fracture.errors import ConfigError
from fracture.inference.predictor import Prediction, load_predictor
from fracture.inference.readers import expand_inputs
from fracture.io import atomic_path, write_text_atomic
from fracture.training.progress import console


def _overlay_name(index: int, path: str) -> str:
    """Numbered so that equal file names from different folders cannot collide."""
    return f"{index:04d}_{Path(path).stem}.png"


def predict(cfg: DictConfig) -> list[Prediction]:
    """Predict every input of `cfg`; returns one `Prediction` per input, error rows included."""
    inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {cfg.batch_size}.")
    prepare_backend(cfg)
    paths = expand_inputs(inputs)
    if not paths:
        raise ConfigError(f"no images found in inputs={inputs}.")
    predictor = load_predictor(cfg.ckpt_path, cfg.gradcam_layer, cfg.max_pixels)
    explain = cfg.explain and predictor.can_explain
    if cfg.explain and not explain:
        console.print("[yellow]no overlays: Grad-CAM needs the .keras checkpoint; this is an exported model[/yellow]")
    output_dir = Path(cfg.paths.output_dir)
    overlay_dir = output_dir / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)

    predictions: list[Prediction] = []
    for start in range(0, len(paths), cfg.batch_size):
        for offset, (prediction, pixels, heatmap) in enumerate(
            predictor.predict_batch(paths[start : start + cfg.batch_size], explain=explain)
        ):
            predictions.append(prediction)
            if explain and prediction.error is None:
                image = predictor.overlay(prediction, pixels, heatmap)
                target = overlay_dir / _overlay_name(start + offset, prediction.path)
                with atomic_path(target) as staging:
                    image.save(staging, format="PNG")

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "label", "probability", "threshold", "error"])
    for p in predictions:
        writer.writerow(
            [p.path, p.label or "", "" if p.probability is None else f"{p.probability:.6f}", p.threshold, p.error or ""]
        )
    write_text_atomic(output_dir / "predictions.csv", buffer.getvalue())

    table = Table(title=f"predictions (threshold {predictor.threshold:.4f}; research use only, not a diagnosis)")
    table.add_column("file", overflow="fold")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("threshold", justify="right")
    for p in predictions:
        if p.error:
            table.add_row(p.path, f"[red]error: {p.error}[/red]", "", "")
        else:
            table.add_row(p.path, p.label, f"{p.probability:.4f}", f"{p.threshold:.4f}")
    console.print(table)
    console.print(f"predictions: {output_dir / 'predictions.csv'}" + (f"; overlays: {overlay_dir}" if explain else ""))
    return predictions


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors():
        predictions = predict(cfg)
    if any(p.error for p in predictions):
        sys.exit(1)


if __name__ == "__main__":
    main()
