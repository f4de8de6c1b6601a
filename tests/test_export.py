"""`python -m fracture.export`: every format on each backend that supports it, checked against the checkpoint."""

import csv
import json
import shutil

import keras
import numpy as np
import pytest
from conftest import DEMO_SMALL, run_cli

from fracture import FractureClassifier, read_metadata, save_checkpoint
from fracture.data.images import expand_inputs
from fracture.deployment.parity import ParityResult
from fracture.deployment.recipe import export_checkpoint, verify_export
from fracture.errors import CheckpointError, ExportError
from fracture.inference.predictor import load_predictor
from fracture.models.checkpoint import checkpoint_id
from fracture.models.contract import CONTRACT_FORMAT, read_contract
from fracture.models.exporters import check_backend, parse_formats


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small run of `fracture.train` on TensorFlow, evaluated, so that its checkpoint holds a val threshold."""
    folder = tmp_path_factory.mktemp("export_run")
    result = run_cli(
        "fracture.train",
        *DEMO_SMALL,
        "trainer.epochs=1",
        f"paths.data_dir={folder}/data",
        f"hydra.run.dir={folder}/run",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run" / "checkpoints" / "best_model.keras", folder / "data"


def predictions(csv_path) -> list[dict]:
    return list(csv.DictReader(csv_path.open()))


@pytest.mark.slow  # about 50 s with its checkpoint; the ONNX predictor and the parity checks stay in the default suite
def test_export_cli_writes_all_formats_and_the_onnx_model_predicts_the_same_labels(tmp_path, trained):
    ckpt, data = trained
    result = run_cli("fracture.export", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/export")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = ckpt.parent / "best_model_export"
    assert (folder / "saved_model" / "saved_model.pb").is_file()
    assert (folder / "model.onnx").is_file() and (folder / "model.tflite").is_file()
    printed = result.stdout + result.stderr
    assert printed.count(" ok ") == 3 and "FAILED" not in printed

    contract = json.loads((folder / "model.json").read_text())
    metadata = read_metadata(ckpt)
    assert contract["checkpoint_id"] == checkpoint_id(ckpt)
    assert contract["threshold"] == metadata["threshold"] and contract["threshold_source"] == "val"
    assert contract["preprocessing"]["input_shape"] == ["batch", 48, 48, 3]
    assert contract["class_names"] == ["not fractured", "fractured"]
    assert sorted(contract["artifacts"]) == ["onnx", "saved_model", "tflite"]
    assert all(a["parity_max_abs_difference"] <= 1e-4 for a in contract["artifacts"].values())
    assert {"keras", "tensorflow", "onnxruntime"} <= set(contract["versions"])

    test_folder = data / "synthetic" / "test"
    done = run_cli(
        "fracture.predict",
        f"ckpt_path={folder / 'model.onnx'}",
        f"inputs=[{test_folder}]",
        f"hydra.run.dir={tmp_path}/onnx",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    onnx_rows = predictions(tmp_path / "onnx" / "predictions.csv")
    keras_rows = [load_predictor(ckpt).predict(path) for path in expand_inputs([test_folder])]  # the same order
    assert len(onnx_rows) == 8 and [r["path"] for r in onnx_rows] == [r.path for r in keras_rows]
    assert [r["label"] for r in onnx_rows] == [r.label for r in keras_rows]
    onnx_p = np.array([float(r["probability"]) for r in onnx_rows])
    np.testing.assert_allclose(onnx_p, [r.probability for r in keras_rows], atol=1e-4)
    assert "Grad-CAM needs the .keras checkpoint" in done.stdout + done.stderr

    verified = run_cli("fracture.export", f"ckpt_path={ckpt}", "verify_only=true", f"hydra.run.dir={tmp_path}/v")
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert (verified.stdout + verified.stderr).count(" ok ") == 3


@pytest.mark.slow  # about 30 s; the JAX pass's backend tests export ONNX on JAX, and format parsing per backend stays
def test_export_on_jax_writes_what_jax_can_and_names_the_backend_for_the_rest(tmp_path, trained):
    ckpt, _ = trained
    folder = tmp_path / "jax_export"
    common = (f"ckpt_path={ckpt}", f"export.dir={folder}", f"hydra.run.dir={tmp_path}/run")
    result = run_cli("fracture.export", *common, backend="jax")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    assert "tflite left out" in printed and printed.count(" ok ") == 2
    assert sorted(json.loads((folder / "model.json").read_text())["artifacts"]) == ["onnx", "saved_model"]
    assert json.loads((folder / "model.json").read_text())["exported_with_backend"] == "jax"


def other_checkpoint(tiny_checkpoint, folder):
    """A checkpoint with the same metadata as `tiny_checkpoint` but other (freshly initialised) weights."""
    keras.utils.set_random_seed(123)
    model = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16).configure_model()
    return save_checkpoint(model, folder / "other.keras", read_metadata(tiny_checkpoint))


@pytest.mark.backend
def test_parity_check_fails_when_an_artifact_comes_from_other_weights(tmp_path, tiny_checkpoint):
    ckpt = shutil.copy(tiny_checkpoint, tmp_path / "best_model.keras")
    folder, results = export_checkpoint(ckpt, ["onnx"], tmp_path / "export")
    assert [r.format for r in results] == ["onnx"] and results[0].passed
    assert verify_export(ckpt, ["onnx"], folder)[0].passed

    other_folder, _ = export_checkpoint(other_checkpoint(tiny_checkpoint, tmp_path), ["onnx"], tmp_path / "other")
    shutil.copy(other_folder / "model.onnx", folder / "model.onnx")  # the wrong network behind the right model.json
    (result,) = verify_export(ckpt, ["onnx"], folder)
    assert not result.passed and result.max_abs_difference > 1e-4

    with pytest.raises(ExportError, match="exported from checkpoint"):
        verify_export(tmp_path / "other.keras", ["onnx"], folder)


@pytest.mark.backend
def test_an_export_that_fails_its_check_replaces_nothing(tmp_path, tiny_checkpoint, monkeypatch):
    folder, _ = export_checkpoint(tiny_checkpoint, ["saved_model"], tmp_path / "export")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def failing(model, artifacts, batch, tolerance):
        return [ParityResult(name, 0.5, tolerance, len(batch)) for name in artifacts]

    monkeypatch.setattr("fracture.deployment.recipe.check_parity", failing)
    with pytest.raises(ExportError, match="parity check failed"):
        export_checkpoint(tiny_checkpoint, ["saved_model"], folder)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before  # the previous good export, and no staging folder left behind


@pytest.mark.backend
def test_onnx_predictor_matches_the_keras_one_and_refuses_gradcam(tmp_path, tiny_checkpoint):
    folder, _ = export_checkpoint(tiny_checkpoint, ["onnx"], tmp_path / "export")
    image = np.random.default_rng(1).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    from_onnx = load_predictor(folder / "model.onnx")
    from_keras = load_predictor(tiny_checkpoint)
    assert from_onnx.threshold == from_keras.threshold and from_onnx.image_size == from_keras.image_size
    assert abs(from_onnx.predict(image).probability - from_keras.predict(image).probability) < 1e-4
    assert not from_onnx.can_explain and from_keras.can_explain
    with pytest.raises(CheckpointError, match="Grad-CAM works on .keras checkpoints only"):
        from_onnx.explain(image)


def test_model_json_is_required_and_its_format_checked(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="no model.json beside it"):
        read_contract(tmp_path / "model.onnx")
    (tmp_path / "model.json").write_text(json.dumps({"format": "fracture-export/99"}))
    with pytest.raises(CheckpointError, match=CONTRACT_FORMAT):
        read_contract(tmp_path / "model.onnx")


def test_formats_are_parsed_and_refused_per_backend():
    assert parse_formats("all", "tensorflow") == (["saved_model", "onnx", "tflite"], [])
    assert parse_formats("all", "jax") == (["saved_model", "onnx"], ["tflite"])
    assert parse_formats(["tflite", "onnx"], "jax") == (["onnx", "tflite"], [])
    with pytest.raises(ExportError, match="unknown export format"):
        parse_formats("pickle", "tensorflow")
    check_backend(["tflite"], "tensorflow")
    with pytest.raises(ExportError, match="KERAS_BACKEND=tensorflow"):
        check_backend(["tflite"], "jax")


@pytest.mark.slow  # about 25-40 s on 2 cores; the default suite stays under 15 minutes
def test_efficientnet_b3_exports_to_onnx_without_extra_inputs(tmp_path):
    """EfficientNetB3's Normalization layer holds captured tensors, which tf2onnx made into graph inputs."""
    model = FractureClassifier("efficientnet_b3", weights=None, image_size=32).configure_model()
    metadata = {"image_size": 32, "positive_class": "fractured", "negative_class": "not fractured"}
    ckpt = save_checkpoint(model, tmp_path / "best_model.keras", metadata)
    folder, (result,) = export_checkpoint(ckpt, ["onnx"])
    assert result.passed, result
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
