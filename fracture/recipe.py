"""The notebook's recipe with plain Python arguments: train its stages, record, evaluate.

    from fracture import FractureClassifier, FractureDataModule, Trainer
    from fracture.recipe import run_recipe
    from fracture.training.callbacks import CSVLogger, ModelCheckpoint
    from fracture.training.stages import FineTuneStage, HeadStage

    data = FractureDataModule("data/bone-fracture-detection", augmentation={})
    trainer = Trainer(epochs=10, callbacks=[ModelCheckpoint("runs/a/checkpoints"), CSVLogger("runs/a/history.csv")])
    stages = [HeadStage("fit"), FineTuneStage("finetune", blocks=2, epochs=3, learning_rate=1e-5)]
    metrics = run_recipe(data, FractureClassifier(), trainer, "runs/a", stages=stages)

`python -m fracture.train` builds the same objects from its config and calls `run_recipe`. A run's data flows
from the data module's records (`FractureDataModule.files`) through each stage's streams
(`fracture.training.streams`: images, or cached backbone features) into `Trainer.fit`, which runs Keras' loop;
checkpoints, `history.csv` and the stage backups are written as epochs end, and the run folder
(`fracture.run_folder.RunFolder`) records `metrics.json` once training ends, evaluation's figures beside them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from fracture.console import console, metrics_table
from fracture.data.health import record_problems
from fracture.errors import ConfigError
from fracture.evaluation import plots
from fracture.evaluation.evaluate import evaluate_checkpoint
from fracture.evaluation.summary import print_summary
from fracture.io import read_history
from fracture.run_folder import RunFolder
from fracture.training.distributed import leave
from fracture.training.guards import RunStopped
from fracture.training.metric_names import metric_mode
from fracture.training.stages import HeadStage, enabled_stages
from fracture.training.trainer import check_image_size

log = logging.getLogger("fracture")


def best_value(history: list[dict[str, float]], name: str, mode: str = "auto") -> float:
    """`optimized_metric`: the best value of `name` over every epoch of the run (the lowest or the highest, by
    `metric_mode`), whether or not a checkpoint callback kept that epoch."""
    values = np.array([row[name] for row in history if name in row], dtype=float)
    if values.size == 0:
        logged = sorted(history[-1]) if history else []
        raise ConfigError(f"optimized_metric {name!r} was never logged; logged: {logged}.")
    return float(np.nanmin(values) if metric_mode(name, mode) == "min" else np.nanmax(values))


def record_stop(stop: RunStopped, trainer, run: RunFolder) -> None:
    """`metrics.json` for a run that stopped early: why, where, and the best finished epoch."""
    metrics = {
        "status": stop.status,
        "stopped/reason": str(stop),
        "stopped/epoch": stop.epoch,
        "stopped/batch": stop.batch,
        "epochs": stop.epoch - 1,
    }
    metrics.update(best_checkpoint_metrics(trainer))
    try:
        run.write_metrics(metrics)
    except OSError as error:  # a full disk may not even take metrics.json; the stop itself still reports
        log.warning("could not record the stop in %s: %s", run.path, error)


def best_checkpoint_metrics(trainer) -> dict:
    """`best/epoch`, `best/checkpoint` and the best epoch's logs, when a checkpoint callback kept one."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or checkpoint.best_epoch is None:
        return {}
    best = {f"best/{key}": value for key, value in checkpoint.best_logs.items()}
    return {**best, "best/epoch": checkpoint.best_epoch, "best/checkpoint": str(checkpoint.best_path)}


