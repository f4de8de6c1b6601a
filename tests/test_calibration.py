"""Calibrated probabilities end to end: fitted on validation, stored with the threshold on the same scale,
and applied by every consumer (evaluation, `Predictor`, the exported model's contract)."""

import json
import shutil

import numpy as np
import pytest

from fracture import load_predictor, read_metadata
from fracture.evaluation.calibration import METHODS, evidence, fit_calibration
from fracture.evaluation.evaluate import Evaluator, evaluate_checkpoint
from fracture.evaluation.metrics import expected_calibration_error
from fracture.evaluation.threshold import youden_threshold
from fracture.models.calibration import Calibration
from fracture.models.checkpoint import update_metadata


def miscalibrated_scores(confidence: float, shift: float, n=2000, seed=0):
    """Labels, and scores whose logit is `confidence` times the true one (2.5 z), plus `shift`."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = 2.5 * (y - 0.5) + rng.normal(0, 1, n)  # the true posterior's logit is 2.5 z
    return y, 1 / (1 + np.exp(-(confidence * 2.5 * z + shift)))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_lowers_the_ece_of_shifted_scores_and_survives_json(method):
    y, score = miscalibrated_scores(confidence=4.0, shift=0.0)  # over-confident, as the demo's head is
    calibration = fit_calibration(method, y[:1000], score[:1000])
    y_test, s_test = y[1000:], score[1000:]
    assert expected_calibration_error(y_test, calibration(s_test)) < expected_calibration_error(y_test, s_test) / 2
    restored = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    np.testing.assert_allclose(restored(s_test), calibration(s_test))
    assert np.all(np.diff(calibration(np.linspace(0, 1, 101))) >= 0)  # monotone: ranking is kept


def test_platt_corrects_a_shift_that_temperature_cannot():
    y, score = miscalibrated_scores(confidence=1.0, shift=3.0)  # well scaled but shifted
    eces = {
        m: expected_calibration_error(y[1000:], fit_calibration(m, y[:1000], score[:1000])(score[1000:]))
        for m in ("platt", "temperature")
    }
    assert eces["platt"] < eces["temperature"]


@pytest.mark.parametrize("method", METHODS)
def test_a_calibration_fitted_on_separable_or_tiny_validation_never_reaches_0_or_1(method):
    """On the demo, Platt's plain maximum likelihood on a perfectly separated validation split reported test
    errors with probabilities 0.000000 and 0.999999."""
    y_val, p_val = np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    calibration = fit_calibration(method, y_val, p_val)
    wrong_side = calibration(np.array([0.0, 1e-9, 0.05, 0.95, 1 - 1e-9, 1.0]))  # beyond anything in validation
    low, high = 1 / 8, 7 / 8  # Laplace's rule of succession for 6 validation images
    assert np.all(wrong_side >= low - 1e-12) and np.all(wrong_side <= high + 1e-12)
    assert wrong_side.min() == pytest.approx(low) and wrong_side.max() == pytest.approx(high)
    assert np.all(np.diff(calibration(np.linspace(0, 1, 101))) >= 0)  # still monotone
    assert evidence(y_val, p_val) == {"positives": 3, "negatives": 3, "separable": True, "too_little": True}
    y, score = miscalibrated_scores(confidence=1.0, shift=0.0)
    assert evidence(y, score)["too_little"] is False  # 2,000 overlapping scores are enough


@pytest.mark.backend
def test_evaluation_says_when_the_calibration_rests_on_too_little_evidence(tmp_path, tiny_checkpoint, synthetic_root):
    from fracture import FractureDataModule

    ckpt = shutil.copy(tiny_checkpoint, tmp_path / "best_model.keras")
    datamodule = FractureDataModule(
        synthetic_root, image_size=64, batch_size=16, group_by="filename"
    )  # 8 val images per class
    results = evaluate_checkpoint(
        ckpt, datamodule, ["val", "test"], tmp_path / "run", calibration="platt", bootstrap_resamples=20
    )
    assert results["test/calibration/fit_too_little"] is True and results["test/calibration/fit_positives"] == 8
    report = (tmp_path / "run" / "report.md").read_text()
    assert "The calibration rests on too little evidence" in report and "8 positive and 8 negative" in report


@pytest.mark.backend
def test_evaluation_stores_calibration_and_threshold_once_on_the_same_scale(
    tmp_path, tiny_checkpoint, synthetic_root, monkeypatch
):
    from fracture import FractureDataModule

    ckpt = shutil.copy(tiny_checkpoint, tmp_path / "best_model.keras")
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename")
    updates = []
    original = update_metadata
    monkeypatch.setattr(
        "fracture.evaluation.evaluate.update_metadata", lambda *a, **k: updates.append(k) or original(*a, **k)
    )
    evaluate_checkpoint(
        ckpt, datamodule, ["val", "test"], tmp_path / "run", calibration="platt", bootstrap_resamples=20
    )
    assert len(updates) == 1 and {"threshold", "calibration", "threshold_scale"} <= set(updates[0])

    stored = read_metadata(ckpt)
    assert stored["threshold_scale"] == "calibrated" and stored["calibration"]["method"] == "platt"
    evaluator = Evaluator(ckpt, datamodule, calibration="platt")
    y_val, raw_val, _ = evaluator.raw_predictions("val")
    calibrated_val = Calibration.from_dict(stored["calibration"])(raw_val)
    assert stored["threshold"] == pytest.approx(youden_threshold(y_val, calibrated_val))
    evaluator.threshold()
    assert len(updates) == 1  # the same rule and method: reused, not rewritten


@pytest.mark.backend
def test_a_predictor_applies_the_stored_calibration(tmp_path, tiny_checkpoint):
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    raw = load_predictor(tiny_checkpoint).predict(image).probability
    ckpt = shutil.copy(tiny_checkpoint, tmp_path / "best_model.keras")
    calibration = Calibration("platt", {"slope": 3.0, "intercept": 2.0})  # raises the tiny model's ~0.5
    threshold = float(calibration(raw)) - 1e-3  # just below this image's calibrated probability
    update_metadata(ckpt, calibration=calibration.to_dict(), threshold=threshold, threshold_source="val")
    prediction = load_predictor(ckpt).predict(image)
    assert prediction.probability == pytest.approx(float(calibration(raw)), abs=1e-6)
    assert prediction.label == "fractured"  # compared on the calibrated scale, where it is above the threshold
    assert raw < threshold  # on the raw scale it would have been "not fractured"


@pytest.mark.backend
def test_an_exported_model_carries_the_calibration_and_its_predictor_applies_it(tmp_path, tiny_checkpoint):
    from fracture.deployment.recipe import export_checkpoint

    ckpt = shutil.copy(tiny_checkpoint, tmp_path / "best_model.keras")
    update_metadata(
        ckpt, calibration={"method": "temperature", "params": {"temperature": 0.5}}, threshold_scale="calibrated"
    )
    folder, _ = export_checkpoint(ckpt, ["onnx"])
    contract = json.loads((folder / "model.json").read_text())
    assert contract["calibration"]["method"] == "temperature" and contract["threshold_scale"] == "calibrated"
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    from_onnx, from_keras = load_predictor(folder / "model.onnx"), load_predictor(ckpt)
    assert from_onnx.predict(image).probability == pytest.approx(from_keras.predict(image).probability, abs=1e-5)
