"""Decode once: where the decoded images live, and what happens to files that no longer decode."""

import gc

import numpy as np
import pytest

from fracture.data import decoded as decoded_module
from fracture.data.decoded import DecodedImages

pytestmark = pytest.mark.backend


def test_auto_uses_a_temporary_folder_when_memory_is_short_and_removes_it(monkeypatch, synthetic_root):
    paths = sorted(str(p) for p in (synthetic_root / "val").glob("*/*"))
    monkeypatch.setattr(decoded_module, "available_memory", lambda: 1000)  # far less than 16 x 32 x 32 x 3 x 4
    images = DecodedImages(paths, (32, 32), "auto")
    folder = images.folder
    loaded = images.load()
    assert len(list(folder.glob("decoded-*.npy"))) == 1 and isinstance(loaded, np.memmap)
    assert loaded.shape == (len(paths), 32, 32, 3) and loaded.dtype == np.uint8 and loaded.any()
    np.testing.assert_array_equal(images.present, np.arange(len(paths)))
    del images, loaded
    gc.collect()
    assert not folder.exists()


def test_auto_keeps_small_sets_in_memory(synthetic_root):
    paths = sorted(str(p) for p in (synthetic_root / "val").glob("*/*"))
    images = DecodedImages(paths, (32, 32), "auto")
    assert images.folder is None and not isinstance(images.load(), np.memmap)
