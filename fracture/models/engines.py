"""Inference engines: a model's inference pass on Keras, ONNX Runtime or OpenVINO, checked to agree with Keras.

A frozen backbone (the feature cache) and a trained classifier (prediction, evaluation, the service) are pure
inference, so they may run on whichever engine is fastest here, as long as the outputs are the same:

- `keras`: the model itself, its weights frozen into the graph on TensorFlow (`fracture.models.frozen`);
- `onnxruntime`, `openvino`: the model converted to ONNX once (Keras' own export: tf2onnx on TensorFlow,
  jax2onnx on JAX), stored under the cache root keyed by the model's configuration and weights, and run by
  that engine in float32 (`pip install 'fracture[export]'` brings both).

Every engine other than Keras is checked when built: its outputs on a parity batch must stay within
`PARITY_RELATIVE` of the largest Keras output, or the build fails with `EngineMismatch` (see `check_parity`).

OpenVINO may also run in bfloat16 (`precision="bfloat16"`, by request: `trainer.extraction_precision` for the
feature cache's backbone, `serve.precision` and `predict.precision` for a classifier's backbone, its head
staying float32: `bfloat16_classifier_engine`) on processors with bfloat16 instructions (AVX512_BF16 or AMX),
where it is about twice as fast; its outputs then differ from Keras' by about 1% (see
`PARITY_RELATIVE_BFLOAT16`).

`auto` picks OpenVINO, else ONNX Runtime, else Keras, with three exceptions where converting costs more than it
saves: a model whose precision policy is not float32 (the converted models are float32) stays on Keras; and
so, when no converted model is stored yet, does a model on JAX (jax2onnx took 2.5 minutes for EfficientNetB3)
and a job of fewer than `CONVERT_MIN_IMAGES` images. Measured side by side on a 2-core AMD EPYC for
EfficientNetB3 at 224 px (`python -m fracture.bench`, 2026-12-02): converting the backbone and the classifier
took 51 s once; batches of 32 ran at 37.0 img/s on Keras' frozen graph, 37.7 on ONNX Runtime and 46.6 on
OpenVINO; one image took 54.3, 24.8 and 20.6 ms.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from fracture.cache_entry import read_entry, write_entry
from fracture.errors import ConfigError, FractureError
from fracture.io import cache_dir
from fracture.models.digest import model_digest

ENGINES = ("keras", "onnxruntime", "openvino")
AUTO_ORDER = ("openvino", "onnxruntime")  # fastest first, as measured (see the module)
CONVERTERS = {"tensorflow": "tf2onnx", "jax": "jax2onnx"}  # Keras' ONNX export on each backend
CONVERT_MIN_IMAGES = 2000  # about where 25 s of conversion is won back on batches (4 ms an image)
# An engine's outputs may differ from Keras' by at most this fraction of the largest Keras output: 2^-10,
# float16's relative spacing, so an engine moves a cached float16 feature by at most about one step. float32
# engines that reorder sums differ by about 5e-7 of the largest output (measured); bfloat16 (8 bits of
# mantissa) by about 1e-2, which fails (it has its own bound, `PARITY_RELATIVE_BFLOAT16`).
PARITY_RELATIVE = 2.0**-10
PRECISIONS = ("float32", "bfloat16")
# bfloat16 keeps 8 significant bits (relative rounding 2^-8, 0.4%); through EfficientNetB3 the backbone's
# features moved by 0.9% of the largest (measured). This bound is not a rounding bound but a guard against a
# broken conversion (wrong weights or layout move outputs by about their own size): whether the rounding costs
# the head anything is for the benchmark to show, which trains it on both precisions' features side by side.
PARITY_RELATIVE_BFLOAT16 = 2.0**-4
ONNX_FORMAT = "fracture-onnx/1"


class EngineMismatch(FractureError):
    """An engine's outputs differ from Keras' by more than the parity bound."""


@dataclass
class Engine:
    """A built engine: `run` maps a float32 batch to the model's outputs."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    setup_s: float  # converting, compiling or freezing, once
    max_abs_difference: float | None = None  # against Keras on the parity batch; None for Keras itself
    bound: float | None = None
    precision: str = "float32"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(batch))

    @property
    def label(self) -> str:
        """The engine's name, with its precision when that is not float32 ("openvino bfloat16")."""
        return self.name if self.precision == "float32" else f"{self.name} {self.precision}"

    def report(self) -> dict:
        return {
            "engine": self.name,
            "engine_setup_s": self.setup_s,
            "parity_max_abs_difference": self.max_abs_difference,
            "parity_bound": self.bound,
            "precision": self.precision,
        }


