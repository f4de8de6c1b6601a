"""A one-page Markdown report of an evaluation, with the plots embedded."""

from __future__ import annotations

import math
import os
from pathlib import Path

from fracture.io import write_text_atomic

MAX_LISTED_PROBLEMS = 20
HEADLINE = [
    ("AUROC", "auroc"),
    ("Average precision", "average_precision"),
    ("Sensitivity (recall)", "sensitivity"),
    ("Specificity", "specificity"),
    ("Precision (PPV)", "precision"),
    ("F1", "f1"),
    ("Balanced accuracy", "balanced_accuracy"),
    ("Accuracy", "accuracy"),
    ("Cohen's kappa", "cohen_kappa"),
    ("Brier score", "brier"),
    ("Expected calibration error", "ece"),
]


def _number(value) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


def _auroc(auroc: float, low: float, high: float, label: str = "") -> str:
    """An AUROC with its interval; one "n/a" where a class is missing (no interval can be drawn then)."""
    if math.isnan(auroc):
        return "n/a"
    return f"{_number(auroc)} ({label}{_number(low)}-{_number(high)})"


def _with_ci(results: dict, prefix: str) -> str:
    low, high = results[f"{prefix}/auroc_ci_low"], results[f"{prefix}/auroc_ci_high"]
    return _auroc(results[f"{prefix}/auroc"], low, high, "95% CI ")


