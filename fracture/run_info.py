"""What a run needs to be reproduced later: package versions, backend, devices and the git commit."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import keras

PACKAGES = ("fracture", "keras", "tensorflow", "jax", "jaxlib", "numpy", "scikit-learn", "hydra-core", "pillow")


def _git_commit(folder: Path) -> str | None:
    """The checked-out commit, with `+dirty` when the work tree has changes; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def _devices() -> list[str]:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [str(device) for device in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        return [device.name for device in tf.config.list_logical_devices()]
    return []


def run_info() -> dict:
    """Versions, backend, devices, Python and platform, and the source's git commit."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "backend": keras.backend.backend(),
        "devices": _devices(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": _git_commit(Path(__file__).resolve().parent),
        "command": sys.argv,
    }
