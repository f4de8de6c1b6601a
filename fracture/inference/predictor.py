"""`Predictor`: load a checkpoint once, then label, score and explain new X-rays.

from fracture import load_predictor
predictor = load_predictor("outputs/train/runs/<time>/checkpoints/best_model.keras")
predictor.predict("xray.jpg")        # Prediction(label='fractured', probability=0.91, threshold=0.43, ...)
predictor.explain("xray.jpg")        # Explanation(prediction, heatmap, overlay)

An exported `model.onnx` (with its `model.json`, see `fracture.export`) loads the same way and predicts
through ONNX Runtime; Grad-CAM needs the `.keras` checkpoint.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from fracture.data.geometry import DEFAULT_LIMITS, ShapeLimits
from fracture.data.images import UnreadableImage, read_xray
from fracture.data.pipeline import resize_image
from fracture.errors import CheckpointError
from fracture.inference.overlay import prediction_panel
from fracture.models.backbones import LAST_CONV_LAYER
from fracture.models.calibration import Calibration
from fracture.models.checkpoint import load_checkpoint
from fracture.models.contract import read_contract
from fracture.models.engines import Engine, bfloat16_classifier_engine, choose_engine, engine_for
from fracture.models.gradcam import GradCAM
from fracture.models.runtimes import OnnxModel


@dataclass
class Prediction:
    """One input's result; `error` is set (and the rest None) when the input could not be read."""

    path: str
    label: str | None
    probability: float | None
    threshold: float
    error: str | None = None


@dataclass
class Explanation:
    prediction: Prediction
    heatmap: np.ndarray  # (h, w) in 0..1 at the explained layer's resolution
    overlay: Image.Image  # the labelled X-ray beside the blended heatmap


