"""The benchmark's measuring processes: one for fracture, one for the plain port, per backend.

Each runs in a fresh process (the backend is chosen before Keras loads) started by `runner`, which passes
the moment it launched it, so that the time to the first training step counts the imports and set-up:

    python -m fracture.benchmarking.workers <task> <spec.json> <result.json>     # a task of TASKS

Both sides measure the same things in the same order on the same folder: (a) the input pipeline alone,
(b) training steps with the frozen base, (e) the first step, (c) the recipe's epochs and its validation
AUROC, (d) warm single-image prediction. When the folder is a subset of the real data, `runner` scales the
epoch figures up to the full counts. The recipe with bfloat16 extraction runs in a process of its own, as a
user's run would: run second in fracture's process, its set-up took 53 s against the first recipe's 15 s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from fracture.benchmarking import port
from fracture.benchmarking.engines import cache_root_at, measure_engines
from fracture.benchmarking.timing import LoopTimer, matmul_gflops, median_ms, rate
from fracture.io import CACHE_DIR_VARIABLE
from fracture.models.engines import bfloat16_available


def epoch_figures(timer: LoopTimer) -> dict:
    """Per-epoch training and validation seconds, as measured."""
    return {
        "epoch_train_s": [epoch["train_s"] for epoch in timer.epochs],
        "epoch_val_s": [epoch["val_s"] for epoch in timer.epochs],
        "epoch_wall_s": [epoch["wall_s"] for epoch in timer.epochs],
    }


def measure_port(spec: dict) -> dict:
    """The plain port: pipeline, first step, steps, `port_epochs` epochs, val AUROC, warm prediction."""
    size, batches = spec["image_size"], spec["batches"]
    train, val = port.datasets(spec["root"], size, spec["seed"])
    result = {"pipeline_img_s": rate(train.repeat().take(batches + 1), lambda batch: len(batch[0]))}

    model = port.build_model(size, spec["weights"])
    steps = LoopTimer(spec["process_start"])
    # One validation batch here compiles the validation step too, so the recipe's epochs below run steady.
    model.fit(train.repeat().take(batches + 1), validation_data=val.take(1), epochs=1, callbacks=[steps], verbose=0)
    result.update(first_step_s=steps.first_step_s, train_img_s=steps.steady_rate(port.BATCH_SIZE))

    checkpoint = Path(spec["out_dir"]) / "port_best.keras"
    epochs = LoopTimer(spec["process_start"])
    callbacks = [*port.callbacks(checkpoint), epochs]
    model.fit(train, validation_data=val, epochs=spec["port_epochs"], callbacks=callbacks, verbose=0)
    result.update(epoch_figures(epochs))

    best = keras.saving.load_model(checkpoint)
    labels = np.concatenate([np.asarray(y).reshape(-1) for _, y in val])
    scores = best.predict(val, verbose=0).reshape(-1)
    result["val_auroc"] = float(roc_auc_score(labels, scores))
    result["predict_warm_ms"] = median_ms(lambda: port.predict_image(best, spec["image"], size), spec["repeats"])
    result["checkpoint"] = str(checkpoint)
    return result


def fracture_callbacks(
    spec: dict, folder: str = "fracture_checkpoints"
) -> tuple[list[keras.callbacks.Callback], keras.callbacks.Callback]:
    """fracture's training callbacks as `conf/callbacks` configures them (`spec["callbacks"]`), with their
    checkpoints in `folder` of the worker's folder; and the `ModelCheckpoint` among them, which names the best
    one."""
    from hydra.utils import instantiate

    from fracture.training.callbacks import ModelCheckpoint

    if not spec["callbacks"]:
        raise ValueError("BenchSettings.callbacks is empty: give fracture's callbacks as conf/callbacks composes them.")
    configs = {name: dict(config) for name, config in spec["callbacks"].items()}
    for config in configs.values():
        if "dirpath" in config:
            config["dirpath"] = str(Path(spec["out_dir"]) / folder)
    callbacks = [instantiate(config) for config in configs.values()]
    checkpoints = [callback for callback in callbacks if isinstance(callback, ModelCheckpoint)]
    if len(checkpoints) != 1:
        raise ValueError(f"the benchmark needs one ModelCheckpoint among the callbacks, got {len(checkpoints)}.")
    return callbacks, checkpoints[0]


def measure_fracture(spec: dict) -> dict:
    """fracture: pipeline, first step (uncached), steps, the recipe with the feature cache (whose extraction
    times the backbone's forward pass), val AUROC, warm prediction, and the machine's matmul rate."""
    from fracture import Trainer, load_predictor

    use_jax_settings(spec)
    # ONNX conversions go to this run's folder, so the recipe pays for its own as a user's first run would.
    os.environ[CACHE_DIR_VARIABLE] = str(Path(spec["out_dir"]) / "cache")
    batches = spec["batches"]
    data, classifier = recipe_parts(spec)
    datamodule = data()
    stream = datamodule.train_dataloader().repeat().take(batches + 1)
    result = {"pipeline_img_s": rate(stream, lambda batch: len(batch[0]))}

    steps = LoopTimer(spec["process_start"])
    limits = dict(limit_train_batches=batches + 1, limit_val_batches=1)
    uncached = Trainer(epochs=1, **limits, feature_cache=False, callbacks=[steps], progress=False)
    uncached.fit(classifier(), datamodule)
    result.update(first_step_s=steps.first_step_s, train_img_s=steps.steady_rate(port.BATCH_SIZE))

    recipe, checkpoint, datamodule = measure_recipe(spec, data, classifier, "float32")
    result.update(recipe)
    # The images it will predict here (validation, the warm repeats): `auto` converts for them only when the
    # engine rows below store a conversion, as it would for a user's job of that size.
    expected = len(datamodule.labels("val")) + spec["repeats"] + 3
    predictor = load_predictor(checkpoint.best_path, expected_images=expected)
    # A new cache root: the engines convert (and time) what the recipe stored; the predictor and the service
    # then load the stored classifier instead of converting it again.
    with cache_root_at(Path(spec["out_dir"]) / "engines-cache"):
        if spec["measure_engines"]:
            result["engines"], result["onnx_conversion_s"] = measure_engines(
                predictor.model, spec["engine_batches"], spec["repeats"]
            )
        predictor.warm_up()  # on its engine, as the service runs it; serves the val AUROC and the warm prediction
    result["val_auroc"] = val_auroc(predictor, datamodule)
    if spec["measure_engines"] and bfloat16_available():
        # The float32 checkpoint with its backbone in bfloat16 (`serve.precision=bfloat16`): what rounding the
        # prediction costs this model. The classifier's conversion is stored in the engines' cache root.
        with cache_root_at(Path(spec["out_dir"]) / "engines-cache"):
            bfloat16 = load_predictor(checkpoint.best_path, precision="bfloat16")
            bfloat16.warm_up()
            result["val_auroc_bfloat16_prediction"] = val_auroc(bfloat16, datamodule)
    result["predict_warm_ms"] = median_ms(lambda: predictor.predict(spec["image"]), spec["repeats"])
    result["predict_engine"] = predictor.engine.name
    result["checkpoint"] = str(checkpoint.best_path)
    result["matmul_gflops"] = matmul_gflops()
    return result


def recipe_parts(spec: dict):
    """(a new data module, a new classifier) as the recipe trains them, each a function of no arguments."""
    from fracture import FractureClassifier, FractureDataModule

    size = spec["image_size"]

    def data():
        return FractureDataModule(
            spec["root"], image_size=size, batch_size=port.BATCH_SIZE, group_by=None, augmentation={}, seed=spec["seed"]
        )  # augmentation={}: the notebook's rotation, zoom and flip, as in the port

    def classifier():
        return FractureClassifier(weights=spec["weights"], image_size=size, freeze_base=True)

    return data, classifier


def measure_recipe(spec: dict, data, classifier, precision: str):
    """(figures, its ModelCheckpoint, its data module) of the recipe with the feature cache, extracting at
    `precision`: seconds end to end (the extraction, in a folder of its own, included), the extractions' timing
    and the epochs'."""
    from fracture import Trainer

    keras.utils.set_random_seed(spec["seed"])
    recipe, epochs = classifier(), LoopTimer(spec["process_start"])
    suffix = "" if precision == "float32" else f"_{precision}"
    callbacks, checkpoint = fracture_callbacks(spec, f"fracture_checkpoints{suffix}")
    trainer = Trainer(
        epochs=spec["epochs"],
        progress=False,
        callbacks=[*callbacks, epochs],
        feature_cache=True,
        feature_cache_views=spec["views"],
        feature_cache_dir=Path(spec["out_dir"]) / f"features{suffix}",  # empty: the extraction is measured
        extraction_precision=precision,
    )
    start = time.time()
    datamodule = data()  # a fresh one: the recipe decodes its images itself, as a new run would
    trainer.fit(recipe, datamodule)
    figures = {"recipe_s": time.time() - start, "extractions": trainer.features.extractions, **epoch_figures(epochs)}
    return figures, checkpoint, datamodule


def wants_bfloat16_recipe(setting: bool | str) -> bool:
    """`bench.bfloat16_recipe`: true, false, or auto (where OpenVINO runs bfloat16 on this processor)."""
    if setting != "auto":
        return bool(setting)
    return bfloat16_available()


def fracture_bfloat16(spec: dict) -> dict:
    """The recipe with bfloat16 extraction in a new process (`measure_bfloat16_recipe`), or {} where
    `bench.bfloat16_recipe` leaves it out."""
    if not wants_bfloat16_recipe(spec["bfloat16_recipe"]):
        return {}
    use_jax_settings(spec)
    return measure_bfloat16_recipe(spec, *recipe_parts(spec))


def measure_bfloat16_recipe(spec: dict, data, classifier) -> dict:
    """The recipe again with its features extracted in bfloat16 (`trainer.extraction_precision`), in a cache
    root of its own (it converts its backbone as a first run would), and the validation AUROC of its best
    checkpoint predicted in float32, the default. One run per precision is a first look at what the
    rounding costs the head; `benchmarks/bfloat16_heads.py` compares several seeds on both runs' features."""
    from fracture import load_predictor

    with cache_root_at(Path(spec["out_dir"]) / "cache-bfloat16"):
        figures, checkpoint, datamodule = measure_recipe(spec, data, classifier, "bfloat16")
        predictor = load_predictor(checkpoint.best_path, expected_images=len(datamodule.labels("val")))
        auroc = val_auroc(predictor, datamodule)
    return {**figures, "val_auroc": auroc, "checkpoint": str(checkpoint.best_path)}


def val_auroc(predictor, datamodule) -> float:
    """The validation AUROC of `predictor`'s uncalibrated probabilities (on its engine, once it has one)."""
    from fracture.data.pipeline import predict_full_batches

    scores = predict_full_batches(
        predictor.uncalibrated_probabilities, datamodule.predict_dataloader("val"), datamodule.batch_size
    )
    return float(roc_auc_score(datamodule.labels("val"), scores))


def use_jax_settings(spec: dict) -> None:
    """fracture's JAX settings of the run (compiled-program cache, fast depthwise convolutions)."""
    from fracture.compilation_cache import enable_compilation_cache
    from fracture.jax_depthwise import enable_fast_depthwise_conv

    if keras.backend.backend() == "jax":
        enable_compilation_cache(spec["compilation_cache"])
        enable_fast_depthwise_conv(spec["fast_depthwise_conv"])


def fracture_cold_predict(spec: dict) -> dict:
    """A new process's first prediction with fracture: load the checkpoint, predict one image."""
    from fracture import load_predictor

    use_jax_settings(spec)
    probability = load_predictor(spec["checkpoint"]).predict(spec["image"]).probability
    return {"predicted_at": time.time(), "probability": probability}


def port_cold_predict(spec: dict) -> dict:
    """A new process's first prediction with the port, as the Keras example loads and predicts."""
    probability = port.predict_image(keras.saving.load_model(spec["checkpoint"]), spec["image"], spec["image_size"])
    return {"predicted_at": time.time(), "probability": probability}


TASKS = {
    "port": measure_port,
    "fracture": measure_fracture,
    "fracture_bfloat16": fracture_bfloat16,
    "port_cold_predict": port_cold_predict,
    "fracture_cold_predict": fracture_cold_predict,
}

if __name__ == "__main__":
    task, spec_path, result_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    measured = {"process_start": spec["process_start"], **TASKS[task](spec)}
    Path(result_path).write_text(json.dumps(measured, indent=2))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skips the interpreter's teardown of TensorFlow or JAX: seconds before the next worker starts
