"""Robustness, data: bad folders are one clear error, bad files are skipped and reported, files that change
during a run are left out or used as they are now, and the run goes on. docs/robustness.md lists each case."""

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import DEMO_SMALL, make_class_folders, run_cli
from PIL import Image
from test_readers import grey_scene, write_dicom

from fracture import FractureClassifier, FractureDataModule, Trainer
from fracture.data.folders import scan_root, unreadable_reason
from fracture.data.images import UnsuitableImage, read_xray
from fracture.data.pipeline import decode_image, make_dataset, resize_image
from fracture.data.synthetic import write_synthetic_dataset
from fracture.errors import DataError
from fracture.evaluation.evaluate import evaluate_checkpoint
from fracture.inference.predictor import load_predictor
from fracture.training.callbacks import ModelCheckpoint

CLASSES = ("fractured", "not fractured")


def test_missing_data_root_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "no-such-folder"
    result = run_cli("fracture.train", f"data.root={missing}", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data folder not found: {missing}. Set data.root to a folder that holds train/ and val/."]


def test_a_root_without_split_folders(tmp_path):
    make_class_folders(tmp_path / "images", splits=("",))  # class folders directly under the root
    with pytest.raises(DataError, match=r"no train/ folder \(found \['images'\]\)"):
        scan_root(tmp_path, CLASSES)


def test_a_root_without_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    Image.new("L", (40, 40)).save(tmp_path / "train" / "loose.png")
    with pytest.raises(DataError, match=r"missing \['fractured', 'not fractured'\], found \[\]"):
        scan_root(tmp_path, CLASSES)


def test_a_single_class(tmp_path):
    make_class_folders(tmp_path, class_names=("fractured",))
    with pytest.raises(DataError, match=r"missing \['not fractured'\], found \['fractured'\]"):
        scan_root(tmp_path, CLASSES)


def test_wrong_class_folders_name_what_was_found(tmp_path):
    make_class_folders(tmp_path, class_names=("broken", "healthy"))
    with pytest.raises(DataError, match=r"missing \['fractured', 'not fractured'\], found \['broken', 'healthy'\]"):
        scan_root(tmp_path, CLASSES)


def test_an_empty_class_folder(tmp_path):
    make_class_folders(tmp_path)
    for path in (tmp_path / "val" / "not fractured").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"val has no readable images for class\(es\) \['not fractured'\]"):
        scan_root(tmp_path, CLASSES)


def test_class_folders_that_differ_between_splits(tmp_path, caplog):
    make_class_folders(tmp_path, splits=("train",))
    make_class_folders(tmp_path, class_names=("Fractured", "normal"), splits=("val",))
    with pytest.raises(DataError, match=r"val must hold one folder per class.*missing \['not fractured'\]"):
        scan_root(tmp_path, CLASSES)
    shutil.rmtree(tmp_path / "val")
    make_class_folders(tmp_path, class_names=(*CLASSES, "unsure"), splits=("val",))
    assert len(scan_root(tmp_path, CLASSES)["val"]) == 6
    assert "Ignoring folder(s) ['unsure']" in caplog.text


def test_bad_files_are_skipped_with_their_reason(tmp_path, caplog):
    root = make_class_folders(tmp_path)
    folder = root / "train" / "fractured"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("a text file named like an image")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("CMYK", (40, 40)).save(folder / "cmyk.jpg")  # read as prediction reads them, so trained on
    Image.new("L", (40, 40)).save(folder / "scan.tiff")

    train = scan_root(root, CLASSES)["train"]
    assert len(train) == 8 and {"cmyk.jpg", "scan.tiff"} <= {path.rsplit("/", 1)[1] for path in train.paths}
    reasons = {path.rsplit("/", 1)[1]: reason for path, reason in train.skipped}
    assert set(reasons) == {"empty.jpg", "notes.jpg", "truncated.jpg"}
    assert "not a readable image" in reasons["empty.jpg"] and "not a readable image" in reasons["notes.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "Skipped 3 unreadable file(s)" in caplog.text


def test_system_clutter_and_hidden_files_are_ignored(tmp_path, caplog):
    root = make_class_folders(tmp_path)
    folder = root / "train" / "fractured"
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "Thumbs.db").write_bytes(b"\0\1")
    (folder / "._0-rotated1.png").write_bytes(b"\0\1")  # macOS resource fork
    (folder / "__MACOSX").mkdir()
    Image.new("L", (40, 40)).save(folder / "__MACOSX" / "copy.png")
    train = scan_root(root, CLASSES)["train"]
    assert len(train) == 6 and train.skipped == []
    assert "Skipped" not in caplog.text


