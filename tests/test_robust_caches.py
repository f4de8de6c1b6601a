"""Robustness, caches: every entry is checked when read, a damaged one is rebuilt with one warning, entries never
change under a reader, and two writers of one entry leave one whole entry. docs/robustness.md lists each case."""

import shutil
import threading

import keras
import numpy as np
import pytest

from fracture import FractureClassifier, FractureDataModule, Trainer
from fracture.cache_entry import DamagedCacheEntry, read_entry, record_path, write_entry
from fracture.data.audit import cached_audit
from fracture.data.decoded import DecodedImages
from fracture.models.head import split_at_head
from fracture.training.feature_cache import FeatureCache


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero(path):
    path.write_bytes(bytes(path.stat().st_size))


def zero_after_the_npy_header(path):
    """Features zeroed behind an intact `.npy` header: the file still loads, with the right shape."""
    data = bytearray(path.read_bytes())
    start = len(data) - np.load(path, mmap_mode="r").nbytes
    data[start:] = bytes(len(data) - start)
    path.write_bytes(bytes(data))


DAMAGES = [truncate, zero, zero_after_the_npy_header]


def write_array(path, key, array):
    with write_entry(path, key) as staging:
        np.save(staging, array)


def test_an_entry_reads_back_and_each_damage_is_discarded_with_one_warning(tmp_path, recwarn):
    array = np.arange(1000, dtype=np.float32)
    for damage in [*DAMAGES, lambda path: record_path(path).unlink(), lambda path: record_path(path).write_text("{")]:
        path = tmp_path / "entry.npy"
        write_array(path, {"k": 1}, array)
        assert read_entry(path, {"k": 1}) == {} and not recwarn.list
        damage(path)
        with pytest.warns(DamagedCacheEntry, match=r"discarding the cache entry .*entry\.npy: .*rebuilt") as caught:
            assert read_entry(path, {"k": 1}) is None
        assert len(caught) == 1 and not path.exists() and not record_path(path).exists()
    assert read_entry(tmp_path / "never-written.npy", {"k": 1}) is None and not recwarn.list


def test_two_writers_of_one_entry_leave_one_whole_entry(tmp_path):
    path, start = tmp_path / "entry.npy", threading.Barrier(2)

    def writer(value):
        start.wait()
        write_array(path, "key", np.full(2_000_000, value, np.float32))

    threads = [threading.Thread(target=writer, args=(value,)) for value in (1.0, 2.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_entry(path, "key") == {}
    assert len(set(np.load(path).tolist())) == 1  # one writer's whole file, not a mixture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.npy", "entry.npy.check"]


def test_a_damaged_feature_entry_is_extracted_again(tmp_path, synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=8, group_by=None)
    model = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16).configure_model()
    backbone, _ = split_at_head(model)
    first = np.array(FeatureCache(tmp_path).features(backbone, datamodule, "val", 1))
    (stored,) = tmp_path.glob("*.npy")
    for damage in DAMAGES:
        damage(stored)
        later = FeatureCache(tmp_path)
        with pytest.warns(DamagedCacheEntry, match="rebuilt"):
            again = later.features(backbone, datamodule, "val", 1)
        assert len(later.extractions) == 1 and np.array_equal(again, first), damage.__name__
        reused = FeatureCache(tmp_path)
        assert np.array_equal(reused.features(backbone, datamodule, "val", 1), first) and not reused.extractions


def split_paths(root, split):
    return sorted(str(p) for p in (root / split).glob("*/*"))


def test_each_split_and_size_has_its_own_decoded_entry_reused_by_the_next_run(tmp_path, synthetic_root, monkeypatch):
    folder = tmp_path / "decoded"
    train = DecodedImages(split_paths(synthetic_root, "train"), (32, 32), str(folder))
    train_images = train.load()
    expected = np.array(DecodedImages(train.paths, (32, 32), True).load())
    others = [DecodedImages(split_paths(synthetic_root, "val"), size, str(folder)) for size in [(32, 32), (48, 48)]]
    for other in others:
        other.load()
    assert len(list(folder.glob("decoded-*.npy"))) == 3
    np.testing.assert_array_equal(train_images, expected)  # the val entries never wrote into train's mapped file

    monkeypatch.setattr(DecodedImages, "_decode_into", lambda *a: pytest.fail("decoded again"))
    again = DecodedImages(train.paths, (32, 32), str(folder))
    np.testing.assert_array_equal(again.load(), expected)
    np.testing.assert_array_equal(again.present, train.present)
    monkeypatch.undo()

    (stored,) = [p for p in folder.glob("decoded-*.npy") if np.load(p, mmap_mode="r").shape[0] == len(train.paths)]
    truncate(stored)
    with pytest.warns(DamagedCacheEntry):
        np.testing.assert_array_equal(DecodedImages(train.paths, (32, 32), str(folder)).load(), expected)


@pytest.mark.backend
def test_training_with_a_decode_cache_folder_finishes(tmp_path, synthetic_root):
    """`data.decode_cache=<folder>` crashed every run with a bus error: val's cache overwrote the file train had
    mapped."""
    keras.utils.set_random_seed(0)
    datamodule = FractureDataModule(
        synthetic_root, image_size=48, batch_size=8, decode_cache=str(tmp_path / "decoded"), group_by="filename"
    )
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8)
    trainer = Trainer(epochs=2, progress=False, feature_cache=False)
    trainer.fit(classifier, datamodule)
    assert len(trainer.history) == 2 and np.isfinite(trainer.history[-1]["val/loss"])
    assert len(list((tmp_path / "decoded").glob("decoded-*.npy"))) == 2  # train and val


def small_copy(source, target):
    for split in ("train", "val"):
        for class_dir in (source / split).iterdir():
            (target / split / class_dir.name).mkdir(parents=True)
            for path in sorted(class_dir.iterdir())[:4]:
                shutil.copy(path, target / split / class_dir.name / path.name)
    return target


@pytest.mark.parametrize("damage", ["truncate", "drop records"])
def test_a_damaged_audit_cache_is_audited_again(tmp_path, synthetic_root, damage, capsys):
    root = small_copy(synthetic_root, tmp_path / "data")
    first = cached_audit(root, tmp_path / "cache")
    assert "Skip it with data.group_by=filename or null" in capsys.readouterr().err  # said before it starts
    (stored,) = (tmp_path / "cache").glob("audit-*.json")
    if damage == "truncate":
        truncate(stored)  # was a JSONDecodeError
    else:  # valid JSON with fewer records: was "zip() argument 2 is shorter" in every default training run
        stored.write_text(stored.read_text().replace('"records": [', '"records": [], "dropped": [', 1))
    with pytest.warns(DamagedCacheEntry):
        again = cached_audit(root, tmp_path / "cache")
    assert again.groups == first.groups and len(again.records) == len(first.records)
