"""Clinical metrics for a binary classifier's probabilities, computed with scikit-learn where it has them.

All functions take `y_true` (0/1, 1 = fractured) and `y_prob` (the model's P(fractured)) as 1-D arrays.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def specificity(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """True-negative rate: the share of negatives predicted negative (recall of class 0); NaN without negatives."""
    return float(skm.recall_score(y_true, y_pred, pos_label=0, zero_division=np.nan))


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10) -> float:
    """ECE of P(positive): over equal-width probability bins, the size-weighted gap between the mean
    predicted probability and the observed positive rate."""
    y_true, y_prob = np.asarray(y_true, float), np.asarray(y_prob, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(y_prob, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(y_prob[members].mean() - y_true[members].mean())
    return float(error)


def bootstrap_auroc_ci(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    groups: np.ndarray | list | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for AUROC.

    With `groups`, whole groups are resampled (a cluster bootstrap): augmented copies of one radiograph are
    not independent, and resampling them one by one would make the interval falsely narrow.
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    units = np.arange(len(y_true)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    members = [np.flatnonzero(units == u) for u in range(units.max() + 1)]
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(resamples):
        chosen = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        if len(np.unique(y_true[chosen])) == 2:
            scores.append(skm.roc_auc_score(y_true[chosen], y_prob[chosen]))
    if not scores:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(scores, [tail, 100.0 - tail])
    return float(low), float(high)


def binary_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float,
    groups: np.ndarray | list | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float | int | list]:
    """Every headline number at one decision threshold (predict positive when `y_prob >= threshold`).

    A figure that a class missing from `y_true` leaves undefined is NaN (the report's "n/a"), never 0: the
    sensitivity of images with no fracture, the specificity of fractured ones alone (a subgroup such as
    implants), and the AUROC, average precision and balanced accuracy, which need both classes; Cohen's kappa
    where the labels and the predictions are all one class."""
    y_true = np.asarray(y_true).astype(int).ravel()
    y_prob = np.asarray(y_prob, dtype=float).ravel()
    y_pred = (y_prob >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    kappa_defined = len(np.union1d(y_true, y_pred)) == 2  # chance agreement is 1 when both say one class alone
    low, high = (
        bootstrap_auroc_ci(y_true, y_prob, groups, bootstrap_resamples, seed=seed) if both_classes else (np.nan,) * 2
    )
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "n": int(len(y_true)),
        "positives": int(y_true.sum()),
        "threshold": float(threshold),
        "auroc": float(skm.roc_auc_score(y_true, y_prob)) if both_classes else float("nan"),
        "auroc_ci_low": low,
        "auroc_ci_high": high,
        "average_precision": float(skm.average_precision_score(y_true, y_prob)) if both_classes else float("nan"),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)) if both_classes else float("nan"),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0.0)),
        "sensitivity": float(skm.recall_score(y_true, y_pred, zero_division=np.nan)),
        "specificity": specificity(y_true, y_pred),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0.0)),
        "cohen_kappa": float(skm.cohen_kappa_score(y_true, y_pred, labels=[0, 1])) if kappa_defined else float("nan"),
        "brier": float(skm.brier_score_loss(y_true, y_prob, pos_label=1)),
        "ece": expected_calibration_error(y_true, y_prob),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def classification_report(
    y_true: np.ndarray, y_prob: np.ndarray, threshold: float, class_names: tuple[str, str]
) -> str:
    """scikit-learn's text report at `threshold`; `class_names` is (positive, negative)."""
    y_pred = (np.asarray(y_prob) >= threshold).astype(int)
    return skm.classification_report(
        y_true, y_pred, labels=[1, 0], target_names=list(class_names), digits=3, zero_division=0.0
    )


def group_level(y_true, y_prob, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapse images to one row per group: the group's label and its mean probability."""
    names, index = np.unique(np.asarray(groups), return_inverse=True)
    y_true, y_prob = np.asarray(y_true, float), np.asarray(y_prob, float)
    counts = np.bincount(index)
    return (
        np.round(np.bincount(index, weights=y_true) / counts).astype(int),
        np.bincount(index, weights=y_prob) / counts,
        names,
    )
