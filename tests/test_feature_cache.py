"""The feature cache: same training as the uncached path, reuse and invalidation, views, and when it stays off."""

import tempfile

import keras
import numpy as np
import pytest

from fracture import FractureClassifier, FractureDataModule, Trainer
from fracture.models.head import split_at_head
from fracture.training import feature_cache as feature_cache_module
from fracture.training.callbacks import ModelCheckpoint
from fracture.training.feature_cache import FeatureCache, cache_decision, feature_batches

pytestmark = pytest.mark.backend


def frozen_tiny(**options):
    with pytest.warns(UserWarning, match="only the head will learn"):
        return FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16, freeze_base=True, **options)


def data(root, **options):
    return FractureDataModule(root, image_size=64, batch_size=8, group_by=None, **options)


# Plain SGD for the comparisons below: Adam divides each step by the gradient's own running size, so a weight
# whose true gradient is zero (the dense bias of a unit that is always active, which the BatchNormalization after
# it cancels) takes steps of +-lr driven by rounding noise alone, and two runs that differ in the last bit of a
# sum end up 1e-3 apart. SGD's steps are proportional to the gradient, so rounding-sized changes stay that size.
SGD = {"name": "sgd", "lr": 0.05}
# The most that rounding a float32 number to float16 changes it: 2**-11 of itself (half of float16's relative
# spacing) and, below float16's smallest normal number, half the spacing of its subnormals, 2**-25.
FLOAT16_UNIT_ROUNDOFF, FLOAT16_SUBNORMAL_ROUNDOFF = 2.0**-11, 2.0**-25
# The cached and uncached paths compute the same sums in another order (pooling in batches of 32 or of 8, one
# fused kernel or two), which changes a float32 result by a few units of 2**-24 relative. Through 18 SGD steps
# on O(1) weights that stays below 1e-6 (2e-7 seen); 1e-5 allows ten times more, and is still 20 times below what
# rounding the features to float16 does to the same run (about 2e-4).
FLOAT32_REORDERING = 1e-5


def train(root, tmp_path, feature_cache):
    """Three epochs of a frozen tiny CNN (SGD) without augmentation or GaussianNoise (the cached head draws its
    first noise on pooled features, so its draws differ: the next test compares their distribution); Dropout
    stays. Returns (weights, history, checkpoint path, trainer)."""
    keras.utils.set_random_seed(1)
    classifier = frozen_tiny(noise_stddev=0.0, optimizer=SGD)
    checkpoint = ModelCheckpoint(tempfile.mkdtemp(prefix="ckpt-", dir=tmp_path))
    trainer = Trainer(
        epochs=3, progress=False, feature_cache=feature_cache, feature_cache_dir=None, callbacks=[checkpoint]
    )
    trainer.fit(classifier, data(root, augmentation=None))
    weights = [keras.ops.convert_to_numpy(w) for w in classifier.model.weights]
    return weights, trainer.history, checkpoint.best_path, trainer


def distance(a, b):
    """The Euclidean distance between two models' weights, all of them taken as one vector."""
    return float(np.sqrt(sum(np.sum((x.astype(np.float64) - y) ** 2) for x, y in zip(a, b, strict=True))))


def change_cached_features(monkeypatch, change):
    """Make the feature cache hand `change(features, split)` to the head instead of the features it computed."""
    computed = FeatureCache.features

    def changed(self, backbone, datamodule, split, views):
        return change(np.array(computed(self, backbone, datamodule, split, views)), split)

    monkeypatch.setattr(FeatureCache, "features", changed)


def test_float16_entries_are_the_backbones_float32_features_rounded_to_nearest(monkeypatch, synthetic_root):
    datamodule = data(synthetic_root, augmentation=None)
    backbone, _ = split_at_head(frozen_tiny().configure_model())
    stored = FeatureCache(None).features(backbone, datamodule, "val", 1)
    monkeypatch.setattr(feature_cache_module, "FEATURE_DTYPE", np.float32)
    exact = FeatureCache(None).features(backbone, datamodule, "val", 1)
    assert stored.dtype == np.float16 and exact.dtype == np.float32
    np.testing.assert_array_equal(stored, exact.astype(np.float16))  # the only change is one rounding
    assert np.all(np.abs(stored - exact) <= FLOAT16_UNIT_ROUNDOFF * np.abs(exact) + FLOAT16_SUBNORMAL_ROUNDOFF)
    images = np.concatenate([images for images, _ in datamodule.predict_dataloader("val").as_numpy_iterator()])
    np.testing.assert_allclose(exact[0], keras.ops.convert_to_numpy(backbone(images)), rtol=1e-5, atol=1e-6)


