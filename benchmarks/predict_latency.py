"""Warm single-image prediction latency of EfficientNetB3 through `fracture.Predictor`.

    python benchmarks/predict_latency.py [--image-size 224] [--repeats 30] [--image path.jpg]

Builds the notebook's model with random weights (latency does not depend on the weight values), saves it
as a fracture checkpoint, loads it with `load_predictor` as a user would, warms it up, then times
`predictor.predict(path)` one image at a time: reading, resizing and the forward pass, as a user sees it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from fracture import FractureClassifier, load_predictor, save_checkpoint


def random_checkpoint(folder: Path, image_size: int) -> Path:
    """The notebook's EfficientNetB3 with random weights, saved as a fracture checkpoint in `folder`."""
    classifier = FractureClassifier("efficientnet_b3", weights=None, image_size=image_size)
    metadata = {
        "image_size": image_size,
        "positive_class": "fractured",
        "negative_class": "not fractured",
        "threshold": 0.5,
        "threshold_source": "val",
        "threshold_method": "youden",
        "hparams": {"backbone": "efficientnet_b3"},
    }
    return save_checkpoint(classifier.configure_model(), folder / "best_model.keras", metadata)


def random_xray(folder: Path) -> Path:
    """A 512 px grayscale PNG of noise: reading and resizing cost what a real film of that size costs."""
    path = folder / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512), np.uint8)).save(path)
    return path


def time_predictions(predictor, image: Path, repeats: int) -> list[float]:
    """Milliseconds of `repeats` warm `predictor.predict(image)` calls, sorted."""
    return sorted(time_one(predictor, image) for _ in range(repeats))


def time_one(predictor, image: Path) -> float:
    started = time.perf_counter()
    predictor.predict(image)
    return (time.perf_counter() - started) * 1000


def summary(timings_ms: list[float]) -> str:
    return (
        f"median {statistics.median(timings_ms):.1f} ms, "
        f"p90 {timings_ms[int(0.9 * (len(timings_ms) - 1))]:.1f} ms, min {timings_ms[0]:.1f} ms"
    )


def latency_arguments(description: str) -> argparse.Namespace:
    """The options both latency benchmarks take: image size, repeats, and an X-ray to predict."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--image", type=Path, help="an X-ray to predict (default: a random 512 px image)")
    return parser.parse_args()


def main() -> None:
    args = latency_arguments(__doc__.splitlines()[0])

    with tempfile.TemporaryDirectory() as folder:
        image = args.image or random_xray(Path(folder))
        ckpt = random_checkpoint(Path(folder), args.image_size)
        started = time.perf_counter()
        predictor = load_predictor(ckpt)
        predictor.predict(image)
        first = time.perf_counter() - started
        timings_ms = time_predictions(predictor, image, args.repeats)
    print(
        f"backend {keras.backend.backend()}, EfficientNetB3 at {args.image_size} px, "
        f"{args.repeats} single-image predictions"
    )
    print(f"load + first prediction: {first:.2f} s")
    print(f"warm latency: {summary(timings_ms)}")


if __name__ == "__main__":
    main()
