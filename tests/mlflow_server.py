"""Real MLflow servers on loopback ports, for the tracking tests and the docs' screenshot: `mlflow server`
(SQLite backend and artifacts in a given folder; one worker, no job runner) and `mlflow models serve`. Each
one's whole process group is stopped by `stop` (or when the `with` block ends), also if the tests fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from fracture.processes import free_loopback_port

START_TIMEOUT_S = 90  # measured start-up: about 17 s on 2 cores with 4 workers, less with one


class LoopbackServer:
    """A server command on 127.0.0.1:`port`, started in its own process group, ready once `ready_path` answers
    (within `start_timeout_s`), and killed with its workers by `stop` or at the end of a `with` block."""

    def __init__(self, command: list[str], port: int, ready_path: str, log: Path, env: dict, start_timeout_s: float):
        self.command, self.port, self.ready_path, self.log_path = command, port, ready_path, Path(log)
        self.env, self.start_timeout_s = env, start_timeout_s
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")  # noqa: SIM115 - the server writes to it while it runs
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **self.env}
        self.process = subprocess.Popen(
            self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.uri + self.ready_path, timeout=2).close()
                return self
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"{' '.join(self.command[:3])} did not answer within {self.start_timeout_s} s")

    def stop(self) -> None:
        """Kill the server and its workers (its own process group), and wait for them."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its workers too, even if the main process is gone
        self.process.wait(timeout=30)
        self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def mlflow_command() -> str:
    mlflow = shutil.which("mlflow")
    assert mlflow, "the mlflow command is missing: pip install -e '.[mlflow]'"
    return mlflow


class MLflowServer(LoopbackServer):
    """`mlflow server` with a SQLite backend and artifacts in `folder`; one worker, no job runner."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.database = f"sqlite:///{self.folder / 'mlflow.db'}"
        port = free_loopback_port()
        command = [mlflow_command(), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        command += ["--backend-store-uri", self.database, "--artifacts-destination", str(self.folder / "artifacts")]
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        super().__init__(command, port, "/health", self.folder / "server.log", env, START_TIMEOUT_S)


class ModelServer(LoopbackServer):
    """`mlflow models serve -m <model_uri> --env-manager local`, the registry at `tracking_uri`."""

    def __init__(self, model_uri: str, tracking_uri: str, log: Path, start_timeout_s: float = 180):
        port = free_loopback_port()
        command = [mlflow_command(), "models", "serve", "-m", model_uri, "--env-manager", "local"]
        command += ["-h", "127.0.0.1", "-p", str(port)]
        super().__init__(command, port, "/ping", log, {"MLFLOW_TRACKING_URI": tracking_uri}, start_timeout_s)
