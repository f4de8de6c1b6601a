"""Predict new X-rays: `python -m fracture.predict ckpt_path=... inputs=[a.jpg,folder/,scan.dcm]`.

Prints a table, writes `predictions.csv` and, with `explain.overlays=true`, one overlay PNG per image into the
run folder, with the image's annotated boxes drawn on it when `explain.annotations` names a COCO file. Exits
with code 1 when any input could not be read (the others are still predicted).
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.table import Table

from fracture.cli import CONFIG_DIR, prepare_backend
from fracture.console import console
from fracture.data.geometry import ShapeLimits
from fracture.data.images import expand_inputs
from fracture.errors import ConfigError, user_errors
from fracture.evaluation.localisation import read_coco
from fracture.inference.predictor import Prediction, load_predictor
from fracture.io import atomic_path


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
    limits = ShapeLimits(int(cfg.min_side), float(cfg.max_aspect))
    predictor = load_predictor(cfg.ckpt_path, cfg.gradcam_layer, cfg.max_pixels, limits)
    explain = cfg.explain.overlays and predictor.can_explain
    annotations = read_coco(cfg.explain.annotations) if explain and cfg.explain.annotations else {}
    if cfg.explain.overlays and not explain:
        console.print("[yellow]no overlays: Grad-CAM needs the .keras checkpoint; this is an exported model[/yellow]")
    output_dir = Path(cfg.paths.output_dir)
    overlay_dir = output_dir / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)

    predictions: list[Prediction] = []
    # Rows go to the file as they come, so that 100,000 inputs never sit in memory as one CSV text.
    with atomic_path(output_dir / "predictions.csv") as staging, open(staging, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "probability", "threshold", "error"])
        for start in range(0, len(paths), cfg.batch_size):
            batch = predictor.predict_batch(paths[start : start + cfg.batch_size], explain=explain)
            for offset, (p, pixels, heatmap) in enumerate(batch):
                predictions.append(p)
                probability = "" if p.probability is None else f"{p.probability:.6f}"
                writer.writerow([p.path, p.label or "", probability, p.threshold, p.error or ""])
                if explain and p.error is None:
                    image = predictor.overlay(p, pixels, heatmap, annotations.get(Path(p.path).name))
                    with atomic_path(overlay_dir / _overlay_name(start + offset, p.path)) as overlay:
                        image.save(overlay, format="PNG")

    console.print(results_table(predictions, predictor.threshold, cfg.max_table_rows))
    console.print(f"predictions: {output_dir / 'predictions.csv'}" + (f"; overlays: {overlay_dir}" if explain else ""))
    return predictions


def results_table(predictions: list[Prediction], threshold: float, max_rows: int) -> Table:
    """The first `max_rows` predictions, and counts of all of them in the caption."""
    table = Table(title=f"predictions (threshold {threshold:.4f}; research use only, not a diagnosis)")
    table.add_column("file", overflow="fold")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("threshold", justify="right")
    for p in predictions[:max_rows]:
        if p.error:
            table.add_row(p.path, f"[red]error: {p.error}[/red]", "", "")
        else:
            table.add_row(p.path, p.label, f"{p.probability:.4f}", f"{p.threshold:.4f}")
    counts = Counter("error" if p.error else p.label for p in predictions)
    caption = [f"{label}: {n}" for label, n in sorted(counts.items())]
    if len(predictions) > max_rows:
        caption.insert(0, f"the first {max_rows} of {len(predictions)} shown")
    table.caption = ", ".join(caption)
    return table


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    with user_errors():
        predictions = predict(cfg)
    if any(p.error for p in predictions):
        sys.exit(1)


if __name__ == "__main__":
    main()
