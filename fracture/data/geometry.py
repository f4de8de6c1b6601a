"""Which image shapes can be a radiograph: at least `min_side` pixels on each side, at most `max_aspect`:1.

A 1 x 1 px file or a 3 x 100,000 px strip decodes, but it is no X-ray: resizing it to the model's input
either fails (OpenCV asserts on a zero-sized thumbnail in the audit) or invents an image, on which the model
still answers confidently. Training and the audit skip such files with this reason, prediction gives them an
error row and the service a 422. Radiographs are hundreds of pixels on a side; long-leg and spine studies
stitched from several films reach about 1:4, so 1:10 leaves room for them and little else.
"""

from __future__ import annotations

from dataclasses import dataclass

from fracture.errors import ConfigError

MIN_SIDE = 32  # the smallest image size the pipeline trains at (data.image_size)
MAX_ASPECT = 10.0


@dataclass(frozen=True)
class ShapeLimits:
    """The smallest side and the largest aspect ratio (long side / short side) accepted as a radiograph."""

    min_side: int = MIN_SIDE
    max_aspect: float = MAX_ASPECT

    def __post_init__(self):
        if self.min_side < 1 or not self.max_aspect >= 1:
            raise ConfigError(
                f"min_side must be at least 1 and max_aspect at least 1, got {self.min_side} and {self.max_aspect}."
            )

    def problem(self, width: int, height: int) -> str | None:
        """Why a `width` x `height` image cannot be a radiograph, or None."""
        if min(width, height) < self.min_side:
            return f"{width} x {height} px is under {self.min_side} px on a side (min_side): too small for a radiograph"
        if max(width, height) / min(width, height) > self.max_aspect:
            return (
                f"{width} x {height} px is longer than {self.max_aspect:g}:1 (max_aspect): not the shape of a "
                "radiograph"
            )
        return None


DEFAULT_LIMITS = ShapeLimits()
