"""A fitted calibration map: part of a checkpoint (`fracture.json`) and of an export's contract, applied by
prediction, the service and every exported model. How it is fitted on validation is evaluation's concern:
`fracture.evaluation.calibration`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

EPSILON = 1e-7


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=float), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T)."""
    return sigmoid(logit(probabilities) / temperature)


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map, stored as plain numbers: `params` holds `slope`/`intercept` (platt),
    `temperature`, or the isotonic `knots_x`/`knots_y`."""

    method: str
    params: dict = field(default_factory=dict)

    def __call__(self, probabilities) -> np.ndarray:
        p = np.asarray(probabilities, dtype=float)
        if self.method == "platt":
            calibrated = sigmoid(self.params["slope"] * logit(p) + self.params["intercept"])
        elif self.method == "temperature":
            calibrated = apply_temperature(p, self.params["temperature"])
        else:
            calibrated = np.interp(p, self.params["knots_x"], self.params["knots_y"])  # isotonic, flat at the ends
        low, high = self.params.get("bounds", (EPSILON, 1.0 - EPSILON))  # calibrations stored before the bounds
        return np.clip(calibrated, low, high)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict | None) -> Calibration | None:
        return None if stored is None else cls(stored["method"], dict(stored["params"]))
