"""The inference engines side by side, in one process: set-up, extraction rate, warm latency and parity.

For each engine of `fracture.models.engines` that is installed, on the benchmark's EfficientNetB3 (its weights as
the benchmark loads them): the seconds to build it (compiling, or freezing; converting to ONNX is timed once), the
backbone's rate over batches of the feature cache's size (`EXTRACT_BATCH`), the whole classifier's warm
single-image latency, and the largest difference from Keras on the parity images
(`fracture.data.reference_images`), for the backbone's features and the classifier's probabilities, with the
bound `build_engine` enforces. The backbone is built as the feature cache builds it (`batched`: OpenVINO's
throughput streams); "openvino, one stream" is the same backbone with every core on each batch, side by side.
OpenVINO in bfloat16 (`trainer.extraction_precision=bfloat16`) is measured too where the processor has bfloat16
instructions (elsewhere OpenVINO would quietly run float32), against its own, looser bound.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

BFLOAT16 = "openvino bfloat16"
ONE_STREAM = "openvino, one stream"


@contextlib.contextmanager
def cache_root_at(folder: Path):
    """fracture's cache root at `folder` for the block (and for processes started in it): in a new folder,
    conversions that the run stored before (the recipe's backbone) are made, and timed, again."""
    from fracture.io import CACHE_DIR_VARIABLE

    previous = os.environ.get(CACHE_DIR_VARIABLE)
    os.environ[CACHE_DIR_VARIABLE] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CACHE_DIR_VARIABLE, None)
        else:
            os.environ[CACHE_DIR_VARIABLE] = previous


def steady_img_s(run, batch: np.ndarray, calls: int) -> float:
    """Images per second over `calls` calls of `run` on `batch`, after one call not counted."""
    run(batch)
    started = time.perf_counter()
    for _ in range(calls):
        run(batch)
    return calls * len(batch) / (time.perf_counter() - started)


def single_image_ms(run, image: np.ndarray, repeats: int) -> float:
    """The median milliseconds of `run` on one image, after two calls not counted."""
    for _ in range(2):
        run(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times))


def build(model, name: str, batched: bool):
    """Engine `name` for `model` (`batched`: see `build_engine`), or one of the OpenVINO variants (see the
    module)."""
    from fracture.models.engines import build_engine

    if name == BFLOAT16:
        return build_engine(model, "openvino", batched=batched, precision="bfloat16")
    if name == ONE_STREAM:
        return build_engine(model, "openvino", batched=False)
    return build_engine(model, name, batched=batched)


def measure_engines(classifier, calls: int, repeats: int) -> tuple[dict, float]:
    """({engine: figures}, seconds converting the backbone and the classifier to ONNX) for the Keras
    `classifier` (see the module). The conversion is timed once, before the engines that share it, so each
    engine's set-up is its own compiling (or, for Keras, freezing). Keras' row compares its frozen graph with
    `predict_on_batch`."""
    from fracture.data.reference_images import reference_batch
    from fracture.models.engines import ENGINES, EngineMismatch, check_parity, installed, onnx_model
    from fracture.models.head import split_at_head
    from fracture.models.runtimes import openvino_has_bfloat16
    from fracture.training.extraction import EXTRACT_BATCH

    backbone, _ = split_at_head(classifier)
    size = classifier.input_shape[1]
    parity_images = reference_batch(size)
    batch = np.random.default_rng(0).uniform(0, 255, (EXTRACT_BATCH, size, size, 3)).astype(np.float32)
    names = [name for name in ENGINES if installed(name)]
    began = time.perf_counter()
    for model in (backbone, classifier) if len(names) > 1 else ():
        onnx_model(model)  # into the cache root (the worker's, in its run folder; see `cache_root_at`)
    conversion_s = time.perf_counter() - began
    figures = {}
    variants = [ONE_STREAM, *([BFLOAT16] if openvino_has_bfloat16() else [])] if "openvino" in names else []
    for name in [*names, *variants]:
        result = {}
        for part, model in (("backbone", backbone), ("classifier", classifier)):
            began = time.perf_counter()
            engine = build(model, name, batched=part == "backbone")  # as the feature cache and the predictor
            result[f"{part}_setup_s"] = time.perf_counter() - began
            try:
                check_parity(engine, model, parity_images)
            except EngineMismatch:
                pass  # the difference is recorded on the engine all the same, and the table says "over bound"
            result[f"{part}_parity_max_abs_difference"] = engine.max_abs_difference
            result[f"{part}_parity_bound"] = engine.bound
            if part == "backbone":
                result["extraction_img_s"] = steady_img_s(engine, batch, calls)
            else:
                result["predict_warm_ms"] = single_image_ms(engine, batch[:1], repeats)
        figures[name] = result
    return figures, conversion_s
