"""The GPU check runs without TensorFlow: the classifier, its loss and metrics train and save on JAX alone."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, run_python

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"

# What a JAX-only machine runs: fracture's classifier with its loss and metrics, a step, and its checkpoint.
WITHOUT_TENSORFLOW = """
import sys
sys.path.insert(0, sys.argv[1])
from gpu_check import NoTensorFlow
sys.meta_path.insert(0, NoTensorFlow())
import numpy as np, keras
from fracture import FractureClassifier
from fracture.models.checkpoint import save_checkpoint, load_checkpoint
from fracture.models.head import split_at_head
from fracture.models.schema import CheckpointMetadata
classifier = FractureClassifier("tiny_cnn", weights=None, image_size=32, dense_units=8)
model = classifier.compile()
images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
labels = (np.arange(8) % 2).reshape(-1, 1).astype("float32")
logs = model.train_on_batch(images, labels, return_dict=True)
backbone, head = split_at_head(model)
classifier.compile(model=head).train_on_batch(backbone.predict_on_batch(images), labels)
metadata = CheckpointMetadata("fractured", "not fractured", 32, classifier.hparams(), "jax", keras.__version__)
save_checkpoint(model, sys.argv[2], metadata)
loaded, _ = load_checkpoint(sys.argv[2], compile=False)
assert np.allclose(loaded.predict_on_batch(images), model.predict_on_batch(images), atol=1e-6)
assert "tensorflow" not in sys.modules
print(sorted(logs))
"""


def test_the_classifier_trains_and_saves_on_jax_without_tensorflow(tmp_path):
    done = run_python(WITHOUT_TENSORFLOW, str(SCRIPT.parent), str(tmp_path / "tiny.keras"), backend="jax")
    assert done.returncode == 0, done.stderr[-3000:]
    # The notebook's metrics, computed without TensorFlow.
    assert "'auc_approx', 'loss', 'precision', 'recall'" in done.stdout


@pytest.mark.slow
def test_the_gpu_check_runs_without_tensorflow_and_its_checkpoint_predicts_the_same_on_both_backends(tmp_path):
    out = tmp_path / "gpu_check"
    command = [sys.executable, str(SCRIPT), "--no-tensorflow", "--out", str(out), "--image-size", "32"]
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [*command, "--batch", "2", "--calls", "1"], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert not report["tensorflow_imported"] and set(report["policies"]) == {
        "float32",
        "mixed_float16",
        "mixed_bfloat16",
    }
    for figures in report["policies"].values():
        assert figures["frozen_base_step_img_s"] > 0 and 0 < figures["matmul_fraction"]
    verified = subprocess.run([sys.executable, str(SCRIPT), "--verify", str(out)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr[-3000:]