def write_every_kind_of_picture(folder) -> dict[str, Path]:
    """One file of each kind that the two decoders used to read differently."""
    rng = np.random.default_rng(0)
    scene = grey_scene(96, 80)
    noisy = np.clip(scene.astype(int) + rng.integers(-20, 20, scene.shape), 0, 255).astype(np.uint8)
    paths = {}

    def save(name, image, **options):
        paths[name] = folder / name
        image.save(paths[name], **options)

    save("plain.jpg", Image.fromarray(noisy))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels are to be turned 90 degrees clockwise
    save("exif_rotated.jpg", Image.fromarray(noisy), exif=exif)
    save("sixteen_bit.png", Image.fromarray(scene.astype(np.uint16) * 16))  # 12 significant bits
    save("rgba.png", Image.fromarray(np.dstack([scene, scene, noisy, noisy])))
    save("palette.png", Image.fromarray(noisy).convert("P"))
    save("grey_alpha.png", Image.fromarray(np.dstack([scene, noisy])))
    save("cmyk.jpg", Image.fromarray(np.dstack([scene, noisy, scene, noisy]), "CMYK"))
    save("scan.tiff", Image.fromarray(noisy))
    paths["xray.dcm"] = write_dicom(folder / "xray.dcm", scene.astype(np.uint16) * 16, "MONOCHROME1")
    return paths


def test_training_and_prediction_read_every_kind_of_picture_into_the_same_pixels(tmp_path):
    """They used two decoders (tf.io for training and evaluation, Pillow for prediction): every JPEG got other
    pixels, so evaluation's metrics were not those of the predictions users get, and an EXIF-rotated photo was
    trained on sideways; DICOM files were skipped by training and unreadable to the audit, which also saw
    EXIF-rotated and 16-bit files otherwise than training."""
    paths = write_every_kind_of_picture(tmp_path)
    assert all(unreadable_reason(path) is None for path in paths.values())
    stream = make_dataset([str(p) for p in paths.values()], np.zeros(len(paths)), (48, 48), 1, training=False)
    for (name, path), (images, _) in zip(paths.items(), stream, strict=True):
        trained_on = images.numpy()[0]
        predicted_on = np.asarray(resize_image(read_xray(path), (48, 48)), np.float32)  # Predictor.preprocess
        np.testing.assert_array_equal(trained_on, predicted_on, err_msg=name)
    upright = read_xray(paths["exif_rotated.jpg"])
    assert upright.shape[:2] == (80, 96)  # turned as the tag says: 96 x 80 stored, 80 x 96 seen
    assert read_xray(paths["sixteen_bit.png"]).max() == 255  # stretched from its own range, not cut to 8 bits

    from fracture.data.audit import AuditSettings, audit_dataset

    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / split / "not fractured").mkdir(parents=True)
        folder = root / split / "fractured"
        folder.mkdir()
        for name, path in paths.items():
            shutil.copy(path, folder / name)
    audited = {Path(r.path).name: r for r in audit_dataset(root, AuditSettings(workers=1)).records if "train" in r.path}
    for name, path in paths.items():
        record = audited[name]
        assert record.error is None, (name, record.error)
        assert record.pixel_sha256 == hashlib.sha256(read_xray(path).tobytes()).hexdigest(), name
        assert (record.height, record.width) == read_xray(path).shape[:2], name
    assert audited["xray.dcm"].format == "DICOM" and audited["exif_rotated.jpg"].width == 96


def test_a_huge_image_and_a_large_grayscale_jpeg_decode(tmp_path):
    Image.new("L", (10_000, 10_000), 200).save(tmp_path / "huge.png")  # 100 megapixels, a small file
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4000, 3000), np.uint8)).save(tmp_path / "large.jpg")
    for name in ("huge.png", "large.jpg"):
        assert unreadable_reason(tmp_path / name) is None
        pixels = decode_image(tf.constant(str(tmp_path / name)), (64, 64)).numpy()
        assert pixels.shape == (64, 64, 3)
    assert np.all(decode_image(tf.constant(str(tmp_path / "huge.png")), (64, 64)).numpy() == 200)


class ChangeFilesAfterFirstEpoch(keras.callbacks.Callback):
    """Delete one training file, break one validation file and redraw another, as a colleague might."""

    def __init__(self, deleted, broken, redrawn):
        super().__init__()
        self.deleted, self.broken, self.redrawn = deleted, broken, redrawn

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.deleted.unlink()
            self.broken.write_text("overwritten by a text file")
            Image.new("L", (64, 64), 128).save(self.redrawn)


def test_files_deleted_or_replaced_during_a_run_are_reported_and_the_run_goes_on(tmp_path, synthetic_root):
    root = shutil.copytree(synthetic_root, tmp_path / "data")
    datamodule = FractureDataModule(root, image_size=64, batch_size=16, group_by=None)
    datamodule.setup()
    deleted, broken, redrawn = datamodule.files("train").paths[0], *datamodule.files("val").paths[:2]
    checkpoint = ModelCheckpoint(tmp_path / "ckpt")
    vandal = ChangeFilesAfterFirstEpoch(Path(deleted), Path(broken), Path(redrawn))
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)
    trainer = Trainer(epochs=2, callbacks=[vandal, checkpoint], progress=False)
    trainer.fit(classifier, datamodule)
    assert trainer.current_epoch == 2  # the second epoch ran without the deleted and the broken file

    results = evaluate_checkpoint(checkpoint.best_path, datamodule, ["val"], tmp_path / "eval", bootstrap_resamples=0)
    assert results["data/changed_during_run"] == 3 and results["data/skipped_files"] == 0
    problems = {row["path"]: row["problem"] for row in csv.DictReader((tmp_path / "eval" / "data_problems.csv").open())}
    assert problems[deleted].startswith("deleted during the run")
    assert problems[broken].startswith("replaced during the run, now unreadable")
    assert problems[redrawn] == "replaced during the run; its new content was used"
    assert results["val/n"] == 15  # 16 validation images, one left out
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Files left out or changed" in report and deleted in report


