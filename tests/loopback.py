"""Run a command inside a loopback-only network namespace: Ray binds ports on every interface, so its tests
run where the only interface is 127.0.0.1 (`unshare -n`, then `ip link set lo up`), and stop by themselves."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

NAMESPACE = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "loopback"]


@functools.cache
def namespace_problem() -> str | None:
    """Why a loopback-only namespace cannot be made here, or None when it can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    try:
        done = subprocess.run([*NAMESPACE, "true"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "making a network namespace timed out"
    if done.returncode != 0:
        return f"cannot make a loopback-only network namespace (needs root or user namespaces): {done.stderr.strip()}"
    return None


def require_namespace() -> None:
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)


def in_loopback(command: list[str], timeout: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`command` run in a new loopback-only namespace, from the repository root, killed after `timeout` s."""
    require_namespace()
    full_env = {**os.environ, "KERAS_BACKEND": "tensorflow", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [*NAMESPACE, *command], cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def python_in_loopback(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """A Python snippet in a loopback-only namespace; fails the test when it fails."""
    done = in_loopback([sys.executable, "-W", "ignore", "-c", code, *map(str, args)], timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done
