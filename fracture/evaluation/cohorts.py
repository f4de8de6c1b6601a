"""Figures for parts of a split and for its studies: subgroups (body part, view, implants) and studies.

A model that is good on average can fail a subgroup: hips, lateral views, images with hardware. When a
label table names subgroup columns (`data.columns.subgroups`), every figure is computed per subgroup with
its count and AUROC interval, and a subgroup with too few positives or negatives to measure is flagged
rather than read. A 0/1 column (FracAtlas' `hand`, `hardware`, `lateral`) is one subgroup, the images
flagged 1; any other column gives one subgroup per value (`body_part=WRIST`).

Labels that belong to a study (MURA's) are judged per study, as its paper does: a study's probability is
the mean (or the maximum) of its images', and the study-level figures use a threshold chosen on the
validation split's studies.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from fracture.errors import ConfigError
from fracture.evaluation.metrics import binary_metrics, group_level
from fracture.evaluation.threshold import choose_threshold
from fracture.io import write_text_atomic

# A subgroup with fewer positives or negatives than this is flagged: its AUROC interval is too wide to read.
MIN_PER_CLASS = 10
AGGREGATIONS = ("mean", "max")
SUBGROUP_FIGURES = ("auroc", "auroc_ci_low", "auroc_ci_high", "sensitivity", "specificity", "precision", "brier")


def subgroup_members(subgroups: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Subgroup name -> a boolean mask over the split's images (see the module doc for the names)."""
    members = {}
    for column, values in subgroups.items():
        values = np.asarray(values, dtype=object)
        if set(values) <= {"0", "1"}:
            members[column] = values == "1"
        else:
            members |= {f"{column}={value}": values == value for value in sorted(set(values)) if value}
    return members


def subgroup_results(
    split: str,
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float,
    subgroups: dict[str, list[str]],
    groups: list[str],
    resamples: int,
    seed: int,
) -> tuple[dict, list[dict]]:
    """(`metrics.json` entries `<split>/subgroup/<name>/<figure>`, one row per subgroup for the report)."""
    results, rows = {}, []
    groups = np.asarray(groups, dtype=object)
    for name, mask in subgroup_members(subgroups).items():
        count, positives = int(mask.sum()), int(y_true[mask].sum())
        too_small = min(positives, count - positives) < MIN_PER_CLASS
        row = {"subgroup": name, "n": count, "positives": positives, "too_small": too_small}
        figures = {}
        if count:
            figures = binary_metrics(y_true[mask], y_prob[mask], threshold, groups[mask], resamples, seed)
            figures.pop("confusion_matrix")
            row |= {figure: figures[figure] for figure in SUBGROUP_FIGURES}
        rows.append(row)
        every = {**figures, **row}  # every figure in metrics.json; the report's table shows the main ones
        results |= {f"{split}/subgroup/{name}/{key}": value for key, value in every.items() if key != "subgroup"}
    return results, rows


def study_level(y_true, y_prob, studies: list[str], aggregation: str = "mean"):
    """(labels, probabilities, study names, images per study): one row per study, its probability the mean
    or the maximum of its images'. Every image of a study has the study's label (checked when scanned)."""
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"eval.study_aggregation must be one of {AGGREGATIONS}, got {aggregation!r}.")
    labels, probabilities, names = group_level(y_true, y_prob, studies)  # the mean, per study
    index = np.unique(np.asarray(studies), return_inverse=True)[1]
    if aggregation == "max":
        probabilities = np.full(len(names), -np.inf)
        np.maximum.at(probabilities, index, np.asarray(y_prob, float))
    return labels, probabilities, names, np.bincount(index)


def study_threshold(y_val, p_val, studies_val, aggregation: str, target_sensitivity: float | None) -> float:
    """The study-level threshold, chosen on the validation split's studies by the image threshold's rule."""
    labels, probabilities, _, _ = study_level(y_val, p_val, studies_val, aggregation)
    return choose_threshold(labels, probabilities, target_sensitivity)[0]


def write_studies(path: Path, labels, probabilities, names, counts) -> Path:
    """`<split>_studies.csv` from a `study_level` table: each study's label, probability and image count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study", "label", "probability", "images"])
    for row in zip(names, labels, probabilities, counts, strict=True):
        writer.writerow([row[0], int(row[1]), f"{row[2]:.6f}", int(row[3])])
    return write_text_atomic(path, buffer.getvalue())