@pytest.mark.slow  # about 22 s; files changed during a run are tested in the default suite
def test_a_run_over_a_folder_with_5_percent_corrupt_files_finishes_and_reports_them(tmp_path):
    data = tmp_path / "data"
    root = write_synthetic_dataset(data / "synthetic", 16, 8, 4, image_size=128, seed=0)  # as DEMO_SMALL does
    corrupt = [root / "train" / "fractured" / "0003.png", root / "val" / "not fractured" / "0001.png"]
    corrupt.append(root / "test" / "fractured" / "0000.png")  # 3 of 56 files
    for path in corrupt:
        path.write_bytes(path.read_bytes()[:100])
    result = run_cli(
        "fracture.train", *DEMO_SMALL, "trainer.epochs=1", f"paths.data_dir={data}", f"hydra.run.dir={tmp_path}/run"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/skipped_files"] == 3 and metrics["status"] == "finished"
    assert "test/auroc" in metrics
    listed = list(csv.DictReader((tmp_path / "run" / "data_problems.csv").open()))
    assert sorted(row["path"] for row in listed) == sorted(map(str, corrupt))
    report = (tmp_path / "run" / "report.md").read_text()
    assert all(str(path) in report for path in corrupt)


def write_degenerate_images(folder: Path) -> list[Path]:
    """A 1 x 1 px image, a 3 x 100,000 px sliver and a 40 x 1,000 px strip: they decode, but no radiograph has
    any of these shapes (the first two are too thin, the third too elongated)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in ("dot.png", "sliver.png", "strip.png")]
    for path, size in zip(paths, [(1, 1), (100_000, 3), (1000, 40)], strict=True):
        Image.new("L", size, 128).save(path)
    return paths


def test_images_of_no_radiographs_shape_are_skipped_in_training_and_the_audit(tmp_path):
    """Both used to reach OpenCV's resize in the content audit (`inv_scale_x > 0` assertion) and stop the run."""
    from fracture.data.audit import AuditSettings, audit_dataset

    root = make_class_folders(tmp_path / "data", per_class=3)
    dot, sliver, strip = write_degenerate_images(root / "train" / "fractured")
    datamodule = FractureDataModule(root, image_size=32, batch_size=2, group_by="content", audit_cache=tmp_path / "a")
    problems = {Path(p.path).name: p.problem for p in datamodule.file_problems()}
    assert "1 x 1 px is under 32 px on a side (min_side)" in problems["dot.png"]
    assert "100000 x 3 px is under 32 px on a side (min_side)" in problems["sliver.png"]
    assert "longer than 10:1 (max_aspect)" in problems["strip.png"]
    assert str(dot) not in datamodule.files("train").paths and len(datamodule.files("train")) == 6
    audit = audit_dataset(root, AuditSettings(workers=1))
    errors = {Path(r.path).name: r.error for r in audit.records if r.error}
    assert sorted(errors) == ["dot.png", "sliver.png", "strip.png"] and "max_aspect" in errors["strip.png"]
    # The limits are settings: a folder of thumbnails can lower them.
    lenient = FractureDataModule(root, image_size=32, batch_size=2, group_by=None, min_side=1, max_aspect=100_000)
    assert len(lenient.files("train")) == 9


def test_images_of_no_radiographs_shape_get_an_error_row_in_prediction(tmp_path, tiny_checkpoint):
    dot, sliver, strip = write_degenerate_images(tmp_path)
    predictor = load_predictor(tiny_checkpoint)
    rows = [prediction for prediction, _, _ in predictor.predict_batch([dot, sliver, strip])]
    assert "min_side" in rows[0].error and "min_side" in rows[1].error and "max_aspect" in rows[2].error
    with pytest.raises(UnsuitableImage, match="min_side"):
        read_xray(dot)
    assert read_xray(dot, limits=None).shape == (1, 1, 3)  # None accepts any shape


def test_images_in_subfolders_of_a_class_folder_are_used_and_counted(tmp_path):
    root = make_class_folders(tmp_path / "data", per_class=3)
    nested = root / "train" / "fractured" / "2024" / "ward b"
    nested.mkdir(parents=True)
    for index in range(2):
        Image.fromarray(np.full((40, 40), 90 + index, np.uint8)).save(nested / f"{index}.png")
    datamodule = FractureDataModule(root, image_size=32, batch_size=2, group_by=None)
    summary = datamodule.summary()
    assert summary["train"]["fractured"] == 5 and summary["train"]["in_subfolders"] == 2
    assert summary["val"]["in_subfolders"] == 0
    assert str(nested / "1.png") in datamodule.files("train").paths
