"""A real `mlflow server` on a loopback port, for the tracking tests and the docs' screenshot.

SQLite backend and artifacts in a given folder; one worker, no job runner; its whole process group is
stopped by `stop` (or when the `with` block ends), also if the tests fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 90  # measured start-up: about 17 s on 2 cores with 4 workers, less with one


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MLflowServer:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.database = f"sqlite:///{self.folder / 'mlflow.db'}"
        self.process: subprocess.Popen | None = None

    def start(self) -> MLflowServer:
        mlflow = shutil.which("mlflow")
        assert mlflow, "the mlflow command is missing: pip install -e '.[mlflow]'"
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", self.database, "--artifacts-destination", str(self.folder / "artifacts")]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.log = open(self.folder / "server.log", "w")  # noqa: SIM115 - the server writes to it while it runs
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.uri}/health", timeout=2).close()
                return self
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"mlflow server did not answer within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Kill the server and its workers (its own process group), and wait for them."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its workers too, even if the main process is gone
        self.process.wait(timeout=30)
        self.log.close()

    def __enter__(self) -> MLflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
