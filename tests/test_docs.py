"""The documentation site builds without a warning, and its configuration reference is as new as `conf/`."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT
from omegaconf import OmegaConf

from fracture.resume_config import flatten

REFERENCE = REPO_ROOT / "docs" / "configuration.md"


def config_keys() -> set[str]:
    """Every key of every file in `conf/`, dotted from where the file's keys land in the composed config."""
    keys = set()
    for path in (REPO_ROOT / "conf").rglob("*.yaml"):
        text = path.read_text()
        package = ".".join(path.relative_to(REPO_ROOT / "conf").parent.parts)
        if "# @package _global_" in text:
            package = ""
        content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
        content.pop("defaults", None)
        keys |= {f"{package}.{key}" if package else key for key in flatten(content)}
    return keys


def test_every_config_key_is_in_the_reference_and_the_reference_is_up_to_date():
    page = REFERENCE.read_text()
    keys = config_keys()
    assert len(keys) > 150  # every file was read
    missing = sorted(key for key in keys if f"| `{key}` |" not in page)
    assert not missing, f"not in docs/configuration.md: {missing[:10]}; run python docs/config_reference.py"
    check = [sys.executable, str(REPO_ROOT / "docs" / "config_reference.py"), "--check"]
    done = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_site_builds_in_strict_mode(tmp_path):
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner would hide the error in the tail
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "FractureDataModule" in api and "uncalibrated_probabilities" in api  # mkdocstrings read the code
