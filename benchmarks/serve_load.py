"""Latency of `python -m fracture.serve` under a bounded load on loopback: p50 and p95 per request.

    python benchmarks/serve_load.py --ckpt outputs/.../best_model.keras --images ../shared/data/xray-fracture/val

Starts the server in a subprocess on a free loopback port, sends --requests uploads from --clients concurrent
clients to POST /predict (cycling through the images), prints the figures and stops the server.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fracture.data.images import expand_inputs
from fracture.serving.loadtest import run_load, serve_in_subprocess


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
    with tempfile.TemporaryDirectory() as folder:
        with serve_in_subprocess(args.ckpt, Path(folder) / "server.log", backend=args.backend) as url:
            run_load(url, images[:1], requests=args.clients, clients=args.clients)  # warm-up, not counted
            report = run_load(url, images, requests=args.requests, clients=args.clients)
    print(f"{args.backend}, {len(images)} distinct images, checkpoint {args.ckpt}")
    print(report.summary())
    if report.errors:
        print("errors:", *report.errors[:5], sep="\n  ")


if __name__ == "__main__":
    main()
