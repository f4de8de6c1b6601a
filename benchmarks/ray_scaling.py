"""Local against Ray, side by side in one run: bulk prediction in files per second, the service in requests per second.

    unshare -n sh -c 'ip link set lo up && python benchmarks/ray_scaling.py --images ../shared/data/fracatlas/images'

(Ray binds ports on every interface: run it in a loopback-only network namespace, as root, or on a machine of
your own.) Builds the notebook's EfficientNetB3 with random weights (speed does not depend on the weight values)
as a fracture checkpoint, then times, as a user would type them:

- `python -m fracture.predict` over the same --files files: engine=local, and engine=ray with 1 and 2 actors
  (wall time of the whole command, start-up included, and the largest probability difference to local's rows);
- `python -m fracture.serve` under --requests uploads from --clients clients: engine=local, and engine=ray
  with 1 and 2 replicas (after a warm-up of one request per client).

Prints each row and its ratio to the local one, and writes the figures to --out (JSON).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from predict_latency import random_checkpoint

from fracture.benchmarking.loadtest import run_load, serve_in_subprocess
from fracture.benchmarking.machine import processor_name
from fracture.data.images import expand_inputs


def link_files(images: list[Path], folder: Path) -> Path:
    """A folder of links to `images`, so every command predicts the same files from one input."""
    folder.mkdir()
    for index, image in enumerate(images):
        (folder / f"{index:05d}{image.suffix.lower()}").symlink_to(image.resolve())
    return folder


def predict_command(ckpt: Path, inputs: Path, out: Path, engine: str, actors: int = 1) -> list[str]:
    command = [sys.executable, "-m", "fracture.predict", f"ckpt_path={ckpt}", f"inputs=[{inputs}]"]
    command += ["explain.overlays=false", f"output_dir={out}", f"hydra.run.dir={out}", f"engine={engine}"]
    return command + ([f"ray.actors={actors}"] if engine == "ray" else [])


def timed(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as file:
        done = subprocess.run(command, stdout=file, stderr=subprocess.STDOUT)
    if done.returncode not in (0, 1):  # 1: some inputs could not be read (their rows say why)
        raise SystemExit(f"{' '.join(command[:4])} ... failed; see {log}")
    return time.perf_counter() - started


def largest_difference(path: Path, reference: Path) -> float:
    """The largest difference between two predictions.csv's probabilities; inf when their files or errors differ."""
    ours, theirs = ({row["path"]: row["probability"] for row in csv.DictReader(open(p))} for p in (path, reference))
    if ours.keys() != theirs.keys() or any(bool(ours[key]) != bool(theirs[key]) for key in ours):
        return float("inf")
    return max((abs(float(ours[key]) - float(theirs[key])) for key in ours if ours[key]), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", required=True, help="image files or folders")
    parser.add_argument("--files", type=int, default=2000, help="files to predict (cycled if there are fewer)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("ray_scaling.json"))
    args = parser.parse_args()

    found = expand_inputs(args.images)
    if not found:
        raise SystemExit(f"no images in {args.images}")
    images = [found[index % len(found)] for index in range(args.files)]
    figures: dict = {"processor": processor_name(), "files": len(images), "image_size": args.image_size}
    print(f"{figures['processor']}; EfficientNetB3 at {args.image_size} px, random weights")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ckpt = random_checkpoint(folder, args.image_size)
        inputs = link_files(images, folder / "inputs")
        rows = {}
        for name, engine, actors in [("local", "local", 1), ("ray, 1 actor", "ray", 1), ("ray, 2 actors", "ray", 2)]:
            out = folder / name.replace(", ", "-").replace(" ", "_")
            seconds = timed(predict_command(ckpt, inputs, out, engine, actors), folder / f"{out.name}.log")
            rows[name] = {"seconds": seconds, "files_per_s": len(images) / seconds}
            difference = largest_difference(out / "predictions.csv", folder / "local" / "predictions.csv")
            rows[name]["max_abs_difference_to_local"] = difference
            ratio = rows[name]["files_per_s"] / rows["local"]["files_per_s"]
            print(
                f"predict {name:14s} {seconds:7.1f} s  {rows[name]['files_per_s']:6.2f} files/s  {ratio:.2f}x  "
                f"largest probability difference to local {difference:.1e}"
            )
        figures["predict"] = rows

        served = {}
        uploads = found[:32]
        for name, overrides in [
            ("local", ()),
            ("ray, 1 replica", ("engine=ray", "serve.replicas=1")),
            ("ray, 2 replicas", ("engine=ray", "serve.replicas=2")),
        ]:
            log = folder / f"serve-{len(served)}" / "server.log"
            log.parent.mkdir()
            with serve_in_subprocess(ckpt, log, timeout_s=300, overrides=overrides) as url:
                run_load(url, uploads[:1], requests=args.clients, clients=args.clients)  # warm-up, not counted
                report = run_load(url, uploads, requests=args.requests, clients=args.clients)
            served[name] = {
                "requests_per_s": args.requests / report.wall_s,
                "p50_ms": report.p50_ms,
                "p95_ms": report.p95_ms,
                "errors": len(report.errors),
            }
            ratio = served[name]["requests_per_s"] / served["local"]["requests_per_s"]
            print(
                f"serve   {name:16s} {served[name]['requests_per_s']:6.2f} req/s  p50 {report.p50_ms:6.0f} ms  "
                f"p95 {report.p95_ms:6.0f} ms  {ratio:.2f}x  errors {len(report.errors)}"
            )
        figures["serve"] = served
    args.out.write_text(json.dumps(figures, indent=2))
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
