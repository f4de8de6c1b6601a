"""bfloat16 predictions (`serve.precision`, `predict.precision`, `Predictor(precision=...)`): by request, on
OpenVINO where the processor has bfloat16; the benchmark's service row and AUROC for it run only there."""

import contextlib

import numpy as np
import pytest
from conftest import compose_config
from sklearn.metrics import roc_auc_score

from fracture import FractureDataModule, load_predictor
from fracture.data.pipeline import predict_full_batches
from fracture.data.reference_images import reference_batch
from fracture.errors import ConfigError
from fracture.models.engines import build_engine
from fracture.models.head import split_at_head
from fracture.models.runtimes import openvino_has_bfloat16

pytestmark = pytest.mark.backend
needs_bfloat16 = pytest.mark.skipif(
    not openvino_has_bfloat16(), reason="this processor has no bfloat16 instructions (AVX512_BF16 or AMX)"
)


@needs_bfloat16
def test_a_bfloat16_predictor_runs_on_openvino_within_its_bound(tiny_checkpoint, cache_root):
    float32 = load_predictor(tiny_checkpoint, runtime="keras")
    bfloat16 = load_predictor(tiny_checkpoint, precision="bfloat16")
    bfloat16.warm_up()
    engine = bfloat16.engine
    assert engine.label == "openvino bfloat16" and engine.precision == "bfloat16"
    assert engine.max_abs_difference <= engine.bound
    batch = reference_batch(64)
    probabilities = bfloat16.uncalibrated_probabilities(batch)
    assert np.abs(probabilities - float32.uncalibrated_probabilities(batch)).max() < 0.05
    # Only the backbone runs in bfloat16: the head, in float32, gives what Keras' head gives on the same
    # bfloat16 features, where a bfloat16 head would round each probability by up to 2^-9 (0.002 at 0.5).
    model = float32.model
    backbone, head = split_at_head(model)
    features = build_engine(backbone, "openvino", precision="bfloat16")(batch)
    expected = np.asarray(head.predict_on_batch(features)).reshape(-1)
    assert np.abs(probabilities - expected).max() < 1e-5


def test_bfloat16_prediction_is_refused_where_it_cannot_run(tiny_checkpoint, monkeypatch):
    with pytest.raises(ConfigError, match="openvino engine only; set runtime=openvino"):
        load_predictor(tiny_checkpoint, runtime="keras", precision="bfloat16")
    with pytest.raises(ConfigError, match="must be one of"):
        load_predictor(tiny_checkpoint, precision="int8")
    monkeypatch.setattr("fracture.models.runtimes.openvino_has_bfloat16", lambda: False)
    with pytest.raises(ConfigError, match="no bfloat16 instructions"):
        load_predictor(tiny_checkpoint, precision="bfloat16")


def test_serve_and_predict_refuse_bfloat16_on_ray(tmp_path, tiny_checkpoint, monkeypatch):
    from fracture.predict import predict
    from fracture.serve import serve

    monkeypatch.setattr("fracture.models.runtimes.openvino_has_bfloat16", lambda: True)
    overrides = (f"ckpt_path={tiny_checkpoint}", "engine=ray")
    with pytest.raises(ConfigError, match="serve.precision=bfloat16 runs with engine=local only"):
        serve(compose_config(tmp_path, *overrides, "serve.precision=bfloat16", name="serve"))
    with pytest.raises(ConfigError, match="precision=bfloat16 runs with engine=local only"):
        predict(compose_config(tmp_path, *overrides, "inputs=x.png", "precision=bfloat16", name="predict"))


@pytest.mark.parametrize("available", [True, False])
def test_the_service_rows_include_bfloat16_only_where_it_runs(tmp_path, monkeypatch, available):
    from fracture.benchmarking import loadtest, service
    from fracture.benchmarking.loadtest import LoadReport

    started = []

    @contextlib.contextmanager
    def fake_server(checkpoint, log, backend, timeout_s, overrides):
        started.append(overrides)
        log.write_text("serving x with the fake engine (not a medical device)")
        yield "http://127.0.0.1:1"

    def fake_load(url, images, requests, clients):
        return LoadReport(requests, clients, [], np.full(requests, 10.0), 1.0)

    monkeypatch.setattr(loadtest, "serve_in_subprocess", fake_server)
    monkeypatch.setattr(loadtest, "run_load", fake_load)
    monkeypatch.setattr("fracture.models.engines.bfloat16_available", lambda: available)
    figures = service.measure_service("ckpt.keras", [tmp_path / "x.png"], "tensorflow", tmp_path, 20, 4)
    names = [name for name, *_ in service.CONFIGURATIONS]
    assert list(figures) == (names if available else names[:-1])
    assert ("serve.precision=bfloat16" in started[-1]) == available
    assert all(row["req_s"] == 20.0 and row["engine"] == "fake" for row in figures.values())


@needs_bfloat16
def test_the_benchmark_scores_the_checkpoint_predicted_in_bfloat16(tiny_checkpoint, synthetic_root, cache_root):
    from fracture.benchmarking.workers import val_auroc

    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename")
    bfloat16 = load_predictor(tiny_checkpoint, precision="bfloat16")
    bfloat16.warm_up()
    auroc = val_auroc(bfloat16, datamodule)
    assert bfloat16.engine.label == "openvino bfloat16"
    rounded = predict_full_batches(
        bfloat16.uncalibrated_probabilities, datamodule.predict_dataloader("val"), datamodule.batch_size
    )
    # The row is the AUROC of the bfloat16 predictions of the validation images, in order. Whether it matches
    # float32's is for the benchmark's EfficientNetB3 to show: this tiny model's probabilities lie within 2e-3
    # of each other, and its closest positive-negative pair (3e-5 apart) is nearer than bfloat16 moves a
    # probability (2e-5 here), so a bound on the AUROCs' difference would hold on one processor's bfloat16
    # kernels and not on another's.
    assert auroc == roc_auc_score(datamodule.labels("val"), rounded)
