"""The baseline: a plain Keras 3 port of the notebook, written the way the Keras documentation shows it.

`keras.utils.image_dataset_from_directory` reads the folders, the augmentation layers sit at the start of the
model, EfficientNetB3 is frozen under the notebook's head, and `model.fit` trains with `ModelCheckpoint` and
`ReduceLROnPlateau`. Prediction follows the "image classification from scratch" example: `load_img`,
`img_to_array`, `model.predict`. Nothing of fracture is used, so that the benchmark compares against what a
user would write without it.
"""

from __future__ import annotations

from pathlib import Path

import keras

# The notebook's settings.
BATCH_SIZE = 16
LEARNING_RATE = 1e-3
NOISE_STDDEV = 0.25
DROPOUT = 0.25
DENSE_UNITS = 512
# The file names that `image_dataset_from_directory` lists; the port sees no other file.
KERAS_IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def datasets(root: str | Path, image_size: int, seed: int = 42):
    """(train, val) as `image_dataset_from_directory` gives them. Classes are numbered alphabetically, so label
    1 is `not fractured`: the model outputs P(not fractured), which leaves AUROC unchanged."""
    options = dict(label_mode="binary", image_size=(image_size, image_size), batch_size=BATCH_SIZE, seed=seed)
    train = keras.utils.image_dataset_from_directory(Path(root) / "train", shuffle=True, **options)
    val = keras.utils.image_dataset_from_directory(Path(root) / "val", shuffle=False, **options)
    return train, val


def build_model(image_size: int, weights: str | None) -> keras.Model:
    """Augmentation layers, a frozen EfficientNetB3 and the notebook's head, compiled as the notebook does."""
    augmentation = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(20 / 360), keras.layers.RandomZoom(0.2)],
        name="augmentation",
    )
    base = keras.applications.EfficientNetB3(include_top=False, weights=weights)
    base.trainable = False
    inputs = keras.Input((image_size, image_size, 3))
    x = base(augmentation(inputs))
    x = keras.layers.GaussianNoise(NOISE_STDDEV)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(DENSE_UNITS, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GaussianNoise(NOISE_STDDEV)(x)
    x = keras.layers.Dropout(DROPOUT)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.Precision(), keras.metrics.Recall(), keras.metrics.AUC(name="auc")],
    )
    return model


def callbacks(checkpoint: str | Path) -> list[keras.callbacks.Callback]:
    """The notebook's: keep the best model, lower the learning rate when validation stalls."""
    return [
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_auc", mode="max", save_best_only=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2),
    ]


def predict_image(model: keras.Model, path: str | Path, image_size: int) -> float:
    """P(class 1) for one image file, as in the Keras example."""
    image = keras.utils.load_img(path, target_size=(image_size, image_size))
    batch = keras.ops.expand_dims(keras.utils.img_to_array(image), 0)
    return float(model.predict(batch, verbose=0)[0][0])
