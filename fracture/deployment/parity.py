"""The parity check: the `.keras` model and each exported artifact must give the same probabilities.

The reference images (`fracture.data.reference_images`) are synthetic radiographs of both classes, random noise,
an all-black and an all-white frame, plus any files the user adds. Each artifact runs in its own runtime, as a
deployment would run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracture.errors import ExportError
from fracture.models.runtimes import load_runner

DEFAULT_TOLERANCE = 1e-4  # float32 artifacts; the largest difference measured here is under 1e-6


@dataclass(frozen=True)
class ParityResult:
    format: str
    max_abs_difference: float
    tolerance: float
    images: int
    error: str | None = None  # the artifact could not run at all

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_difference <= self.tolerance)  # NaN fails too


def check_parity(
    model, artifacts: dict[str, Path], batch: np.ndarray, tolerance: float = DEFAULT_TOLERANCE
) -> list[ParityResult]:
    """Compare `model` (Keras) with every artifact on `batch`; one result per format, failing ones included."""
    expected = np.asarray(model.predict_on_batch(batch), dtype=np.float64).reshape(-1)
    results = []
    for name, path in artifacts.items():
        try:
            actual = np.asarray(load_runner(name, path)(batch), dtype=np.float64).reshape(-1)
        except ExportError:
            raise  # a missing runtime or artifact: the user's to fix, and the message says how
        except Exception as error:  # the runtime refused the artifact: that is a failed check, not a crash
            results.append(ParityResult(name, float("inf"), tolerance, len(batch), f"{type(error).__name__}: {error}"))
            continue
        difference = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else float("inf")
        results.append(ParityResult(name, difference, tolerance, len(batch)))
    return results