def lagging_statistics(model: keras.Model | None, steps: int) -> list[str]:
    """Why validation on the training batches trails training after few steps, where the model has trainable
    BatchNormalization: validation runs on its moving statistics, which move by (1 - momentum) a step from
    their starting values (mean 0, variance 1) towards the batches'."""
    layers = model._flatten_layers() if model is not None else []
    momenta = [
        layer.momentum for layer in layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not momenta or not steps:
        return []
    slowest = max(momenta)
    share = 1 - slowest**steps
    return [
        f"Validation runs in inference mode, on BatchNormalization's moving statistics: after {steps} training "
        f"steps at momentum {slowest:g} they are {share:.0%} the training batches' and {1 - share:.0%} their "
        "starting values, so val/* can trail train/* on these very images; judge this check by train/loss."
    ]


def shortened_training(trainer, datamodule, model: keras.Model | None = None) -> list[str]:
    """How this run's epochs fell short of the whole training and validation splits, one sentence each."""
    if trainer.overfit_batches:
        return [
            f"Every epoch trained and validated on the same first {trainer.overfit_batches} training batches "
            "(trainer.overfit_batches), not on the splits.",
            *lagging_statistics(model, trainer.overfit_batches * trainer.current_epoch),
        ]
    setting = "trainer.fast_dev_run" if trainer.fast_dev_run else "trainer.limit_{}_batches"
    notes = []
    for split, limit, what in [
        ("train", trainer.limit_train_batches, "trained on"),
        ("val", trainer.limit_val_batches, "validated (and chose checkpoints) on"),
    ]:
        total = datamodule.num_batches(split, training=split == "train")
        if limit is not None and limit < total:
            notes.append(f"Every epoch {what} {limit} of {total} {split} batches ({setting.format(split)}).")
    return notes


def fit_stages(datamodule, classifier, trainer, stages: list[HeadStage]) -> dict[str, float]:
    """Train every stage in turn; returns the last epoch's metrics. With several training processes, this is
    all that the processes after the first do (they write nothing), and all of them leave the distributed
    runtime at the end, so that process 0 evaluates the best checkpoint on its own."""
    metrics = {}
    try:
        for stage in stages:
            trainer.build(classifier)
            stage.prepare(classifier)
            metrics = trainer.fit(classifier, datamodule, stage=stage)
    finally:
        leave(trainer.processes)
    return metrics


def run_recipe(
    datamodule,
    classifier,
    trainer,
    run: RunFolder | str | Path,
    *,
    stages: list[HeadStage] | None = None,
    optimized_metric: str = "val/auc_approx",
    optimized_mode: str = "auto",
    evaluate: bool = True,
    eval_options: dict | None = None,
    seed: int = 42,
) -> dict[str, float]:
    """Train `classifier` on `datamodule` with `trainer` through `stages` (`fracture.training.stages`; default:
    one `HeadStage` of the trainer's epochs), write `metrics.json`, `split.csv`, the training curves and (with
    `evaluate`) the evaluation of the best checkpoint into the run folder `run`; returns the metrics, with
    `optimized_metric`, the best over the epochs in the direction `optimized_mode` says (auto, min or max; see
    `metric_mode`). `eval_options` go to `evaluate_checkpoint` (target_sensitivity, calibration, ...);
    `seed` seeds its bootstrap (seed Keras yourself, with `keras.utils.set_random_seed`, before building).
    A run stopped early (NaN loss, Ctrl-C) records why in `metrics.json` and raises `RunStopped`; when the
    trainer backs up (`backup_dir`), the backup goes to the run folder's `backup/` and is removed once the
    run has finished.
    """
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    output_dir = run.path
    stages = enabled_stages(stages or [HeadStage()])
    metric_mode(optimized_metric, optimized_mode)  # a wrong mode fails before the data scan
    check_image_size(classifier, datamodule)  # and so do mismatched image sizes
    if trainer.backup_dir is not None and trainer.backup_dir != run.backup_dir:
        log.info("training backups go to the run folder's %s, not %s", run.backup_dir, trainer.backup_dir)
        trainer.backup_dir = run.backup_dir
    console.print(f"data {datamodule.root}: {datamodule.setup().summary()}")
    datamodule.write_split(run.file("split.csv"))  # reuse with data.split_file=<this file>
    log.info(
        "backend %s, devices %s, jit_compile %s, run_eagerly %s, precision %s",
        keras.backend.backend(),
        trainer.parallel.devices,
        trainer.jit_compile,
        trainer.run_eagerly,
        trainer.precision,
    )

    try:
        metrics = fit_stages(datamodule, classifier, trainer, stages)
    except RunStopped as stop:
        record_stop(stop, trainer, run)
        raise

    datamodule.recheck()  # files deleted or replaced while training went on
    metrics_from_data = record_problems(datamodule.file_problems(), output_dir)
    # history.csv spans every epoch, also those before a resume; trainer.history only this process's.
    history_csv = output_dir / "history.csv"
    history = read_history(history_csv) if history_csv.is_file() else trainer.history
    if not metrics and history:  # resumed after every epoch had finished: the last logged epoch is final
        metrics = {key: value for key, value in history[-1].items() if key != "epoch"}
    metrics["status"] = "finished"
    metrics["epochs"] = trainer.current_epoch
    metrics.update(metrics_from_data)
    metrics.update(best_checkpoint_metrics(trainer))
    metrics["optimized_metric"] = best_value(history, optimized_metric, optimized_mode)
    if shortened := shortened_training(trainer, datamodule, classifier.model):
        metrics["training/shortened"] = " ".join(shortened)

    run.write_metrics(metrics)
    console.print(
        metrics_table({k: v for k, v in metrics.items() if not k.startswith(("train/", "best/train/", "training/"))})
    )
    if shortened:
        console.print(f"training was shortened: {metrics['training/shortened']}")
    curves = plots.training_curves(history, output_dir / "plots" / "training_curves.png")

    checkpoint = trainer.checkpoint_callback
    if evaluate and trainer.fast_dev_run:  # one batch of each split was the point; evaluation is a real run's
        console.print("fast_dev_run: evaluation, its plots and report.md skipped; run without it for them")
        evaluate = False
    if evaluate and checkpoint is not None and checkpoint.best_epoch is not None:
        splits = [split for split in ("val", "test") if datamodule.has_split(split)]
        options = {"seed": seed, "training_curves": curves, "qualifiers": shortened, **(eval_options or {})}
        evaluation = evaluate_checkpoint(checkpoint.best_path, datamodule, splits, output_dir, **options)
        metrics.update(evaluation)
        print_summary(evaluation, splits, output_dir)
    run.finish()  # nothing left to resume
    console.print(f"run folder: {output_dir}")
    return metrics
