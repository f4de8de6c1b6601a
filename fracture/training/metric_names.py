"""Translate Keras' log keys (`loss`, `val_auc_approx`) to the slash names users read (`train/loss`)."""

from __future__ import annotations

from fracture.errors import ConfigError


def to_slash(keras_key: str) -> str:
    """`val_auc_approx` -> `val/auc_approx`, `auc_approx` -> `train/auc_approx`, `learning_rate` -> `train/lr`."""
    if keras_key == "learning_rate":
        return "train/lr"
    if keras_key.startswith("val_"):
        return "val/" + keras_key[len("val_") :]
    return "train/" + keras_key


def to_keras(slash_key: str) -> str:
    """`val/auc_approx` -> `val_auc_approx`, `train/loss` -> `loss`."""
    split, _, name = slash_key.partition("/")
    if split not in ("train", "val") or not name:
        raise ConfigError(f"metric {slash_key!r} must look like train/<name> or val/<name>, e.g. val/auc_approx.")
    return name if split == "train" else f"val_{name}"


def slash_logs(logs: dict | None) -> dict[str, float]:
    return {to_slash(key): float(value) for key, value in (logs or {}).items()}


MODES = ("auto", "min", "max")


def metric_mode(name: str, mode: str = "auto") -> str:
    """Whether a higher ("max") or a lower ("min") value of metric `name` is better: the one place that decides
    it for checkpoints, early stopping, `optimized_metric` and sweeps. `auto`: "min" for a loss (a name ending
    in `loss`), else "max" (AUC, accuracy, precision, recall); say `min` or `max` for anything else."""
    if mode not in MODES:
        raise ConfigError(f"the mode of {name} must be one of {MODES} (optimized_mode in the config), got {mode!r}.")
    if mode != "auto":
        return mode
    return "min" if name.endswith("loss") else "max"