def _metrics_table(evaluation) -> list[str]:
    split, results = evaluation.split, evaluation.results
    prefixes = [split] + ([f"{split}/group"] if f"{split}/group/auroc" in results else [])
    header = "| metric | per image | per source image |" if len(prefixes) == 2 else "| metric | value |"
    lines = [header, "|---" * (len(prefixes) + 1) + "|"]
    for label, key in HEADLINE:
        cells = [_with_ci(results, p) if key == "auroc" else _number(results[f"{p}/{key}"]) for p in prefixes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    counts = [f"{results[f'{p}/n']} ({results[f'{p}/positives']} positive)" for p in prefixes]
    lines.append("| Count | " + " | ".join(counts) + " |")
    return lines


def _problems_section(problems) -> list[str]:
    """The files the run could not use, so that no skipped file goes unnoticed (the first 20, then a count)."""
    count = f"{len(problems)} file(s); all are listed in `data_problems.csv` in the run folder."
    lines = ["", "## Files left out or changed", "", count, ""]
    lines += ["| split | file | problem |", "|---|---|---|"]
    lines += [f"| {p.split} | `{p.path}` | {p.problem} |" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"| ... | {len(problems) - MAX_LISTED_PROBLEMS} more | |")
    return lines


def _thin_calibration_warning(results: dict, calibration: str, metadata: dict) -> str:
    positives, negatives = results[f"{calibration}/fit_positives"], results[f"{calibration}/fit_negatives"]
    separated = ", which the model separates perfectly" if results[f"{calibration}/fit_separable"] else ""
    low, high = metadata["calibration"]["params"].get("bounds", (0.0, 1.0))
    return (
        f"**The calibration rests on too little evidence**: it was fitted on {positives} positive and {negatives} "
        f"negative validation images{separated}. Its probabilities are regularised and kept within "
        f"[{low:.4f}, {high:.4f}]; read them as rough, and fit it on a larger validation split."
    )


def _external_lines(external: dict, metadata: dict) -> list[str]:
    """What an external evaluation kept from training, and what a site refit."""
    lines = [
        f"- **External validation**: `{external['root']}` is not the data this model was trained on. The threshold "
        "and calibration are the ones chosen on the training data's validation split"
    ]
    for part, fitted in external.get("site_parts", {}).items():
        lines[0] = (
            f"- **External validation, adopted at this site**: `{external['root']}` is not the data this model was "
            f"trained on. Its calibration and threshold were refit on {fitted} labelled images of this site "
            f"(`site_model.keras`, threshold {metadata['threshold']:.4f}); every figure below is on the other "
            f"images (`{part}`), which neither the training nor the refit saw"
        )
    return lines


def _comparison_table(training: dict, results: dict, split: str) -> list[str]:
    """The training run's validation figures beside this split's."""
    lines = ["| figure | training data, validation | this data |", "|---|---|---|"]
    for label, key in [("AUROC", "auroc"), ("Sensitivity", "sensitivity"), ("Specificity", "specificity")]:
        lines.append(f"| {label} | {_number(training.get(key, float('nan')))} | {_number(results[f'{split}/{key}'])} |")
    lines.append(f"| Images | {training.get('n', 'n/a')} | {results[f'{split}/n']} |")
    return lines


def _subgroup_table(rows: list[dict]) -> list[str]:
    lines = [
        "| subgroup | images (positive) | AUROC (95% CI) | sensitivity | specificity | |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        auroc = _auroc(row["auroc"], row["auroc_ci_low"], row["auroc_ci_high"]) if row["n"] else "n/a"
        cells = [_number(row[key]) if row["n"] else "n/a" for key in ("sensitivity", "specificity")]
        note = "too few to measure" if row["too_small"] else ""
        lines.append(
            f"| {row['subgroup']} | {row['n']} ({row['positives']}) | {auroc} | {' | '.join(cells)} | {note} |"
        )
    return lines


def _study_lines(results: dict, split: str) -> list[str]:
    study = f"{split}/study"
    return [
        f"Per study ({results[f'{study}/n']} studies, {results[f'{study}/positives']} positive; a study's "
        f"probability is the {results[f'{study}/aggregation']} of its images'): AUROC {_with_ci(results, study)}, "
        f"sensitivity {_number(results[f'{study}/sensitivity'])} and specificity "
        f"{_number(results[f'{study}/specificity'])} at threshold {results[f'{study}/threshold']:.4f} (chosen on "
        f"{results[f'{study}/threshold_source']}), Cohen's kappa {_number(results[f'{study}/cohen_kappa'])}.",
        "",
    ]


BASELINE_NAMES = {"uniform": "uniform (a random point)", "centre": "centred Gaussian", "average": "average of the maps"}
SCORE_NAMES = {"pointing_game": "pointing game", "energy_inside": "energy inside", "iou": "IoU"}


def _interval(figures: tuple[float, float, float], signed: bool = False) -> str:
    mean, low, high = figures
    form = "{:+.3f}" if signed else "{:.3f}"
    return f"{form.format(mean)} ({form.format(low)} to {form.format(high)})"


def _verdict(difference: tuple[float, float, float]) -> str:
    _, low, high = difference
    return "beats" if low > 0 else "is worse than" if high < 0 else "cannot be told apart from"


def _explanation_section(section: dict, path: Path, metadata: dict) -> list[str]:
    """The explanation scores of one split against its boxes, with the baselines, and what they say."""
    counts, settings, split = section["counts"], section["settings"], section["split"]
    lines = [
        "",
        f"## Explanations against the annotated boxes ({split} split)",
        "",
        f"{counts['images']} fractured images with boxes ({counts['fractured_without_boxes']} fractured images "
        f"without boxes; {counts['boxes_not_in_split']} annotated files not in this split). Maps at the "
        f"{metadata['image_size']} px input; the pointing game counts a maximum within {settings.tolerance_px} px "
        f"of a box; IoU takes the map's top {settings.top_percent:g}% of pixels. Means with 95% bootstrap intervals.",
    ]
    for method, found in section["methods"].items():
        table = found["table"]
        lines += ["", f"| {method} | " + " | ".join(SCORE_NAMES.values()) + " |", "|---" * 4 + "|"]
        for kind in (method, *BASELINE_NAMES):
            label = kind if kind == method else BASELINE_NAMES[kind]
            lines.append(f"| {label} | " + " | ".join(_interval(table[kind][s]) for s in SCORE_NAMES) + " |")
        said = []
        for baseline, name in BASELINE_NAMES.items():
            difference = table[f"{method}-{baseline}"]
            parts = [f"{SCORE_NAMES[s]} {_interval(difference[s], signed=True)}" for s in SCORE_NAMES]
            said.append(f"{_verdict(difference['energy_inside'])} the {name} by energy inside ({'; '.join(parts)})")
        rate = counts["images"] / found["seconds"] if found["seconds"] else float("nan")
        lines += [
            "",
            f"{method} {'; '.join(said)}. A map that does not beat the baselines does not show where the fracture "
            f"is, however convincing it looks. The maps took {found['seconds']:.1f} s ({rate:.1f} images/s).",
            "",
            f"![{split} {method} against the boxes]({os.path.relpath(found['sheet'], path.parent)})",
        ]
    return lines


def write_report(
    path: Path,
    evaluations,
    metadata: dict,
    ckpt_path: Path,
    training_curves: Path | None = None,
    problems=(),
    qualifiers=(),
    external: dict | None = None,
    explanations=(),
) -> Path:
    """Write `path` (Markdown) covering every evaluated split, with plots linked relative to it, the data
    `problems` (`fracture.data.health.FileProblem`) of the run, and `qualifiers` (sentences about how the
    model was trained, e.g. epochs cut short) before any number. `external` (root, the training run's
    validation figures, site parts) marks an evaluation on data the model was not trained on."""
    positive, negative = metadata["positive_class"], metadata["negative_class"]
    threshold = metadata["threshold"]
    site = metadata.get("threshold_source") == "site"
    chosen_on = "this site's labelled part" if site else "the validation split"
    lines = [
        "# fracture evaluation report",
        "",
        "> For research and teaching only. Not a medical device: do not use these numbers for diagnosis.",
        "",
        f"- Checkpoint: `{ckpt_path}` (epoch {metadata.get('epoch', '?')}, trained on {metadata.get('backend', '?')})",
        f"- Positive class: **{positive}**; negative class: {negative}",
        f"- Decision threshold: **{threshold:.4f}**, chosen on {chosen_on} by {metadata['threshold_method']} and "
        "stored in the checkpoint",
    ]
    if metadata.get("calibration"):
        lines.append(
            f"- Probabilities calibrated by {metadata['calibration']['method']} scaling fitted on "
            f"{chosen_on}; the threshold is on the calibrated scale"
        )
    if external:
        lines += _external_lines(external, metadata)
    for qualifier in qualifiers:
        lines.append(f"- **Training was shortened:** {qualifier}")
    if problems:
        lines += _problems_section(list(problems))
    if training_curves is not None:
        lines += ["", "## Training curves", "", f"![Training curves]({os.path.relpath(training_curves, path.parent)})"]
    for evaluation in evaluations:
        split, results = evaluation.split, evaluation.results
        lines += ["", f"## {split} split", ""]
        groups, n = results[f"{split}/groups"], results[f"{split}/n"]
        if groups < n:
            lines.append(
                f"These {n} images come from only **{groups} independent source images**; the per-source column "
                "averages each source's probabilities, and the AUROC interval resamples whole sources."
            )
        if shared := results.get(f"{split}/shared_with_train/files"):
            lines.append(
                f"**{shared} of these {n} images ({results[f'{split}/shared_with_train/groups']} groups) show a "
                "radiograph that is also in train**: their scores are inflated. Cut the data by group "
                "(`data.split=grouped`) for honest figures."
            )
        if split == "val":
            lines.append(
                "The threshold was chosen on this split, so its threshold-dependent numbers are optimistic; "
                "judge the model on a held-out test split."
            )
        lines += ["", *_metrics_table(evaluation), ""]
        if external and external.get("training"):
            lines += [
                "Beside the training data's own validation figures:",
                "",
                *_comparison_table(external["training"], results, split),
                "",
            ]
        if f"{split}/study/auroc" in results:
            lines += _study_lines(results, split)
        if evaluation.subgroups:
            lines += ["### Subgroups", "", *_subgroup_table(evaluation.subgroups), ""]
        calibration = f"{split}/calibration"
        if f"{calibration}/method" in results:
            brier = f"Brier {results[f'{calibration}/brier_before']:.4f} -> {results[f'{calibration}/brier_after']:.4f}"
            ece = f"ECE {results[f'{calibration}/ece_before']:.4f} -> {results[f'{calibration}/ece_after']:.4f}"
            method = results[f"{calibration}/method"]
            lines += [f"Calibration ({method}), network output -> calibrated: {brier}, {ece}.", ""]
            if results.get(f"{calibration}/fit_too_little"):
                lines += [_thin_calibration_warning(results, calibration, metadata), ""]
        lines += ["```", evaluation.report_text.rstrip(), "```", ""]
        for title, figure in evaluation.figures.items():
            lines.append(f"![{split} {title}]({os.path.relpath(figure, path.parent)})")
    for section in explanations:
        lines += _explanation_section(section, path, metadata)
    return write_text_atomic(path, "\n".join(lines) + "\n")
