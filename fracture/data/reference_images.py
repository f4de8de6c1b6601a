"""Reference images for parity checks: inputs on which two ways of running one model must agree.

Synthetic radiographs of both classes, random noise, an all-black and an all-white frame, plus any files the user
adds, so that a mismatch shows on realistic and on extreme inputs alike. The export's parity check
(`fracture.deployment.parity`) and the inference engines' (`fracture.models.engines`) use them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fracture.data.images import UnreadableImage, read_xray
from fracture.data.pipeline import resize_image
from fracture.data.synthetic import render_bone


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
