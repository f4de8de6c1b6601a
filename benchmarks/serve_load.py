"""Throughput and latency of `python -m fracture.serve` under a bounded load on loopback, side by side in one run:
one request at a time on Keras (the service before batching and engines), batches of 8 on Keras, and both on the
`auto` engine (`fracture.benchmarking.service.CONFIGURATIONS`; `python -m fracture.bench` measures the same).

    python benchmarks/serve_load.py --ckpt outputs/.../best_model.keras --images ../shared/data/xray-fracture/val

Each configuration starts the server in a subprocess on a free loopback port, sends --requests uploads from
--clients concurrent clients to POST /predict (cycling through the images) after a warm-up of one request per
client, and stops the server. Prints req/s, p50 and p95, and the ratio to the first row's req/s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fracture.benchmarking.machine import processor_name
from fracture.benchmarking.service import measure_service
from fracture.data.images import expand_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a .keras checkpoint written by fracture.train")
    parser.add_argument("--images", nargs="+", required=True, help="image files or folders to upload")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax"])
    parser.add_argument("--max-images", type=int, default=32, help="distinct images to cycle through")
    args = parser.parse_args()

    images = expand_inputs(args.images)[: args.max_images]
    print(f"{processor_name()}; {args.backend}, {len(images)} distinct images, {args.clients} clients, {args.ckpt}")
    with tempfile.TemporaryDirectory() as folder:
        figures = measure_service(args.ckpt, images, args.backend, Path(folder), args.requests, args.clients)
    first = next(iter(figures.values()))["req_s"]
    for name, row in figures.items():
        print(
            f"{name} ({row['engine']}): {row['req_s']:.1f} req/s, p50 {row['p50_ms']:.0f} ms, "
            f"p95 {row['p95_ms']:.0f} ms, {row['errors']} failed  [{row['req_s'] / first:.2f}x the first row's req/s]"
        )


if __name__ == "__main__":
    main()
