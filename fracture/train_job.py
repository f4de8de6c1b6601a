"""The body of `python -m fracture.train`: `train(cfg)` builds the data module, classifier, callbacks and
trainer from a composed config, fits, evaluates and writes the run folder.

It lives outside the `__main__` module so that process-based Hydra launchers (joblib, submitit, Ray) can
pickle the job by reference.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

import keras
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from fracture.cli import build, build_all, log, prepare_backend
from fracture.console import console
from fracture.errors import ConfigError, user_errors
from fracture.job_memory import released_after_job
from fracture.local_processes import run_local_processes, without_spawn_keys
from fracture.recipe import best_value, fit_stages, run_recipe
from fracture.resume_config import check_resumable
from fracture.run_folder import RunFolder
from fracture.tracking.tracker import RunTracker, run_params, run_tags, tracked_run
from fracture.training.callbacks import CSVLogger, ModelCheckpoint
from fracture.training.distributed import ProcessGroup, check_backend, find_process_group, join, needs_starting
from fracture.training.guards import DiskFull, TrainingInterrupted
from fracture.training.stages import HeadStage, enabled_stages

# What the training processes after the first leave out: every file of the run is process 0's to write.
WRITING_CALLBACKS = (ModelCheckpoint, CSVLogger, RunTracker, keras.callbacks.TensorBoard)


def check_resume(cfg: DictConfig) -> None:
    """For `resume=`, check that the job's folder is the run to continue (`hydra.run.dir` points at it, see
    `fracture.cli.run_folder`), that it holds a backup, and that the new settings change only what a resume
    may (`fracture.resume_config`)."""
    output_dir = Path(cfg.paths.output_dir)
    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    target = RunFolder.to_resume(cfg.resume, runs)
    if target is None and cfg.resume is True:
        raise ConfigError(f"resume=true found no interrupted run under {runs}; pass resume=<run folder>.")
    if target is None:
        named = Path(str(cfg.resume)).expanduser()
        raise ConfigError(f"resume={cfg.resume}: {named} holds no training backup to resume from.")
    target = target.path
    if output_dir.resolve() != target.resolve():
        raise ConfigError(
            f"resume={cfg.resume} continues in the run's own folder {target}; leave out hydra.run.dir={output_dir}."
        )
    log.info("resuming the run in %s", output_dir)
    original = output_dir / ".hydra" / "config.yaml"
    if not original.is_file():
        log.warning("%s is missing: the resumed settings cannot be checked against the run's own", original)
        return
    check_resumable(resolved(OmegaConf.load(original)), resolved(cfg), str(cfg.resume))


def resolved(cfg: DictConfig) -> dict:
    """`cfg` as plain containers, interpolations resolved where they can be (else left as written)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError:
        return OmegaConf.to_container(cfg, resolve=False)


def resume_command(output_dir: str | Path) -> str:
    """The command line that continues this run: the same overrides, and `resume=` its folder."""
    try:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
        overrides = without_spawn_keys(overrides)  # a training process's place in its group is not the run's
    except ValueError:  # not started by Hydra (a library call): no overrides to repeat
        overrides = []
    return shlex.join(["python", "-m", "fracture.train", *overrides, f"resume={output_dir}"])


def process_group(cfg: DictConfig) -> ProcessGroup:
    """This job's place among its training processes (`trainer.num_processes`, or a launcher's tasks)."""
    trainer = cfg.trainer
    return find_process_group(trainer.get("num_processes", 1), trainer.get("process_id"), trainer.get("coordinator"))