def installed(name: str) -> bool:
    """Whether engine `name` and the converter to ONNX for this Keras backend can be imported."""
    if name == "keras":
        return True
    converter = CONVERTERS.get(keras.backend.backend())
    return converter is not None and all(importlib.util.find_spec(module) for module in (name, converter))


def choose_engine(
    requested: str, model: keras.Model | None = None, images: int | None = None, setting="", precision="float32"
) -> str:
    """The engine to build for `requested` (auto, keras, onnxruntime or openvino), for a job of `images`
    images (None: unbounded, as a service's), at `precision` (`PRECISIONS`). `setting` names the config key in
    errors."""
    setting = setting or "the engine"
    if requested not in ("auto", *ENGINES):
        raise ConfigError(f"{setting} must be auto, {', '.join(ENGINES)}; got {requested!r}.")
    if precision not in PRECISIONS:
        raise ConfigError(f"the precision of {setting} must be one of {PRECISIONS}, got {precision!r}.")
    float32 = keras.config.dtype_policy().name == "float32" and (model is None or model.dtype_policy.name == "float32")
    if precision == "bfloat16":
        return check_bfloat16(requested, setting, float32)
    if requested != "auto":
        if requested != "keras" and not installed(requested):
            converter = CONVERTERS.get(keras.backend.backend(), "a Keras backend with an ONNX export")
            raise ConfigError(
                f"{setting}={requested} needs {requested} and {converter}: pip install 'fracture[export]'."
            )
        if requested != "keras" and not float32:
            raise ConfigError(
                f"{setting}={requested} runs float32 models only; use keras with a mixed precision policy."
            )
        return requested
    if not float32:
        return "keras"
    # Converting costs more than it saves on JAX (jax2onnx took 2.5 minutes for EfficientNetB3 here, and JAX's
    # predict is already one compiled program) and for a small job, unless the conversion is already stored.
    on_jax = keras.backend.backend() != "tensorflow"
    small = images is not None and images < CONVERT_MIN_IMAGES
    if (on_jax or small) and not (model is not None and onnx_entry(model)[0].exists()):
        return "keras"
    return next((name for name in AUTO_ORDER if installed(name)), "keras")


def bfloat16_available() -> bool:
    """Whether OpenVINO is installed and runs bfloat16 on this processor."""
    from fracture.models.runtimes import openvino_has_bfloat16

    return installed("openvino") and openvino_has_bfloat16()


def check_bfloat16(requested: str, setting: str, float32_model: bool) -> str:
    """ "openvino", if it can run bfloat16 here for `requested` (auto or openvino) and a float32 model; else a
    `ConfigError`."""
    if not float32_model:
        raise ConfigError("a bfloat16 engine runs float32 models only; drop the mixed precision policy.")
    if requested not in ("auto", "openvino"):
        raise ConfigError(f"bfloat16 runs on the openvino engine only; set {setting}=openvino (or auto).")
    if not installed("openvino"):
        raise ConfigError(f"bfloat16 runs on OpenVINO: pip install 'fracture[export]' (asked for by {setting}).")
    from fracture.models.runtimes import openvino_has_bfloat16

    if not openvino_has_bfloat16():
        raise ConfigError(
            "this processor has no bfloat16 instructions (AVX512_BF16 or AMX), so OpenVINO would run float32 "
            "anyway: use float32."
        )
    return "openvino"


def onnx_entry(model: keras.Model) -> tuple[Path, dict]:
    """(path, key) of `model`'s stored ONNX conversion under the cache root."""
    key = {"format": ONNX_FORMAT, "model": model_digest(model), "backend": keras.backend.backend()}
    return cache_dir("engines") / key["model"][:32] / "model.onnx", key


