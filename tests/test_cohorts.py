"""Per-study and per-subgroup figures against hand-computed values, and external validation end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from test_tables import fracatlas, fracatlas_tree, mura_tree

from fracture.evaluation.cohorts import MIN_PER_CLASS, study_level, subgroup_members, subgroup_results
from fracture.evaluation.evaluate import evaluate_checkpoint
from fracture.evaluation.metrics import binary_metrics
from fracture.evaluation.report import _subgroup_table, _with_ci
from fracture.models.checkpoint import read_metadata, update_metadata


def test_study_probabilities_are_the_mean_or_the_max_of_their_images_and_kappa_is_cohens():
    y = np.array([1, 1, 0, 0, 0, 1])
    p = np.array([0.9, 0.5, 0.2, 0.6, 0.1, 0.3])
    studies = ["s1", "s1", "s2", "s2", "s3", "s4"]
    labels, mean, names, counts = study_level(y, p, studies, "mean")
    assert list(names) == ["s1", "s2", "s3", "s4"] and list(labels) == [1, 0, 0, 1] and list(counts) == [2, 2, 1, 1]
    np.testing.assert_allclose(mean, [0.7, 0.4, 0.1, 0.3])
    np.testing.assert_allclose(study_level(y, p, studies, "max")[1], [0.9, 0.6, 0.1, 0.3])
    scores = binary_metrics(labels, mean, 0.35, bootstrap_resamples=10)
    # At 0.35: s1 (0.7) and s2 (0.4) positive, s3 and s4 negative: one true positive, one false positive,
    # one true negative, one false negative; observed agreement 1/2, chance agreement 1/2: kappa 0.
    assert scores["sensitivity"] == 0.5 and scores["specificity"] == 0.5 and scores["cohen_kappa"] == 0.0
    assert scores["cohen_kappa"] == cohen_kappa_score(labels, mean >= 0.35)
    assert scores["auroc"] == roc_auc_score(labels, mean) == 0.75


def test_subgroups_are_flags_or_values_and_small_ones_are_flagged():
    rng = np.random.default_rng(0)
    count = 200
    y = (np.arange(count) % 2).astype(int)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, count), 0, 1)
    hand = ["1" if i < 30 else "0" for i in range(count)]  # a 0/1 flag: one subgroup, the flagged images
    view = ["frontal" if i % 4 < 2 else "lateral" for i in range(count)]
    members = subgroup_members({"hand": hand, "view": view})
    assert set(members) == {"hand", "view=frontal", "view=lateral"} and members["hand"].sum() == 30
    results, rows = subgroup_results(
        "test", y, p, 0.5, {"hand": hand, "view": view}, list(map(str, range(count))), 20, 0
    )
    by_name = {row["subgroup"]: row for row in rows}
    assert by_name["hand"]["n"] == 30 and by_name["hand"]["positives"] == 15
    assert by_name["hand"]["too_small"] == (15 < MIN_PER_CLASS) and not by_name["view=frontal"]["too_small"]
    frontal = members["view=frontal"]
    assert results["test/subgroup/view=frontal/auroc"] == pytest.approx(roc_auc_score(y[frontal], p[frontal]))
    assert results["test/subgroup/view=lateral/n"] == 100


@pytest.mark.filterwarnings("error")  # scikit-learn warns where a figure is undefined; none may be computed
def test_a_subgroup_of_one_class_reports_the_figures_it_lacks_as_missing_not_zero():
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.4, 0.8, 0.3, 0.6, 0.1, 0.7, 0.2])
    hardware = ["1", "1", "1", "0", "0", "0", "0", "0"]  # implants, all of them fractured
    _, rows = subgroup_results("test", y, p, 0.5, {"hardware": hardware}, list("abcdefgh"), 20, 0)
    (row,) = rows
    assert row["positives"] == row["n"] == 3 and row["too_small"]
    assert row["sensitivity"] == pytest.approx(2 / 3) and row["precision"] == 1.0
    assert np.isnan(row["specificity"]) and np.isnan(row["auroc"])  # no negatives: 0.000 would be a claim
    assert "| hardware | 3 (3) | n/a | 0.667 | n/a | too few to measure |" in _subgroup_table(rows)
    nan = float("nan")  # a split of one class: its AUROC has no interval either
    assert _with_ci({"s/auroc": nan, "s/auroc_ci_low": nan, "s/auroc_ci_high": nan}, "s") == "n/a"
    assert (
        _with_ci({"s/auroc": 0.7, "s/auroc_ci_low": 0.6, "s/auroc_ci_high": 0.8}, "s") == "0.700 (95% CI 0.600-0.800)"
    )


def train_run(tmp_path, synthetic_root):
    """A tiny model trained on the synthetic data in a run folder of its own (checkpoint, metrics.json)."""
    from fracture import FractureClassifier, FractureDataModule, Trainer
    from fracture.recipe import run_recipe
    from fracture.training.callbacks import ModelCheckpoint

    run = tmp_path / "trained"
    data = FractureDataModule(synthetic_root, image_size=48, batch_size=16, group_by="filename")
    trainer = Trainer(epochs=1, progress=False, callbacks=[ModelCheckpoint(run / "checkpoints")])
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8)
    run_recipe(data, classifier, trainer, run, eval_options={"bootstrap_resamples": 10})
    return run / "checkpoints" / "best_model.keras"


@pytest.mark.backend
def test_external_validation_keeps_the_training_threshold_and_shows_its_validation_beside(tmp_path, synthetic_root):
    ckpt = train_run(tmp_path, synthetic_root)
    trained = read_metadata(ckpt)
    root = fracatlas_tree(tmp_path / "FracAtlas", per_class=20)
    external = fracatlas(tmp_path, root, "data.image_size=48")
    results = evaluate_checkpoint(ckpt, external, ["all"], tmp_path / "ext", bootstrap_resamples=10, external=True)
    assert read_metadata(ckpt)["threshold"] == trained["threshold"] == results["all/threshold"]
    assert results["evaluation/external"] and results["all/n"] == 40
    validation = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    assert results["training/val/auroc"] == validation["val/auroc"]
    report = (tmp_path / "ext" / "report.md").read_text()
    assert "**External validation**" in report and "training data, validation" in report
    # The subgroup table's counts are the table's: hand is flagged on every third image.
    assert results["all/subgroup/hand/n"] == sum(i % 3 == 0 for i in range(40)) and "### Subgroups" in report
    assert (tmp_path / "ext" / "plots" / "all_subgroups.png").is_file()

    site = evaluate_checkpoint(
        ckpt, external, ["all"], tmp_path / "site", bootstrap_resamples=10, external=True, recalibrate_fraction=0.5
    )
    adopted = read_metadata(tmp_path / "site" / "site_model.keras")
    assert adopted["threshold_source"] == "site" and read_metadata(ckpt)["threshold"] == trained["threshold"]
    assert site["all_site_rest/n"] == 40 - len(external.files("all_site_fit")) and site["all_site_rest/n"] < 40
    assert "adopted at this site" in (tmp_path / "site" / "report.md").read_text()

    unevaluated = shutil.copy(ckpt, tmp_path / "raw.keras")
    update_metadata(unevaluated, threshold_source="default")
    with pytest.raises(Exception, match="no threshold chosen on its training data's validation split"):
        evaluate_checkpoint(unevaluated, external, ["all"], tmp_path / "no", bootstrap_resamples=10, external=True)


@pytest.mark.backend
def test_studies_are_reported_at_a_threshold_chosen_on_validation_studies(tmp_path, tiny_checkpoint):
    from conftest import compose_config
    from hydra.utils import instantiate

    root = mura_tree(tmp_path / "MURA-v1.1")
    cfg = compose_config(tmp_path, "data=mura", f"data.root={root}", "data.group_by=null", "data.image_size=64")
    datamodule = instantiate(cfg.data, _convert_="all")
    ckpt = shutil.copy(tiny_checkpoint, tmp_path / "model.keras")
    results = evaluate_checkpoint(ckpt, datamodule, ["val"], tmp_path / "run", bootstrap_resamples=10)
    assert results["val/study/n"] == 8 and results["val/study/threshold_source"] == "validation studies"
    studies = (tmp_path / "run" / "val_studies.csv").read_text().splitlines()
    assert studies[0] == "study,label,probability,images" and len(studies) == 9
    assert "Per study (8 studies" in (tmp_path / "run" / "report.md").read_text()
