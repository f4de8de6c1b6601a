"""The parity check: the `.keras` model and each exported artifact must give the same probabilities.

Reference images are written by the check itself (synthetic radiographs of both classes, random noise, an
all-black and an all-white frame), plus any files the user adds, so that a mismatch shows on realistic and
on extreme inputs alike. Each artifact runs in its own runtime, as a deployment would run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracture.data.images import UnreadableImage, read_xray
from fracture.data.pipeline import resize_image
from fracture.data.synthetic import render_bone
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


def reference_batch(image_size: int, inputs: list[str | Path] = (), seed: int = 0) -> np.ndarray:
    """float32 (N, S, S, 3) in 0..255: 4 synthetic bones per class, 2 noise images, black, white, then `inputs`."""
    rng = np.random.default_rng(seed)
    grey = [render_bone(rng, image_size, fractured=index % 2 == 0) for index in range(8)]
    grey += [rng.integers(0, 256, (image_size, image_size), dtype=np.uint8) for _ in range(2)]
    grey += [np.zeros((image_size, image_size), np.uint8), np.full((image_size, image_size), 255, np.uint8)]
    images = [np.repeat(pixels[..., None], 3, axis=2) for pixels in grey]
    for path in inputs:
        try:
            pixels = read_xray(path)
        except UnreadableImage as error:
            raise UnreadableImage(f"verify input {path}: {error}") from error
        images.append(np.asarray(resize_image(pixels, (image_size, image_size))))
    return np.stack(images).astype(np.float32)


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
