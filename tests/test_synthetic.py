"""The synthetic dataset is deterministic and reused when unchanged (its learnability is tested by the demo run)."""

from fracture.data import synthetic
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
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no staging folders left behind


def test_a_writer_that_finds_the_same_set_put_in_place_meanwhile_keeps_it(tmp_path, monkeypatch):
    """Parallel sweep jobs write the same set at once; the one that finishes second must not delete the folder
    that the first is already reading."""
    root = tmp_path / "synthetic"
    render = synthetic.render_bone
    kept = {}

    def render_while_another_job_finishes(*args, **kwargs):
        if not kept:
            monkeypatch.setattr(synthetic, "render_bone", render)
            write_synthetic_dataset(root, 2, 1, 1, image_size=32)  # the other job wins the race
            kept["inode"] = (root / "synthetic.json").stat().st_ino
            monkeypatch.setattr(synthetic, "render_bone", render_while_another_job_finishes)
        return render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_bone", render_while_another_job_finishes)
    assert write_synthetic_dataset(root, 2, 1, 1, image_size=32) == root
    assert (root / "synthetic.json").stat().st_ino == kept["inode"]  # the first set stayed in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]  # and no staging copy is left
