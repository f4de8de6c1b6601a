"""Training stages: which run, whether their backbone trains (and so whether cached features serve), and a
run of several stages that continues one epoch count with one backup per stage."""

import pytest

from fracture import FractureClassifier, FractureDataModule, Trainer
from fracture.errors import ConfigError
from fracture.recipe import run_recipe
from fracture.training.callbacks import ModelCheckpoint
from fracture.training.stages import FineTuneStage, HeadStage, enabled_stages


def test_a_stage_with_no_epochs_or_no_blocks_is_skipped_and_every_stage_needs_its_own_name():
    fit, off = HeadStage("fit"), FineTuneStage("finetune", blocks=0, epochs=3)
    assert enabled_stages([fit, off, FineTuneStage("none", blocks=2, epochs=0)]) == [fit]
    on = FineTuneStage("finetune", blocks=2, epochs=3)
    assert enabled_stages([fit, on]) == [fit, on]
    with pytest.raises(ConfigError, match="distinct names"):
        enabled_stages([fit, HeadStage("fit", epochs=2)])
    with pytest.raises(ConfigError, match="nothing would train"):
        enabled_stages([HeadStage("fit", epochs=0)])
    with pytest.raises(ConfigError, match="blocks must be at least 0"):
        FineTuneStage(blocks=-1)


@pytest.mark.backend
def test_stages_say_whether_the_backbone_trains_and_the_cache_follows(tmp_path, synthetic_root):
    """A frozen stage trains on cached features; the fine-tuning stage, whose backbone trains, does not, and
    the stages continue one epoch count with a backup each, removed when the run finishes."""
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8, freeze_base=True)
    datamodule = FractureDataModule(synthetic_root, image_size=48, batch_size=16, augmentation=None, group_by=None)
    checkpoint = ModelCheckpoint(tmp_path / "run" / "checkpoints")
    trainer = Trainer(epochs=1, progress=False, callbacks=[checkpoint], feature_cache_dir=None, backup_dir="elsewhere")
    stages = [HeadStage("fit"), FineTuneStage("finetune", blocks=1, epochs=1, learning_rate=1e-4)]
    seen = []
    original_fit = trainer.fit

    def recording_fit(model, data, stage):
        seen.append((stage.name, stage.trains_backbone(model)))
        metrics = original_fit(model, data, stage=stage)
        seen.append(sorted(p.name for p in (tmp_path / "run" / "backup").iterdir()))
        return metrics

    trainer.fit = recording_fit
    metrics = run_recipe(datamodule, classifier, trainer, tmp_path / "run", stages=stages, evaluate=False)
    assert seen == [("fit", False), ["fit_cached"], ("finetune", True), ["finetune", "fit_cached"]]
    assert trainer.used_feature_cache and metrics["epochs"] == 2
    assert trainer.backup_dir == tmp_path / "run" / "backup"  # the run folder's, not "elsewhere"
    assert not (tmp_path / "run" / "backup").exists()  # finished: nothing to resume
