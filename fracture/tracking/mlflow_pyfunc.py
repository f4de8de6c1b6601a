"""The code of fracture's MLflow model, saved into it ("models from code"): loading the model runs this file,
which needs fracture installed, instead of unpickling an object, which could run anything."""

from mlflow.models import set_model

from fracture.tracking.mlflow_model import FracturePyfunc

set_model(FracturePyfunc())