class Predictor:
    """Predicts P(positive class) with a loaded model, calibrated when the checkpoint holds a calibration, and
    labels it with the stored validation threshold.

    Args:
        model: the loaded Keras model, or an exported ONNX model.
        metadata: the checkpoint's fracture metadata (classes, image size, threshold).
        gradcam_layer: layer to explain; default: the backbone's last convolutional activation.
        max_pixels: refuse input files with more pixels than this, from their header (None: Pillow's guard).
        limits: refuse input files too small or too elongated to be a radiograph (None: any shape).
        runtime: the inference engine of a Keras model's predictions (`fracture.models.engines`): "keras",
            "onnxruntime", "openvino" or "auto", built from the second prediction on (or by `warm_up`) and
            checked against Keras when built. Grad-CAM always runs on the Keras model.
        expected_images: how many images this predictor will see (None: unbounded, as a service), for auto.
        precision: "float32", or "bfloat16" for the backbone on OpenVINO where the processor has bfloat16
            instructions (the head stays float32): faster, with probabilities slightly moved (judge it on your
            validation images against float32 first; see docs/engines.md). Grad-CAM stays float32.
    """

    def __init__(
        self,
        model: keras.Model | OnnxModel,
        metadata: dict,
        gradcam_layer: str | None = None,
        max_pixels: int | None = None,
        limits: ShapeLimits | None = DEFAULT_LIMITS,
        runtime: str = "auto",
        expected_images: int | None = None,
        precision: str = "float32",
    ):
        choose_engine(runtime, setting="runtime", precision=precision)  # a wrong setting fails before any work
        self.runtime, self.expected_images, self.precision = runtime, expected_images, precision
        self.model = model
        self.max_pixels = max_pixels
        self.limits = limits
        self.metadata = metadata
        self.image_size = int(metadata["image_size"])
        self.positive, self.negative = metadata["positive_class"], metadata["negative_class"]
        self.threshold = float(metadata.get("threshold", 0.5))
        # Fitted on validation by evaluation; the threshold is on the same (calibrated) scale.
        self.calibration = Calibration.from_dict(metadata.get("calibration"))
        if metadata.get("threshold_source") not in ("val", "site"):  # site: refit on a site's own images
            warnings.warn(
                f"this checkpoint has no validation threshold; using {self.threshold}. "
                "Run python -m fracture.eval on it to choose and store one.",
                stacklevel=2,
            )
        backbone = metadata.get("hparams", {}).get("backbone", "efficientnet_b3")
        self.gradcam_layer = gradcam_layer or LAST_CONV_LAYER[backbone]
        self._gradcam: GradCAM | None = None
        # From the second prediction on, a Keras model runs on its engine (Keras' frozen graph is about 1.4x
        # faster on a CPU than predict_on_batch; building an engine costs 3-25 s once, which a single cold
        # prediction should not pay). See fracture.models.engines.
        self._frozen: Engine | None = None
        self._predictions = 0

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB of any size -> float32 (S, S, 3) in 0..255, resized exactly as in training."""
        return np.asarray(resize_image(pixels, (self.image_size, self.image_size)), dtype=np.float32)

    def _label(self, path: str, probability: float) -> Prediction:
        label = self.positive if probability >= self.threshold else self.negative
        return Prediction(str(path), label, float(probability), self.threshold)

    def _read(self, image) -> tuple[str, np.ndarray]:
        if isinstance(image, np.ndarray):
            return "<array>", image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        return str(image), read_xray(image, self.max_pixels, self.limits)

    def predict_batch(
        self, images: list, explain: bool = False
    ) -> list[tuple[Prediction, np.ndarray | None, np.ndarray | None]]:
        """(prediction, original pixels, heatmap) per input, in one batched pass; unreadable inputs get error rows."""
        rows: list = [None] * len(images)
        readable, batch = [], []
        for index, image in enumerate(images):
            try:
                name, pixels = self._read(image)
            except UnreadableImage as error:
                rows[index] = (Prediction(str(image), None, None, self.threshold, str(error)), None, None)
                continue
            readable.append((index, name, pixels))
            batch.append(self.preprocess(pixels))
        if batch:
            stacked = np.stack(batch)
            if explain:
                heatmaps, probabilities = self.gradcam(stacked)
            else:
                heatmaps, probabilities = [None] * len(batch), self._forward(stacked)
            if self.calibration:
                probabilities = self.calibration(probabilities)
            for (index, name, pixels), probability, heatmap in zip(readable, probabilities, heatmaps, strict=True):
                rows[index] = (self._label(name, probability), pixels, heatmap)
        return rows

    def _forward(self, stacked: np.ndarray) -> np.ndarray:
        self._predictions += 1
        if self._frozen is None and self._predictions > 1:
            self._freeze()
        run = self._frozen or self.model.predict_on_batch
        return np.asarray(run(stacked)).reshape(-1)

    def _freeze(self) -> None:
        if not isinstance(self.model, keras.Model):
            return
        if self.precision == "bfloat16":  # the backbone only: see bfloat16_classifier_engine
            self._frozen = bfloat16_classifier_engine(self.model, self.runtime, setting="runtime")
        else:
            self._frozen = engine_for(self.model, self.runtime, self.expected_images, setting="runtime")

    @property
    def is_frozen(self) -> bool:
        """Whether predictions run through the model's engine (after `warm_up` or a first call)."""
        return self._frozen is not None

    @property
    def engine(self) -> Engine | None:
        """The engine predictions run on once built (None before, and for an exported model)."""
        return self._frozen

    def warm_up(self) -> None:
        """Freeze and compile now, so that the first real request runs at full speed (the service calls it)."""
        self._freeze()
        self._forward(np.zeros((1, self.image_size, self.image_size, 3), np.float32))

    def uncalibrated_probabilities(self, images: np.ndarray) -> np.ndarray:
        """The network's P(positive) for a float32 batch `(N, S, S, 3)` of pixels in 0..255 already resized to
        the model's size (as `FractureDataModule.predict_dataloader` gives them), before any calibration."""
        return self._forward(images)

    def predict(self, image) -> Prediction:
        """Label and probability for one path or uint8 array."""
        return self.predict_batch([image])[0][0]

    @property
    def can_explain(self) -> bool:
        """Grad-CAM needs the Keras model's gradients: true for `.keras` checkpoints, false for exports."""
        return isinstance(self.model, keras.Model)

    def gradcam(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.can_explain:
            raise CheckpointError(
                "Grad-CAM works on .keras checkpoints only; this predictor runs an exported model. "
                "Explain with the best_model.keras it was exported from."
            )
        if self._gradcam is None:
            self._gradcam = GradCAM(self.model, self.gradcam_layer)
        return self._gradcam(images)

    def overlay(
        self, prediction: Prediction, pixels: np.ndarray, heatmap: np.ndarray | None, boxes=None
    ) -> Image.Image:
        """The labelled X-ray beside its heat map; `boxes` (`fracture.evaluation.localisation.Boxes`, e.g.
        a radiologist's) are outlined on both."""
        positive = prediction.label == self.positive
        confidence = prediction.probability if positive else 1.0 - prediction.probability
        return prediction_panel(pixels, heatmap, prediction.label, confidence, positive, boxes)

    def explain(self, image) -> Explanation:
        """Prediction, Grad-CAM heatmap and the labelled overlay for one path or uint8 array."""
        prediction, pixels, heatmap = self.predict_batch([image], explain=True)[0]
        if prediction.error:
            raise UnreadableImage(f"{prediction.path}: {prediction.error}")
        return Explanation(prediction, heatmap, self.overlay(prediction, pixels, heatmap))


def load_predictor(
    ckpt_path: str | Path,
    gradcam_layer: str | None = None,
    max_pixels: int | None = None,
    limits: ShapeLimits | None = DEFAULT_LIMITS,
    runtime: str = "auto",
    expected_images: int | None = None,
    precision: str = "float32",
) -> Predictor:
    """Load a fracture checkpoint (`.keras`) or an exported `model.onnx` once, for repeated prediction; a
    `.keras` model runs on `runtime` at `precision` (see `Predictor`), an exported one on ONNX Runtime."""
    if Path(ckpt_path).suffix.lower() == ".onnx":
        onnx = OnnxModel(Path(ckpt_path).expanduser())
        return Predictor(onnx, read_contract(ckpt_path), gradcam_layer, max_pixels, limits)
    model, metadata = load_checkpoint(ckpt_path, compile=False)
    return Predictor(model, metadata, gradcam_layer, max_pixels, limits, runtime, expected_images, precision)
