"""Train a fracture classifier: `python -m fracture.train [overrides]`.

A thin Hydra entry: `main` composes the config and calls `train(cfg)`, which builds the data module,
classifier, callbacks and trainer from it, fits, and writes `metrics.json` beside the checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import keras
from omegaconf import DictConfig, OmegaConf

from fracture.cli import CONFIG_DIR, build, build_all, log, user_errors
from fracture.errors import ConfigError
from fracture.evaluation import plots
from fracture.evaluation.evaluate import evaluate_checkpoint
from fracture.evaluation.summary import print_summary
from fracture.io import write_json_atomic
from fracture.training.progress import console, summary_table


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by `cfg`; returns its metrics, including `optimized_metric`."""
    if cfg.get("description"):
        console.print(f"[bold]{cfg.description}[/bold]  tags: {list(cfg.get('tags', []))}")
    keras.utils.set_random_seed(cfg.seed)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it for CLI runs; library callers may not

    datamodule = build(cfg.data)
    console.print(f"data {datamodule.root}: {datamodule.setup().summary()}")
    classifier = build(cfg.model)
    trainer = build(cfg.trainer, callbacks=build_all(cfg.get("callbacks")) + build_all(cfg.get("logger")))
    log.info(
        "backend %s, jit_compile %s, precision %s", keras.backend.backend(), trainer.jit_compile, trainer.precision
    )

    metrics = trainer.fit(classifier, datamodule, stage="head" if cfg.finetune.blocks else "")
    if cfg.finetune.blocks and cfg.finetune.epochs:
        unfrozen = classifier.unfreeze_top_blocks(cfg.finetune.blocks)
        log.info("fine-tuning blocks %s at lr %g", unfrozen, cfg.finetune.lr)
        metrics = trainer.fit(
            classifier, datamodule, epochs=cfg.finetune.epochs, learning_rate=cfg.finetune.lr, stage="finetune"
        )

    metrics["epochs"] = trainer.current_epoch
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_epoch is not None:
        metrics["best/epoch"] = checkpoint.best_epoch
        metrics.update({f"best/{key}": value for key, value in checkpoint.best_logs.items()})
        metrics["best/checkpoint"] = str(checkpoint.best_path)
    objective = f"best/{cfg.optimized_metric}" if f"best/{cfg.optimized_metric}" in metrics else cfg.optimized_metric
    if objective not in metrics:
        raise ConfigError(f"optimized_metric {cfg.optimized_metric!r} was never logged; logged: {sorted(metrics)}.")
    metrics["optimized_metric"] = metrics[objective]

    write_json_atomic(output_dir / "metrics.json", metrics)
    console.print(summary_table({k: v for k, v in metrics.items() if not k.startswith(("train/", "best/train/"))}))
    curves = plots.training_curves(trainer.history, output_dir / "plots" / "training_curves.png")

    if cfg.evaluate and checkpoint is not None and checkpoint.best_epoch is not None:
        splits = [split for split in ("val", "test") if datamodule.has_split(split)]
        evaluation = evaluate_checkpoint(
            checkpoint.best_path, datamodule, splits, output_dir, seed=cfg.seed, training_curves=curves, **cfg.eval
        )
        metrics.update(evaluation)
        print_summary(evaluation, splits, output_dir)
    console.print(f"run folder: {output_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    with user_errors():
        log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
        return train(cfg)["optimized_metric"]


if __name__ == "__main__":
    main()
