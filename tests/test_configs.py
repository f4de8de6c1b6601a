"""Every config composes, builds the right objects, and `train(cfg)` runs a real job without Hydra's CLI."""

import json
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from fracture import FractureClassifier, FractureDataModule, Trainer
from fracture.cli import CONFIG_DIR, build, build_all
from fracture.io import read_history

GROUPS = ["data", "model", "trainer", "callbacks", "stages", "logger", "experiment", "debug", "hparams_search"]


def options(group):
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_option_composes_and_builds_its_objects(tmp_path, group, option):
    cfg = compose_config(tmp_path, f"{group}={option}", "data.root=/somewhere")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.data.image_size == cfg.model.image_size
    # What train(cfg) builds before touching data: a bad target or argument in any option fails here.
    datamodule, classifier = build(cfg.data), build(cfg.model)
    trainer = build(cfg.trainer, callbacks=build_all(cfg.callbacks) + build_all(cfg.logger))
    assert isinstance(datamodule, FractureDataModule) and isinstance(classifier, FractureClassifier)
    assert isinstance(trainer, Trainer) and datamodule.image_size == classifier.image_size


def test_objects_built_from_the_default_config(tmp_path):
    cfg = compose_config(tmp_path, "data.root=/somewhere")
    assert isinstance(build(cfg.data), FractureDataModule)
    classifier = build(cfg.model)
    assert isinstance(classifier, FractureClassifier)
    assert classifier.backbone == "efficientnet_b3" and classifier.weights == "imagenet" and classifier.freeze_base
    assert classifier.optimizer.lr == 1e-3
    trainer = build(cfg.trainer, callbacks=build_all(cfg.callbacks) + build_all(cfg.logger))
    assert isinstance(trainer, Trainer) and trainer.epochs == 10
    assert trainer.checkpoint_callback.best_path == Path(f"{tmp_path}/run/checkpoints/best_model.keras")
    assert trainer.checkpoint_callback.monitor == "val/auc_approx"


def test_train_function_runs_the_demo_recipe_briefly(tmp_path):
    from fracture.train import train

    cfg = compose_config(
        tmp_path,
        "experiment=demo",
        "data.train_per_class=16",
        "data.val_per_class=8",
        "data.test_per_class=4",
        "data.image_size=48",
        "trainer.epochs=2",
        "trainer.progress=false",
    )
    metrics = train(cfg)
    assert metrics["optimized_metric"] == metrics["best/val/auc_approx"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["val/auc_approx"] == pytest.approx(metrics["val/auc_approx"]) and saved["epochs"] == 2
    assert Path(saved["best/checkpoint"]).is_file()
    header, *rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 2 and {"epoch", "train/loss", "val/auc_approx", "train/lr"} <= set(header.split(","))


def test_finetune_experiment_runs_both_stages(tmp_path):
    from fracture.train import train

    cfg = compose_config(
        tmp_path,
        "experiment=finetune",
        "data=synthetic",
        "model=tiny",
        "model.freeze_base=true",
        "data.train_per_class=16",
        "data.val_per_class=8",
        "data.test_per_class=4",
        "data.image_size=48",
        "trainer.epochs=1",
        "finetune.epochs=2",
        "trainer.progress=false",
        "evaluate=false",
    )
    metrics = train(cfg)
    assert metrics["epochs"] == 3  # one head epoch, then two fine-tuning epochs
    rows = read_history(tmp_path / "run" / "history.csv")
    assert len(rows) == 3
    learning_rates = [row["train/lr"] for row in rows]
    assert learning_rates[0] == pytest.approx(1e-3) and learning_rates[1:] == pytest.approx([1e-5, 1e-5])
    assert not (tmp_path / "run" / "backup").exists()


def test_csv_and_tensorboard_loggers_write_their_files(tmp_path):
    from fracture.train import train

    cfg = compose_config(
        tmp_path,
        "experiment=demo",
        "logger=many_loggers",
        "data.train_per_class=16",
        "data.val_per_class=8",
        "data.test_per_class=4",
        "data.image_size=48",
        "trainer.fast_dev_run=true",
        "trainer.progress=false",
        "evaluate=false",
    )
    train(cfg)
    assert (tmp_path / "run" / "history.csv").read_text().startswith("epoch,")
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
