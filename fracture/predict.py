"""Predict new X-rays: `python -m fracture.predict ckpt_path=... inputs=[a.jpg,folder/,scan.dcm]`.

Prints a table, writes `predictions.csv` and, with `explain.overlays=true`, one overlay PNG per image into the
run folder, with the image's annotated boxes drawn on it when `explain.annotations` names a COCO file. Exits
with code 1 when any input could not be read (the others are still predicted).

`engine=ray` predicts on a Ray Data actor pool instead (`fracture.inference.ray_predict`): the same rows, also
as Parquet, resumable into the same `output_dir`, for archives too large for one process.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig
from rich.table import Table

from fracture.cli import CONFIG_DIR, backend_options, prepare_backend
from fracture.console import console
from fracture.data.geometry import ShapeLimits
from fracture.data.images import expand_inputs
from fracture.errors import ConfigError, user_errors
from fracture.evaluation.localisation import read_coco
from fracture.inference.predictor import Prediction, load_predictor
from fracture.io import atomic_path

if TYPE_CHECKING:
    from fracture.inference.ray_predict import ArchiveSummary


def _overlay_name(index: int, path: str) -> str:
    """Numbered so that equal file names from different folders cannot collide."""
    return f"{index:04d}_{Path(path).stem}.png"


def _inputs(cfg: DictConfig) -> list[str]:
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {cfg.batch_size}.")
    if cfg.engine not in ("local", "ray"):
        raise ConfigError(f"engine must be local or ray, got {cfg.engine!r}.")
    if cfg.engine == "ray" and cfg.precision != "float32":
        raise ConfigError("precision=bfloat16 runs with engine=local only; drop one of them.")
    return [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)


def predict(cfg: DictConfig) -> list[Prediction]:
    """Predict every input of `cfg` in this process; returns one `Prediction` per input, error rows included."""
    inputs = _inputs(cfg)
    prepare_backend(cfg)
    paths = expand_inputs(inputs)
    if not paths:
        raise ConfigError(f"no images found in inputs={inputs}.")
    limits = ShapeLimits(int(cfg.min_side), float(cfg.max_aspect))
    # With overlays, every prediction runs through Grad-CAM on the Keras model, never on an engine.
    engine = dict(runtime=cfg.runtime, expected_images=len(paths), precision=cfg.precision)
    predictor = load_predictor(cfg.ckpt_path, cfg.gradcam_layer, cfg.max_pixels, limits, **engine)
    explain = cfg.explain.overlays and predictor.can_explain
    annotations = read_coco(cfg.explain.annotations) if explain and cfg.explain.annotations else {}
    if cfg.explain.overlays and not explain:
        console.print("[yellow]no overlays: Grad-CAM needs the .keras checkpoint; this is an exported model[/yellow]")
    output_dir = Path(cfg.output_dir)
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


def predict_on_ray(cfg: DictConfig) -> ArchiveSummary:
    """Predict every input of `cfg` on Ray into `cfg.output_dir`, skipping what an earlier run there predicted."""
    from fracture.ray_cluster import RaySettings, require_ray

    inputs = _inputs(cfg)
    require_ray()
    from fracture.inference.ray_predict import PredictorSpec, predict_archive

    settings = RaySettings(cfg.ray.address, int(cfg.ray.actors), cfg.ray.cpus_per_actor)
    if cfg.explain.overlays:
        console.print("engine=ray writes predictions only; for overlays, predict the files of interest locally")
    limits = ShapeLimits(int(cfg.min_side), float(cfg.max_aspect))
    spec = PredictorSpec(str(cfg.ckpt_path), cfg.gradcam_layer, cfg.max_pixels, limits, backend_options(cfg))
    summary = predict_archive(spec, inputs, cfg.output_dir, settings, int(cfg.batch_size))
    table = Table(title="predictions on Ray (research use only, not a diagnosis)")
    table.add_column("rows")
    table.add_column("count", justify="right")
    for label, count in sorted(summary.counts.items()):
        table.add_row(label, str(count))
    table.caption = (
        f"{summary.predicted} predicted now, {summary.skipped} by an earlier run, in {summary.seconds:.1f} s"
    )
    console.print(table)
    console.print(f"predictions: {summary.csv} and {summary.parts}/")
    return summary


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
        if cfg.engine == "ray":
            failed = predict_on_ray(cfg).counts["error"] > 0
        else:
            failed = any(p.error for p in predict(cfg))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
