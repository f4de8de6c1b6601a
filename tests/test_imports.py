"""Importing fracture changes nothing in the user's process; entry points set what they need themselves."""

from conftest import run_python

NO_SIDE_EFFECTS = """
import os
os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # inherited from the test process, whose entry points set it
import matplotlib
matplotlib.use("svg")  # a user's own choice, which an import must not switch to Agg
import fracture
from fracture import FractureClassifier, FractureDataModule, Trainer, load_predictor
from fracture.evaluation import plots
import keras
assert matplotlib.get_backend() == "svg", f"importing fracture switched matplotlib to {matplotlib.get_backend()}"
assert keras.distribution.distribution() is None
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""
# TensorFlow sets TF_CPP_MIN_LOG_LEVEL itself when it is imported; fracture must leave it at that value.
KERAS_ALONE = """
import os
os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
import keras
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""

LAZY = """
import sys
import fracture
assert "keras" not in sys.modules and "tensorflow" not in sys.modules, "import fracture loaded Keras"
assert "Trainer" in dir(fracture) and fracture.__version__
"""


def test_importing_fracture_sets_no_environment_variable_backend_or_distribution():
    with_fracture = run_python(NO_SIDE_EFFECTS).stdout.split()[-1]
    assert with_fracture == run_python(KERAS_ALONE).stdout.split()[-1]
    run_python(LAZY)


def test_the_entry_points_quiet_tensorflow_themselves():
    code = "import os; os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None); import fracture.cli; import keras"
    done = run_python(code + "; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    assert done.stdout.strip() == "2"
