"""Train a fracture classifier: `python -m fracture.train [overrides]`.

A thin Hydra entry: `main` composes the config and hands it to `fracture.train_job`, whose `train(cfg)`
builds the data module, classifier, callbacks and trainer, fits, and writes the run folder.
"""

import hydra
from omegaconf import DictConfig

from fracture.cli import CONFIG_DIR
from fracture.train_job import run_training_job, train

__all__ = ["main", "train"]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    return run_training_job(cfg)


if __name__ == "__main__":
    main()
