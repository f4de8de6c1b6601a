"""The service under load, side by side in one run: the one-request-at-a-time service on Keras against batching
and the fastest engine.

Each configuration starts `python -m fracture.serve` on a free loopback port (`loadtest`),
sends one warm-up request per client, then `requests` uploads from `clients` concurrent clients, and stops
it. The servers' cache root is the benchmark worker's `engines-cache/` in this run's folder, so those on the
`auto` engine load the checkpoint's conversion stored there (what a second start does) instead of converting
it again; the figures are taken after start-up either way.
"""

from __future__ import annotations

import logging
from pathlib import Path

# (name, serve.runtime, serve.max_batch_size, serve.precision); the first is the service before batching and
# engines. The bfloat16 row runs only where OpenVINO has bfloat16 here (`engines.bfloat16_available`).
CONFIGURATIONS = [
    ("one at a time, keras", "keras", 1, "float32"),
    ("batches of 8, keras", "keras", 8, "float32"),
    ("one at a time, auto engine", "auto", 1, "float32"),
    ("batches of 8, auto engine", "auto", 8, "float32"),
    ("batches of 8, auto engine, bfloat16", "auto", 8, "bfloat16"),
]


def measure_service(
    checkpoint: str,
    images: list[Path],
    backend: str,
    folder: Path,
    requests: int,
    clients: int,
    configurations: list[str] | None = None,
) -> dict:
    """{configuration: req/s, p50 and p95 ms, errors, and the engine the service logged}, for the named
    `configurations` of `CONFIGURATIONS` (None: all that run here)."""
    from fracture.benchmarking.engines import cache_root_at
    from fracture.benchmarking.loadtest import run_load, serve_in_subprocess
    from fracture.models.engines import bfloat16_available

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    figures = {}
    with cache_root_at(folder / "engines-cache"):  # the worker's: the servers inherit it and load its conversion
        for name, runtime, batch_size, precision in CONFIGURATIONS:
            if configurations is not None and name not in configurations:
                continue
            if precision == "bfloat16" and not bfloat16_available():
                continue
            suffix = "" if precision == "float32" else f"-{precision}"
            log = folder / f"serve-{runtime}-{batch_size}{suffix}" / "server.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            overrides = (
                f"serve.runtime={runtime}",
                f"serve.max_batch_size={batch_size}",
                f"serve.precision={precision}",
            )
            with serve_in_subprocess(checkpoint, log, backend, timeout_s=300, overrides=overrides) as url:
                run_load(url, images[:1], requests=clients, clients=clients)  # warm-up, not counted
                report = run_load(url, images, requests=requests, clients=clients)
            figures[name] = {
                "req_s": report.requests / report.wall_s,
                "p50_ms": report.p50_ms,
                "p95_ms": report.p95_ms,
                "errors": len(report.errors),
                "engine": logged_engine(log),
            }
    return figures


def logged_engine(log: Path) -> str:
    """The engine named in the service's start-up line ("... with the openvino engine ...", or "openvino
    bfloat16")."""
    text = log.read_text()
    marker = " with the "
    start = text.find(marker)
    return text[start + len(marker) :].split(" engine", 1)[0] if start >= 0 else "unknown"
