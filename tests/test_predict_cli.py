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


def test_annotated_boxes_are_drawn_on_the_overlays(tmp_path, tiny_checkpoint):
    import json

    grey = np.full((200, 100), 90, np.uint8)  # 100 wide, 200 high: the box must scale with both sides
    Image.fromarray(grey).save(tmp_path / "boxed.png")
    Image.fromarray(grey).save(tmp_path / "plain.png")
    coco = {
        "images": [{"id": 1, "file_name": "boxed.png", "width": 100, "height": 200}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [20, 50, 40, 100]}],
    }
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    inputs = f"inputs=['{tmp_path / 'boxed.png'}','{tmp_path / 'plain.png'}']"
    run = tmp_path / "run"
    result = run_cli(
        "fracture.predict",
        f"ckpt_path={tiny_checkpoint}",
        inputs,
        f"explain.annotations={tmp_path / 'boxes.json'}",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    boxed = np.asarray(Image.open(run / "overlays" / "0000_boxed.png").convert("RGB"))
    plain = np.asarray(Image.open(run / "overlays" / "0001_plain.png").convert("RGB"))
    yellow = (boxed[..., 0] > 200) & (boxed[..., 1] > 200) & (boxed[..., 2] < 60)
    assert yellow.any() and not ((plain[..., 0] > 200) & (plain[..., 1] > 200) & (plain[..., 2] < 60)).any()
    rows, cols = np.nonzero(yellow[:, :100])  # the first panel: the X-ray at its own 100 x 200 (none is enlarged)
    assert (rows.min(), cols.min()) == (50, 20) and abs(rows.max() - 150) <= 2 and abs(cols.max() - 60) <= 2
    rows, cols = np.nonzero(yellow[:, 108:])  # the heat map panel, 8 px to the right: the same box
    assert (rows.min(), cols.min()) == (50, 20)


def test_the_onnx_conversion_says_nothing_unless_it_goes_wrong(tmp_path, tiny_checkpoint, synthetic_root):
    images = sorted((synthetic_root / "val").rglob("*.png"))[:2]
    result = run_cli(
        "fracture.predict",
        f"ckpt_path={tiny_checkpoint}",
        f"inputs=[{','.join(map(str, images))}]",
        "runtime=onnxruntime",
        "batch_size=1",  # the engine serves from the second batch on
        "explain.overlays=false",
        f"hydra.run.dir={tmp_path}/run",
        env={"FRACTURE_CACHE_DIR": str(tmp_path / "cache")},  # no stored conversion: tf2onnx converts here
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "cache" / "engines").rglob("model.onnx")), "the ONNX engine did not run"
    printed = result.stdout + result.stderr
    assert "tf2onnx" not in printed and "np.object" not in printed, printed[-3000:]
