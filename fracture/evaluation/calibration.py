"""Temperature scaling: one scalar T, fitted on validation, that softens or sharpens the model's logits.

It changes calibration (Brier, ECE) but not ranking, so AUROC is unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import log_loss

EPSILON = 1e-7


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=float), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T)."""
    return 1.0 / (1.0 + np.exp(-logit(probabilities) / temperature))


def fit_temperature(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `y_true`."""
    result = minimize_scalar(
        lambda t: log_loss(y_true, apply_temperature(y_prob, t), labels=[0, 1]),
        bounds=(0.05, 20.0),
        method="bounded",
    )
    return float(result.x)