def test_cached_and_uncached_runs_train_the_same_model(monkeypatch, tmp_path, synthetic_root):
    plain, plain_history, plain_best, _ = train(synthetic_root, tmp_path, feature_cache=False)

    # Stored as float32, the cached path does the same arithmetic as the uncached one, in another order.
    with monkeypatch.context() as patch:
        patch.setattr(feature_cache_module, "FEATURE_DTYPE", np.float32)
        exact, exact_history, exact_best, trainer = train(synthetic_root, tmp_path, feature_cache=True)
        assert trainer.used_feature_cache and trainer.features.extractions  # the head trained on cached features
        assert distance(exact, plain) < FLOAT32_REORDERING
        for before, after in zip(plain_history, exact_history, strict=True):
            assert after["train/loss"] == pytest.approx(before["train/loss"], rel=FLOAT32_REORDERING)
            assert after["val/loss"] == pytest.approx(before["val/loss"], rel=FLOAT32_REORDERING)

        # Stored as float16 (the default), each feature is rounded once, by at most 2**-11 of itself (the test
        # above). What that can do to training is measured in this process: the same run on float32 features
        # each moved by exactly 2**-11 of itself, up or down at random. Rounding moves each feature by 0 to that
        # much, so its effect is about half of this one (0.3 to 0.8 over 12 seeds); the bound allows twice it.
        signs = np.random.default_rng(0)
        change_cached_features(
            patch, lambda x, _: x * (1 + FLOAT16_UNIT_ROUNDOFF * signs.choice([-1, 1], x.shape)).astype(x.dtype)
        )
        moved, *_ = train(synthetic_root, tmp_path, feature_cache=True)
    float16_effect = 2 * distance(moved, plain)
    cached, _, cached_best, _ = train(synthetic_root, tmp_path, feature_cache=True)
    assert distance(cached, plain) <= float16_effect

    # Both checks can fail: training on cached features shuffled against their labels moves the weights far more.
    with monkeypatch.context() as patch:
        shuffle = np.random.default_rng(0).permutation
        change_cached_features(patch, lambda x, split: x[:, shuffle(x.shape[1])] if split == "train" else x)
        shuffled, *_ = train(synthetic_root, tmp_path, feature_cache=True)
    assert distance(shuffled, plain) > 10 * max(float16_effect, FLOAT32_REORDERING)

    # The checkpoint is the whole model, built like an uncached run's, and predicts like it.
    whole, reference = keras.saving.load_model(exact_best), keras.saving.load_model(plain_best)
    assert [layer.name for layer in whole.layers] == [layer.name for layer in reference.layers]
    assert [w.shape for w in whole.weights] == [w.shape for w in reference.weights]
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(whole.predict_on_batch(images), reference.predict_on_batch(images), atol=1e-5)
    assert keras.saving.load_model(cached_best).count_params() == reference.count_params()


def test_noise_on_pooled_features_spreads_like_noise_on_the_maps_before_pooling():
    model = frozen_tiny().configure_model()
    _, head = split_at_head(model)
    on_maps, pool = model.get_layer("head_noise_in"), model.get_layer("head_pool")
    maps_shape = on_maps.input.shape[1:]
    noisy_maps_pooled = keras.ops.convert_to_numpy(pool(on_maps(np.zeros((2000, *maps_shape)), training=True)))
    pooled = np.zeros((2000, maps_shape[-1]), "float32")
    noisy_pooled = keras.ops.convert_to_numpy(head.get_layer("pooled_noise")(pooled, training=True))
    # 128,000 draws each: the spreads agree to well under 1%; pooling 8x8 maps shrinks the spread 8 times.
    assert np.std(noisy_pooled) == pytest.approx(np.std(noisy_maps_pooled), rel=0.02)
    assert np.std(noisy_pooled) == pytest.approx(on_maps.stddev / 8, rel=0.02)
    assert abs(np.mean(noisy_pooled)) < 0.01 * on_maps.stddev


def test_the_head_trains_with_noise_batchnorm_and_dropout_on_cached_features(synthetic_root):
    keras.utils.set_random_seed(0)
    classifier = frozen_tiny()
    trainer = Trainer(epochs=1, progress=False, feature_cache=True, feature_cache_dir=None)
    initial_mean = keras.ops.convert_to_numpy(classifier.configure_model().get_layer("head_bn").moving_mean)
    trainer.fit(classifier, data(synthetic_root, augmentation={}))
    assert not np.allclose(keras.ops.convert_to_numpy(classifier.model.get_layer("head_bn").moving_mean), initial_mean)
    _, head = split_at_head(classifier.model)
    features = np.ones((2, *head.input_shape[1:]), "float32")
    first, second = (keras.ops.convert_to_numpy(head(features, training=True)) for _ in range(2))
    assert not np.allclose(first, second)  # GaussianNoise and Dropout draw anew
    np.testing.assert_allclose(head(features), head(features))  # and are off in inference


