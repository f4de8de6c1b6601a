"""Explanations of a split scored against annotated boxes (`fracture.evaluation.localisation`).

On the split's fractured images that carry boxes, each method's maps (`fracture.models.gradcam`: Grad-CAM,
Grad-CAM++) are computed in batches, scored per image, and compared with the baselines; the figures go to
`metrics.json` as `<split>/explain/<method>/<score>` (with `_ci_low`, `_ci_high`) and
`<split>/explain/<method>/vs_<baseline>/<score>` (the paired difference), with the counts of images
without boxes and of boxes for images that are not in the split, and the seconds the maps took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracture.evaluation import plots
from fracture.evaluation.localisation import SCORES, baseline_maps, box_mask, read_coco, scored_table, scores, upsampled
from fracture.models.backbones import LAST_CONV_LAYER
from fracture.models.gradcam import GradCAM


@dataclass
class ExplainSettings:
    """`explain` in `conf/eval.yaml`."""

    annotations: str | None = None  # a COCO JSON file of boxes
    methods: list[str] = field(default_factory=lambda: ["gradcam"])
    tolerance_px: int = 4  # the pointing game's tolerance, in pixels of the model's input
    top_percent: float = 15.0  # the map's share of pixels compared with the boxes by IoU
    layer: str | None = None  # the layer to explain (None: the backbone's last convolutional activation)
    batch_size: int = 16


def annotated_images(datamodule, split: str, boxes: dict) -> tuple[list[int], dict[str, int]]:
    """(indices of the split's fractured images that have boxes, counts of what could not be matched)."""
    files = datamodule.files(split)
    names = [Path(path).name for path in files.paths]
    chosen = [i for i, name in enumerate(names) if files.labels[i] == 1 and name in boxes]
    counts = {
        "images": len(chosen),
        "fractured_without_boxes": int(sum(files.labels)) - len(chosen),
        "boxes_not_in_split": len(set(boxes) - set(names)),
    }
    return chosen, counts


def split_pixels(datamodule, split: str, indices: list[int]) -> np.ndarray:
    """The model's input pixels of the chosen images, as the evaluation pipeline resizes them."""
    wanted, rows, offset = set(indices), {}, 0
    for images, _ in datamodule.predict_dataloader(split):
        for row, image in enumerate(images.numpy()):
            if offset + row in wanted:
                rows[offset + row] = image
        offset += len(images)
    return np.stack([rows[i] for i in indices])


def image_scores(maps, masks, tolerant, top_percent: float) -> dict[str, np.ndarray]:
    """Each score of each map against its image's boxes, as arrays over the images."""
    rows = [scores(m, k, t, top_percent) for m, k, t in zip(maps, masks, tolerant, strict=True)]
    return {score: np.array([row[score] for row in rows]) for score in SCORES}


def result_name(prefix: str, method: str, kind: str) -> str:
    """`<prefix>` for the method, `<prefix>/baseline/<b>` for a baseline, `<prefix>/vs_<b>` for the difference."""
    if kind == method:
        return prefix
    if kind.startswith(f"{method}-"):
        return f"{prefix}/vs_{kind.removeprefix(method + '-')}"
    return f"{prefix}/baseline/{kind}"


def explain_split(model, metadata: dict, datamodule, split: str, settings: ExplainSettings, resamples, seed, plot_dir):
    """(`metrics.json` entries, a report section: per method its score table, seconds and contact sheet)."""
    boxes = read_coco(settings.annotations)
    indices, counts = annotated_images(datamodule, split, boxes)
    results = {f"{split}/explain/{key}": value for key, value in counts.items()}
    section = {"split": split, "counts": counts, "methods": {}, "settings": settings}
    if not indices:
        return results, section
    size = datamodule.image_size
    pixels = split_pixels(datamodule, split, indices)
    names = [Path(datamodule.files(split).paths[i]).name for i in indices]
    masks = [box_mask(boxes[name], size) for name in names]
    tolerant = [box_mask(boxes[name], size, settings.tolerance_px) for name in names]
    layer = settings.layer or LAST_CONV_LAYER[metadata.get("hparams", {}).get("backbone", "efficientnet_b3")]
    for method in settings.methods:
        started = time.perf_counter()
        explainer = GradCAM(model, layer, method)
        maps = []
        for start in range(0, len(pixels), settings.batch_size):
            heatmaps, _ = explainer(pixels[start : start + settings.batch_size])
            maps += [upsampled(heatmap, size) for heatmap in heatmaps]
        seconds = time.perf_counter() - started
        kinds = {method: maps, **baseline_maps(size, maps, seed)}
        per_image = {
            kind: image_scores(kind_maps, masks, tolerant, settings.top_percent) for kind, kind_maps in kinds.items()
        }
        table = scored_table(per_image, resamples, seed)
        for kind, figures in table.items():
            name = result_name(f"{split}/explain/{method}", method, kind)
            for score, (mean, low, high) in figures.items():
                results |= {f"{name}/{score}": mean, f"{name}/{score}_ci_low": low, f"{name}/{score}_ci_high": high}
        results[f"{split}/explain/{method}/seconds"] = seconds
        mine = per_image[method]
        order = np.argsort(mine["energy_inside"])
        picks = {"best": int(order[-1]), "median": int(order[len(order) // 2]), "worst": int(order[0])}
        titles = [
            f"{label}: {names[i]}\npointing {mine['pointing_game'][i]:.0f}, energy {mine['energy_inside'][i]:.2f}, "
            f"IoU {mine['iou'][i]:.2f}"
            for label, i in picks.items()
        ]
        chosen = list(picks.values())
        sheet = plots.explanation_sheet(
            [pixels[i] for i in chosen],
            [maps[i] for i in chosen],
            [masks[i] for i in chosen],
            titles,
            Path(plot_dir) / f"{split}_{method}_boxes.png",
        )
        section["methods"][method] = {"table": table, "seconds": seconds, "sheet": sheet}
    return results, section


def explain_splits(model, metadata: dict, datamodule, splits, explain: dict | None, resamples, seed, plot_dir):
    """(split -> its `metrics.json` entries, the report's sections) of `explain_split` on each of `splits`, with
    `explain` the fields of `ExplainSettings`; nothing when `explain` names no annotations file."""
    if not explain or not explain.get("annotations"):
        return {}, []
    settings = ExplainSettings(**explain)
    scored, sections = {}, []
    for split in splits:
        scored[split], section = explain_split(model, metadata, datamodule, split, settings, resamples, seed, plot_dir)
        sections.append(section)
    return scored, sections
