"""Label tables as a data source: FracAtlas-, MURA- and plain-table-shaped trees written here, their bad
inputs, patient groups, and the shared FracAtlas subset when it is present."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, compose_config
from hydra.utils import instantiate
from PIL import Image

from fracture import FractureDataModule
from fracture.data.splits import united_groups
from fracture.data.tables import read_rows
from fracture.errors import DataError

SHARED_FRACATLAS = REPO_ROOT.parent / "shared" / "data" / "fracatlas"


def xray(path: Path, seed: int, size=(48, 40)) -> Path:
    """A small grey picture, different for every seed (so that the content audit finds no copies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0]), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_csv(path: Path, rows: list[list], separator=",", line_end="\n", bom=False) -> Path:
    text = line_end.join(separator.join(str(v) for v in row) for row in rows) + line_end
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def fracatlas_tree(root: Path, per_class=6) -> Path:
    """FracAtlas' own layout: dataset.csv (its columns) naming files in images/Fractured and images/Non_fractured."""
    columns = "image_id hand leg hip shoulder mixed hardware multiscan fractured fracture_count frontal lateral oblique"
    rows = [columns.split()]
    for i in range(2 * per_class):
        fractured = i % 2
        name = f"IMG{i:07d}.jpg"
        xray(root / "images" / ("Fractured" if fractured else "Non_fractured") / name, i)
        hand, hardware = int(i % 3 == 0), int(i % 4 == 0)
        rows.append([name, hand, 1 - hand, 0, 0, 0, hardware, 0, fractured, fractured, 1, 0, 0])
    write_csv(root / "dataset.csv", rows)
    return root


def fracatlas(tmp_path, root, *overrides) -> FractureDataModule:
    cfg = compose_config(tmp_path, "data=fracatlas", f"data.root={root}", "data.group_by=null", *overrides)
    return instantiate(cfg.data, _convert_="all")


def test_fracatlas_layout_through_its_preset(tmp_path):
    root = fracatlas_tree(tmp_path / "FracAtlas", per_class=10)
    xray(root / "images" / "Fractured" / "IMG9999999.jpg", 99)  # on disk, in no row: counted, not used
    datamodule = fracatlas(tmp_path, root).setup()
    files = {name: datamodule.files(name) for name in ("train", "val", "test")}
    assert sum(map(len, files.values())) == 20 and datamodule.unlisted_files == 1
    for split in files.values():  # each file's label and subgroups are its row's
        for path, label, hand in zip(split.paths, split.labels, split.subgroups["hand"], strict=True):
            index = int(Path(path).stem[3:])
            assert label == index % 2 and ("Fractured" in path) == bool(label) and hand == str(int(index % 3 == 0))
    assert set(files["train"].subgroups) == {"hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan"} | {
        "frontal",
        "lateral",
        "oblique",
    }


def test_a_table_with_a_bom_semicolons_and_windows_line_ends_or_in_parquet_reads_like_a_plain_one(tmp_path):
    import pyarrow
    import pyarrow.parquet

    rows = [["file", "finding"], ["a.png", "yes"], ["b.png", "No"]]
    plain = read_rows(write_csv(tmp_path / "plain.csv", rows))
    assert read_rows(write_csv(tmp_path / "excel.csv", rows, separator=";", line_end="\r\n", bom=True)) == plain
    assert plain == [{"file": "a.png", "finding": "yes"}, {"file": "b.png", "finding": "No"}]
    pyarrow.parquet.write_table(
        pyarrow.table({"file": ["a.png", "b.png"], "finding": ["yes", "No"]}), tmp_path / "t.parquet"
    )
    assert read_rows(tmp_path / "t.parquet") == plain


def plain_table(tmp_path, rows, **options) -> FractureDataModule:
    for index, row in enumerate(rows[1:]):
        if not str(row[0]).startswith("missing"):
            xray(tmp_path / row[0], index)
    table = write_csv(tmp_path / "labels.csv", rows)
    columns = {"path": "file", "label": "finding", **options.pop("columns", {})}
    options = {"group_by": None, "split": "grouped", **options}
    return FractureDataModule(None, table=table, columns=columns, **options)


