"""Latency of `python -m fracture.serve` under a bounded load on loopback: p50 and p95 per request, one request
at a time against batched, side by side in one run.

    python benchmarks/serve_load.py --ckpt outputs/.../best_model.keras --images ../shared/data/xray-fracture/val

For each `serve.max_batch_size` of --batch-sizes (default 1, today's one request at a time, and 8, the
default), starts the server in a subprocess on a free loopback port, sends --requests uploads from --clients
concurrent clients to POST /predict (cycling through the images) after a warm-up of one request per client,
prints the figures and the ratio to the first row, and stops the server.
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
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="serve.max_batch_size values")
    args = parser.parse_args()

    images = expand_inputs(args.images)[: args.max_images]
    print(f"{args.backend}, {len(images)} distinct images, {args.clients} clients, checkpoint {args.ckpt}")
    first = None
    for batch_size in args.batch_sizes:
        with tempfile.TemporaryDirectory() as folder:
            overrides = (f"serve.max_batch_size={batch_size}",)
            with serve_in_subprocess(args.ckpt, Path(folder) / "server.log", args.backend, overrides=overrides) as url:
                run_load(url, images[:1], requests=args.clients, clients=args.clients)  # warm-up, not counted
                report = run_load(url, images, requests=args.requests, clients=args.clients)
        rate = report.requests / report.wall_s
        first = first or rate
        print(f"serve.max_batch_size={batch_size}: {report.summary()}  [{rate / first:.2f}x the first row's req/s]")
        if report.errors:
            print("errors:", *report.errors[:5], sep="\n  ")


if __name__ == "__main__":
    main()
