"""The benchmark's measuring processes: one for fracture, one for the plain port, per backend.

Each runs in a fresh process (the backend is chosen before Keras loads) started by `runner`, which passes
the moment it launched it, so that the time to the first training step counts the imports and set-up:

    python -m fracture.benchmarking.workers <fracture|port> <spec.json> <result.json>

Both sides measure the same things in the same order on the same folder: (a) the input pipeline alone,
(b) training steps with the frozen base, (e) the first step, (c) the recipe's epochs and its validation
AUROC, (d) warm single-image prediction. When the folder is a subset of the real data, `runner` scales the
epoch figures up to the full counts.
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
from fracture.benchmarking.timing import LoopTimer, matmul_gflops, median_ms, rate


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


def measure_fracture(spec: dict) -> dict:
    """fracture: pipeline, first step (uncached), steps, the recipe with the feature cache (whose extraction
    times the backbone's forward pass), val AUROC, warm prediction, and the machine's matmul rate."""
    from fracture import FractureClassifier, FractureDataModule, Trainer, load_predictor
    from fracture.compilation_cache import enable_compilation_cache
    from fracture.data.pipeline import predict_full_batches
    from fracture.jax_depthwise import enable_fast_depthwise_conv
    from fracture.training.callbacks import ModelCheckpoint, reduce_lr_on_plateau

    if keras.backend.backend() == "jax":
        enable_compilation_cache(spec["compilation_cache"])
        enable_fast_depthwise_conv(spec["fast_depthwise_conv"])
    size, batches, seed = spec["image_size"], spec["batches"], spec["seed"]

    def data():
        return FractureDataModule(
            spec["root"], image_size=size, batch_size=port.BATCH_SIZE, group_by=None, augmentation={}, seed=seed
        )  # augmentation={}: the notebook's rotation, zoom and flip, as in the port

    def classifier():
        return FractureClassifier(weights=spec["weights"], image_size=size, freeze_base=True)

    datamodule = data()
    stream = datamodule.train_dataloader().repeat().take(batches + 1)
    result = {"pipeline_img_s": rate(stream, lambda batch: len(batch[0]))}

    steps = LoopTimer(spec["process_start"])
    limits = dict(limit_train_batches=batches + 1, limit_val_batches=1)
    uncached = Trainer(epochs=1, **limits, feature_cache=False, callbacks=[steps], progress=False)
    uncached.fit(classifier(), datamodule)
    result.update(first_step_s=steps.first_step_s, train_img_s=steps.steady_rate(port.BATCH_SIZE))

    keras.utils.set_random_seed(seed)
    recipe, epochs = classifier(), LoopTimer(spec["process_start"])
    checkpoint = ModelCheckpoint(Path(spec["out_dir"]) / "fracture_checkpoints", save_last=False)
    trainer = Trainer(
        epochs=spec["epochs"],
        progress=False,
        callbacks=[checkpoint, reduce_lr_on_plateau(factor=0.2, patience=2), epochs],
        feature_cache=True,
        feature_cache_views=spec["views"],
        feature_cache_dir=Path(spec["out_dir"]) / "features",  # empty: the extraction is measured
    )
    start = time.time()
    datamodule = data()  # a fresh one: the recipe decodes its images itself, as a new run would
    trainer.fit(recipe, datamodule)
    result.update(recipe_s=time.time() - start, extractions=trainer.cache.extractions, **epoch_figures(epochs))

    predictor = load_predictor(checkpoint.best_path)
    predictor.warm_up()  # frozen, as the service runs it; serves the val AUROC and the warm prediction
    scores = predict_full_batches(predictor.probabilities, datamodule.predict_dataloader("val"), datamodule.batch_size)
    result["val_auroc"] = float(roc_auc_score(datamodule.labels("val"), scores))
    result["predict_warm_ms"] = median_ms(lambda: predictor.predict(spec["image"]), spec["repeats"])
    result["checkpoint"] = str(checkpoint.best_path)
    result["matmul_gflops"] = matmul_gflops()
    return result


if __name__ == "__main__":
    side, spec_path, result_path = sys.argv[1:4]
    task = json.loads(Path(spec_path).read_text())
    measured = {"port": measure_port, "fracture": measure_fracture}[side](task)
    Path(result_path).write_text(json.dumps(measured, indent=2))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skips the interpreter's teardown of TensorFlow or JAX: seconds before the next worker starts