def onnx_model(model: keras.Model) -> Path:
    """`model` converted to ONNX: the stored conversion when it passes its check, else a new one, stored."""
    from fracture.models.exporters import export_formats

    path, key = onnx_entry(model)
    if read_entry(path, key) is not None:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as folder, write_entry(path, key) as staging:
        exported = export_formats(model, ["onnx"], folder)["onnx"]
        if len(list(Path(folder).iterdir())) > 1:  # jax2onnx keeps large weights in a file beside it: join them
            import onnx

            onnx.save_model(onnx.load(str(exported)), str(staging))
        else:
            shutil.move(exported, staging)
    return path


def build_engine(
    model: keras.Model,
    name: str,
    parity_batch: np.ndarray | None = None,
    batched: bool = False,
    precision: str = "float32",
) -> Engine:
    """`name` (not auto: see `choose_engine`) built for `model`, checked on `parity_batch` when given; `batched`:
    for a job of whole batches rather than one image at a time (OpenVINO's streams, `openvino_runner`);
    `precision`: bfloat16 on OpenVINO only (see `check_bfloat16`)."""
    began = time.perf_counter()
    if name == "keras":
        from fracture.models.frozen import frozen_inference

        return Engine(name, frozen_inference(model), time.perf_counter() - began)
    from fracture.models.runtimes import onnx_runner, openvino_runner

    path = onnx_model(model)
    if name == "openvino":
        runner = openvino_runner(path, "bf16" if precision == "bfloat16" else "f32", batched)
    else:
        runner = onnx_runner(path)
    engine = Engine(name, runner, time.perf_counter() - began, precision=precision)
    if parity_batch is not None:
        check_parity(engine, model, parity_batch)
    return engine


def engine_for(
    model: keras.Model,
    requested: str,
    images: int | None = None,
    setting: str = "",
    batched: bool = False,
    precision: str = "float32",
) -> Engine:
    """The engine `choose_engine` picks for `model`, a job of `images` images and `precision`, built
    (`batched`: see `build_engine`) and checked on the parity images (`fracture.data.reference_images`)."""
    from fracture.data.reference_images import reference_batch  # TensorFlow's resize: not at import time

    name = choose_engine(requested, model, images, setting, precision)
    return build_engine(model, name, reference_batch(model.input_shape[1]), batched, precision)


def bfloat16_classifier_engine(model: keras.Model, requested: str, setting: str = "") -> Engine:
    """A classifier on OpenVINO with its backbone in bfloat16 and its head in float32, checked against Keras.

    The whole classifier in bfloat16 would round its output to 8 significant bits: measured on the benchmark's
    checkpoint (random backbone weights, probabilities within 4e-6 of each other), that left 16 distinct
    probabilities for 600 validation images and a validation AUROC of 0.737 against float32's 0.963; with the
    head in float32 it was 0.963, as the feature cache's bfloat16 extraction trains it."""
    from fracture.data.reference_images import reference_batch  # TensorFlow's resize: not at import time
    from fracture.models.head import split_at_head

    began = time.perf_counter()
    name = choose_engine(requested, model, None, setting, "bfloat16")
    backbone, head = split_at_head(model)
    features, probabilities = build_engine(backbone, name, precision="bfloat16"), build_engine(head, name)
    engine = Engine(
        name, lambda batch: probabilities(features(batch)), time.perf_counter() - began, precision="bfloat16"
    )
    return check_parity(engine, model, reference_batch(model.input_shape[1]))


def check_parity(engine: Engine, model: keras.Model, batch: np.ndarray) -> Engine:
    """Compare `engine` with Keras' `predict_on_batch` on `batch`; record the largest difference and the bound
    on `engine`, and raise `EngineMismatch` past the bound."""
    expected = np.asarray(model.predict_on_batch(batch), np.float64)
    actual = np.asarray(engine(batch), np.float64).reshape(expected.shape)
    engine.max_abs_difference = float(np.max(np.abs(actual - expected)))
    relative = PARITY_RELATIVE_BFLOAT16 if engine.precision == "bfloat16" else PARITY_RELATIVE
    engine.bound = relative * float(np.max(np.abs(expected)))
    if not engine.max_abs_difference <= engine.bound:  # NaN fails too
        raise EngineMismatch(
            f"the {engine.name} engine's outputs differ from Keras' by {engine.max_abs_difference:.3g} on "
            f"{len(batch)} images (bound {engine.bound:.3g}); run this model on the keras engine."
        )
    return engine
