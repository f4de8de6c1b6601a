"""Atomic writes and the run record: what a run leaves behind when a write fails, and what it records."""

import json
import os
import stat
from pathlib import Path

import keras
import pytest
from conftest import compose_config

from fracture.io import atomic_path, write_json_atomic
from fracture.run_info import PACKAGES, run_info


def test_a_failed_atomic_write_leaves_the_old_file_and_no_staging_file(tmp_path):
    target = write_json_atomic(tmp_path / "metrics.json", {"val/auroc": 0.9})
    with pytest.raises(RuntimeError, match="disk vanished"), atomic_path(target) as staging:
        staging.write_text('{"val/auroc": 0.')  # half written when the writer fails
        raise RuntimeError("disk vanished")
    assert json.loads(target.read_text()) == {"val/auroc": 0.9}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json"]


def test_a_successful_atomic_write_replaces_the_file(tmp_path):
    write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    write_json_atomic(tmp_path / "metrics.json", {"a": 2})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 2}
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        write_json_atomic(tmp_path / "metrics.json", {"a": 1})
        with atomic_path(tmp_path / "best_model.keras") as staging:
            staging.write_bytes(b"model")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("metrics.json", "best_model.keras"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_run_info_records_what_reproduces_a_run():
    info = run_info()
    assert info["backend"] == keras.backend.backend() and info["devices"]
    assert set(info["packages"]) == set(PACKAGES) and info["packages"]["keras"] == keras.__version__
    assert info["git_commit"] is None or len(info["git_commit"].split("+")[0]) == 40  # a checkout, or none
    json.dumps(info)  # it is written to run_info.json


def test_every_cache_lives_under_one_folder_that_fracture_cache_dir_moves(tmp_path, monkeypatch):
    from fracture import FractureDataModule, Trainer
    from fracture.io import CACHE_DIR_VARIABLE, cache_dir, cache_folder

    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "caches"))
    assert cache_dir("features") == tmp_path / "caches" / "features"
    assert cache_folder("default", "audit") == tmp_path / "caches" / "audit" and cache_folder(None, "audit") is None
    assert Trainer(progress=False).features.folder == tmp_path / "caches" / "features"
    assert FractureDataModule(tmp_path).audit_cache == tmp_path / "caches" / "audit"
    cfg, audit_cfg = compose_config(tmp_path), compose_config(tmp_path, name="audit")
    caches = [cfg.compilation_cache, cfg.trainer.feature_cache_dir, cfg.data.audit_cache, audit_cfg.data.audit_cache]
    assert caches == [f"{tmp_path}/caches/{kind}" for kind in ("jax-compilation", "features", "audit", "audit")]
    monkeypatch.delenv(CACHE_DIR_VARIABLE)
    assert cache_dir("audit") == Path.home() / ".cache" / "fracture" / "audit"
