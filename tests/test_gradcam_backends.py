"""Grad-CAM is backend-agnostic: one checkpoint, the same heatmaps on TensorFlow and JAX."""

import numpy as np
import pytest
from conftest import run_python

GRADCAM_SCRIPT = """
import sys, numpy as np
from PIL import Image
from fracture.inference.predictor import load_predictor
predictor = load_predictor(sys.argv[1])
rows = []
for path in sys.argv[3:]:
    explanation = predictor.explain(np.asarray(Image.open(path).convert("RGB")))
    rows.append(np.append(explanation.heatmap.ravel(), explanation.prediction.probability))
np.save(sys.argv[2], np.stack(rows))
"""


def test_gradcam_matches_across_backends(tmp_path, tiny_checkpoint, synthetic_root):
    # Several images: for some image Grad-CAM can be flat (every weighted channel negative), which would
    # leave nothing to compare; the checkpoint is seeded so that this one has varied maps.
    images = [sorted((synthetic_root / "val" / name).glob("*.png"))[:2] for name in ("fractured", "not fractured")]
    results = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / f"{backend}.npy"
        run_python(GRADCAM_SCRIPT, tiny_checkpoint, out, *images[0], *images[1], backend=backend)
        results[backend] = np.load(out)
    tf_maps, jax_maps = results["tensorflow"][:, :-1], results["jax"][:, :-1]
    varied = [index for index, heatmap in enumerate(tf_maps) if heatmap.std() > 0]
    assert varied, "only flat heatmaps: the comparison would be meaningless"
    for index in varied:
        assert np.corrcoef(tf_maps[index], jax_maps[index])[0, 1] > 0.99
    np.testing.assert_allclose(tf_maps, jax_maps, atol=1e-3)
    np.testing.assert_allclose(results["tensorflow"][:, -1], results["jax"][:, -1], atol=1e-5)  # probabilities


GRADCAM_PP_SCRIPT = """
import sys, numpy as np
from PIL import Image
from fracture.models.checkpoint import load_checkpoint
from fracture.models.gradcam import GradCAM
model, metadata = load_checkpoint(sys.argv[1], compile=False)
images = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in sys.argv[3:]])
heatmaps, probabilities = GradCAM(model, "tiny_conv3_relu", "gradcam_pp")(images)
np.save(sys.argv[2], np.concatenate([heatmaps.reshape(len(images), -1), probabilities[:, None]], axis=1))
"""


@pytest.mark.slow  # about 28 s; Grad-CAM's own cross-backend test stays in the default suite
def test_gradcam_plus_plus_matches_across_backends(tmp_path, tiny_checkpoint, synthetic_root):
    images = [
        p for name in ("fractured", "not fractured") for p in sorted((synthetic_root / "val" / name).glob("*.png"))[:2]
    ]
    results = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / f"{backend}.npy"
        run_python(GRADCAM_PP_SCRIPT, tiny_checkpoint, out, *images, backend=backend)
        results[backend] = np.load(out)
    tf_maps, jax_maps = results["tensorflow"][:, :-1], results["jax"][:, :-1]
    assert any(heatmap.std() > 0 for heatmap in tf_maps), "only flat heatmaps: the comparison would be meaningless"
    np.testing.assert_allclose(tf_maps, jax_maps, atol=1e-3)
    # Grad-CAM++ weighs channels otherwise than Grad-CAM: the two maps of one image differ.
    plain = GRADCAM_PP_SCRIPT.replace('"gradcam_pp"', '"gradcam"')
    run_python(plain, tiny_checkpoint, tmp_path / "plain.npy", *images, backend="tensorflow")
    assert not np.allclose(np.load(tmp_path / "plain.npy")[:, :-1], tf_maps, atol=1e-3)
