"""FractureDataModule on real radiographs and synthetic images, on the active Keras backend."""

from pathlib import Path

import numpy as np
import pytest

from fracture import FractureDataModule
from fracture.errors import ConfigError

pytestmark = pytest.mark.backend


def test_real_xrays_become_float_batches_in_0_255(real_root):
    datamodule = FractureDataModule(real_root, image_size=64, batch_size=4, augmentation={}, group_by="filename")
    summary = datamodule.summary()
    assert summary["train"]["fractured"] > 0 and summary["val"]["not fractured"] > 0
    images, labels = next(iter(datamodule.train_dataloader()))
    assert tuple(images.shape) == (4, 64, 64, 3) and str(images.dtype) == "<dtype: 'float32'>"
    assert tuple(labels.shape) == (4, 1)
    pixels = images.numpy()
    # EfficientNet rescales inside the model, so pixels must stay on the 0..255 scale (not 0..1).
    assert pixels.min() >= 0.0 and pixels.max() <= 255.0 and pixels.max() > 50.0
    assert set(np.unique(labels.numpy())) <= {0.0, 1.0}


def test_grayscale_originals_are_decoded_to_three_channels(real_root):
    datamodule = FractureDataModule(real_root, image_size=64, batch_size=64, augmentation=None, group_by="filename")
    files = datamodule.files("val")
    images, _ = next(iter(datamodule.predict_dataloader("val")))
    originals = [i for i, path in enumerate(files.paths) if "-" not in path.rsplit("/", 1)[1]]
    assert originals, "the real subset should include un-rotated grayscale originals"
    for i in originals:
        image = images.numpy()[i]
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_prediction_order_matches_files_and_labels(synthetic_root):
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=5, group_by="filename")
    labels = np.concatenate([y.numpy().ravel() for _, y in datamodule.predict_dataloader("test")])
    np.testing.assert_array_equal(labels, datamodule.labels("test"))
    # Evaluation order is shuffled once, so that a first limited batch already holds both classes.
    assert len(set(datamodule.labels("val")[:5])) == 2


def test_augmentation_runs_on_training_batches_only(synthetic_root):
    plain = FractureDataModule(
        synthetic_root, image_size=64, batch_size=48, augmentation=None, seed=1, group_by="filename"
    )
    augmented = FractureDataModule(
        synthetic_root, image_size=64, batch_size=48, augmentation={}, seed=1, group_by="filename"
    )
    train_plain = next(iter(plain.train_dataloader()))[0].numpy()
    train_augmented = next(iter(augmented.train_dataloader()))[0].numpy()
    assert np.abs(np.sort(train_plain.ravel()) - np.sort(train_augmented.ravel())).mean() > 1.0
    val_a = next(iter(augmented.val_dataloader()))[0].numpy()
    val_b = next(iter(augmented.val_dataloader()))[0].numpy()
    np.testing.assert_array_equal(val_a, val_b)


@pytest.mark.parametrize("where", [True, "auto", "folder"])
def test_decoding_once_gives_the_same_batches_in_the_same_order(tmp_path, synthetic_root, where):
    where = str(tmp_path / "decoded") if where == "folder" else where
    options = dict(image_size=64, batch_size=16, augmentation=None, group_by=None)
    streamed = FractureDataModule(synthetic_root, decode_cache=False, **options).train_dataloader().repeat(2)
    datamodule = FractureDataModule(synthetic_root, decode_cache=where, **options)
    decoded = datamodule.train_dataloader().repeat(2)  # two epochs, reshuffled: the same shuffle as streaming
    for (a, label_a), (b, label_b) in zip(streamed, decoded, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(label_a.numpy(), label_b.numpy())
    if where not in (True, "auto"):
        assert len(list((tmp_path / "decoded").glob("decoded-*.npy"))) == 1  # the train split's entry
    else:  # these few images fit in memory
        assert datamodule.decoded_images("train").folder is None


def test_decoding_once_leaves_out_a_file_deleted_before_the_first_epoch(tmp_path, synthetic_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    datamodule = FractureDataModule(root, image_size=64, batch_size=8, decode_cache=True, group_by=None)
    gone = datamodule.files("train").paths[3]
    Path(gone).unlink()
    images = sum(len(x) for x, _ in datamodule.train_dataloader())
    assert images == (len(datamodule.files("train")) - 1) // 8 * 8  # full batches of the 47 that decode
    assert 3 not in datamodule.decoded_images("train").present


def test_root_without_val_is_split_by_groups(tmp_path, synthetic_root):
    import shutil

    shutil.copytree(synthetic_root / "train", tmp_path / "train")
    datamodule = FractureDataModule(tmp_path, image_size=64, val_fraction=0.25, group_by="filename")
    train, val = datamodule.files("train"), datamodule.files("val")
    assert len(train) + len(val) == 48
    assert 8 <= len(val) <= 16 and set(val.labels) == {0, 1}
    assert not set(train.groups) & set(val.groups)


def test_bad_settings_are_config_errors(synthetic_root):
    with pytest.raises(ConfigError, match="image_size"):
        FractureDataModule(synthetic_root, image_size=8, group_by="filename")
    with pytest.raises(ConfigError, match="val_fraction"):
        FractureDataModule(synthetic_root, val_fraction=1.5, group_by="filename")


def test_training_batches_are_full_and_evaluation_keeps_every_image(synthetic_root):
    # 48 training images
    datamodule = FractureDataModule(synthetic_root, image_size=48, batch_size=10, group_by="filename")
    sizes = [int(x.shape[0]) for x, _ in datamodule.train_dataloader()]
    assert sizes == [10, 10, 10, 10] and datamodule.num_batches("train", training=True) == 4
    val_sizes = [int(x.shape[0]) for x, _ in datamodule.val_dataloader()]
    assert val_sizes == [10, 6] and datamodule.num_batches("val") == 2


def test_padded_prediction_equals_plain_prediction(synthetic_root):
    from fracture import FractureClassifier
    from fracture.data.pipeline import predict_full_batches

    datamodule = FractureDataModule(synthetic_root, image_size=48, batch_size=10, group_by="filename")
    model = FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8).configure_model()
    padded = predict_full_batches(model.predict_on_batch, datamodule.predict_dataloader("val"), 10)
    plain = model.predict(datamodule.predict_dataloader("val"), verbose=0).ravel()
    assert padded.shape == (16,)
    np.testing.assert_allclose(padded, plain, atol=1e-6)


def test_an_image_of_the_target_size_is_not_resampled():
    """The shortcut must give what the resize gives: bilinear sampling at the pixel centres, antialiased."""
    import tensorflow as tf

    from fracture.data.pipeline import resize_image

    pixels = np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    resampled = tf.cast(tf.round(tf.image.resize(pixels, (40, 30), antialias=True)), tf.uint8).numpy()
    np.testing.assert_array_equal(resampled, pixels)
    np.testing.assert_array_equal(resize_image(pixels, (40, 30)).numpy(), pixels)
    smaller = resize_image(pixels, (20, 15)).numpy()  # other sizes still resize
    assert smaller.shape == (20, 15, 3) and smaller.dtype == np.uint8
    expected = tf.cast(tf.round(tf.image.resize(pixels, (20, 15), antialias=True)), tf.uint8)
    np.testing.assert_array_equal(smaller, expected)
    in_graph = tf.function(lambda image: resize_image(image, (40, 30)))  # as tf.data runs it: shape unknown
    traced = in_graph.get_concrete_function(tf.TensorSpec((None, None, 3), tf.uint8))
    np.testing.assert_array_equal(traced(tf.constant(pixels)).numpy(), pixels)
