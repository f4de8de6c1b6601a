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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--image", type=Path, help="an X-ray to predict (default: a random 512 px image)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        image = args.image
        if image is None:
            image = Path(folder) / "xray.png"
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512), np.uint8)).save(image)
        classifier = FractureClassifier("efficientnet_b3", weights=None, image_size=args.image_size)
        metadata = {
            "image_size": args.image_size,
            "positive_class": "fractured",
            "negative_class": "not fractured",
            "threshold": 0.5,
            "threshold_source": "val",
            "threshold_method": "youden",
            "hparams": {"backbone": "efficientnet_b3"},
        }
        ckpt = save_checkpoint(classifier.configure_model(), Path(folder) / "best_model.keras", metadata)
        started = time.perf_counter()
        predictor = load_predictor(ckpt)
        predictor.predict(image)
        first = time.perf_counter() - started
        timings = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            predictor.predict(image)
            timings.append(time.perf_counter() - started)
    timings_ms = sorted(t * 1000 for t in timings)
    print(
        f"backend {keras.backend.backend()}, EfficientNetB3 at {args.image_size} px, "
        f"{args.repeats} single-image predictions"
    )
    print(f"load + first prediction: {first:.2f} s")
    print(
        f"warm latency: median {statistics.median(timings_ms):.1f} ms, "
        f"p90 {timings_ms[int(0.9 * (len(timings_ms) - 1))]:.1f} ms, min {timings_ms[0]:.1f} ms"
    )


if __name__ == "__main__":
    main()
