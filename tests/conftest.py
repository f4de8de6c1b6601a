"""Shared fixtures: small datasets (synthetic, and a subset of the real X-rays when present) and configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

from fracture.data.synthetic import write_synthetic_dataset  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
# The demo experiment shrunk to seconds: few, small synthetic images.
DEMO_SMALL = [
    "experiment=demo",
    "data.train_per_class=16",
    "data.val_per_class=8",
    "data.test_per_class=4",
    "data.image_size=48",
]
REAL_DATA = Path(os.environ.get("FRACTURE_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "xray-fracture"))


def compose_config(tmp_path: Path, *overrides: str, name: str = "train", hydra_config: bool = False):
    """`conf/<name>.yaml` composed with `overrides` as its entry point composes it, the run and cache folders
    under `tmp_path` (`return_hydra_config` with `hydra_config`, for the `hydra.*` keys)."""
    from hydra import compose, initialize_config_dir

    from fracture.cli import CONFIG_DIR

    paths = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=[*paths, *overrides], return_hydra_config=hydra_config)


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()}, real test data: {REAL_DATA if REAL_DATA.is_dir() else 'missing'}"


def make_class_folders(root: Path, class_names=("fractured", "not fractured"), per_class=3, splits=("train", "val")):
    """`<root>/<split>/<class>/` with `per_class` small grey PNGs each; returns `root`."""
    for split in splits:
        for name in class_names:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((40, 40), 60 * i, np.uint8)).save(folder / f"{i}-rotated1.png")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """24 train, 8 val and 8 test synthetic images per class, 64 px."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synthetic", 24, 8, 8, image_size=64, seed=0)


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    """fracture's cache root (ONNX conversions, decoded images) in this test's folder."""
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def real_root(tmp_path_factory) -> Path:
    """A copy of a few real radiographs per split and class: three source ids, each with its original
    (a large grayscale JPEG) where present and one rotated 224 px RGB copy."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real X-ray test data not found at {REAL_DATA} (set FRACTURE_TEST_DATA to its folder)")
    root = tmp_path_factory.mktemp("real")
    for split in ("train", "val"):
        for class_dir in sorted((REAL_DATA / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            ids = sorted({p.name.split("-")[0].split(".")[0] for p in class_dir.iterdir()})[:3]
            for source_id in ids:
                originals = list(class_dir.glob(f"{source_id}.jpg"))
                for path in originals + sorted(class_dir.glob(f"{source_id}-*"))[:1]:
                    shutil.copy(path, target / path.name)
    return root


def run_python(code: str, *args: str, backend: str = "tensorflow", timeout: int = 300):
    """Run a Python snippet in a fresh process with the given Keras backend; fail the test if it fails."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# Root ignores file permissions; without its capabilities it meets them like any user (util-linux setpriv).
DROP_PRIVILEGES = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"] if os.geteuid() == 0 else []


def require_permission_checks():
    """Skip when permissions cannot be made to bite: as root without setpriv."""
    if DROP_PRIVILEGES and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")


def run_cli(
    module: str,
    *overrides: str,
    backend: str = "tensorflow",
    cwd: Path | None = None,
    timeout: int = 600,
    unprivileged: bool = False,
    env: dict[str, str] | None = None,
):
    """Run `python -m <module> <overrides>` in a subprocess with the given Keras backend (`unprivileged`: as a
    process that file permissions apply to, also when the tests run as root; `env`: added variables)."""
    prefix = DROP_PRIVILEGES if unprivileged else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", module, *overrides],
        cwd=cwd or REPO_ROOT,
        env=cli_env(backend, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(module: str, *overrides: str, backend: str = "tensorflow", env=None, **popen) -> subprocess.Popen:
    """`run_cli` started in the background, for tests that watch or signal the command while it runs; `popen`
    goes to `subprocess.Popen` (stdout, stderr, text)."""
    command = [sys.executable, "-m", module, *overrides]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=cli_env(backend, env), **popen)


def cli_env(backend: str, env: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": backend, "HYDRA_FULL_ERROR": "0", **(env or {})}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, synthetic_root) -> Path:
    """A tiny CNN trained for one epoch on the synthetic data, saved as fracture's best_model.keras.

    Seeded: unseeded, some runs gave a model whose Grad-CAM maps were flat for every image tried, which left
    the cross-backend Grad-CAM test nothing to compare."""
    from fracture import FractureClassifier, FractureDataModule, Trainer
    from fracture.training.callbacks import ModelCheckpoint

    keras.utils.set_random_seed(0)
    checkpoint = ModelCheckpoint(tmp_path_factory.mktemp("tiny_ckpt"))
    datamodule = FractureDataModule(synthetic_root, image_size=64, batch_size=16, group_by="filename")
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)
    Trainer(epochs=1, callbacks=[checkpoint], progress=False).fit(classifier, datamodule)
    return checkpoint.best_path
