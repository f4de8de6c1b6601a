"""Choosing the decision threshold on validation data. It is stored with the model and reused on test."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from fracture.errors import ConfigError


def youden_threshold(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The threshold that maximises Youden's J = sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y_true, y_prob, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def sensitivity_threshold(y_true: np.ndarray, y_prob: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity reaches `target` (so specificity is as high as it can be)."""
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"eval.target_sensitivity must be in (0, 1], got {target}.")
    fpr, tpr, thresholds = roc_curve(y_true, y_prob, drop_intermediate=False)
    reaching = np.flatnonzero(tpr >= target)
    return float(min(thresholds[reaching[0]], 1.0))


def threshold_rule(target_sensitivity: float | None = None) -> str:
    """The rule's name, as stored in a checkpoint's `threshold_method`: `youden` or `sensitivity>=0.95`."""
    return "youden" if target_sensitivity is None else f"sensitivity>={target_sensitivity:g}"


def choose_threshold(
    y_true: np.ndarray, y_prob: np.ndarray, target_sensitivity: float | None = None
) -> tuple[float, str]:
    """Youden's J by default, or the target-sensitivity rule; returns (threshold, `threshold_rule`)."""
    if len(np.unique(y_true)) < 2:
        raise ConfigError("choosing a threshold needs both classes in the validation split.")
    if target_sensitivity is None:
        return youden_threshold(y_true, y_prob), threshold_rule()
    return sensitivity_threshold(y_true, y_prob, target_sensitivity), threshold_rule(target_sensitivity)
