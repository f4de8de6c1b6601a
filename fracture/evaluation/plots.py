"""Evaluation and training plots as PNG files, drawn with scikit-learn's displays and matplotlib."""

from __future__ import annotations

from pathlib import Path

import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from fracture.io import atomic_path

# Figures are made with `Figure`, not pyplot: files only, no window, and no switch of the process's
# matplotlib backend (a library must not change the state of the notebook or app that imports it).


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as staging:
        figure.savefig(staging, dpi=110, bbox_inches="tight", format="png")
    return path


def training_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Loss, accuracy and AUC per epoch, training against validation (rows with `train/...`, `val/...` keys)."""
    names = [name for name in ("loss", "accuracy", "auc_approx") if history and f"train/{name}" in history[0]]
    figure = Figure(figsize=(4.5 * len(names), 3.6))
    axes = figure.subplots(1, len(names), squeeze=False)
    epochs = np.arange(1, len(history) + 1)
    for axis, name in zip(axes[0], names, strict=True):
        axis.plot(epochs, [row[f"train/{name}"] for row in history], marker="o", label="train")
        if f"val/{name}" in history[0]:
            axis.plot(epochs, [row[f"val/{name}"] for row in history], marker="o", label="validation")
        axis.set(title=name, xlabel="epoch", ylabel=name)
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.legend()
    return _save(figure, path)


def confusion_matrix(matrix: list[list[int]], class_names: tuple[str, str], threshold: float, path: Path) -> Path:
    """The confusion matrix at the chosen threshold; rows are true classes."""
    positive, negative = class_names
    figure = Figure(figsize=(4.6, 4))
    axis = figure.subplots()
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=[negative, positive]).plot(ax=axis, colorbar=False)
    axis.set_title(f"Confusion matrix at threshold {threshold:.3f}")
    return _save(figure, path)


def roc_curve(y_true, y_prob, threshold: float, sensitivity: float, specificity: float, auroc_ci, path: Path) -> Path:
    """ROC curve with the operating point of the chosen threshold marked."""
    figure = Figure(figsize=(4.6, 4.2))
    axis = figure.subplots()
    RocCurveDisplay.from_predictions(y_true, y_prob, ax=axis, name="model", plot_chance_level=True)
    axis.plot(1 - specificity, sensitivity, "o", color="crimson", label=f"threshold {threshold:.3f}")
    axis.set(
        title=f"ROC (95% CI {auroc_ci[0]:.3f}-{auroc_ci[1]:.3f})",
        xlabel="1 - specificity",
        ylabel="sensitivity",
    )
    axis.legend(loc="lower right")
    return _save(figure, path)


def precision_recall_curve(y_true, y_prob, path: Path) -> Path:
    figure = Figure(figsize=(4.6, 4.2))
    axis = figure.subplots()
    PrecisionRecallDisplay.from_predictions(y_true, y_prob, ax=axis, name="model", plot_chance_level=True)
    axis.set(title="Precision-recall", xlabel="recall (sensitivity)", ylabel="precision")
    axis.legend(loc="lower left")
    return _save(figure, path)


def reliability_diagram(y_true, probabilities: dict[str, np.ndarray], path: Path) -> Path:
    """Observed positive rate against predicted probability, for one or more probability sets."""
    figure = Figure(figsize=(4.6, 4.2))
    axis = figure.subplots()
    for name, y_prob in probabilities.items():
        CalibrationDisplay.from_predictions(y_true, y_prob, n_bins=10, ax=axis, name=name)
    axis.set(title="Reliability diagram", xlabel="mean predicted P(fractured)", ylabel="observed fraction fractured")
    axis.legend(loc="upper left")
    return _save(figure, path)


def split_figures(y_true, y_prob, threshold: float, scores: dict, class_names, reliability: dict, stem: Path) -> dict:
    """A split's evaluation figures by title, written as `<stem>_<kind>.png`: the confusion matrix and ROC curve
    at `threshold` (with `scores` from `metrics.binary_metrics`), the precision-recall curve, and the
    reliability diagram of the `reliability` probabilities (name -> probabilities)."""
    interval = (scores["auroc_ci_low"], scores["auroc_ci_high"])
    sensitivity, specificity = scores["sensitivity"], scores["specificity"]
    return {
        "Confusion matrix": confusion_matrix(
            scores["confusion_matrix"], class_names, threshold, Path(f"{stem}_confusion_matrix.png")
        ),
        "ROC curve": roc_curve(y_true, y_prob, threshold, sensitivity, specificity, interval, Path(f"{stem}_roc.png")),
        "Precision-recall curve": precision_recall_curve(y_true, y_prob, Path(f"{stem}_pr.png")),
        "Reliability diagram": reliability_diagram(y_true, reliability, Path(f"{stem}_reliability.png")),
    }


def forest_plot(rows: list[dict], overall: tuple[float, float, float], path: Path) -> Path:
    """AUROC with its 95% interval per subgroup (`cohorts.subgroup_results` rows), beside the whole split's
    (`overall`: AUROC, low, high); subgroups too small to measure are drawn hollow and marked."""
    figures = ("auroc", "auroc_ci_low", "auroc_ci_high")
    shown = [row for row in rows if row["n"] and np.all(np.isfinite([row[key] for key in figures]))]
    figure = Figure(figsize=(5.6, 0.8 + 0.32 * (len(shown) + 1)))
    axis = figure.subplots()
    labels = ["whole split"]
    point_and_interval(axis, 0, *overall, marker="D", color="black")
    for y, row in enumerate(shown, start=1):
        face = "none" if row["too_small"] else "tab:blue"
        point_and_interval(axis, y, *(row[key] for key in figures), marker="o", color="tab:blue", mfc=face)
        labels.append(f"{row['subgroup']} (n={row['n']}){' *' if row['too_small'] else ''}")
    axis.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    axis.set_yticks(range(len(labels)), labels)
    axis.invert_yaxis()
    axis.set(xlim=(0.0, 1.0), xlabel="AUROC (95% interval)", title="AUROC by subgroup (* too few to measure)")
    return _save(figure, path)


def point_and_interval(axis, y: float, point: float, low: float, high: float, **marker) -> None:
    """`point` at height `y` with its interval from `low` to `high`, drawn apart: a bootstrap percentile
    interval need not contain the point (a small subgroup's may lie wholly on one side of it), which
    matplotlib's `errorbar` refuses."""
    axis.plot([low, high], [y, y], "|-", color=marker["color"], markersize=8)
    axis.plot([point], [y], linestyle="none", **marker)


def explanation_sheet(images, maps, masks, titles: list[str], path: Path) -> Path:
    """Images with their heat map blended over them and the annotated boxes outlined, one column each."""
    figure = Figure(figsize=(3.2 * len(images), 3.6))
    for column, (image, heatmap, mask, title) in enumerate(zip(images, maps, masks, titles, strict=True)):
        axis = figure.add_subplot(1, len(images), column + 1)
        axis.imshow(np.asarray(image, np.uint8))
        axis.imshow(heatmap, cmap="jet", alpha=0.4, vmin=0.0, vmax=max(float(heatmap.max()), 1e-12))
        axis.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.2)
        axis.set_title(title, fontsize=7)
        axis.set_axis_off()
    figure.suptitle("Grad-CAM and the radiologists' boxes (white): best, median and worst by energy inside", fontsize=8)
    return _save(figure, path)
