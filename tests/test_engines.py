"""Inference engines: Keras, ONNX Runtime and OpenVINO give the same outputs, the conversion is stored and checked,
a mismatch fails, and `auto` follows its rule."""

import keras
import numpy as np
import pytest

from fracture import FractureClassifier
from fracture.cache_entry import DamagedCacheEntry, read_entry
from fracture.data.reference_images import reference_batch
from fracture.errors import ConfigError
from fracture.models import engines
from fracture.models.engines import Engine, EngineMismatch, build_engine, check_parity, choose_engine, onnx_entry
from fracture.models.head import split_at_head
from fracture.training.extraction import LocalBackbone
from fracture.training.feature_cache import FeatureCache

pytestmark = pytest.mark.backend


def tiny_model():
    keras.utils.set_random_seed(3)
    return FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8).configure_model()


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_engine_matches_keras_on_a_classifier_and_a_backbone(cache_root, name):
    model = tiny_model()
    backbone, _ = split_at_head(model)
    batch = reference_batch(32)
    for network in (model, backbone):
        engine = build_engine(network, name, batch)
        expected = np.asarray(network.predict_on_batch(batch))
        assert engine(batch).shape == expected.shape
        # The bound that build_engine enforced, recorded on the engine; float32 reordering is far below it.
        assert engine.max_abs_difference <= engine.bound == engines.PARITY_RELATIVE * np.max(np.abs(expected))
        assert np.max(np.abs(engine(batch) - expected)) == engine.max_abs_difference


def test_openvino_on_batches_splits_them_across_its_streams_and_keeps_their_order(cache_root):
    backbone, _ = split_at_head(tiny_model())
    batch = np.concatenate([reference_batch(32)] * 3)[:7]  # an odd count: unequal parts
    batch[3] = 255.0 - batch[3]  # images that differ, so a reordering would show
    one_stream = build_engine(backbone, "openvino", batched=False)
    streams = build_engine(backbone, "openvino", reference_batch(32), batched=True)
    expected = np.asarray(backbone.predict_on_batch(batch))
    for count in (7, 1):  # a single image is one part
        assert streams(batch[:count]).shape == expected[:count].shape
        assert np.max(np.abs(streams(batch[:count]) - expected[:count])) <= streams.bound
        assert np.allclose(streams(batch[:count]), one_stream(batch[:count]), rtol=1e-5, atol=1e-6)


