"""bfloat16 extraction (`trainer.extraction_precision=bfloat16`): asked for, it runs on OpenVINO where the
processor has bfloat16 instructions, within its own bound, in cache entries of its own; anywhere else it fails
with a clear error before any work."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fracture import FractureClassifier, Trainer
from fracture.data.reference_images import reference_batch
from fracture.errors import ConfigError
from fracture.models import engines
from fracture.models.engines import build_engine, choose_engine
from fracture.models.head import split_at_head
from fracture.models.runtimes import openvino_has_bfloat16
from fracture.training.extraction import LocalBackbone
from fracture.training.feature_cache import FeatureCache, cache_key, key_name

pytestmark = pytest.mark.backend
needs_bfloat16 = pytest.mark.skipif(
    not openvino_has_bfloat16(), reason="this processor has no bfloat16 instructions (AVX512_BF16 or AMX)"
)


def tiny_backbone():
    keras.utils.set_random_seed(3)
    model = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8).configure_model()
    return split_at_head(model)[0]


def test_bfloat16_is_chosen_only_on_openvino_and_a_processor_that_has_it(monkeypatch):
    setting = "trainer.extraction_engine"
    monkeypatch.setattr("fracture.models.runtimes.openvino_has_bfloat16", lambda: True)
    assert choose_engine("auto", images=10, setting=setting, precision="bfloat16") == "openvino"  # even a small job
    assert choose_engine("openvino", setting=setting, precision="bfloat16") == "openvino"
    with pytest.raises(ConfigError, match="openvino engine only; set trainer.extraction_engine=openvino"):
        choose_engine("keras", setting=setting, precision="bfloat16")
    with pytest.raises(ConfigError, match="must be one of .*got 'float16'"):
        choose_engine("auto", setting=setting, precision="float16")
    monkeypatch.setattr("fracture.models.runtimes.openvino_has_bfloat16", lambda: False)
    with pytest.raises(ConfigError, match="no bfloat16 instructions .*use float32"):
        choose_engine("auto", setting=setting, precision="bfloat16")
    # The trainer refuses it when built, before any image is read.
    with pytest.raises(ConfigError, match="no bfloat16 instructions"):
        Trainer(extraction_precision="bfloat16", progress=False)
    with pytest.raises(ConfigError, match="trainer.extraction_precision must be one of .*got 'int8'"):
        Trainer(extraction_precision="int8", progress=False)
    monkeypatch.setattr(engines, "installed", lambda name: name == "keras")
    with pytest.raises(ConfigError, match="pip install 'fracture\\[export\\]'"):
        choose_engine("auto", setting=setting, precision="bfloat16")


def test_the_precision_is_part_of_the_cache_key(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"not read as an image here, only hashed")
    backbone = tiny_backbone()
    keys = [cache_key([str(image)], 32, 1, None, 0, backbone, precision) for precision in engines.PRECISIONS]
    assert keys[0]["extraction_precision"] == "float32" and key_name(keys[0]) != key_name(keys[1])


@needs_bfloat16
def test_openvino_in_bfloat16_rounds_more_than_float32_and_stays_within_its_bound(cache_root):
    backbone = tiny_backbone()
    batch = reference_batch(32)
    float32 = build_engine(backbone, "openvino", batch, batched=True)
    bfloat16 = build_engine(backbone, "openvino", batch, batched=True, precision="bfloat16")
    largest = float(np.max(np.abs(backbone.predict_on_batch(batch))))
    assert bfloat16.precision == "bfloat16" and bfloat16.bound == engines.PARITY_RELATIVE_BFLOAT16 * largest
    # It really ran in bfloat16: past float32's bound (8 significant bits against float32's 24), within its own.
    assert float32.max_abs_difference <= float32.bound < bfloat16.max_abs_difference <= bfloat16.bound


@needs_bfloat16
def test_the_feature_cache_extracts_in_bfloat16_into_an_entry_of_its_own(cache_root, synthetic_root, tmp_path):
    from fracture import FractureDataModule

    backbone = tiny_backbone()
    datamodule = FractureDataModule(synthetic_root, image_size=32, batch_size=4, group_by=None, augmentation=None)
    folder = tmp_path / "features"
    float32 = FeatureCache(folder, 1, LocalBackbone("openvino")).features(backbone, datamodule, "val", 1)
    cache = FeatureCache(folder, 1, LocalBackbone("auto", "bfloat16"))
    features = cache.features(backbone, datamodule, "val", 1)
    (report,) = cache.extractions  # extracted, not float32's entry reused
    assert report["engine"] == "openvino" and report["precision"] == "bfloat16"
    assert len(list(folder.glob("*.npy"))) == 2
    largest = float(np.max(np.abs(float32.astype(np.float32))))
    difference = np.max(np.abs(features.astype(np.float32) - float32.astype(np.float32)))
    assert 0 < difference <= engines.PARITY_RELATIVE_BFLOAT16 * largest


@needs_bfloat16
def test_the_benchmark_trains_the_recipe_on_bfloat16_features_and_scores_it_in_float32(tmp_path, synthetic_root):
    import time
    from dataclasses import asdict

    from conftest import compose_config

    from fracture import FractureDataModule
    from fracture.bench import settings_from
    from fracture.benchmarking.workers import measure_bfloat16_recipe, wants_bfloat16_recipe

    assert wants_bfloat16_recipe("auto") and not wants_bfloat16_recipe(False)
    settings, _ = settings_from(compose_config(tmp_path, "bench.weights=null", name="bench"))
    spec = {**asdict(settings), "epochs": 2, "out_dir": str(tmp_path / "worker"), "process_start": time.time()}

    def data():
        return FractureDataModule(synthetic_root, image_size=32, batch_size=4, group_by=None, augmentation={})

    def classifier():
        return FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8, freeze_base=True)

    figures = measure_bfloat16_recipe(spec, data, classifier)
    train, val = figures["extractions"]
    assert train["precision"] == val["precision"] == "bfloat16" and train["engine"] == "openvino"
    assert train["images"] == 2 * len(data().labels("train"))  # two views, as the float32 recipe
    assert len(figures["epoch_wall_s"]) == 2 and figures["recipe_s"] > sum(figures["epoch_wall_s"])
    # The AUROC is the best checkpoint's on the validation images, predicted in float32.
    best = keras.saving.load_model(figures["checkpoint"])
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in data().predict_dataloader("val")), strict=True)
    scores = np.concatenate([np.asarray(best.predict_on_batch(batch)).reshape(-1) for batch in images])
    assert figures["val_auroc"] == pytest.approx(roc_auc_score(np.concatenate(labels), scores), abs=1e-3)
    # Its own checkpoints, features and cache root: nothing of the float32 recipe's is reused or overwritten.
    worker = tmp_path / "worker"
    assert {path.name for path in worker.iterdir()} >= {"fracture_checkpoints_bfloat16", "features_bfloat16"}
    assert (worker / "cache-bfloat16").is_dir()


def test_the_bfloat16_recipe_worker_measures_nothing_where_the_setting_leaves_it_out():
    from fracture.benchmarking.workers import TASKS

    assert TASKS["fracture_bfloat16"]({"bfloat16_recipe": False}) == {}
