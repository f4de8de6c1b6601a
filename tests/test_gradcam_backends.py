"""Grad-CAM is backend-agnostic: one checkpoint, the same heatmaps on TensorFlow and JAX."""

import numpy as np
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
