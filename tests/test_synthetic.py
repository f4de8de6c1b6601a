"""The synthetic dataset is deterministic and reused when unchanged (its learnability is tested by the demo run)."""

import subprocess
import sys

from fracture.data.synthetic import write_synthetic_dataset


def read_all(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_images(tmp_path):
    a = read_all(write_synthetic_dataset(tmp_path / "a", 3, 2, 2, image_size=48, seed=7))
    b = read_all(write_synthetic_dataset(tmp_path / "b", 3, 2, 2, image_size=48, seed=7))
    c = read_all(write_synthetic_dataset(tmp_path / "c", 3, 2, 2, image_size=48, seed=8))
    assert len(a) == 2 * (3 + 2 + 2) and a == b and a != c


def test_existing_identical_set_is_reused_and_a_changed_one_rebuilt(tmp_path):
    root = write_synthetic_dataset(tmp_path / "s", 2, 1, 1, image_size=32, seed=0)
    stamp = (root / "train" / "fractured" / "0000.png").stat().st_mtime_ns
    write_synthetic_dataset(root, 2, 1, 1, image_size=32, seed=0)
    assert (root / "train" / "fractured" / "0000.png").stat().st_mtime_ns == stamp
    write_synthetic_dataset(root, 3, 1, 1, image_size=32, seed=0)
    assert len(list((root / "train" / "fractured").glob("*.png"))) == 3
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == ["s"]  # no staging folders left behind


WRITE_AND_SAY_WHICH = """
import sys
from fracture.data.synthetic import write_synthetic_dataset
root = write_synthetic_dataset(sys.argv[1], 6, 2, 2, image_size=64)
print((root / "synthetic.json").stat().st_ino)
"""


def test_parallel_writers_write_the_set_once_and_none_replaces_another_ones(tmp_path):
    """Parallel sweep jobs, or the processes of one training run, write the same set at once; the one that
    comes second must not replace the folder that the first is already reading."""
    root = write_synthetic_dataset(tmp_path / "synthetic", 2, 1, 1, image_size=32)  # an older set to replace
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITE_AND_SAY_WHICH, str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    seen = {writer.communicate(timeout=120)[0].strip() for writer in writers}
    assert [writer.returncode for writer in writers] == [0, 0, 0]
    assert seen == {str((root / "synthetic.json").stat().st_ino)}  # every writer returned the one set in place
    assert len(list((root / "train" / "fractured").glob("*.png"))) == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == ["synthetic"]  # no staging left
