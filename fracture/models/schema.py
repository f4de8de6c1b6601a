"""The checkpoint metadata schema: what fracture stores in `fracture.json` beside the model, with a version.

Every writer builds a `CheckpointMetadata` (training's checkpoint callback, evaluation's update) and every
reader gets one back through `read_metadata`, as a plain dict of its fields. An archive written by a newer
fracture is refused with a clear error; version 1 archives (before calibration) are read and upgraded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from fracture.errors import CheckpointError
from fracture.models.calibration import Calibration

FORMAT = "fracture-checkpoint"
VERSION = 2  # 2: calibration and threshold_scale; a version 1 `temperature` becomes a calibration


@dataclass(frozen=True)
class CheckpointMetadata:
    positive_class: str
    negative_class: str
    image_size: int
    hparams: dict = field(default_factory=dict)
    backend: str | None = None
    keras_version: str | None = None
    precision: str = "float32"
    # The decision threshold; "val" when evaluation chose it on the validation split by `threshold_method`.
    threshold: float = 0.5
    threshold_source: str = "default"
    threshold_method: str | None = None
    # "calibrated" when `calibration` (fracture.models.calibration.Calibration.to_dict()) maps the
    # network's output before it is compared with the threshold; "raw" otherwise.
    threshold_scale: str = "raw"
    calibration: dict | None = None
    # Which epoch this checkpoint holds, and the score that made the checkpoint callback keep it.
    epoch: int | None = None
    monitor: str | None = None
    score: float | None = None
    logs: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": f"{FORMAT}/{VERSION}", **asdict(self)}

    def replace(self, **changes) -> CheckpointMetadata:
        """A copy with `changes`; an unknown field is a programming error, named."""
        return CheckpointMetadata.from_json({**self.to_json(), **changes})

    @classmethod
    def from_json(cls, stored: dict, source: str = "checkpoint") -> CheckpointMetadata:
        """Validate and, for version 1, upgrade a stored `fracture.json`."""
        stored = dict(stored)
        version = _version(stored.pop("format", f"{FORMAT}/1"), source)
        if version > VERSION:
            raise CheckpointError(
                f"{source} was written by a newer fracture (checkpoint format {version}; this one reads up to "
                f"{VERSION}). Upgrade fracture to use it."
            )
        if version == 1 and "temperature" in stored:
            # Version 1 stored a temperature that nothing applied, and chose the threshold on the raw output.
            # Calibration is monotone, so moving the threshold through it keeps every label as it was.
            calibration = Calibration("temperature", {"temperature": stored.pop("temperature")})
            threshold = float(calibration(stored.get("threshold", 0.5)))
            stored.update(calibration=calibration.to_dict(), threshold=threshold, threshold_scale="calibrated")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(stored) - names)
        missing = sorted(name for name in _REQUIRED if name not in stored)
        if unknown or missing:
            raise CheckpointError(f"{source} has malformed metadata: unknown {unknown}, missing {missing}.")
        return cls(**stored)


_REQUIRED = ("positive_class", "negative_class", "image_size")


def _version(fmt: str, source: str) -> int:
    name, _, number = str(fmt).partition("/")
    if name != FORMAT or not number.isdigit():
        raise CheckpointError(f"{source} has metadata of an unknown format {fmt!r}; expected {FORMAT}/<version>.")
    return int(number)