def test_the_conversion_is_stored_reused_and_rebuilt_when_damaged(cache_root, monkeypatch):
    model = tiny_model()
    path, key = onnx_entry(model)
    first = build_engine(model, "onnxruntime")
    assert path.is_relative_to(cache_root) and path.exists()
    stored = path.read_bytes()

    def no_export(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr("fracture.models.exporters.export_formats", no_export)
    batch = reference_batch(32)
    assert np.array_equal(build_engine(model, "onnxruntime")(batch), first(batch))  # the stored file, unconverted
    monkeypatch.undo()
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(cache_root))
    path.write_bytes(stored[: len(stored) // 2])
    with pytest.warns(DamagedCacheEntry):
        again = build_engine(model, "onnxruntime", batch)
    # A new, whole conversion (tf2onnx's node names differ between conversions, so not the same bytes).
    assert read_entry(path, key) is not None and np.array_equal(again(batch), first(batch))


def test_an_engine_off_by_one_percent_fails_its_parity_check():
    model = tiny_model()
    batch = reference_batch(32)
    off = Engine("onnxruntime", lambda images: np.asarray(model.predict_on_batch(images)) * 1.01, 0.0)
    with pytest.raises(EngineMismatch, match="differ from Keras'.*keras engine"):
        check_parity(off, model, batch)
    exact = check_parity(Engine("onnxruntime", model.predict_on_batch, 0.0), model, batch)
    assert exact.max_abs_difference == 0.0


def test_auto_follows_its_rule(cache_root, monkeypatch):
    model = tiny_model()
    if keras.backend.backend() == "tensorflow":
        assert choose_engine("auto", model) == "openvino"  # unbounded (a service): the fastest installed
        assert choose_engine("auto", model, images=engines.CONVERT_MIN_IMAGES) == "openvino"
    else:  # jax2onnx is too slow to convert by default
        assert choose_engine("auto", model) == "keras"
    assert choose_engine("auto", model, images=10) == "keras"  # too few images to pay for converting
    build_engine(model, "openvino")
    assert choose_engine("auto", model, images=10) == "openvino"  # already converted: nothing to pay
    monkeypatch.setattr(engines, "installed", lambda name: name in ("keras", "onnxruntime"))
    assert choose_engine("auto", model) == "onnxruntime"
    with pytest.raises(ConfigError, match="predict.runtime=openvino needs openvino and"):
        choose_engine("openvino", model, setting="predict.runtime")
    with pytest.raises(ConfigError, match="must be auto, keras, onnxruntime, openvino; got 'tensorrt'"):
        choose_engine("tensorrt", setting="predict.runtime")


def test_auto_keeps_a_mixed_precision_model_on_keras(cache_root):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = tiny_model()
        assert choose_engine("auto", model) == "keras"
        with pytest.raises(ConfigError, match="float32 models only"):
            choose_engine("onnxruntime", model)
    finally:
        keras.config.set_dtype_policy(previous)


def test_feature_cache_on_openvino_stores_the_features_keras_gives(cache_root, synthetic_root):
    from fracture import FractureDataModule

    model = tiny_model()
    backbone, _ = split_at_head(model)
    datamodule = FractureDataModule(synthetic_root, image_size=32, batch_size=4, group_by=None, augmentation=None)
    on_keras = FeatureCache(None, 1, LocalBackbone("keras")).features(backbone, datamodule, "val", 1)
    openvino = FeatureCache(None, 1, LocalBackbone("openvino"))
    features = openvino.features(backbone, datamodule, "val", 1)
    (report,) = openvino.extractions
    assert report["engine"] == "openvino" and report["parity_max_abs_difference"] <= report["parity_bound"]
    # Stored as float16: the engines' float32 outputs agree far inside one float16 step of the largest feature.
    step = 2.0**-10 * float(np.max(np.abs(on_keras.astype(np.float32))))
    assert np.max(np.abs(features.astype(np.float32) - on_keras.astype(np.float32))) <= step


def test_a_predictor_and_an_evaluator_run_on_the_engine_they_are_given(cache_root, tiny_checkpoint, synthetic_root):
    from fracture import FractureDataModule
    from fracture.evaluation.evaluate import Evaluator
    from fracture.inference.predictor import load_predictor

    images = list(reference_batch(64).astype(np.uint8))
    on_keras = load_predictor(tiny_checkpoint, runtime="keras")
    on_keras.warm_up()
    openvino = load_predictor(tiny_checkpoint, runtime="openvino")
    openvino.warm_up()
    assert on_keras.engine.name == "keras" and openvino.engine.name == "openvino"
    expected = [p.probability for p, _, _ in on_keras.predict_batch(images)]
    actual = [p.probability for p, _, _ in openvino.predict_batch(images)]
    # This checkpoint holds no calibration, so the probabilities are the network's, within the engine's bound.
    assert np.max(np.abs(np.subtract(actual, expected))) <= openvino.engine.bound
    assert openvino.explain(images[0]).heatmap is not None  # Grad-CAM still runs on the Keras model

    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename")
    by_engine = {}
    for name in ("keras", "onnxruntime"):
        evaluator = Evaluator(tiny_checkpoint, datamodule, runtime=name)
        by_engine[name] = evaluator.raw_predictions("val")[1]
        assert evaluator.engine(0).name == name
    bound = engines.PARITY_RELATIVE * np.max(by_engine["keras"])
    assert np.max(np.abs(by_engine["onnxruntime"] - by_engine["keras"])) <= bound


def test_the_benchmark_measures_every_installed_engine_and_openvino_on_one_stream(cache_root):
    from fracture.benchmarking.engines import BFLOAT16, ONE_STREAM, measure_engines
    from fracture.models.runtimes import openvino_has_bfloat16

    figures, conversion_s = measure_engines(tiny_model(), calls=1, repeats=1)
    expected = {"keras", "onnxruntime", "openvino", ONE_STREAM} | ({BFLOAT16} if openvino_has_bfloat16() else set())
    assert set(figures) == expected and conversion_s > 0
    for row in figures.values():  # each within the bound its precision has
        assert row["extraction_img_s"] > 0 and row["predict_warm_ms"] > 0
        assert row["backbone_parity_max_abs_difference"] <= row["backbone_parity_bound"]
        assert row["classifier_parity_max_abs_difference"] <= row["classifier_parity_bound"]
