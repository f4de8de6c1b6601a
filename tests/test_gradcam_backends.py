"""Grad-CAM is backend-agnostic: one checkpoint, one image, the same heatmap on TensorFlow and JAX."""

import numpy as np
from conftest import run_python

GRADCAM_SCRIPT = """
import sys, numpy as np
from PIL import Image
from fracture.inference.predictor import load_predictor
predictor = load_predictor(sys.argv[1])
pixels = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
explanation = predictor.explain(pixels)
np.save(sys.argv[3], np.append(explanation.heatmap.ravel(), explanation.prediction.probability))
"""


def test_gradcam_matches_across_backends(tmp_path, tiny_checkpoint, synthetic_root):
    image = sorted((synthetic_root / "val" / "fractured").glob("*.png"))[0]
    results = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / f"{backend}.npy"
        run_python(GRADCAM_SCRIPT, tiny_checkpoint, image, out, backend=backend)
        results[backend] = np.load(out)
    tf_map, jax_map = results["tensorflow"][:-1], results["jax"][:-1]
    assert tf_map.std() > 0, "a flat heatmap would make the comparison meaningless"
    assert np.corrcoef(tf_map, jax_map)[0, 1] > 0.99
    np.testing.assert_allclose(tf_map, jax_map, atol=1e-3)
    assert abs(results["tensorflow"][-1] - results["jax"][-1]) < 1e-5  # the probabilities agree too
