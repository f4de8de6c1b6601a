"""Predictor and Grad-CAM on a trained tiny checkpoint, on the active backend."""

import keras
import numpy as np
import pytest
from PIL import Image

from fracture import read_metadata
from fracture.data.images import UnreadableImage
from fracture.errors import ConfigError, FractureError
from fracture.inference.predictor import load_predictor
from fracture.models.checkpoint import update_metadata

pytestmark = pytest.mark.backend


@pytest.fixture()
def checkpoint(tmp_path, tiny_checkpoint):
    path = tmp_path / "model.keras"
    path.write_bytes(tiny_checkpoint.read_bytes())
    update_metadata(path, threshold=0.4, threshold_source="val", threshold_method="youden")
    return path


@pytest.fixture()
def predictor(checkpoint):
    return load_predictor(checkpoint)


def test_predictions_use_the_stored_threshold_and_match_the_model(predictor, synthetic_root):
    files = sorted((synthetic_root / "test").rglob("*.png"))[:6]
    rows = predictor.predict_batch(files)
    model = predictor.model
    batch = np.stack([predictor.preprocess(np.asarray(Image.open(f).convert("RGB"))) for f in files])
    expected = np.asarray(model.predict(batch, verbose=0)).ravel()
    for (prediction, _, heatmap), probability in zip(rows, expected, strict=True):
        assert heatmap is None and prediction.threshold == 0.4
        assert prediction.probability == pytest.approx(probability, abs=1e-5)
        assert prediction.label == ("fractured" if probability >= 0.4 else "not fractured")


@pytest.mark.parametrize("runtime", ["keras", "auto"])
def test_warm_up_freezes_at_once_and_frozen_probabilities_match_the_model(checkpoint, synthetic_root, runtime):
    predictor = load_predictor(checkpoint, runtime=runtime)
    files = sorted((synthetic_root / "val").rglob("*.png"))[:5]
    batch = np.stack([predictor.preprocess(np.asarray(Image.open(f).convert("RGB"))) for f in files])
    predictor.warm_up()
    assert predictor.is_frozen  # the service's first request runs on its engine, nothing left to trace
    on_tensorflow = keras.backend.backend() == "tensorflow"
    if runtime == "keras":
        if on_tensorflow:  # frozen directly, without tracing Keras' predict step
            assert predictor.model.predict_function is None
    elif on_tensorflow:  # auto, for unbounded use, converts: ONNX Runtime or OpenVINO, checked against Keras
        assert predictor.engine.name in ("onnxruntime", "openvino")
        assert predictor.engine.max_abs_difference <= predictor.engine.bound
    else:  # auto keeps JAX on Keras (jax2onnx is slow to convert)
        assert predictor.engine.name == "keras"
    expected = np.asarray(predictor.model.predict(batch, verbose=0)).ravel()
    np.testing.assert_allclose(predictor.uncalibrated_probabilities(batch), expected, atol=1e-5)


def test_unreadable_inputs_get_error_rows_and_the_rest_still_run(predictor, synthetic_root, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    good = next((synthetic_root / "val").rglob("*.png"))
    rows = predictor.predict_batch([good, tmp_path / "broken.png", good])
    assert [row[0].error is None for row in rows] == [True, False, True]
    assert "not a readable image" in rows[1][0].error
    with pytest.raises(UnreadableImage):
        predictor.explain(tmp_path / "broken.png")


def test_explain_gives_a_heatmap_and_an_overlay(predictor):
    pixels = np.random.default_rng(0).integers(0, 255, (300, 200), np.uint8)  # grayscale, odd size
    explanation = predictor.explain(pixels)
    heatmap = explanation.heatmap
    assert heatmap.shape == (8, 8) and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert explanation.overlay.size[0] > explanation.overlay.size[1]  # X-ray and heatmap side by side
    assert explanation.prediction.probability == pytest.approx(predictor.predict(pixels).probability, abs=1e-5)


def test_default_threshold_is_warned_about(tiny_checkpoint):
    assert read_metadata(tiny_checkpoint)["threshold_source"] == "default"
    with pytest.warns(UserWarning, match="no validation threshold"):
        predictor = load_predictor(tiny_checkpoint)
    assert predictor.threshold == 0.5


def test_a_gradcam_layer_typo_is_a_clear_error_with_suggestions(tiny_checkpoint):
    with pytest.raises(ConfigError, match=r"gradcam_layer='tiny_conv3_rel' is not a layer .*'tiny_conv3_relu'"):
        load_predictor(tiny_checkpoint, gradcam_layer="tiny_conv3_rel").explain(np.zeros((64, 64, 3), np.uint8))


def test_an_unreadable_image_is_a_fracture_error(tmp_path):
    assert issubclass(UnreadableImage, FractureError)