def requeued(cfg: DictConfig) -> bool:
    """A submitit job that finds a backup in its own folder is a requeued attempt (pre-empted, or past its time
    limit): it resumes from that backup by itself. (Every other job starts in a folder of its own.)"""
    return "SUBMITIT_EXECUTOR" in os.environ and RunFolder(cfg.paths.output_dir).unfinished


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by `cfg`; returns its metrics, including `optimized_metric`."""
    if cfg.get("description"):
        console.print(f"[bold]{cfg.description}[/bold]  tags: {list(cfg.get('tags', []))}")
    group = process_group(cfg)
    check_backend(group, keras.backend.backend())
    join(group, cfg.trainer.get("peer_timeout_s", 60))  # before any JAX computation
    if not cfg.get("resume") and requeued(cfg):
        console.print(f"requeued: resuming from the backup in {cfg.paths.output_dir}")
        cfg = OmegaConf.merge(cfg, {"resume": str(cfg.paths.output_dir)})
    if cfg.get("resume"):
        check_resume(cfg)
    keras.utils.set_random_seed(cfg.seed)
    prepare_backend(cfg)
    # A read-only folder fails here, before the data scan and the model build.
    run = RunFolder(cfg.paths.output_dir)
    if group.is_chief:
        run.prepare()

    # Every object first, so that an out-of-range setting fails before the data scan and the model build.
    datamodule = build(cfg.data, **fast_dev_run_data_options(cfg))
    classifier = build(cfg.model)
    callbacks = build_all(cfg.get("callbacks")) + build_all(cfg.get("logger"))
    if not group.is_chief:
        callbacks = [callback for callback in callbacks if not isinstance(callback, WRITING_CALLBACKS)]
    trainer = build(cfg.trainer, callbacks=callbacks, backup_dir=run.backup_dir)
    stages = build_all(cfg.get("stages"))
    if not group.is_chief:
        console.print(f"training as {group.describe()}; process 0 writes the run folder")
        metrics = fit_stages(datamodule, classifier, trainer, enabled_stages(stages or [HeadStage()]))
        return {**metrics, "optimized_metric": best_value(trainer.history, cfg.optimized_metric, cfg.optimized_mode)}
    trackers = [callback for callback in callbacks if isinstance(callback, RunTracker)]
    info = run.run_info()
    params = run_params(resolved(cfg), info)
    data_source = str(cfg.data.get("table") or cfg.data.get("root"))
    tags = run_tags(info, data_source, str(run.path), cfg.get("tags", []), cfg.get("description", ""))
    with tracked_run(trackers, run, params, tags) as finish:
        metrics = run_recipe(
            datamodule,
            classifier,
            trainer,
            run,
            stages=stages,
            optimized_metric=cfg.optimized_metric,
            optimized_mode=cfg.optimized_mode,
            evaluate=cfg.evaluate,
            eval_options=dict(cfg.eval),
            seed=cfg.seed,
        )
        finish(metrics)
    return metrics


def fast_dev_run_data_options(cfg: DictConfig) -> dict:
    """A debug run checks that the pipeline runs on a batch of each split: it streams those batches instead of
    decoding every image first (`data.decode_cache`), and groups files by name instead of auditing their content."""
    if not cfg.trainer.get("fast_dev_run"):
        return {}
    console.print("fast_dev_run: images streamed, not decoded ahead; no content audit (those are for real runs)")
    return {"decode_cache": False, **({"group_by": "filename"} if cfg.data.get("group_by") == "content" else {})}


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def train_in_local_processes(cfg: DictConfig, group: ProcessGroup, multirun: bool) -> float:
    """`trainer.num_processes=N` here: start the N processes (`fracture.local_processes`) and return the
    optimized metric that process 0 recorded. A failure exits with its code, or fails the sweep's job."""
    with user_errors():
        check_backend(group, keras.backend.backend())
    run = RunFolder(cfg.paths.output_dir)
    code = run_local_processes(group.num_processes, list(HydraConfig.get().overrides.task), run.path)
    if code and not multirun:
        sys.exit(code)
    if code:
        run.record_failure(RuntimeError(f"a training process exited with code {code}"))
        return float("nan")
    return float(run.metrics().get("optimized_metric", float("nan")))


def run_training_job(cfg: DictConfig) -> float:
    """Train and return the optimized metric. In a multirun, a failing job is recorded and returns NaN, so
    that the sweep goes on; in a single run, user errors become one line on stderr and exit code 2."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    with user_errors():
        group = process_group(cfg)
    if needs_starting(group):
        return train_in_local_processes(cfg, group, multirun)
    if not multirun:
        # SIGTERM (a scheduler's pre-emption or time limit) outside the training loop acts as Ctrl-C does there:
        # what is being written is finished or discarded whole. Inside the loop, InterruptGuard takes over.
        signal.signal(signal.SIGTERM, _interrupt)
        with user_errors():
            try:
                return train(cfg)["optimized_metric"]
            except (TrainingInterrupted, KeyboardInterrupt) as stop:  # before user_errors reports it as an error
                how = str(stop) if isinstance(stop, TrainingInterrupted) else "stopped at once"
                full = isinstance(stop, DiskFull)
                print(f"{'error: ' if full else ''}{how}. Resume with:", file=sys.stderr)
                print(f"  {resume_command(cfg.paths.output_dir)}", file=sys.stderr)
                # 128 + the signal, as a shell reports a process it stopped: 130 for Ctrl-C, 143 for SIGTERM.
                sys.exit(2 if full else 128 + int(getattr(stop, "signum", signal.SIGINT)))
    with released_after_job():
        try:
            return train(cfg)["optimized_metric"]
        except Exception as error:  # one failed job is recorded and must not stop the sweep
            log.exception("job failed: %s", error)
            RunFolder(cfg.paths.output_dir).record_failure(error)
            return float("nan")