def test_every_bad_row_is_a_clear_line_or_a_listed_problem(tmp_path):
    rows = [["file", "finding"]] + [[f"img{i}.png", "positive" if i % 2 else "negative"] for i in range(16)]
    rows += [["missing.png", "positive"], ["img3.png", "positive"]]  # a file that is not there; a row twice
    datamodule = plain_table(tmp_path, rows, val_fraction=0.25, test_fraction=0.0)
    problems = {Path(p.path).name: p.problem for p in datamodule.file_problems()}
    assert problems["missing.png"].endswith("listed in labels.csv (row 18) but not found")
    assert problems["img3.png"].endswith("listed again in labels.csv (row 19); the first row is used")
    assert sum(len(datamodule.files(s)) for s in ("train", "val")) == 16

    with pytest.raises(DataError, match=r"value\(s\) \['maybe'\] that data.label_values does not map"):
        plain_table(tmp_path, [["file", "finding"], ["a.png", "maybe"]]).setup()
    with pytest.raises(DataError, match="no column.* data.columns.label=finding; its columns are"):
        plain_table(tmp_path, [["file", "result"], ["a.png", "1"]]).setup()
    with pytest.raises(DataError, match="has no rows"):
        plain_table(tmp_path, [["file", "finding"]]).setup()
    with pytest.raises(DataError, match="listed with both labels"):
        plain_table(tmp_path, [["file", "finding"], ["a.png", "1"], ["a.png", "0"]]).setup()
    two = [["file", "finding", "study"], ["a.png", "1", "s1"], ["b.png", "0", "s1"], ["c.png", "0", "s2"]]
    with pytest.raises(DataError, match=r"1 stud\(ies\) have images of both labels, e.g. s1"):
        plain_table(tmp_path, two, columns={"study": "study"}).setup()
    with pytest.raises(DataError, match="says no split .* data.split=grouped"):
        plain_table(tmp_path, rows[:17], split="given").setup()


def test_a_grouped_split_never_separates_a_patients_images(tmp_path):
    rows = [["file", "finding", "patient"]]
    for patient in range(24):
        for view in range(3):  # three views of each patient, one label per patient
            rows.append([f"p{patient}_v{view}.png", patient % 2, f"P{patient:03d}"])
    datamodule = plain_table(tmp_path, rows, columns={"patient": "patient"}, val_fraction=0.2, test_fraction=0.2)
    where = defaultdict(set)
    for split in ("train", "val", "test"):
        files = datamodule.files(split)
        for patient in files.patients:
            where[patient].add(split)
    assert len(where) == 24 and all(len(splits) == 1 for splits in where.values())


def test_patient_and_content_groups_unite_into_connected_components():
    content = ["g1", "g2", "g3", "g3", "g4"]
    patients = ["A", "B", "A", None, "C"]
    # 0 and 2 share patient A; 2 and 3 are copies (g3): 0, 2 and 3 are one group; 1 and 4 stay apart.
    assert united_groups(content, patients) == ["g1", "g2", "g1", "g1", "g4"]


def mura_tree(root: Path) -> Path:
    """MURA v1.1's layout and its header-less lists of image paths."""
    lines = {"train": [], "valid": []}
    seed = 0
    for split, patients in (("train", range(1, 9)), ("valid", range(9, 13))):
        for patient in patients:
            for study, finding in ((1, "positive" if patient % 2 else "negative"), (2, "negative")):
                for image in (1, 2):
                    relative = (
                        f"MURA-v1.1/{split}/XR_WRIST/patient{patient:05d}/study{study}_{finding}/image{image}.png"
                    )
                    xray(root.parent / relative, seed := seed + 1)
                    lines[split].append([relative])
    write_csv(root / "train_image_paths.csv", lines["train"])
    write_csv(root / "valid_image_paths.csv", lines["valid"])
    return root


def test_mura_layout_through_its_preset(tmp_path):
    root = mura_tree(tmp_path / "MURA-v1.1")
    cfg = compose_config(tmp_path, "data=mura", f"data.root={root}", "data.group_by=null")
    datamodule = instantiate(cfg.data, _convert_="all").setup()
    train, val = datamodule.files("train"), datamodule.files("val")
    assert len(train) == 32 and len(val) == 16 and not datamodule.has_split("test")
    for path, label, patient, study in zip(train.paths, train.labels, train.patients, train.studies, strict=True):
        assert label == ("_positive/" in path) and f"/{patient}/" in path and study in path
    assert set(train.subgroups["body_part"]) == {"WRIST"} and datamodule.class_names == ("abnormal", "normal")
    # A patient's studies are one group: they can never be split apart by a grouped cut.
    assert len(set(train.groups)) == 8


@pytest.mark.skipif(not SHARED_FRACATLAS.is_dir(), reason="the shared FracAtlas subset is not on this machine")
def test_the_shared_fracatlas_subset_reads_as_its_table_says(tmp_path):
    datamodule = fracatlas(tmp_path, SHARED_FRACATLAS).setup()
    rows = read_rows(SHARED_FRACATLAS / "dataset.csv")
    files = [datamodule.files(split) for split in ("train", "val", "test")]
    assert sum(map(len, files)) == len(rows) == 1675
    assert sum(int(f.labels.sum()) for f in files) == sum(row["fractured"] == "1" for row in rows) == 567
    hands = sum(value == "1" for f in files for value in f.subgroups["hand"])
    assert hands == sum(row["hand"] == "1" for row in rows)


