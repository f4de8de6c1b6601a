"""`Trainer`: fit, validate, test and predict a `FractureClassifier` on a `FractureDataModule`.

Modelled on Lightning's Trainer: the loop's settings (epochs, batch limits, precision, XLA) live here, the
network lives in the classifier and the data in the data module.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from fracture.errors import ConfigError
from fracture.models.classifier import FractureClassifier
from fracture.training.callbacks import ModelCheckpoint
from fracture.training.metric_names import slash_logs
from fracture.training.progress import RichProgress

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def default_jit_compile() -> bool:
    """XLA where it pays: always on JAX (it has no other mode worth using), on TensorFlow only with a GPU.

    On a TensorFlow CPU, XLA measured about 15 times slower for EfficientNetB3 on this project's machines.
    """
    if keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


class Trainer:
    """Runs training and evaluation loops.

    Args:
        epochs: epochs to train in `fit`.
        limit_train_batches / limit_val_batches: use at most this many batches per epoch (None: all).
        fast_dev_run: one epoch of one training and one validation batch, to check that everything runs.
        overfit_batches: train and validate on the same first N training batches, without augmentation;
            the loss must fall, or the model or data is broken.
        jit_compile: True, False or "auto" (see `default_jit_compile`).
        precision: `float32`, `mixed_bfloat16` or `mixed_float16` (loss scaling is added by Keras).
        callbacks: Keras callbacks, e.g. from `fracture.training.callbacks`.
        progress: show rich progress bars.
    """

    def __init__(
        self,
        epochs: int = 10,
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
        fast_dev_run: bool = False,
        overfit_batches: int = 0,
        jit_compile: bool | str = "auto",
        precision: str = "float32",
        callbacks: list | tuple = (),
        progress: bool = True,
    ):
        if precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {PRECISIONS}, got {precision!r}.")
        if jit_compile not in (True, False, "auto"):
            raise ConfigError(f"trainer.jit_compile must be true, false or auto, got {jit_compile!r}.")
        if epochs < 1:
            raise ConfigError(f"trainer.epochs must be at least 1, got {epochs}.")
        if fast_dev_run:
            epochs, limit_train_batches, limit_val_batches = 1, 1, 1
        self.epochs = epochs
        self.limit_train_batches = limit_train_batches
        self.limit_val_batches = limit_val_batches
        self.fast_dev_run = fast_dev_run
        self.overfit_batches = overfit_batches
        self.jit_compile = default_jit_compile() if jit_compile == "auto" else jit_compile
        self.precision = precision
        self.callbacks = list(callbacks)
        self.progress = progress
        self.current_epoch = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ helpers
    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        return next((cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)), None)

    def build(self, classifier: FractureClassifier) -> keras.Model:
        """Build the classifier's model under this trainer's precision policy."""
        if classifier.model is None:
            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy(self.precision)
            try:
                classifier.configure_model()
            finally:
                keras.config.set_dtype_policy(previous)
        return classifier.model

    @staticmethod
    def _limited(dataset, total_batches: int, limit: int | None):
        """The dataset cut to `limit` batches, and how many batches that leaves."""
        if limit is None or limit >= total_batches:
            return dataset, total_batches
        return dataset.take(limit), limit

    def _batches(self, datamodule, split: str) -> int:
        return math.ceil(len(datamodule.files(split)) / datamodule.batch_size)

    def _training_data(self, datamodule):
        """(train dataset, train steps, val dataset) with the batch limits or overfitting applied."""
        if self.overfit_batches:
            fixed = datamodule.predict_dataloader("train").take(self.overfit_batches).cache()
            return fixed, self.overfit_batches, fixed
        train, steps = self._limited(
            datamodule.train_dataloader(), self._batches(datamodule, "train"), self.limit_train_batches
        )
        val, _ = self._limited(datamodule.val_dataloader(), self._batches(datamodule, "val"), self.limit_val_batches)
        return train, steps, val

    def checkpoint_metadata(self, classifier: FractureClassifier, datamodule) -> dict:
        """What a checkpoint needs to be used without its config: classes, input size, threshold, origin."""
        positive, negative = datamodule.class_names
        return {
            "format": "fracture-checkpoint/1",
            "positive_class": positive,
            "negative_class": negative,
            "image_size": classifier.image_size,
            "threshold": 0.5,
            "threshold_source": "default",
            "hparams": classifier.hparams(),
            "backend": keras.backend.backend(),
            "keras_version": keras.__version__,
            "precision": self.precision,
        }

    # ------------------------------------------------------------------ loops
    def fit(
        self,
        classifier: FractureClassifier,
        datamodule,
        epochs: int | None = None,
        learning_rate: float | None = None,
        stage: str = "",
    ) -> dict[str, float]:
        """Train for `epochs` more epochs (default `self.epochs`); returns the last epoch's metrics.

        Calling `fit` again continues the epoch count, which is how a fine-tuning stage follows a
        frozen-base stage. `learning_rate` overrides the classifier's optimizer rate for this stage.
        """
        datamodule.setup()  # fail on bad data before the slow model build
        self.build(classifier)
        model = classifier.compile(jit_compile=self.jit_compile, learning_rate=learning_rate)
        train, steps, val = self._training_data(datamodule)
        end_epoch = self.current_epoch + (epochs or self.epochs)
        if self.checkpoint_callback is not None:
            self.checkpoint_callback.metadata = self.checkpoint_metadata(classifier, datamodule)
        callbacks = list(self.callbacks)
        if self.progress:
            callbacks.append(RichProgress(steps, end_epoch, stage))
        history = model.fit(
            train,
            validation_data=val,
            epochs=end_epoch,
            initial_epoch=self.current_epoch,
            callbacks=callbacks,
            shuffle=False,
            verbose=0,  # the data module shuffles
        )
        epochs_run = len(history.epoch)
        for index in range(epochs_run):
            self.history.append({key: float(values[index]) for key, values in history.history.items()})
        self.current_epoch += epochs_run
        return slash_logs(self.history[-1]) if self.history else {}

    def _evaluate(self, classifier: FractureClassifier, dataset, prefix: str) -> dict[str, float]:
        model = self.build(classifier)
        if not model.compiled:
            classifier.compile(jit_compile=self.jit_compile)
        results = model.evaluate(dataset, verbose=0, return_dict=True)
        return {f"{prefix}/{key}": float(value) for key, value in results.items()}

    def validate(self, classifier: FractureClassifier, datamodule) -> dict[str, float]:
        """Metrics on the validation split, as `val/<name>`."""
        dataset, _ = self._limited(
            datamodule.val_dataloader(), self._batches(datamodule, "val"), self.limit_val_batches
        )
        return self._evaluate(classifier, dataset, "val")

    def test(self, classifier: FractureClassifier, datamodule) -> dict[str, float]:
        """Metrics on the test split, as `test/<name>`."""
        return self._evaluate(classifier, datamodule.test_dataloader(), "test")

    def predict(self, classifier: FractureClassifier, datamodule, split: str = "val") -> np.ndarray:
        """P(positive class) for every image of `split`, in file order."""
        model = self.build(classifier)
        return np.asarray(model.predict(datamodule.predict_dataloader(split), verbose=0)).reshape(-1)
