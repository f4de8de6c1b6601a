"""A regular install works, not only an editable one: a wheel built from the checkout trains the demo.

The wheel goes into a new virtual environment and runs from a folder outside the checkout, so that neither
the source tree nor the editable install can stand in for it. The environment borrows the heavy third-party
packages (TensorFlow, JAX, ...) from the test's own interpreter through a path file, whose entries Python
adds to `sys.path` without running the editable install's hook that lives beside them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import DEMO_SMALL, REPO_ROOT


def run(command: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "HYDRA_FULL_ERROR": "0", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(list(map(str, command)), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def build_wheel(out_dir: Path) -> Path:
    # No build isolation: setuptools comes from the test extra, so the test downloads nothing.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out_dir]
    run([*pip_wheel, REPO_ROOT], REPO_ROOT)
    (wheel,) = out_dir.glob("fracture-*.whl")
    return wheel


def fresh_environment(root: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel, with the test interpreter's third-party packages on its path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True)
    python = root / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root).stdout.strip())
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "borrowed_packages.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", site, wheel], root)
    return python


def test_wheel_ships_every_config(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".yaml")}
    conf = REPO_ROOT / "conf"
    expected = {f"fracture/conf/{path.relative_to(conf).as_posix()}" for path in conf.rglob("*.yaml")}
    assert expected and shipped == expected


@pytest.mark.slow  # about 30 s; CI installs the project afresh; the wheel's contents are checked by default
def test_installed_wheel_trains_the_demo_from_another_folder(tmp_path):
    python = fresh_environment(tmp_path / "venv", build_wheel(tmp_path / "dist"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    where = run([python, "-c", "import fracture.cli as c; print(c.__file__); print(c.CONFIG_DIR)"], elsewhere)
    module_file, config_dir = where.stdout.split()[-2:]
    venv = str((tmp_path / "venv").resolve())
    assert module_file.startswith(venv) and config_dir.startswith(venv), where.stdout  # not the checkout

    run_dir = elsewhere / "run"
    overrides = [*DEMO_SMALL, "trainer.epochs=1", "trainer.limit_train_batches=2", f"hydra.run.dir={run_dir}"]
    run([python, "-m", "fracture.train", *overrides], elsewhere)
    assert (run_dir / "checkpoints" / "best_model.keras").is_file()
    assert (elsewhere / "data" / "synthetic" / "train").is_dir()  # the demo's data was written where it ran
    assert 0.0 <= json.loads((run_dir / "metrics.json").read_text())["val/auc_approx"] <= 1.0
