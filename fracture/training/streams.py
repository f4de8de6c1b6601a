"""What a training stage fits on: streams of images, or of cached backbone features, behind one interface.

`fit_data` decides which (`feature_cache.cache_decision`: a stage whose backbone trains cannot use cached
features), compiles the model that Keras will fit (the whole classifier, or its head over the features; the
head shares the whole model's layers, so training it trains the whole model's head) and returns `FitData`:
that model, the training stream and its steps per epoch, and the validation stream. Both kinds of stream
shuffle their images each epoch with the data pipeline's one order (`fracture.data.pipeline.epoch_order`), so
the cache changes the speed of an epoch, not which images it sees in which order.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import keras
import tensorflow as tf

from fracture.console import console
from fracture.models.classifier import FractureClassifier
from fracture.models.head import split_at_head
from fracture.training.feature_cache import FeatureCache, cache_decision


@dataclass
class BatchLimits:
    """How much of each split an epoch uses: at most `train` / `val` batches (None: all), or, with
    `overfit`, the same first `overfit` training batches for training and validation alike."""

    train: int | None = None
    val: int | None = None
    overfit: int = 0

    def sampled_setting(self, fast_dev_run: bool) -> str | None:
        """The setting that makes an epoch a sample of a few batches, or None."""
        if fast_dev_run:
            return "trainer.fast_dev_run"
        if self.overfit:
            return "trainer.overfit_batches"
        return "trainer.limit_train_batches" if self.train is not None else None


def limited(dataset: tf.data.Dataset, total_batches: int, limit: int | None) -> tuple[tf.data.Dataset, int]:
    """The dataset cut to `limit` batches, and how many batches that leaves."""
    if limit is None or limit >= total_batches:
        return dataset, total_batches
    return dataset.take(limit), limit


@contextlib.contextmanager
def ends_of_passes_expected():
    """Keras warns "Your input ran out of data; interrupting training" whenever a stream of unknown length
    ends. Training streams repeat forever (`fracture.training.resume.epoch_stream`), so the streams that end
    are validation's and evaluation's, and their length is unknown only where a file that fails to read
    mid-run is skipped (images streamed, not decoded ahead: `data.decode_cache=false`, `fast_dev_run`). Their
    end is the end of the pass, not an interruption, so the warning is kept off the console there."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        yield


@dataclass
class FitData:
    """What `keras.Model.fit` needs for one stage."""

    model: keras.Model  # the model Keras fits: the classifier's own, or its head over cached features
    train: tf.data.Dataset  # one epoch of training batches
    steps: int  # training batches per epoch
    val: tf.data.Dataset
    cached: bool  # whether the streams are cached features


def image_streams(model: keras.Model, datamodule, limits: BatchLimits) -> FitData:
    """The data module's image streams, with the batch limits or overfitting applied."""
    if limits.overfit:
        fixed = datamodule.predict_dataloader("train").take(limits.overfit).cache()
        return FitData(model, fixed, limits.overfit, fixed, cached=False)
    train, steps = limited(datamodule.train_dataloader(), datamodule.num_batches("train", training=True), limits.train)
    val, _ = limited(datamodule.val_dataloader(), datamodule.num_batches("val"), limits.val)
    return FitData(model, train, steps, val, cached=False)


def feature_streams(head: keras.Model, backbone: keras.Model, cache: FeatureCache, datamodule, limits) -> FitData:
    """Streams of `backbone`'s cached features of the data module's images, for `head` to fit."""
    train, val = cache.training_data(backbone, datamodule)
    train, steps = limited(train, datamodule.num_batches("train", training=True), limits.train)
    val, _ = limited(val, datamodule.num_batches("val"), limits.val)
    return FitData(head, train, steps, val, cached=True)


class StreamChooser:
    """Picks each stage's streams (`fit_data`) and keeps the classifier's backbone/head split between
    stages, so that a second cached stage reuses the first one's models and extracted features."""

    def __init__(self, setting: bool | str, cache: FeatureCache, limits: BatchLimits, fast_dev_run: bool = False):
        self.setting, self.cache, self.limits = setting, cache, limits
        self.sampled = limits.sampled_setting(fast_dev_run)
        self.used_cache = False
        self._split: tuple[keras.Model, keras.Model, keras.Model] | None = None  # (model, backbone, head)

    def fit_data(
        self, classifier: FractureClassifier, datamodule, stage, devices: int, compile_options: dict
    ) -> FitData:
        """Compile what this stage fits and return its streams. `stage` says whether its backbone trains."""
        model = classifier.compile(learning_rate=stage.learning_rate, **compile_options)
        use, why_not = cache_decision(self.setting, stage.trains_backbone(classifier), self.sampled, devices)
        if not use:
            if why_not and (self.setting is True or self.used_cache):
                console.print(f"feature cache off for stage {stage.name}: {why_not}.")
            return image_streams(model, datamodule, self.limits)
        if self._split is None or self._split[0] is not model:
            self._split = (model, *split_at_head(model))
        _, backbone, head = self._split
        classifier.compile(learning_rate=stage.learning_rate, model=head, **compile_options)
        self.used_cache = True
        return feature_streams(head, backbone, self.cache, datamodule, self.limits)