@pytest.mark.slow  # about 12 s; the tables' reading is tested in the default suite
def test_the_audit_command_audits_the_files_a_table_lists(tmp_path):
    from conftest import run_cli

    root = fracatlas_tree(tmp_path / "FracAtlas", per_class=6)
    copy = root / "images" / "Non_fractured" / "IMG0000000.jpg"
    Image.open(copy).rotate(90, expand=True).save(root / "images" / "Fractured" / "IMG0000099.jpg")  # a copy
    rows = read_rows(root / "dataset.csv")
    extra = {**rows[0], "image_id": "IMG0000099.jpg", "fractured": "1"}
    write_csv(root / "dataset.csv", [list(rows[0])] + [list(row.values()) for row in [*rows, extra]])
    result = run_cli(
        "fracture.audit",
        "data=fracatlas",
        f"data.root={root}",
        f"data.audit_cache={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "audit.json").read_text())
    assert summary["files"] == 13 and summary["content_groups"] == 12  # the rotated copy joins its original
    datamodule = fracatlas(tmp_path, root, "data.group_by=content", f"data.audit_cache={tmp_path / 'cache'}")
    where = {}
    for split in ("train", "val", "test"):
        files = datamodule.files(split)
        where.update({Path(p).name: (split, g) for p, g in zip(files.paths, files.groups, strict=True)})
    assert where["IMG0000099.jpg"] == where["IMG0000000.jpg"]  # one group, on one side of the cut


@pytest.mark.slow  # about 27 s; the table, subgroup and study tests on small tables stay in the default suite
@pytest.mark.skipif(not SHARED_FRACATLAS.is_dir(), reason="the shared FracAtlas subset is not on this machine")
def test_a_tiny_model_trains_and_is_evaluated_on_the_shared_fracatlas_by_subgroup(tmp_path):
    from conftest import run_cli

    run = tmp_path / "run"
    result = run_cli(
        "fracture.train",
        "data=fracatlas",
        f"data.root={SHARED_FRACATLAS}",
        "data.group_by=null",  # FracAtlas holds distinct radiographs; the content audit is another test's
        "data.image_size=48",
        "data.batch_size=64",
        "model=tiny",
        "trainer.epochs=1",
        "eval.bootstrap_resamples=20",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    table = {row["image_id"]: row for row in read_rows(SHARED_FRACATLAS / "dataset.csv")}
    for split in ("val", "test"):
        predicted = [
            Path(row.split(",")[0]).name for row in (run / f"{split}_predictions.csv").read_text().splitlines()[1:]
        ]
        assert metrics[f"{split}/n"] == len(predicted)
        for column in ("hand", "leg", "hip", "shoulder", "hardware", "lateral"):
            expected = sum(table[name][column] == "1" for name in predicted)
            assert metrics[f"{split}/subgroup/{column}/n"] == expected, (split, column)
    assert "### Subgroups" in (run / "report.md").read_text()


def test_a_dicom_export_is_labelled_by_study_through_its_headers(tmp_path):
    from test_readers import grey_scene, write_dicom

    export = tmp_path / "export"
    (export / "x").mkdir(parents=True)
    rows = [["StudyInstanceUID", "label"]]
    for study in range(12):
        rows.append([f"1.2.{study}", "fractured" if study % 2 else "not fractured"])
        for image, view in enumerate(("AP", "LAT")):
            pixels = np.roll(grey_scene(64, 64), 5 * study + image, axis=1).astype(np.uint16) * 16
            elements = {"PatientID": f"P{study // 2}", "StudyInstanceUID": f"1.2.{study}", "ViewPosition": view}
            write_dicom(
                export / "x" / f"1.3.{study}.{image}", pixels, "MONOCHROME2", BodyPartExamined="WRIST", **elements
            )
    write_dicom(export / "x" / "1.3.nokey", grey_scene(64, 64).astype(np.uint16), "MONOCHROME2", PatientID="P9")
    rows.append(["1.2.99", "fractured"])  # a label row that no header has
    write_csv(export / "labels.csv", rows)
    cfg = compose_config(tmp_path, "data=dicom", f"data.root={export}", "data.group_by=null", "data.image_size=48")
    cfg.data.dicom_cache = str(tmp_path / "cache")
    datamodule = instantiate(cfg.data, _convert_="all").setup()
    splits = [datamodule.files(name) for name in ("train", "val", "test") if datamodule.has_split(name)]
    assert sum(map(len, splits)) == 24
    where = defaultdict(set)
    for files in splits:
        for patient, study, view in zip(files.patients, files.studies, files.subgroups["ViewPosition"], strict=True):
            where[patient].add(files.name)
            assert view in ("AP", "LAT") and study.startswith("1.2.")
    assert all(len(names) == 1 for names in where.values())  # a patient's two studies stay together
    problems = {Path(p.path).name: p.problem for p in datamodule.file_problems()}
    assert "its header has no StudyInstanceUID" in problems["1.3.nokey"]
    assert "no DICOM file's header has it" in problems["StudyInstanceUID=1.2.99"]
    assert len(list((tmp_path / "cache").glob("headers-*.json"))) == 1  # read once, then from the cache
