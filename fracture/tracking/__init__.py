"""Experiment tracking: a run's settings, curves, figures and files where a team looks for them.

`train(cfg)` tells every `RunTracker` among its loggers when a run starts and ends (`tracked_run`);
`MLflowLogger` (`logger=mlflow`) is one, and `MLflowSweep` gives a Hydra sweep one parent run in MLflow.
Nothing here imports MLflow until a tracker is used: it is the `mlflow` extra.
"""

from fracture.tracking.tracker import RunTracker, run_params, tracked_run

__all__ = ["RunTracker", "run_params", "tracked_run"]
