"""Warm single-image latency of EfficientNetB3: the `.keras` checkpoint on Keras against its ONNX export on
ONNX Runtime, measured side by side in one run.

    python benchmarks/export_latency.py [--image-size 224] [--repeats 30] [--image path.jpg]

Exports a random-weight checkpoint with `fracture.export`'s recipe (which also runs the parity check),
loads both with `load_predictor`, warms each up, then alternates single predictions between the two, so
that both see the same machine load. Each timing covers reading, resizing and the forward pass.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import keras
from predict_latency import latency_arguments, random_checkpoint, random_xray, summary, time_one

from fracture import load_predictor
from fracture.deployment.recipe import export_checkpoint


def main() -> None:
    args = latency_arguments(__doc__.splitlines()[0])

    with tempfile.TemporaryDirectory() as folder:
        image = args.image or random_xray(Path(folder))
        ckpt = random_checkpoint(Path(folder), args.image_size)
        export_folder, (parity,) = export_checkpoint(ckpt, ["onnx"])
        predictors = {"keras": load_predictor(ckpt), "onnx": load_predictor(export_folder / "model.onnx")}
        for predictor in predictors.values():
            predictor.predict(image)
        timings = {name: [] for name in predictors}
        for _ in range(args.repeats):
            for name, predictor in predictors.items():
                timings[name].append(time_one(predictor, image))
    print(f"EfficientNetB3 at {args.image_size} px, {args.repeats} single-image predictions each, alternating")
    print(f"parity: max |probability difference| {parity.max_abs_difference:.2e} on {parity.images} images")
    print(f".keras on {keras.backend.backend():<10}: {summary(sorted(timings['keras']))}")
    print(f"ONNX Runtime          : {summary(sorted(timings['onnx']))}")
    ratio = statistics.median(timings["keras"]) / statistics.median(timings["onnx"])
    print(f"median ratio .keras / ONNX Runtime: {ratio:.2f}")


if __name__ == "__main__":
    main()
