"""Scanning `<root>/<split>/<class>/` folders: class matching, bad files, groups and clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from fracture.data.folders import filename_group, scan_root, unreadable_reason
from fracture.errors import DataError

CLASSES = ("fractured", "not fractured")


def make_root(tmp_path, class_names=CLASSES, per_class=3, splits=("train", "val")):
    for split in splits:
        for name in class_names:
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((40, 40), 60 * i, np.uint8)).save(folder / f"{i}-rotated1.png")
    return tmp_path


def test_scan_labels_positive_class_as_one(tmp_path):
    splits = scan_root(make_root(tmp_path), CLASSES)
    assert set(splits) == {"train", "val"}
    train = splits["train"]
    assert len(train) == 6
    for path, label in zip(train.paths, train.labels, strict=False):
        assert label == (0 if "not fractured" in path else 1)


def test_class_folders_match_case_insensitively(tmp_path):
    splits = scan_root(make_root(tmp_path, class_names=("Fractured", "NOT Fractured")), CLASSES)
    assert splits["train"].class_counts() == {1: 3, 0: 3}


def test_wrong_class_folders_name_what_was_found(tmp_path):
    make_root(tmp_path, class_names=("broken", "healthy"))
    with pytest.raises(DataError, match=r"missing \['fractured', 'not fractured'\], found \['broken', 'healthy'\]"):
        scan_root(tmp_path, CLASSES)


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(DataError, match="data folder not found: .*nowhere"):
        scan_root(tmp_path / "nowhere", CLASSES)


def test_missing_train_split(tmp_path):
    make_root(tmp_path, splits=("val",))
    with pytest.raises(DataError, match="no train/ folder"):
        scan_root(tmp_path, CLASSES)


def test_bad_files_are_skipped_and_counted(tmp_path, caplog):
    root = make_root(tmp_path)
    folder = root / "train" / "fractured"
    (folder / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("CMYK", (40, 40)).save(folder / "cmyk.jpg")
    Image.new("L", (40, 40)).save(folder / "scan.tiff")
    (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden files are ignored, not reported

    train = scan_root(root, CLASSES)["train"]
    assert len(train) == 6
    reasons = dict((path.rsplit("/", 1)[1], reason) for path, reason in train.skipped)
    assert set(reasons) == {"notes.txt", "truncated.jpg", "cmyk.jpg", "scan.tiff"}
    assert "truncated" in reasons["truncated.jpg"]
    assert "TIFF" in reasons["scan.tiff"]
    assert "Skipped 4 unreadable file(s)" in caplog.text


def test_unreadable_reason_accepts_grayscale_and_rgb(tmp_path):
    for mode in ("L", "RGB", "RGBA"):
        Image.new(mode, (30, 30)).save(tmp_path / f"{mode}.png")
        assert unreadable_reason(tmp_path / f"{mode}.png") is None


def test_a_class_with_no_readable_images_is_an_error(tmp_path):
    root = make_root(tmp_path, per_class=0)
    with pytest.raises(DataError, match="no readable images"):
        scan_root(root, CLASSES)


def test_filename_groups_follow_the_kaggle_naming(tmp_path):
    assert filename_group(tmp_path / "10-rotated1-rotated2.jpg", "fractured") == "fractured/10"
    assert filename_group(tmp_path / "10.jpg", "fractured") == "fractured/10"
    assert filename_group(tmp_path / "10.jpg", "not fractured") == "not fractured/10"
