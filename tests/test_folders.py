"""Scanning `<root>/<split>/<class>/` folders: class matching, bad files, groups and clear errors."""

from conftest import make_class_folders
from PIL import Image

from fracture.data.folders import filename_group, scan_root, unreadable_reason

CLASSES = ("fractured", "not fractured")


def test_scan_labels_positive_class_as_one(tmp_path):
    splits = scan_root(make_class_folders(tmp_path), CLASSES)
    assert set(splits) == {"train", "val"}
    train = splits["train"]
    assert len(train) == 6
    for path, label in zip(train.paths, train.labels, strict=False):
        assert label == (0 if "not fractured" in path else 1)


def test_class_folders_match_case_insensitively(tmp_path):
    splits = scan_root(make_class_folders(tmp_path, class_names=("Fractured", "NOT Fractured")), CLASSES)
    assert splits["train"].class_counts() == {1: 3, 0: 3}


def test_unreadable_reason_accepts_grayscale_and_rgb(tmp_path):
    for mode in ("L", "RGB", "RGBA"):
        Image.new(mode, (40, 40)).save(tmp_path / f"{mode}.png")
        assert unreadable_reason(tmp_path / f"{mode}.png") is None


def test_filename_groups_follow_the_kaggle_naming(tmp_path):
    assert filename_group(tmp_path / "10-rotated1-rotated2.jpg", "fractured") == "fractured/10"
    assert filename_group(tmp_path / "10.jpg", "fractured") == "fractured/10"
    assert filename_group(tmp_path / "10.jpg", "not fractured") == "not fractured/10"