def test_entries_are_reused_and_any_change_makes_a_new_one(tmp_path, synthetic_root):
    cache = FeatureCache(tmp_path / "features", views=1)
    datamodule = data(synthetic_root)
    backbone, _ = split_at_head(frozen_tiny().configure_model())
    first = cache.features(backbone, datamodule, "val", 1)
    assert len(cache.extractions) == 1 and len(list((tmp_path / "features").glob("*.npy"))) == 1
    again = FeatureCache(tmp_path / "features").features(backbone, datamodule, "val", 1)  # a later run
    assert isinstance(again, np.memmap) and np.array_equal(first, again)
    assert len(cache.extractions) == 1

    kernel = backbone.get_layer("tiny_conv1").kernel
    kernel.assign(kernel * 1.5)  # other backbone weights
    cache.features(backbone, datamodule, "val", 1)
    changed = datamodule.files("val").paths[0]  # a file's content
    with open(changed, "ab") as file:
        file.write(b"\0")
    cache.features(backbone, datamodule, "val", 1)
    assert len(cache.extractions) == 3 and len(list((tmp_path / "features").glob("*.npy"))) == 3


def test_view_zero_is_the_plain_image_and_other_views_are_augmented(synthetic_root):
    datamodule = data(synthetic_root, augmentation={})
    backbone, _ = split_at_head(frozen_tiny().configure_model())
    cache = FeatureCache(None)
    plain = cache.features(backbone, datamodule, "val", 1)
    views = cache.features(backbone, datamodule, "val", 3)
    assert views.shape[:2] == (3, len(datamodule.files("val"))) and views.dtype == np.float16
    np.testing.assert_array_equal(views[0], plain[0])
    assert not np.allclose(views[1], views[0]) and not np.allclose(views[2], views[1])


def test_cached_batches_reshuffle_every_epoch_and_draw_every_view():
    count, labels = 40, np.arange(40) % 2
    features = np.broadcast_to(np.arange(count, dtype=np.float16)[None, :, None], (3, count, 1)).copy()
    features[1:] += 1000 * np.arange(1, 3, dtype=np.float16)[:, None, None]  # view v adds 1000 * v
    batches = list(feature_batches(features, labels, 8, training=True, seed=3).repeat(2))  # two epochs
    values = np.concatenate([np.asarray(x)[:, 0] for x, _ in batches]).astype(int)
    order, views = values % 1000, values // 1000
    np.testing.assert_array_equal(np.concatenate([np.asarray(y)[:, 0] for _, y in batches]), labels[order])
    assert sorted(order[:count]) == sorted(order[count:]) == list(range(count))  # each epoch: every image once
    assert not np.array_equal(order[:count], order[count:]) and set(views) == {0, 1, 2}
    evaluation = np.concatenate([np.asarray(x)[:, 0] for x, _ in feature_batches(features, labels, 8, training=False)])
    np.testing.assert_array_equal(evaluation, np.arange(count))  # view 0, in file order


def test_fine_tuning_runs_uncached_and_says_so(synthetic_root, capsys):
    classifier = frozen_tiny()
    trainer = Trainer(epochs=1, progress=False, feature_cache="auto", feature_cache_dir=None)
    datamodule = data(synthetic_root, augmentation=None)
    trainer.fit(classifier, datamodule)
    assert trainer.used_feature_cache
    classifier.unfreeze_top_blocks(1)
    before = keras.ops.convert_to_numpy(classifier.model.get_layer("tiny_conv3").kernel)
    trainer.fit(classifier, datamodule, epochs=1, stage="finetune")
    assert "feature cache off for stage finetune" in capsys.readouterr().err
    assert not np.allclose(keras.ops.convert_to_numpy(classifier.model.get_layer("tiny_conv3").kernel), before)


@pytest.mark.parametrize(
    "setting,trains_backbone,sampled,devices,expected",
    [
        ("auto", False, None, 1, True),
        (True, False, "trainer.limit_train_batches", 1, True),
        ("auto", False, "trainer.limit_train_batches", 1, False),
        ("auto", True, None, 1, False),
        (True, True, None, 1, False),
        (False, False, None, 1, False),
        ("auto", False, None, 2, False),
    ],
)
def test_when_the_cache_is_used(setting, trains_backbone, sampled, devices, expected):
    use, why_not = cache_decision(setting, trains_backbone, sampled, devices)
    assert use is expected and (bool(why_not) == (not use and setting is not False))


def test_a_head_that_does_not_start_by_pooling_cannot_train_on_cached_features():
    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten(name="head_flatten")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head_output")(flat), name="flat_head")
    with pytest.raises(ValueError, match="must start with GlobalAveragePooling2D"):
        split_at_head(model)
