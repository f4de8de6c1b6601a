"""A bounded load test of a service: `serve_in_subprocess` starts `python -m fracture.serve` on a loopback
port, and `run_load` sends it N requests from C concurrent clients and reports latency percentiles.

Used by the benchmark's service rows (`fracture.benchmarking.service`, which `benchmarks/serve_load.py` runs
alone), `benchmarks/ray_scaling.py` and `tests/test_serve_browser.py`. Point it only at a service of your own;
it sends exactly `requests` requests and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from fracture.processes import free_loopback_port


@dataclass
class LoadReport:
    requests: int
    clients: int
    errors: list[str]
    latencies_ms: np.ndarray
    wall_s: float

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))

    def summary(self) -> str:
        return (
            f"{self.requests} requests from {self.clients} clients in {self.wall_s:.1f} s "
            f"({self.requests / self.wall_s:.1f} req/s): p50 {self.p50_ms:.1f} ms, p95 {self.p95_ms:.1f} ms, "
            f"errors {len(self.errors)}"
        )


async def _load(url: str, images: list[Path], requests: int, clients: int, token: str | None) -> LoadReport:
    payloads = [(path.name, path.read_bytes()) for path in images]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies, errors = [], []
    counter = iter(range(requests))

    async def client(session: httpx.AsyncClient) -> None:
        for index in counter:  # the clients share one counter: exactly `requests` requests in all
            name, data = payloads[index % len(payloads)]
            started = time.perf_counter()
            try:
                response = await session.post(f"{url}/predict", files={"file": (name, data)}, headers=headers)
                if response.status_code != 200:
                    errors.append(f"{name}: HTTP {response.status_code} {response.text[:200]}")
            except httpx.HTTPError as error:
                errors.append(f"{name}: {type(error).__name__} {error}")
            latencies.append((time.perf_counter() - started) * 1000.0)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120.0) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return LoadReport(requests, clients, errors, np.asarray(latencies), time.perf_counter() - started)


def run_load(
    url: str, images: list[Path], requests: int = 200, clients: int = 8, token: str | None = None
) -> LoadReport:
    """POST `requests` uploads (cycling through `images`) to `url`/predict from `clients` concurrent clients."""
    if not images:
        raise ValueError("run_load needs at least one image")
    return asyncio.run(_load(url.rstrip("/"), list(images), requests, clients, token))


@contextlib.contextmanager
def serve_in_subprocess(
    ckpt_path: str | Path,
    log_path: Path,
    backend: str = "tensorflow",
    timeout_s: float = 120.0,
    overrides: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run `python -m fracture.serve` (with `overrides`, such as engine=ray) on a free loopback port until the
    block ends; yields its base URL.

    The server's output goes to `log_path`; its tail is in the error if the server dies or never answers.
    """
    port = free_loopback_port()
    command = [
        sys.executable,
        "-m",
        "fracture.serve",
        f"ckpt_path={ckpt_path}",
        f"serve.port={port}",
        "serve.log_level=warning",
        f"hydra.run.dir={log_path.parent}",
        *overrides,
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env={**os.environ, "KERAS_BACKEND": backend}, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                state = "exited" if process.poll() is not None else f"did not answer in {timeout_s:.0f} s"
                raise RuntimeError(f"the server {state}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)  # Ray Serve takes a few seconds to shut its replicas and Ray down
