"""Robustness, inputs to predict: unusual paths, links and permissions work or give a clear row; images and
DICOM files above the pixel limit are refused from their header; DICOM without pixels, or in a syntax no
decoder reads, and files that are not images get a clear row. docs/robustness.md lists each case."""

import csv
import os

import numpy as np
import pytest
from conftest import require_permission_checks, run_cli
from PIL import Image
from pydicom.uid import HTJ2K, UID
from test_readers import dicom_dataset, grey_scene, ramp, write_dicom, write_encapsulated_dicom

from fracture.data.images import TooManyPixels, UnreadableImage, read_xray
from fracture.inference.predictor import load_predictor


def test_paths_with_spaces_non_ascii_and_links_work_and_broken_ones_get_clear_rows(tmp_path, tiny_checkpoint):
    require_permission_checks()
    folder = tmp_path / "Röntgen Bilder" / "Ärztin Müller"
    folder.mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 255, (80, 60), np.uint8)
    Image.fromarray(image).save(folder / "hand links 1.png")
    Image.fromarray(image).save(folder / "手 X線.png")
    (folder / "link.png").symlink_to(folder / "hand links 1.png")
    (folder / "dangling.png").symlink_to(folder / "deleted.png")
    Image.fromarray(image).save(folder / "locked.png")
    (folder / "locked.png").chmod(0o000)
    result = run_cli(
        "fracture.predict",
        f"ckpt_path={tiny_checkpoint}",
        f"inputs=['{folder}']",
        "explain.overlays=false",
        f"hydra.run.dir={tmp_path}/run",
        unprivileged=True,  # root reads any file; the permission case needs a process that cannot
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr  # 1: some inputs had errors
    rows = {os.path.basename(r["path"]): r for r in csv.DictReader((tmp_path / "run" / "predictions.csv").open())}
    assert sorted(rows) == ["dangling.png", "hand links 1.png", "link.png", "locked.png", "手 X線.png"]
    for name in ("hand links 1.png", "link.png", "手 X線.png"):
        assert rows[name]["error"] == "" and rows[name]["label"] in ("fractured", "not fractured")
    assert rows["link.png"]["probability"] == rows["hand links 1.png"]["probability"]
    assert rows["dangling.png"]["error"] == "file not found (a broken symbolic link)"
    assert rows["locked.png"]["error"] == "permission denied: this user may not read the file"


@pytest.mark.parametrize("syntax", [HTJ2K, UID("1.2.840.10008.1.2.4.100")], ids=["htj2k", "mpeg2"])
def test_unsupported_transfer_syntax_is_named(tmp_path, syntax):
    path = tmp_path / "scan.dcm"
    write_encapsulated_dicom(path, b"\xff\x4f\xff\x51" + bytes(60), grey_scene(), syntax)
    with pytest.raises(UnreadableImage, match=rf"transfer syntax '{syntax.name}' \({syntax}\) is not supported"):
        read_xray(path)


def test_dicom_without_pixel_data(tmp_path):
    path = tmp_path / "report.dcm"
    dicom_dataset(path, grey_scene(), "MONOCHROME2").save_as(path, enforce_file_format=True)
    with pytest.raises(UnreadableImage, match="without pixel data"):
        read_xray(path)


def test_very_large_image(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4000, 3000), np.uint8)).save(tmp_path / "big.png")
    assert read_xray(tmp_path / "big.png").shape == (4000, 3000, 3)


def test_unreadable_inputs(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(UnreadableImage, match="not a readable image"):
        read_xray(tmp_path / "notes.jpg")
    with pytest.raises(UnreadableImage, match="file not found"):
        read_xray(tmp_path / "missing.png")
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(UnreadableImage, match="DICOM"):
        read_xray(tmp_path / "bad.dcm")


def test_pixel_limit_refuses_from_the_header(tmp_path):
    Image.new("L", (300, 200)).save(tmp_path / "wide.png")
    with pytest.raises(TooManyPixels, match="300 x 200 px is above the limit of 50,000 pixels"):
        read_xray(tmp_path / "wide.png", max_pixels=50_000)
    assert read_xray(tmp_path / "wide.png", max_pixels=60_000).shape == (200, 300, 3)
    dicom = write_dicom(tmp_path / "big.dcm", ramp(200, 300), "MONOCHROME2")
    with pytest.raises(TooManyPixels, match="300 x 200 px"):
        read_xray(dicom, max_pixels=50_000)


def test_pillows_decompression_bomb_guard_is_a_clear_error(tmp_path, monkeypatch):
    Image.new("L", (300, 200)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow refuses above twice this
    with pytest.raises(UnreadableImage, match="decompression bomb"):
        read_xray(tmp_path / "bomb.png")


def test_pixel_limit_gives_an_error_row(tiny_checkpoint, synthetic_root):
    image = next((synthetic_root / "val").rglob("*.png"))  # 64 x 64 = 4,096 pixels
    limited = load_predictor(tiny_checkpoint, max_pixels=4_000)
    assert "above the limit of 4,000 pixels" in limited.predict(image).error
    assert load_predictor(tiny_checkpoint, max_pixels=4_096).predict(image).error is None
