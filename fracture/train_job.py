"""The body of `python -m fracture.train`: `train(cfg)` builds the data module, classifier, callbacks and
trainer from a composed config, fits, evaluates and writes the run folder.

It lives outside the `__main__` module so that process-based Hydra launchers (joblib, submitit, Ray) can
pickle the job by reference.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import keras
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from fracture.cli import build, build_all, log, prepare_backend, user_errors
from fracture.errors import ConfigError
from fracture.io import check_writable, write_json_atomic
from fracture.recipe import run_recipe
from fracture.run_info import run_info
from fracture.sweeps import record_failure
from fracture.training.guards import TrainingInterrupted
from fracture.training.progress import console


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
    return run_recipe(
        datamodule,
        classifier,
        trainer,
        output_dir,
        optimized_metric=cfg.optimized_metric,
        finetune_blocks=cfg.finetune.blocks,
        finetune_epochs=cfg.finetune.epochs,
        finetune_lr=cfg.finetune.lr,
        evaluate=cfg.evaluate,
        eval_options=dict(cfg.eval),
        seed=cfg.seed,
    )


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
