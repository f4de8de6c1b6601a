"""The train, fine-tune and evaluate recipe with plain Python arguments, as a library user calls it."""

import json

from conftest import run_python

from fracture.io import read_history

RECIPE = """
import sys
from pathlib import Path
from fracture import FractureClassifier, Trainer, write_synthetic_dataset
from fracture.data.datamodule import FractureDataModule
from fracture.recipe import run_recipe
from fracture.training.callbacks import CSVLogger, ModelCheckpoint
from fracture.training.stages import FineTuneStage, HeadStage

out = Path(sys.argv[1])
root = write_synthetic_dataset(out / "data", 16, 8, 4, image_size=64, seed=0)
data = FractureDataModule(root, image_size=48, batch_size=16, group_by=None)
model = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=16, freeze_base=True)
logs = [ModelCheckpoint(out / "run" / "checkpoints"), CSVLogger(out / "run" / "history.csv")]
trainer = Trainer(epochs=1, limit_train_batches=1, progress=False, callbacks=logs)  # of 2 batches
stages = [HeadStage("fit"), FineTuneStage("finetune", blocks=1, epochs=1, learning_rate=1e-4)]
metrics = run_recipe(data, model, trainer, out / "run", stages=stages, eval_options={"bootstrap_resamples": 20})
assert "hydra" not in sys.modules, "the library recipe imported Hydra"
print("EPOCHS", metrics["epochs"], "AUROC", metrics["test/auroc"])
"""


def test_the_recipe_runs_with_plain_arguments_and_without_hydra(tmp_path):
    done = run_python(RECIPE, tmp_path)
    assert "EPOCHS 2 " in done.stdout  # one frozen-base epoch, then one fine-tuning epoch
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs"] == 2 and "test/auroc" in metrics
    history = read_history(tmp_path / "run" / "history.csv")
    assert len(history) == 2 and metrics["optimized_metric"] == max(row["val/auc_approx"] for row in history)
    for name in ("split.csv", "history.csv", "report.md", "plots/training_curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    shortened = "Every epoch trained on 1 of 2 train batches (trainer.limit_train_batches)."
    assert metrics["training/shortened"] == shortened  # and the report says so before any number
    assert f"- **Training was shortened:** {shortened}" in (tmp_path / "run" / "report.md").read_text()


def test_an_overfit_check_says_why_validation_on_its_own_batches_trails_training():
    """On 2 batches x 20 epochs, validation on those same images stayed near chance (val/auc_approx 0.48 on
    the Kaggle images against train's 1.0): the BatchNormalization statistics it runs on lag. The note says by
    how much, from the slowest trainable layer; frozen ones do not move and so do not lag."""
    import keras

    from fracture import FractureClassifier
    from fracture.recipe import lagging_statistics

    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8, freeze_base=False)
    classifier.configure_model()
    (note,) = lagging_statistics(classifier.model, 40)  # the head's momentum 0.99 is the slowest (tiny: 0.9)
    assert "after 40 training steps at momentum 0.99 they are 33% the training batches' and 67%" in note
    for layer in classifier.model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    assert lagging_statistics(classifier.model, 40) == [] and lagging_statistics(None, 40) == []
