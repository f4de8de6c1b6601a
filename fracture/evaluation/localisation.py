"""Heat maps scored against radiologists' boxes, beside baselines that know nothing of the image.

A heat map persuades whether or not it points at the fracture. These scores measure it on the fractured
images that carry boxes (COCO annotations, matched by file name), with the boxes scaled as the pipeline
resizes the image: it stretches every image to the model's square input, so x scales by `size / width`
and y by `size / height`. Every map is compared at that input resolution, upsampled bilinearly.

- pointing game: the map's maximum lies inside a box, or within `tolerance` pixels of one;
- energy inside: the share of the map's (non-negative) mass inside the union of boxes;
- IoU: the map's top `top_percent` % of pixels against the union of boxes.

The same scores for three baselines show what a map gets for free: `uniform` (a flat map, its ties broken
by seeded noise: a random point), `centre` (a Gaussian in the middle of the image), and `average` (the mean
of the method's own maps over the images, which knows where fractures usually are but not where this one is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from fracture.errors import ConfigError

SCORES = ("pointing_game", "energy_inside", "iou")
BASELINES = ("uniform", "centre", "average")


@dataclass
class Boxes:
    """An image's boxes `[x, y, width, height]` in the pixels of the annotated image (`width` x `height`)."""

    width: int
    height: int
    boxes: list[list[float]]


def read_coco(path: str | Path) -> dict[str, Boxes]:
    """File name -> its boxes, from a COCO annotation file (boxes of every category; polygons are not used:
    their boxes are what the scores need)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"explain.annotations={path} not found; give a COCO JSON file of boxes.")
    data = json.loads(path.read_text())
    if not {"images", "annotations"} <= set(data):
        raise ConfigError(f"{path} is not COCO: it needs `images` and `annotations`.")
    images = {image["id"]: image for image in data["images"]}
    found: dict[str, Boxes] = {}
    for annotation in data["annotations"]:
        image = images.get(annotation["image_id"])
        if image is None or "bbox" not in annotation:
            continue
        entry = found.setdefault(Path(image["file_name"]).name, Boxes(image["width"], image["height"], []))
        entry.boxes.append([float(v) for v in annotation["bbox"]])
    return found


def box_mask(entry: Boxes, size: int, tolerance: int = 0) -> np.ndarray:
    """The union of an image's boxes at the model's `size` x `size` input (stretched as the pipeline does),
    grown by `tolerance` pixels on every side."""
    mask = np.zeros((size, size), bool)
    sx, sy = size / entry.width, size / entry.height
    for x, y, w, h in entry.boxes:
        left, top = int(np.floor(x * sx)) - tolerance, int(np.floor(y * sy)) - tolerance
        right, bottom = int(np.ceil((x + w) * sx)) + tolerance, int(np.ceil((y + h) * sy)) + tolerance
        mask[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
    return mask


def upsampled(heatmap: np.ndarray, size: int) -> np.ndarray:
    """A (h, w) map at (size, size), bilinear, never negative."""
    heatmap = np.asarray(heatmap, np.float64)
    zoomed = ndimage.zoom(heatmap, (size / heatmap.shape[0], size / heatmap.shape[1]), order=1, mode="nearest")
    return np.clip(zoomed[:size, :size], 0.0, None)


def scores(heatmap: np.ndarray, mask: np.ndarray, tolerant: np.ndarray, top_percent: float) -> dict[str, float]:
    """The three scores of one map (at the input resolution) against one image's boxes (`mask`, and
    `tolerant`, the boxes grown by the pointing game's tolerance)."""
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    mass = heatmap.sum()
    cut = np.percentile(heatmap, 100.0 - top_percent)
    top = heatmap >= cut if np.ptp(heatmap) > 0 else np.zeros_like(mask)
    union = np.logical_or(top, mask).sum()
    return {
        "pointing_game": float(tolerant[peak]),
        "energy_inside": float(heatmap[mask].sum() / mass) if mass > 0 else 0.0,
        "iou": float(np.logical_and(top, mask).sum() / union) if union else 0.0,
    }


def baseline_maps(size: int, maps: list[np.ndarray], seed: int) -> dict[str, list[np.ndarray]]:
    """Each baseline's map for each image (`maps`: the method's, at the input resolution)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size]
    sigma = size / 4
    centre = np.exp(-(((xs - size / 2 + 0.5) ** 2 + (ys - size / 2 + 0.5) ** 2) / (2 * sigma**2)))
    average = np.mean(maps, axis=0)
    return {
        "uniform": [1.0 + 1e-6 * rng.random((size, size)) for _ in maps],
        "centre": [centre for _ in maps],
        "average": [average for _ in maps],
    }


def bootstrap_mean(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float, float]:
    """(mean, 95% percentile interval) over images, resampling images."""
    values = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def scored_table(per_image: dict[str, dict[str, np.ndarray]], resamples: int, seed: int) -> dict[str, dict]:
    """For each map kind (the method, the baselines) and score: mean and interval; and for each baseline the
    method's paired difference with its interval (the same resampled images for both)."""
    table = {kind: {s: bootstrap_mean(v[s], resamples, seed) for s in SCORES} for kind, v in per_image.items()}
    method = next(iter(per_image))
    for baseline in BASELINES:
        table[f"{method}-{baseline}"] = {
            s: bootstrap_mean(per_image[method][s] - per_image[baseline][s], resamples, seed) for s in SCORES
        }
    return table
