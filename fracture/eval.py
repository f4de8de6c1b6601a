"""Evaluate a checkpoint: `python -m fracture.eval ckpt_path=... data.root=... [split=test]`.

Writes `metrics.json`, `plots/` and `report.md` to the run folder (outputs/eval/runs/<time>/).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fracture.cli import CONFIG_DIR, build, prepare_backend
from fracture.errors import user_errors
from fracture.evaluation import plots
from fracture.evaluation.evaluate import evaluate_checkpoint
from fracture.evaluation.summary import print_summary
from fracture.io import read_history
from fracture.models.checkpoint import read_metadata


def trained_data_root(ckpt_path: str | Path) -> Path | None:
    """The `data.root` of the run that trained `ckpt_path` (`<run>/checkpoints/x.keras`), or None."""
    saved = Path(ckpt_path).expanduser().resolve().parent.parent / ".hydra" / "config.yaml"
    try:
        root = OmegaConf.select(OmegaConf.load(saved), "data.root", throw_on_resolution_failure=True)
    except (OSError, ValueError, OmegaConfBaseException):
        return None
    return Path(root).expanduser().resolve() if root else None


def is_external(cfg: DictConfig, datamodule) -> bool:
    """`external=auto`: the split is `all`, or the data root is not the training run's."""
    if cfg.external != "auto":
        return bool(cfg.external)
    trained = trained_data_root(cfg.ckpt_path)
    return cfg.split == "all" or (trained is not None and trained != datamodule.root.resolve())


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
        external=is_external(cfg, datamodule),
        explain=OmegaConf.to_container(cfg.explain, resolve=True),
        **cfg.eval,
    )
    reported = [name for name in (split, f"{split}_site_rest") if f"{name}/auroc" in results]
    print_summary(results, reported, cfg.paths.output_dir)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
