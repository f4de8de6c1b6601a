"""Evaluate a checkpoint: `python -m fracture.eval ckpt_path=... data.root=... [split=test]`.

Writes `metrics.json`, `plots/` and `report.md` to the run folder (outputs/eval/runs/<time>/).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import CONFIG_DIR, build, prepare_backend, user_errors
from fracture.evaluation import plots
from fracture.evaluation.evaluate import evaluate_checkpoint
from fracture.evaluation.summary import print_summary
from fracture.io import read_history
from fracture.models.checkpoint import read_metadata


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate `cfg.ckpt_path` on `cfg.split`; returns the slash-namespaced metrics."""
    metadata = read_metadata(cfg.ckpt_path)
    prepare_backend(cfg)
    split = cfg.split
    datamodule = build(
        cfg.data,
        image_size=metadata["image_size"],
        positive_class=metadata["positive_class"],
        negative_class=metadata["negative_class"],
    )
    output_dir = Path(cfg.paths.output_dir)
    # A checkpoint inside a training run folder (<run>/checkpoints/x.keras) brings its training curves.
    history_csv = Path(cfg.ckpt_path).expanduser().parent.parent / "history.csv"
    curves = None
    if history_csv.is_file():
        curves = plots.training_curves(read_history(history_csv), output_dir / "plots" / "training_curves.png")
    results = evaluate_checkpoint(
        cfg.ckpt_path,
        datamodule,
        splits=[split],
        output_dir=output_dir,
        seed=cfg.seed,
        training_curves=curves,
        **cfg.eval,
    )
    print_summary(results, [split], cfg.paths.output_dir)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
