"""Grouped train/val/test cuts, grouped cross-validation folds, split.csv, and the leakage warning."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict

import numpy as np
import pytest
from conftest import DEMO_SMALL, REAL_DATA, run_cli
from sklearn.metrics import roc_auc_score

from fracture import FractureDataModule
from fracture.data.splits import grouped_fold, grouped_split, read_split_csv
from fracture.errors import ConfigError, DataError
from fracture.evaluation.evaluate import evaluate_checkpoint


def groups_and_labels(count_groups=60, seed=0):
    """Groups of 1-9 files; each group has one label, as copies of one radiograph do."""
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    for group in range(count_groups):
        size, label = int(rng.integers(1, 10)), group % 2
        groups += [f"g{group}"] * size
        labels += [label] * size
    return groups, np.array(labels)


def splits_of_groups(groups, names) -> dict[str, set]:
    found = defaultdict(set)
    for group, name in zip(groups, names, strict=True):
        found[group].add(name)
    return found


def test_grouped_split_keeps_groups_whole_and_classes_balanced():
    groups, labels = groups_and_labels()
    names = grouped_split(labels, groups, 0.15, 0.15, seed=1)
    assert all(len(splits) == 1 for splits in splits_of_groups(groups, names).values())
    for split, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        chosen = names == split
        assert abs(chosen.mean() - share) < 0.1, (split, chosen.mean())
        assert 0.25 < labels[chosen].mean() < 0.75  # both classes in every split
    assert (grouped_split(labels, groups, 0.15, 0.15, seed=1) == names).all()  # seeded
    assert (grouped_split(labels, groups, 0.15, 0.15, seed=2) != names).any()


def test_grouped_split_refuses_impossible_cuts():
    groups, labels = groups_and_labels(2)
    with pytest.raises(DataError, match="too few"):
        grouped_split(labels, groups, 0.3, 0.3, seed=0)
    with pytest.raises(ConfigError, match="together below 1"):
        grouped_split(*groups_and_labels()[::-1], 0.5, 0.5, seed=0)


def test_folds_validate_every_file_once_and_keep_groups_whole():
    groups, labels = groups_and_labels()
    folds = [grouped_fold(labels, groups, 5, fold, seed=0) for fold in range(5)]
    validated = np.sum([names == "val" for names in folds], axis=0)
    assert (validated == 1).all()
    for names in folds:
        assert all(len(splits) == 1 for splits in splits_of_groups(groups, names).values())
    with pytest.raises(ConfigError, match="data.fold must be in 0..4"):
        grouped_fold(labels, groups, 5, 5, seed=0)


def test_datamodule_grouped_split_and_split_file(tmp_path, synthetic_root):
    grouped = FractureDataModule(synthetic_root, image_size=64, split="grouped", group_by="filename", seed=3)
    names = {name: grouped.files(name) for name in ("train", "val", "test")}
    owners = defaultdict(set)
    for name, files in names.items():
        for group in files.groups:
            owners[group].add(name)
    assert all(len(splits) == 1 for splits in owners.values())
    assert sum(len(files) for files in names.values()) == 2 * (24 + 8 + 8)  # every file, once

    split_csv = grouped.write_split(tmp_path / "split.csv")
    assert set(read_split_csv(split_csv).values()) == {"train", "val", "test"}
    reused = FractureDataModule(synthetic_root, image_size=64, split_file=split_csv, seed=99, group_by="filename")
    for name, files in names.items():
        assert sorted(reused.files(name).paths) == sorted(files.paths)

    (tmp_path / "bad.csv").write_text("path,split\nx.png,holdout\n")
    with pytest.raises(ConfigError, match="unknown splits"):
        FractureDataModule(synthetic_root, split_file=tmp_path / "bad.csv", group_by="filename").setup()
    with pytest.raises(ConfigError, match="needs data.split=grouped"):
        FractureDataModule(synthetic_root, folds=5, group_by="filename")


def test_evaluation_warns_when_val_shares_groups_with_train(tmp_path, synthetic_root, tiny_checkpoint, caplog):
    """The synthetic folders reuse file names across splits, so file-name groups cross train and val."""
    datamodule = FractureDataModule(synthetic_root, image_size=64, group_by="filename")
    files, groups = datamodule.shared_with_train("val")
    assert files == len(datamodule.files("val")) and groups == files  # every val name is also in train
    with caplog.at_level(logging.WARNING):
        results = evaluate_checkpoint(tiny_checkpoint, datamodule, ["val"], tmp_path, bootstrap_resamples=10)
    assert results["val/shared_with_train/files"] == files
    assert f"{files} of {files} val images" in caplog.text and "data.split=grouped" in caplog.text
    assert (
        f"**{files} of these {files} images ({groups} groups) show a radiograph that is also in train**"
        in (tmp_path / "report.md").read_text()
    )  # beside the numbers it inflates, not only in the log
    separate = FractureDataModule(synthetic_root, image_size=64, group_by=None)
    assert separate.shared_with_train("val") == (0, 0)


@pytest.mark.slow  # 15 s; the grouped cut is tested in-process above, the audit in test_audit
def test_grouped_training_run_on_real_xrays_writes_a_leak_free_split(tmp_path, real_root):
    run_dir = tmp_path / "run"
    result = run_cli(
        "fracture.train",
        "model=tiny",
        "data.image_size=48",
        f"data.root={real_root}",
        "data.split=grouped",
        "data.val_fraction=0.25",
        "data.test_fraction=0.25",
        f"data.audit_cache={tmp_path / 'cache'}",
        "trainer.epochs=1",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run_dir / "split.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    owners = defaultdict(set)
    for row in rows:
        owners[row["group"]].add(row["split"])
    assert all(len(splits) == 1 for splits in owners.values()), owners
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/shared_with_train/files"] == 0 and metrics["test/shared_with_train/files"] == 0


@pytest.mark.slow  # about 25-40 s on 2 cores; the default suite stays under 15 minutes
def test_cross_validation_sweep_reports_folds_and_pooled_auroc(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "fracture.train",
        "-m",
        *DEMO_SMALL,
        "trainer.epochs=1",
        "data.split=grouped",
        "data.folds=3",
        "data.fold=0,1,2",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((sweep / "cross_validation.json").read_text())
    assert summary["folds"] == 3
    labels, probabilities, paths = [], [], []
    aurocs = []
    for job in range(3):
        with open(sweep / str(job) / "val_predictions.csv", newline="") as file:
            rows = list(csv.DictReader(file))
        paths += [row["path"] for row in rows]
        labels += [int(row["label"]) for row in rows]
        probabilities += [float(row["probability"]) for row in rows]
        aurocs.append(json.loads((sweep / str(job) / "metrics.json").read_text())["val/auroc"])
    assert len(paths) == len(set(paths)) == 2 * (16 + 8 + 4)  # each image validated by exactly one fold
    assert summary["pooled_out_of_fold/auroc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert summary["val/auroc/mean"] == pytest.approx(np.mean(aurocs))
    assert summary["val/auroc/std"] == pytest.approx(np.std(aurocs, ddof=1))


@pytest.mark.slow
def test_grouped_training_run_on_all_the_shared_data(tmp_path):
    """The whole shared dataset (audited from scratch, about 2 minutes): the grouped cut has no leak, while the
    given one has the 106 val images that its README describes."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real X-ray test data not found at {REAL_DATA}")
    run_dir = tmp_path / "run"
    common = ["model=tiny", "data.image_size=48", f"data.root={REAL_DATA}", f"data.audit_cache={tmp_path / 'cache'}"]
    limits = ["trainer.epochs=1", "trainer.limit_train_batches=2", "eval.bootstrap_resamples=10"]
    result = run_cli("fracture.train", *common, *limits, "data.split=grouped", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run_dir / "split.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 9463
    owners = defaultdict(set)
    for row in rows:
        owners[row["group"]].add(row["split"])
    assert all(len(splits) == 1 for splits in owners.values())
    given = FractureDataModule(REAL_DATA, group_by="content", audit_cache=tmp_path / "cache")
    assert given.shared_with_train("val") == (106, 2)
