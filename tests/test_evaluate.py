"""Evaluating a trained checkpoint: threshold from validation, stored, and reused on test; plots and report."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from fracture import FractureClassifier, FractureDataModule, Trainer, read_metadata
from fracture.evaluation.evaluate import Evaluator, evaluate_checkpoint
from fracture.evaluation.threshold import youden_threshold
from fracture.training.callbacks import ModelCheckpoint

pytestmark = pytest.mark.backend
PLOTS = ["confusion_matrix", "roc", "pr", "reliability"]


def train_checkpoint(root, directory, epochs=2):
    datamodule = FractureDataModule(root, image_size=64, batch_size=16, augmentation=None, group_by="filename")
    checkpoint = ModelCheckpoint(directory, monitor="val/auc_approx")
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)
    Trainer(epochs=epochs, callbacks=[checkpoint], progress=False).fit(classifier, datamodule)
    return checkpoint.best_path, datamodule


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory, synthetic_root):
    directory = tmp_path_factory.mktemp("ckpt")
    return train_checkpoint(synthetic_root, directory)


def test_test_split_uses_the_threshold_chosen_on_val(tmp_path, synthetic_checkpoint):
    source, datamodule = synthetic_checkpoint
    ckpt = shutil.copy(source, tmp_path / "best_model.keras")
    assert read_metadata(ckpt)["threshold_source"] == "default"

    val = evaluate_checkpoint(ckpt, datamodule, ["val"], tmp_path / "val_run", bootstrap_resamples=100)
    stored = read_metadata(ckpt)
    evaluator = Evaluator(ckpt, datamodule)
    y_val, p_val, _ = evaluator.predictions("val")
    assert stored["threshold_source"] == "val" and stored["threshold_method"] == "youden"
    assert stored["threshold"] == pytest.approx(youden_threshold(y_val, p_val))
    assert val["val/threshold"] == pytest.approx(stored["threshold"])

    test = evaluate_checkpoint(ckpt, datamodule, ["test"], tmp_path / "test_run", bootstrap_resamples=100)
    assert test["test/threshold"] == pytest.approx(stored["threshold"])
    y_test, p_test, _ = evaluator.predictions("test")
    expected_sensitivity = np.mean(p_test[y_test == 1] >= stored["threshold"])
    assert test["test/sensitivity"] == pytest.approx(expected_sensitivity)


def test_evaluation_writes_metrics_plots_and_report(tmp_path, synthetic_checkpoint):
    source, datamodule = synthetic_checkpoint
    ckpt = shutil.copy(source, tmp_path / "best_model.keras")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"val/auc_approx": 0.5}))  # as training leaves it
    results = evaluate_checkpoint(
        ckpt, datamodule, ["val", "test"], tmp_path / "run", calibration="platt", bootstrap_resamples=100
    )
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["val/auc_approx"] == 0.5  # training's keys are kept
    for key in ["auroc", "auroc_ci_low", "auroc_ci_high", "sensitivity", "specificity", "threshold", "brier", "ece"]:
        assert saved[f"test/{key}"] == pytest.approx(results[f"test/{key}"], nan_ok=True)
    assert results["test/calibration/method"] == "platt" and results["test/calibration/ece_after"] >= 0
    assert read_metadata(ckpt)["calibration"]["method"] == "platt"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Not a medical device" in report and "## test split" in report
    for split in ("val", "test"):
        for plot in PLOTS:
            png = tmp_path / "run" / "plots" / f"{split}_{plot}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"(plots/{split}_{plot}.png)" in report


def test_target_sensitivity_rule_is_applied_and_stored(tmp_path, synthetic_checkpoint):
    source, datamodule = synthetic_checkpoint
    ckpt = shutil.copy(source, tmp_path / "best_model.keras")
    results = evaluate_checkpoint(ckpt, datamodule, ["val"], tmp_path, target_sensitivity=0.9, bootstrap_resamples=50)
    assert results["val/sensitivity"] >= 0.9
    assert read_metadata(ckpt)["threshold_method"] == "sensitivity>=0.9"


def test_per_group_metrics_when_images_share_a_source(tmp_path, real_root):
    ckpt, datamodule = train_checkpoint(real_root, tmp_path / "ckpt", epochs=1)
    results = evaluate_checkpoint(ckpt, datamodule, ["val"], tmp_path / "run", bootstrap_resamples=50)
    groups = len(set(datamodule.files("val").groups))
    assert results["val/groups"] == groups == results["val/group/n"]
    assert results["val/group/n"] < results["val/n"]
    assert "independent source images" in (tmp_path / "run" / "report.md").read_text()


def test_group_level_evaluation_on_data_with_groups(tmp_path, synthetic_checkpoint, synthetic_root):
    """Every validation image gets a rotated copy: 16 sources, 32 images; metrics per source average them."""
    source, _ = synthetic_checkpoint
    root = shutil.copytree(synthetic_root, tmp_path / "data")
    for path in sorted((root / "val").rglob("*.png")):
        Image.open(path).rotate(90).save(path.with_name(f"{path.stem}-rotated1.png"))
    datamodule = FractureDataModule(root, image_size=64, batch_size=16, group_by="filename")
    ckpt = shutil.copy(source, tmp_path / "best_model.keras")
    results = evaluate_checkpoint(ckpt, datamodule, ["val"], tmp_path / "run", bootstrap_resamples=50)
    assert results["val/n"] == 32 and results["val/groups"] == 16 and results["val/group/n"] == 16

    y, p, groups = Evaluator(ckpt, datamodule).predictions("val")
    groups = np.asarray(groups)
    names = sorted(set(groups))
    labels = np.array([y[groups == name][0] for name in names])
    means = np.array([p[groups == name].mean() for name in names])  # a source's score: its copies' mean
    assert results["val/group/auroc"] == pytest.approx(roc_auc_score(labels, means))
    assert "16 independent source images" in (tmp_path / "run" / "report.md").read_text()


def test_a_forest_plot_draws_a_subgroup_whose_interval_lies_beside_its_auroc(tmp_path):
    """A bootstrap percentile interval need not contain the point (seen on a small subgroup in CI)."""
    from PIL import Image

    from fracture.evaluation.plots import forest_plot

    row = {"subgroup": "hand", "n": 12, "auroc": 0.50, "auroc_ci_low": 0.55, "auroc_ci_high": 0.90, "too_small": True}
    path = forest_plot([row], (0.70, 0.60, 0.80), tmp_path / "forest.png")
    assert Image.open(path).size[0] > 100
