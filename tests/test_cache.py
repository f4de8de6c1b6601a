"""Keeping the caches to a size: last use recorded by reads, least recently used entries pruned first, the
automatic limit of $FRACTURE_CACHE_MAX_GB, and `python -m fracture.cache`."""

import os
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from fracture.cache import main as cache_command
from fracture.cache_entry import prune_entries, read_entry, record_path, stored_entries, write_entry
from fracture.errors import ConfigError


def store(path, key, size=4000, used_days_ago=0.0):
    """An entry of `size` bytes, its last use set `used_days_ago`."""
    with write_entry(path, key) as staging:
        staging.write_bytes(bytes(size))
    when = time.time() - used_days_ago * 86400
    os.utime(record_path(path), (when, when))
    return path


def test_a_read_that_passes_its_check_is_the_entry_s_last_use(tmp_path):
    path = store(tmp_path / "entry.npy", {"k": 1}, used_days_ago=30)
    before = stored_entries(tmp_path)[0].last_used
    assert time.time() - before > 29 * 86400
    assert read_entry(path, {"k": 1}) == {}
    assert time.time() - stored_entries(tmp_path)[0].last_used < 60


def test_pruning_deletes_the_least_recently_used_entries_until_the_rest_fit(tmp_path):
    oldest = store(tmp_path / "features" / "a.npy", {"k": "a"}, used_days_ago=3)
    middle = store(tmp_path / "engines" / "digest" / "model.onnx", {"k": "b"}, used_days_ago=2)
    newest = store(tmp_path / "features" / "c.npy", {"k": "c"}, used_days_ago=1)
    staging = tmp_path / "features" / ".c-unfinished.npy"  # a run still writing: not an entry yet
    staging.write_bytes(bytes(10_000))
    jax_file = tmp_path / "jax-compilation" / "program"
    jax_file.parent.mkdir()
    jax_file.write_bytes(bytes(10_000))
    someone_elses = tmp_path / "notes" / "todo.txt"  # a file and a ".check" beside it that fracture did not write
    someone_elses.parent.mkdir()
    someone_elses.write_text("mine")
    record_path(someone_elses).write_text('{"checked": true}')
    sizes = {entry.data: entry.bytes for entry in stored_entries(tmp_path)}
    assert list(sizes) == [oldest, middle, newest]
    assert sizes[oldest] == oldest.stat().st_size + record_path(oldest).stat().st_size

    deleted = prune_entries(tmp_path, sizes[newest] + sizes[middle])
    assert [entry.data for entry in deleted] == [oldest]
    assert not oldest.exists() and not record_path(oldest).exists()

    deleted = prune_entries(tmp_path, 0, keep=[newest])
    assert [entry.data for entry in deleted] == [middle]
    assert not middle.parent.exists()  # the engine's folder, left empty, is removed
    assert [entry.data for entry in stored_entries(tmp_path)] == [newest]
    assert staging.exists() and jax_file.exists() and someone_elses.exists() and record_path(someone_elses).exists()
    assert read_entry(newest, {"k": "c"}) == {}


def test_a_size_limit_prunes_the_cache_root_whenever_an_entry_is_stored(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(root))
    old = store(root / "features" / "old.npy", {"k": "old"}, used_days_ago=5)
    elsewhere = store(tmp_path / "own-folder" / "mine.npy", {"k": "mine"}, used_days_ago=9)
    entry_bytes = stored_entries(root)[0].bytes
    monkeypatch.setenv("FRACTURE_CACHE_MAX_GB", str(1.5 * entry_bytes / 1e9))

    new = store(root / "audit" / "new.npy", {"k": "new"})
    assert not old.exists() and new.exists()
    store(tmp_path / "own-folder" / "second.npy", {"k": "second"})  # outside the root: nothing is pruned
    assert elsewhere.exists() and new.exists()

    for bad in ["lots", "-1", "nan"]:
        monkeypatch.setenv("FRACTURE_CACHE_MAX_GB", bad)
        with pytest.raises(ConfigError, match="FRACTURE_CACHE_MAX_GB"):
            store(root / "features" / "x.npy", {"k": bad})


def test_the_command_lists_each_kind_and_prunes_to_the_size_asked(tmp_path, capsys):
    store(tmp_path / "features" / "a.npy", {"k": "a"}, size=1_000_000, used_days_ago=2)
    kept = store(tmp_path / "audit" / "b.npy", {"k": "b"}, size=1000, used_days_ago=1)
    (tmp_path / "jax-compilation").mkdir()
    (tmp_path / "jax-compilation" / "program").write_bytes(bytes(100))
    cache_command(["--folder", str(tmp_path)])
    listing = " ".join(capsys.readouterr().err.split())  # the caption wraps to the table's width
    assert "features" in listing and "audit" in listing and "2.0 days ago" in listing
    assert "jax-compilation: files that are not fracture's entries" in listing
    assert "never pruned" in listing and "features: files" not in listing

    deleted = cache_command(["--folder", str(tmp_path), "--prune", "0.0005"])  # 0.5 MB: the 1 MB entry goes
    assert [entry.data.name for entry in deleted] == ["a.npy"] and kept.exists()
    assert "deleted 1 entries (1.0 MB)" in capsys.readouterr().err
    assert cache_command(["--folder", str(tmp_path), "--prune", "0"])[0].data == kept


def test_the_command_says_what_is_wrong_with_its_arguments(tmp_path):
    command = [sys.executable, "-m", "fracture.cache", "--folder", str(tmp_path / "missing")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "error: --folder" in result.stderr and "no such folder" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(command[:3] + ["--prune", "-1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--prune takes a size in GB" in result.stderr


def test_every_entry_point_refuses_a_bad_size_limit_before_it_starts(monkeypatch):
    from omegaconf import OmegaConf

    from fracture.cli import prepare_backend

    monkeypatch.setenv("FRACTURE_CACHE_MAX_GB", "20 GB")
    with pytest.raises(ConfigError, match=r"FRACTURE_CACHE_MAX_GB='20 GB': give the cache's largest size in GB"):
        prepare_backend(OmegaConf.create({"compilation_cache": None}))
