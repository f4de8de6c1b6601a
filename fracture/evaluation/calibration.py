"""Calibration: map the network's output to a probability that matches observed frequencies, fitted on
validation and stored in the checkpoint, so that every consumer shows the same calibrated number.

Three methods, all from scikit-learn or a one-parameter fit, all stored as plain numbers in `fracture.json`:
- `platt`: logistic regression on the logit, sigmoid(a * logit(p) + b). The bias corrects a shifted output
  (a head whose 0.5 is not the classes' boundary), which temperature scaling cannot.
- `isotonic`: a monotone step function (interpolated linearly between its knots); the most flexible, and
  the most prone to overfit a small validation split.
- `temperature`: sigmoid(logit(p) / T); corrects over- or under-confidence only.
Each is monotone increasing, so ranking, and with it AUROC, stays as it was (isotonic may tie some scores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from fracture.errors import ConfigError

EPSILON = 1e-7
METHODS = ("platt", "isotonic", "temperature")


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=float), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T)."""
    return sigmoid(logit(probabilities) / temperature)


def fit_temperature(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `y_true`."""
    result = minimize_scalar(
        lambda t: log_loss(y_true, apply_temperature(y_prob, t), labels=[0, 1]),
        bounds=(0.05, 20.0),
        method="bounded",
    )
    return float(result.x)


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map, stored as plain numbers: `params` holds `slope`/`intercept` (platt),
    `temperature`, or the isotonic `knots_x`/`knots_y`."""

    method: str
    params: dict = field(default_factory=dict)

    def __call__(self, probabilities) -> np.ndarray:
        p = np.asarray(probabilities, dtype=float)
        if self.method == "platt":
            return sigmoid(self.params["slope"] * logit(p) + self.params["intercept"])
        if self.method == "temperature":
            return apply_temperature(p, self.params["temperature"])
        return np.interp(p, self.params["knots_x"], self.params["knots_y"])  # isotonic, clipped at the ends

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict | None) -> Calibration | None:
        return None if stored is None else cls(stored["method"], dict(stored["params"]))


def fit_calibration(method: str, y_true: np.ndarray, y_prob: np.ndarray) -> Calibration:
    """Fit `method` (one of `METHODS`) to validation labels and raw probabilities."""
    y_true, y_prob = np.asarray(y_true, dtype=int), np.asarray(y_prob, dtype=float)
    if method == "platt":
        # A large C: plain maximum likelihood (Platt's own fit), not a shrunk slope.
        model = LogisticRegression(C=1e6).fit(logit(y_prob).reshape(-1, 1), y_true)
        return Calibration("platt", {"slope": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])})
    if method == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(y_prob, y_true)
        knots = {"knots_x": model.X_thresholds_.tolist(), "knots_y": model.y_thresholds_.tolist()}
        return Calibration("isotonic", knots)
    if method == "temperature":
        return Calibration("temperature", {"temperature": fit_temperature(y_true, y_prob)})
    raise ConfigError(f"eval.calibration must be one of {METHODS} or null, got {method!r}.")
