"""Fitting a calibration (the map itself, `Calibration`, is a model artefact: `fracture.models.calibration`):
map the network's output to a probability that matches observed frequencies, fitted on
validation and stored in the checkpoint, so that every consumer shows the same calibrated number.

Three methods, all from scikit-learn or a one-parameter fit, all stored as plain numbers in `fracture.json`:
- `platt`: logistic regression on the logit, sigmoid(a * logit(p) + b). The bias corrects a shifted output
  (a head whose 0.5 is not the classes' boundary), which temperature scaling cannot.
- `isotonic`: a monotone step function (interpolated linearly between its knots); the most flexible, and
  the most prone to overfit a small validation split.
- `temperature`: sigmoid(logit(p) / T); corrects over- or under-confidence only.
Each is monotone increasing, so ranking, and with it AUROC, stays as it was (isotonic may tie some scores).

Fitted on a validation split that the model separates perfectly, or on a few images, plain maximum
likelihood has no finite answer: Platt's slope and isotonic's steps run to 0 and 1, and a test image on the
wrong side would be reported with probability 0.000000. So the fit is regularised as Platt proposed: the
targets are (n+ + 1) / (n+ + 2) for positives and 1 / (n- + 2) for negatives instead of 1 and 0 (for Platt
and temperature; isotonic's steps are limited the same way), and every calibrated probability is kept within
[1 / (n + 2), (n + 1) / (n + 2)] for n validation images, Laplace's rule of succession: n observations cannot
justify a frequency closer to 0 or 1 than that. `evidence` says when the fit had too little to go on.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from fracture.errors import ConfigError
from fracture.evaluation.metrics import expected_calibration_error
from fracture.models.calibration import EPSILON, Calibration, apply_temperature, logit

METHODS = ("platt", "isotonic", "temperature")


# Fewer validation images of either class than this, or a perfectly separated validation split, and the
# report says that the calibration rests on too little evidence.
MIN_CLASS_EVIDENCE = 30


def platt_targets(y_true: np.ndarray) -> np.ndarray:
    """Platt's regularised targets: (n+ + 1) / (n+ + 2) for positives, 1 / (n- + 2) for negatives."""
    positives, negatives = int(np.sum(y_true == 1)), int(np.sum(y_true == 0))
    return np.where(y_true == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))


def cross_entropy(targets: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(probabilities, EPSILON, 1.0 - EPSILON)
    return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log1p(-p)))


def fit_temperature(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the cross-entropy against Platt's targets for `y_true`."""
    targets = platt_targets(np.asarray(y_true))
    result = minimize_scalar(
        lambda t: cross_entropy(targets, apply_temperature(y_prob, t)), bounds=(0.05, 20.0), method="bounded"
    )
    return float(result.x)


def evidence(y_true: np.ndarray, y_prob: np.ndarray) -> dict:
    """What a calibration was fitted on: images per class, whether some threshold separates the classes
    perfectly, and whether that is too little evidence to trust calibrated probabilities."""
    y_true, y_prob = np.asarray(y_true, dtype=int), np.asarray(y_prob, dtype=float)
    positives, negatives = int(np.sum(y_true == 1)), int(np.sum(y_true == 0))
    separable = bool(positives and negatives and y_prob[y_true == 1].min() > y_prob[y_true == 0].max())
    return {
        "positives": positives,
        "negatives": negatives,
        "separable": separable,
        "too_little": separable or min(positives, negatives) < MIN_CLASS_EVIDENCE,
    }


def fit_calibration(method: str, y_true: np.ndarray, y_prob: np.ndarray) -> Calibration:
    """Fit `method` (one of `METHODS`) to validation labels and raw probabilities (see the module doc for the
    regularisation and the bounds)."""
    y_true, y_prob = np.asarray(y_true, dtype=int), np.asarray(y_prob, dtype=float)
    count = len(y_true)
    bounds = [1.0 / (count + 2), (count + 1.0) / (count + 2)]
    if method == "platt":
        # Platt's targets as weights on both labels, and a large C: maximum likelihood against the targets.
        targets = platt_targets(y_true)
        features = np.tile(logit(y_prob).reshape(-1, 1), (2, 1))
        labels = np.concatenate([np.ones(count, int), np.zeros(count, int)])
        model = LogisticRegression(C=1e6).fit(features, labels, sample_weight=np.concatenate([targets, 1 - targets]))
        slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
        return Calibration("platt", {"slope": slope, "intercept": intercept, "bounds": bounds})
    if method == "isotonic":
        model = IsotonicRegression(y_min=bounds[0], y_max=bounds[1], out_of_bounds="clip").fit(y_prob, y_true)
        knots = {"knots_x": model.X_thresholds_.tolist(), "knots_y": model.y_thresholds_.tolist()}
        return Calibration("isotonic", {**knots, "bounds": bounds})
    if method == "temperature":
        return Calibration("temperature", {"temperature": fit_temperature(y_true, y_prob), "bounds": bounds})
    raise ConfigError(f"eval.calibration must be one of {METHODS} or null, got {method!r}.")


def calibration_scores(method: str, y_true, raw: np.ndarray, calibrated: np.ndarray, fitted_on: tuple) -> dict:
    """How a split's probabilities fare before and after `method`'s calibration (Brier score and expected
    calibration error), with the evidence it was fitted on (`fitted_on`: that split's labels and raw outputs)."""
    scores = {"method": method, **{f"fit_{key}": value for key, value in evidence(*fitted_on).items()}}
    for name, probabilities in (("before", raw), ("after", calibrated)):
        scores[f"brier_{name}"] = float(brier_score_loss(y_true, probabilities))
        scores[f"ece_{name}"] = expected_calibration_error(y_true, probabilities)
    return scores
