"""benchmarks/bfloat16_heads.py: it finds each precision's entries by their records, refuses a folder it cannot
read unambiguously, and trains and scores a head on cached features."""

import importlib.util

import numpy as np
import pytest
from conftest import REPO_ROOT

from fracture.cache_entry import write_entry

# A script, not a package: loaded from its file.
script = importlib.util.spec_from_file_location("bfloat16_heads", REPO_ROOT / "benchmarks" / "bfloat16_heads.py")
heads = importlib.util.module_from_spec(script)
script.loader.exec_module(heads)
entries, head_aurocs = heads.entries, heads.head_aurocs

FEATURES = 1536  # EfficientNetB3's pooled features, the head's input


def store(folder, views: int, count: int, seed: int) -> np.ndarray:
    features = np.random.default_rng(seed).standard_normal((views, count, FEATURES)).astype(np.float16)
    folder.mkdir(parents=True, exist_ok=True)
    with write_entry(folder / f"entry-{views}.npy", {"views": views, "count": count}) as staging:
        np.save(staging, features)
    return features


def test_entries_are_found_by_their_records_and_an_ambiguous_folder_is_refused(tmp_path):
    train, val = store(tmp_path, 2, 8, 0), store(tmp_path, 1, 4, 1)
    found = entries(tmp_path)
    assert set(found) == {1, 2} and found[2][1] == {"views": 2, "count": 8}
    assert np.array_equal(found[2][0], train) and np.array_equal(found[1][0], val)
    with write_entry(tmp_path / "another.npy", {"views": 2, "count": 8}) as staging:
        np.save(staging, train)
    with pytest.raises(SystemExit, match="more than one entry of 2 view"):
        entries(tmp_path)


def test_a_head_learns_separable_features_and_is_scored_after_each_epoch():
    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0], 32)
    train = rng.standard_normal((2, 64, FEATURES)).astype(np.float32) + 2.0 * labels[None, :, None]
    val = rng.standard_normal((16, FEATURES)).astype(np.float32) + 2.0 * np.repeat([0.0, 1.0], 8)[:, None]
    aurocs = head_aurocs(train, labels, val, np.repeat([0, 1], 8), seed=0, epochs=2)
    assert len(aurocs) == 2 and max(aurocs) > 0.9
