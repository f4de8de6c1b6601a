"""Run an exported artifact in its own runtime: TensorFlow for SavedModel, ONNX Runtime or OpenVINO for ONNX,
LiteRT for TFLite. Each runner maps a float32 batch (N, S, S, 3) in 0..255 to the model's output: for a classifier,
P(positive class), shape (N,) (ONNX runners keep the model's own output shape, so they run backbones too)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fracture.errors import ExportError

Runner = Callable[[np.ndarray], np.ndarray]


def _missing(runtime: str, error: ImportError) -> ExportError:
    return ExportError(f"running {runtime} needs the export extra ({error}): pip install 'fracture[export]'.")


def saved_model_runner(path: Path) -> Runner:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (output,) = serve.structured_outputs  # one output tensor, named after the model's last layer

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(serve(tf.constant(batch))[output]).reshape(-1)

    return run


def onnx_runner(path: Path) -> Runner:
    try:
        import onnxruntime
    except ImportError as error:
        raise _missing("ONNX models", error) from error
    options = onnxruntime.SessionOptions()
    # Its threads would otherwise spin between calls, taking the cores from TensorFlow's or OpenVINO's threads
    # in the same process: measured on 2 cores after a TensorFlow pass, 26 img/s spinning against 38 not.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return run


def openvino_runner(path: Path, precision: str = "f32", batched: bool = False) -> Runner:
    """An ONNX model compiled by OpenVINO for this machine's CPU, at `precision` ("f32" by default: OpenVINO
    would otherwise run bfloat16 on CPUs that have it, with about 1% relative error).

    One image at a time (`batched=False`), every core works on each call. For batches (`batched=True`) each
    call is split across OpenVINO's throughput streams, a few cores each, which keeps the cores busier through
    the depthwise convolutions: on a 2-core AVX2 EPYC for EfficientNetB3, batches of 32 ran at 24.6 img/s on two
    streams against 22.9 on one (`python -m fracture.bench`, 2026-12-02; its engine rows show both). A batched
    runner takes one call at a time (the feature cache and evaluation call it from one thread)."""
    try:
        import openvino
    except ImportError as error:
        raise _missing("OpenVINO", error) from error
    hints = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT" if batched else "LATENCY"}
    compiled = openvino.Core().compile_model(str(path), "CPU", hints)
    if not batched:

        def run(batch: np.ndarray) -> np.ndarray:
            return compiled(np.ascontiguousarray(batch, dtype=np.float32))[0]

        return run

    queue = openvino.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    outputs: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, part: outputs.__setitem__(part, request.get_output_tensor(0).data.copy()))

    def run_split(batch: np.ndarray) -> np.ndarray:
        parts = np.array_split(np.asarray(batch, dtype=np.float32), min(len(queue), len(batch)))
        outputs.clear()
        for index, part in enumerate(parts):
            queue.start_async(np.ascontiguousarray(part), index)
        queue.wait_all()
        return np.concatenate([outputs[index] for index in range(len(parts))])

    return run_split


def openvino_has_bfloat16() -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 on this processor (AVX512_BF16 or AMX); where it does not,
    `precision="bf16"` quietly runs float32."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def tflite_runner(path: Path) -> Runner:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise _missing("TFLite models", error) from error
    interpreter = Interpreter(model_path=str(path))
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def run(batch: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(input_index, batch.shape)  # exported with a dynamic batch dimension
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, np.ascontiguousarray(batch, dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(output_index).reshape(-1)

    return run


RUNNERS = {"saved_model": saved_model_runner, "onnx": onnx_runner, "tflite": tflite_runner}


def load_runner(name: str, path: str | Path) -> Runner:
    """A runner for the artifact of format `name` at `path`."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"no {name} artifact at {path}; export it first with python -m fracture.export.")
    return RUNNERS[name](path)


class OnnxModel:
    """An exported `model.onnx` behind the one method `Predictor` calls on a Keras model."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._run = load_runner("onnx", self.path)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        return self._run(np.asarray(batch, dtype=np.float32)).reshape(-1, 1)
