"""FractureClassifier: the notebook's head, freezing, fine-tuning and a real training step."""

import keras
import numpy as np
import pytest

from fracture import FractureClassifier
from fracture.errors import ConfigError

HEAD = ["head_noise_in", "head_pool", "head_dense", "head_bn", "head_noise_out", "head_dropout", "head_output"]


@pytest.mark.backend
def test_tiny_classifier_takes_one_real_training_step():
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8)
    model = classifier.compile()
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = np.array([[0], [1]] * 4, dtype="float32")
    before = [w.copy() for w in model.get_weights()]
    logs = model.train_on_batch(images, labels, return_dict=True)
    assert set(logs) >= {"loss", "accuracy", "precision", "recall", "auc_approx"} and np.isfinite(logs["loss"])
    changed = [not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=False)]
    assert any(changed)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (8, 1) and ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.filterwarnings("ignore:model.freeze_base")
def test_effb3_has_the_notebook_head_and_a_frozen_base():
    classifier = FractureClassifier("efficientnet_b3", weights=None, image_size=32, freeze_base=True)
    model = classifier.configure_model()
    assert [layer.name for layer in model.layers[-7:]] == HEAD
    assert isinstance(model.get_layer("head_noise_in"), keras.layers.GaussianNoise)
    assert model.get_layer("head_dense").units == 512
    assert model.get_layer("head_output").dtype_policy.compute_dtype == "float32"
    assert model.get_layer("top_activation") is not None  # backbone layers are inline, for Grad-CAM
    assert all(not layer.trainable for layer in classifier.backbone_layers())
    assert all(model.get_layer(name).trainable for name in HEAD)


def test_freeze_default_follows_the_weights():
    assert FractureClassifier("efficientnet_b3", weights="imagenet").freeze_base is True
    assert FractureClassifier("efficientnet_b3", weights=None).freeze_base is False
    with pytest.warns(UserWarning, match="random weights"):
        FractureClassifier("efficientnet_b3", weights=None, freeze_base=True)


@pytest.mark.filterwarnings("ignore:model.freeze_base")
def test_unfreeze_top_blocks_keeps_batchnorm_frozen():
    classifier = FractureClassifier("efficientnet_b3", weights=None, image_size=32, freeze_base=True)
    assert classifier.unfreeze_top_blocks(2) == ["block7b", "top"]
    trainable = {layer.name for layer in classifier.backbone_layers() if layer.trainable}
    assert "top_conv" in trainable and "block7b_project_conv" in trainable
    assert not any(name.startswith("block7a") or name.startswith("block6") for name in trainable)
    assert not any(isinstance(classifier.model.get_layer(n), keras.layers.BatchNormalization) for n in trainable)
    assert not classifier.model.get_layer("top_bn").trainable
    with pytest.raises(ConfigError, match="can unfreeze 1 to"):
        classifier.unfreeze_top_blocks(1000)


@pytest.mark.filterwarnings("ignore:model.freeze_base")
def test_unfreezing_the_tiny_cnns_top_block_unfreezes_its_convolution():
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=32, freeze_base=True)
    assert classifier.unfreeze_top_blocks(1) == ["tiny_conv3"]
    trainable = [w.path for layer in classifier.backbone_layers() for w in layer.trainable_weights]
    assert trainable == ["tiny_conv3/kernel"]  # the block's BatchNormalization stays frozen


def test_config_mistakes_are_reported():
    with pytest.raises(ConfigError, match="unknown backbone"):
        FractureClassifier("resnet9000")
    with pytest.raises(ConfigError, match="unknown metric"):
        FractureClassifier("tiny_cnn", weights=None, metrics=["accuracy", "acuracy"])
    with pytest.raises(ConfigError, match="unknown optimizer"):
        FractureClassifier("tiny_cnn", weights=None, optimizer={"name": "adamm"}).compile()
