"""`python -m fracture.predict` as in the issue: real X-rays, a large grayscale image and a corrupt file."""

import csv

import numpy as np
import pytest
from conftest import REAL_DATA, run_cli
from PIL import Image


def test_predict_reports_each_input_and_fails_on_the_corrupt_one(tmp_path, tiny_checkpoint):
    if not REAL_DATA.is_dir():
        pytest.skip(f"real X-ray data not found at {REAL_DATA}")
    real = [
        REAL_DATA / "val" / "fractured" / "1.jpg",  # a grayscale original
        REAL_DATA / "val" / "not fractured" / "2-rotated1.jpg",
        REAL_DATA / "train" / "fractured" / "10-rotated1.jpg",
    ]
    large = tmp_path / "large_gray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2600, 2100), np.uint8), "L").save(large)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(real[0].read_bytes()[:2000])
    inputs = ",".join(f"'{p}'" for p in [*real, large, corrupt])

    result = run_cli(
        "fracture.predict", f"ckpt_path={tiny_checkpoint}", f"inputs=[{inputs}]", f"hydra.run.dir={tmp_path}/run"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    rows = list(csv.DictReader((tmp_path / "run" / "predictions.csv").open()))
    assert [row["path"] for row in rows] == [str(p) for p in [*real, large, corrupt]]
    assert [bool(row["error"]) for row in rows] == [False] * 4 + [True]
    assert all(row["label"] in ("fractured", "not fractured") for row in rows[:4])
    assert "truncated" in rows[4]["error"]
    overlays = sorted(p.name for p in (tmp_path / "run" / "overlays").glob("*.png"))
    assert overlays == ["0000_1.png", "0001_2-rotated1.png", "0002_10-rotated1.png", "0003_large_gray.png"]
    printed = " ".join((result.stdout + result.stderr).split())  # the table wraps; its caption counts every row
    labels = [row["label"] or "error" for row in rows]
    counts = ", ".join(f"{label}: {labels.count(label)}" for label in sorted(set(labels)))
    assert counts in printed


def test_predict_on_a_folder_with_no_images(tmp_path, tiny_checkpoint):
    (tmp_path / "empty").mkdir()
    result = run_cli(
        "fracture.predict",
        f"ckpt_path={tiny_checkpoint}",
        f"inputs=[{tmp_path / 'empty'}]",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 2 and "error: no images found" in result.stderr
