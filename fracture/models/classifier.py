"""`FractureClassifier`: the network, its optimiser and metrics, in the spirit of a LightningModule.

The classifier holds plain settings until `configure_model()` builds the Keras model, so the `Trainer` can
choose the precision policy and device placement first. The built model is a plain functional
`keras.Model` of built-in layers: its `.keras` file loads anywhere with `keras.saving.load_model`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import keras

from fracture.errors import ConfigError
from fracture.models.backbones import BACKBONES
from fracture.models.head import HEAD_PREFIX, notebook_head

METRIC_FACTORIES = {
    "accuracy": lambda: keras.metrics.BinaryAccuracy(name="accuracy"),
    "precision": lambda: keras.metrics.Precision(name="precision"),
    "recall": lambda: keras.metrics.Recall(name="recall"),
    # Keras' AUC, summed over 200 fixed thresholds while batches stream by: an approximation, named as one so
    # that it is never mistaken for evaluation's exact `auroc` (scikit-learn, on the best checkpoint).
    "auc_approx": lambda: keras.metrics.AUC(name="auc_approx"),
}
# A fine-tuning "block": EfficientNet's block1a..block7b and its top conv, or a tiny CNN conv block.
BLOCK_NAME = re.compile(r"^(block\d+[a-z]|top|tiny_conv\d+)(?:_|$)")


@dataclass
class OptimizerSpec:
    """Which Keras optimiser to use: `name` is any `keras.optimizers.get` identifier (adam, adamw, sgd, ...)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float | None = None

    def __post_init__(self):
        if not self.lr > 0:
            raise ConfigError(f"model.optimizer.lr must be above 0, got {self.lr}.")

    def build(self, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
        learning_rate = self.lr if learning_rate is None else learning_rate
        if not learning_rate > 0:  # 0 would silently train nothing; it used to fall back to `lr`
            raise ConfigError(f"the learning rate must be above 0, got {learning_rate}.")
        config = {"learning_rate": learning_rate}
        if self.weight_decay is not None:
            config["weight_decay"] = self.weight_decay
        try:
            return keras.optimizers.get({"class_name": self.name, "config": config})
        except ValueError as error:
            raise ConfigError(f"unknown optimizer {self.name!r} in model.optimizer.name: {error}") from error


class FractureClassifier:
    """A backbone with the notebook's head and a sigmoid output: P(fractured).

    Args:
        backbone: `"efficientnet_b3"` or `"tiny_cnn"`.
        weights: `"imagenet"`, None (random) or a local weights file; see `backbones.efficientnet_b3`.
        image_size: side of the square input images.
        freeze_base: train the head only. None means: freeze when the backbone is pretrained.
        dense_units: width of the head's Dense layer.
        noise_stddev: standard deviation of the head's two GaussianNoise layers.
        dropout: the head's dropout rate.
        optimizer: an `OptimizerSpec` or a dict of its fields.
        metrics: names from accuracy, precision, recall, auc_approx.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_b3",
        weights: str | None = "imagenet",
        image_size: int = 224,
        freeze_base: bool | None = None,
        dense_units: int = 512,
        noise_stddev: float = 0.25,
        dropout: float = 0.25,
        optimizer: OptimizerSpec | dict | None = None,
        metrics: tuple[str, ...] | list[str] = ("accuracy", "precision", "recall", "auc_approx"),
    ):
        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}.")
        if noise_stddev < 0 or dense_units < 1:
            raise ConfigError(
                f"model.noise_stddev must be at least 0 and model.dense_units at least 1, got {noise_stddev} "
                f"and {dense_units}."
            )
        unknown = sorted(set(metrics) - set(METRIC_FACTORIES))
        if unknown:
            raise ConfigError(f"unknown metric(s) {unknown} in model.metrics; choose from {sorted(METRIC_FACTORIES)}.")
        if weights in ("null", "none", "None", ""):
            weights = None
        pretrained = weights is not None and backbone == "efficientnet_b3"
        if freeze_base is None:
            freeze_base = pretrained
        elif freeze_base and not pretrained:
            warnings.warn("model.freeze_base=true with random weights: only the head will learn.", stacklevel=2)
        self.backbone = backbone
        self.weights = weights
        self.image_size = int(image_size)
        self.freeze_base = freeze_base
        self.head_options = dict(dense_units=dense_units, noise_stddev=noise_stddev, dropout=dropout)
        self.optimizer = optimizer if isinstance(optimizer, OptimizerSpec) else OptimizerSpec(**(optimizer or {}))
        self.metric_names = list(metrics)
        self.model: keras.Model | None = None

    def configure_model(self) -> keras.Model:
        """Build the Keras model once, under the dtype policy and distribution scope in force."""
        if self.model is None:
            inputs = keras.Input((self.image_size, self.image_size, 3), name="image")
            features = BACKBONES[self.backbone](inputs, weights=self.weights)
            self.model = keras.Model(inputs, notebook_head(features, **self.head_options), name="fracture_classifier")
            self.set_base_trainable(not self.freeze_base)
        return self.model

    def backbone_layers(self) -> list[keras.layers.Layer]:
        return [
            layer
            for layer in self.configure_model().layers
            if not layer.name.startswith(HEAD_PREFIX) and not isinstance(layer, keras.layers.InputLayer)
        ]

    def set_base_trainable(self, trainable: bool) -> None:
        for layer in self.backbone_layers():
            layer.trainable = trainable

    def unfreeze_top_blocks(self, blocks: int) -> list[str]:
        """Make the top `blocks` backbone blocks trainable, keeping every BatchNormalization frozen.

        Frozen BatchNormalization layers run in inference mode, so their ImageNet statistics are not
        overwritten by small fine-tuning batches. Returns the names of the unfrozen blocks. Recompile after.
        """
        layers = self.backbone_layers()
        order = list(dict.fromkeys(m.group(1) for layer in layers if (m := BLOCK_NAME.match(layer.name))))
        if blocks < 1 or blocks > len(order):
            raise ConfigError(f"can unfreeze 1 to {len(order)} blocks of {self.backbone}, got {blocks}.")
        chosen = set(order[-blocks:])
        for layer in layers:
            match = BLOCK_NAME.match(layer.name)
            in_chosen = bool(match) and match.group(1) in chosen
            layer.trainable = in_chosen and not isinstance(layer, keras.layers.BatchNormalization)
        return order[-blocks:]

    def compile(
        self,
        jit_compile: bool = False,
        learning_rate: float | None = None,
        model: keras.Model | None = None,
        run_eagerly: bool = False,
    ) -> keras.Model:
        """Compile with binary cross-entropy, the configured optimiser and metrics: the whole model, or `model`
        (a part sharing its layers, such as the head that the feature cache trains). `run_eagerly`: steps as
        Python calls, not traced graphs (TensorFlow only; quicker for a single batch)."""
        model = model or self.configure_model()
        model.compile(
            optimizer=self.optimizer.build(learning_rate),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[METRIC_FACTORIES[name]() for name in self.metric_names],
            jit_compile=jit_compile,
            run_eagerly=run_eagerly,
        )
        return model

    def hparams(self) -> dict:
        """Plain settings, stored in checkpoint metadata."""
        return dict(
            backbone=self.backbone,
            weights=self.weights,
            image_size=self.image_size,
            freeze_base=self.freeze_base,
            **self.head_options,
            optimizer=vars(self.optimizer),
        )
