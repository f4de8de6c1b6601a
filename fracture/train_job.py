"""The body of `python -m fracture.train`: `train(cfg)` builds the data module, classifier, callbacks and
trainer from a composed config, fits, evaluates and writes the run folder.

It lives outside the `__main__` module so that process-based Hydra launchers (joblib, submitit, Ray) can
pickle the job by reference.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from fracture.cli import build, build_all, log, prepare_backend, user_errors
from fracture.data.health import record_problems
from fracture.errors import ConfigError
from fracture.evaluation import plots
from fracture.evaluation.evaluate import evaluate_checkpoint
from fracture.evaluation.summary import print_summary
from fracture.io import check_writable, read_history, write_json_atomic
from fracture.run_info import run_info
from fracture.sweeps import record_failure
from fracture.training.guards import RunStopped, TrainingInterrupted
from fracture.training.progress import console, summary_table


def find_run_to_resume(runs_dir: Path, current: Path) -> Path:
    """The newest run folder under `runs_dir`, other than `current`, that still holds a training backup."""
    unfinished = sorted(p for p in runs_dir.glob("*") if (p / "backup").is_dir() and p.resolve() != current.resolve())
    if not unfinished:
        raise ConfigError(f"resume=true found no interrupted run under {runs_dir}; pass resume=<run folder>.")
    return unfinished[-1]


def point_at_run_to_resume(cfg: DictConfig) -> None:
    """For `resume=true` or `resume=<run folder>`, make the run folder to continue the job's output folder."""
    current = Path(cfg.paths.output_dir)
    if cfg.resume is True:
        target = find_run_to_resume(Path(cfg.paths.log_dir) / cfg.task_name / "runs", current)
    else:
        target = Path(str(cfg.resume)).expanduser()
    if not (target / "backup").is_dir():
        raise ConfigError(f"resume={cfg.resume}: {target} holds no training backup to resume from.")
    log.info("resuming the run in %s", target)
    with open_dict(cfg):
        cfg.paths.output_dir = str(target)  # checkpoints, logs and metrics continue in the old folder


def best_value(history: list[dict[str, float]], name: str) -> float:
    """`optimized_metric`: the best value of `name` over every epoch of the run (the lowest for a loss, else
    the highest), whether or not a checkpoint callback kept that epoch."""
    values = np.array([row[name] for row in history if name in row], dtype=float)
    if values.size == 0:
        logged = sorted(history[-1]) if history else []
        raise ConfigError(f"optimized_metric {name!r} was never logged; logged: {logged}.")
    return float(np.nanmin(values) if name.endswith("loss") else np.nanmax(values))


def record_stop(stop: RunStopped, trainer, output_dir: Path) -> None:
    """`metrics.json` for a run that stopped early: why, where, and the best finished epoch."""
    metrics = {
        "status": stop.status,
        "stopped/reason": str(stop),
        "stopped/epoch": stop.epoch,
        "stopped/batch": stop.batch,
        "epochs": stop.epoch - 1,
    }
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_epoch is not None:
        metrics.update({"best/epoch": checkpoint.best_epoch, "best/checkpoint": str(checkpoint.best_path)})
        metrics.update({f"best/{key}": value for key, value in checkpoint.best_logs.items()})
    write_json_atomic(output_dir / "metrics.json", metrics)


def resume_command(output_dir: str | Path) -> str:
    """The command line that continues this run: the same overrides, and `resume=` its folder."""
    try:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    except ValueError:  # not started by Hydra (a library call): no overrides to repeat
        overrides = []
    return shlex.join(["python", "-m", "fracture.train", *overrides, f"resume={output_dir}"])


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by `cfg`; returns its metrics, including `optimized_metric`."""
    if cfg.get("description"):
        console.print(f"[bold]{cfg.description}[/bold]  tags: {list(cfg.get('tags', []))}")
    if cfg.get("resume"):
        point_at_run_to_resume(cfg)
    keras.utils.set_random_seed(cfg.seed)
    prepare_backend(cfg)
    output_dir = Path(cfg.paths.output_dir)
    check_writable(output_dir)  # a read-only folder fails here, before the data scan and the model build
    write_json_atomic(output_dir / "run_info.json", run_info())

    # Every object first, so that an out-of-range setting fails before the data scan and the model build.
    datamodule = build(cfg.data)
    classifier = build(cfg.model)
    trainer = build(cfg.trainer, callbacks=build_all(cfg.get("callbacks")) + build_all(cfg.get("logger")))
    console.print(f"data {datamodule.root}: {datamodule.setup().summary()}")
    datamodule.write_split(output_dir / "split.csv")  # reuse with data.split_file=<this file>
    log.info(
        "backend %s, devices %s, jit_compile %s, precision %s",
        keras.backend.backend(),
        trainer.parallel.devices,
        trainer.jit_compile,
        trainer.precision,
    )

    try:
        metrics = trainer.fit(classifier, datamodule, stage="head" if cfg.finetune.blocks else "")
        if cfg.finetune.blocks and cfg.finetune.epochs:
            unfrozen = classifier.unfreeze_top_blocks(cfg.finetune.blocks)
            log.info("fine-tuning blocks %s at lr %g", unfrozen, cfg.finetune.lr)
            metrics = trainer.fit(
                classifier, datamodule, epochs=cfg.finetune.epochs, learning_rate=cfg.finetune.lr, stage="finetune"
            )
    except RunStopped as stop:
        record_stop(stop, trainer, output_dir)
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
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_epoch is not None:
        metrics["best/epoch"] = checkpoint.best_epoch
        metrics.update({f"best/{key}": value for key, value in checkpoint.best_logs.items()})
        metrics["best/checkpoint"] = str(checkpoint.best_path)
    metrics["optimized_metric"] = best_value(history, cfg.optimized_metric)

    write_json_atomic(output_dir / "metrics.json", metrics)
    console.print(summary_table({k: v for k, v in metrics.items() if not k.startswith(("train/", "best/train/"))}))
    curves = plots.training_curves(history, output_dir / "plots" / "training_curves.png")

    if cfg.evaluate and checkpoint is not None and checkpoint.best_epoch is not None:
        splits = [split for split in ("val", "test") if datamodule.has_split(split)]
        evaluation = evaluate_checkpoint(
            checkpoint.best_path, datamodule, splits, output_dir, seed=cfg.seed, training_curves=curves, **cfg.eval
        )
        metrics.update(evaluation)
        print_summary(evaluation, splits, output_dir)
    if trainer.backup_dir is not None:
        shutil.rmtree(trainer.backup_dir, ignore_errors=True)  # finished: nothing left to resume
    console.print(f"run folder: {output_dir}")
    return metrics


def run_training_job(cfg: DictConfig) -> float:
    """Train and return the optimized metric. In a multirun, a failing job is recorded and returns NaN, so
    that the sweep goes on; in a single run, user errors become one line on stderr and exit code 2."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        with user_errors():
            try:
                return train(cfg)["optimized_metric"]
            except (TrainingInterrupted, KeyboardInterrupt) as stop:  # before user_errors reports it as an error
                how = str(stop) if isinstance(stop, TrainingInterrupted) else "stopped at once by a second Ctrl-C"
                print(f"{how}. Resume with:\n  {resume_command(cfg.paths.output_dir)}", file=sys.stderr)
                sys.exit(130)
    try:
        return train(cfg)["optimized_metric"]
    except Exception as error:  # one failed job is recorded and must not stop the sweep
        log.exception("job failed: %s", error)
        record_failure(cfg.paths.output_dir, error)
        return float("nan")
