"""Run the side-by-side benchmark: fracture against the plain port, per backend, in fresh processes.

Every figure is measured in this run. Where a backend trains on a subset of the data (`bench.quick`, or a
backend left out of `full_data_backends`, such as JAX on a CPU), the epoch and recipe times are scaled up
linearly to the full image counts from that subset's measured training and validation seconds
(`fracture.benchmarking.figures`); the table says which figures are scaled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fracture.benchmarking import port
from fracture.benchmarking.figures import backend_figures
from fracture.console import console
from fracture.data.folders import scan_root
from fracture.errors import DataError
from fracture.io import DEFAULT_CACHE

SPLITS = ("train", "val")


@dataclass
class BenchSettings:
    """What to measure and on how much data; see `conf/bench.yaml`."""

    backends: list[str] = field(default_factory=lambda: ["tensorflow", "jax"])
    full_data_backends: list[str] = field(default_factory=lambda: ["tensorflow"])
    subset_per_class: dict[str, int] = field(default_factory=lambda: {"train": 32, "val": 16})
    batches: int = 20
    epochs: int = 10
    port_epochs: int = 1
    views: int = 2
    # The recipe again with bfloat16 extraction, on the full data only: auto (where OpenVINO runs bfloat16 on
    # this processor), true or false.
    bfloat16_recipe: bool | str = "auto"
    repeats: int = 30
    engine_batches: int = 10  # batches of 32 timed per inference engine (after one not counted); 0: no engine rows
    service_requests: int = 200  # uploads per service configuration (`service.CONFIGURATIONS`); 0: no service rows
    service_clients: int = 8
    service_configurations: list[str] | None = None  # names of `service.CONFIGURATIONS`; None: all
    image_size: int = 224
    weights: str | None = "imagenet"
    seed: int = 42
    compilation_cache: str | None = DEFAULT_CACHE  # "default": jax-compilation/ under the cache root
    fast_depthwise_conv: bool = True
    class_names: list[str] = field(default_factory=lambda: ["fractured", "not fractured"])
    # fracture's training callbacks, as `conf/callbacks` configures them ({name: {_target_: ..., ...}});
    # empty: the notebook's, through fracture's names (best checkpoint by val/auc_approx, reduce on plateau).
    callbacks: dict = field(default_factory=dict)


def split_images(root: Path, class_names: tuple[str, str]) -> dict[str, dict[str, list[Path]]]:
    """Per split and class folder, the images that fracture trains on (`fracture.data.folders.scan_root`:
    every file that decodes, whatever its name), in name order."""
    splits = scan_root(root, class_names, group_by=None)
    missing = [split for split in SPLITS if split not in splits]
    if missing:
        raise DataError(f"{root} has no {missing[0]}/ folder; the benchmark needs train/ and val/ with class folders.")
    listed: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        for path in sorted(Path(p) for p in splits[split].paths):
            class_folder = path.relative_to(root / split).parts[0]
            listed.setdefault(split, {}).setdefault(class_folder, []).append(path)
    return listed


def counted(listing: dict[str, dict[str, list[Path]]]) -> dict[str, int]:
    """Images per split of a `split_images` listing."""
    return {split: sum(map(len, classes.values())) for split, classes in listing.items()}


def image_counts(root: Path, class_names: tuple[str, str]) -> dict[str, int]:
    """Images per split, as `split_images` finds them."""
    return counted(split_images(root, class_names))


def make_subset(listing: dict[str, dict[str, list[Path]]], target: Path, per_class: dict[str, int]) -> Path:
    """A folder of links to the first `per_class[split]` images of each split's class folders in `listing`
    (`split_images`). A subset left in `target` by an earlier run into the same folder is replaced; other
    files are refused."""
    for entry in target.glob("*/*/*"):
        if not entry.is_symlink():
            raise DataError(f"{target} holds {entry}, which the benchmark did not put there; use another run folder.")
        entry.unlink()
    for split, classes in listing.items():
        for class_folder, images in classes.items():
            folder = target / split / class_folder
            folder.mkdir(parents=True, exist_ok=True)
            for file in images[: per_class[split]]:
                (folder / file.name).symlink_to(file.resolve())
    return target


def launch(arguments: list[str], backend: str, log_path: Path) -> float:
    """Run `python <arguments>` with `KERAS_BACKEND=backend`, its output into `log_path`; its seconds."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.time()
    with open(log_path, "w") as log:
        process = subprocess.run([sys.executable, *arguments], env=env, stdout=log, stderr=subprocess.STDOUT)
    if process.returncode != 0:
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(arguments[:3])} on {backend} failed (exit {process.returncode}):\n{tail}")
    return time.time() - start


def run_worker(task: str, backend: str, spec: dict, folder: Path) -> dict:
    """One measuring process (`workers.TASKS`); its result, with the launch time it was given."""
    console.print(f"bench: {task} on {backend} ...")
    spec_path, result_path = folder / f"{task}_{backend}.spec.json", folder / f"{task}_{backend}.json"
    spec_path.write_text(json.dumps({**spec, "process_start": time.time()}))
    launch(
        ["-m", "fracture.benchmarking.workers", task, str(spec_path), str(result_path)],
        backend,
        folder / f"{task}_{backend}.log",
    )
    return json.loads(result_path.read_text())


def cold_predict_s(side: str, backend: str, checkpoint: str, image: str, folder: Path, spec: dict) -> float:
    """Seconds from launching a new process to its prediction of one image (the interpreter's exit after it
    is not counted): the process loads the checkpoint and predicts through the library (`workers`), fracture
    with the JAX settings of its training worker, the port as the Keras example does."""
    result = run_worker(f"{side}_cold_predict", backend, {**spec, "checkpoint": checkpoint, "image": image}, folder)
    return result["predicted_at"] - result["process_start"]


def check_enough_images(counts: dict[str, int], folder: Path) -> None:
    """Training steps are timed after a warm-up one, so every side needs two full training batches."""
    needed = 2 * port.BATCH_SIZE
    if counts["train"] < needed or counts["val"] < 1:
        raise DataError(
            f"{folder} has {counts['train']} training and {counts['val']} validation images; the benchmark needs "
            f"at least {needed} training images (two batches of {port.BATCH_SIZE}) and one validation image. Use "
            "a larger folder, or more images per class in bench.subset_per_class (bench.quick_settings."
            "subset_per_class with bench.quick=true)."
        )


def run_benchmark(root: str | Path, out_dir: str | Path, settings: BenchSettings, image: str | None = None) -> dict:
    """Measure every backend of `settings`; returns bench.json's content (see `report.write_report`)."""
    root, out_dir = Path(root).expanduser().resolve(), Path(out_dir)
    class_names = tuple(settings.class_names)
    listing = split_images(root, class_names)
    unseen = [p for classes in listing.values() for images in classes.values() for p in images]
    unseen = [path for path in unseen if path.suffix.lower() not in port.KERAS_IMAGE_SUFFIXES]
    if unseen:  # the two sides would train on different images
        raise DataError(
            f"{len(unseen)} image(s) under {root}, e.g. {unseen[0].name}, have names that the plain port (Keras' "
            f"image_dataset_from_directory) does not read: {', '.join(port.KERAS_IMAGE_SUFFIXES)}. Benchmark on a "
            "folder of such files."
        )
    full = counted(listing)
    subset_root = make_subset(listing, out_dir / "subset", settings.subset_per_class)
    data_roots = {b: root if b in settings.full_data_backends else subset_root for b in settings.backends}
    counts = {
        data_root: full if data_root == root else image_counts(data_root, class_names)
        for data_root in set(data_roots.values())
    }
    for data_root, used in counts.items():  # before any process starts
        check_enough_images(used, data_root)
    image = image or str(min(path for images in listing["val"].values() for path in images))
    results = {}
    for backend, data_root in data_roots.items():
        used = counts[data_root]
        folder = out_dir / backend
        folder.mkdir(parents=True, exist_ok=True)
        spec = {**asdict(settings), "root": str(data_root), "image": image, "out_dir": str(folder)}
        # The engines and the service on the first backend: ONNX Runtime and OpenVINO run the same ONNX either way.
        first = backend == settings.backends[0]
        spec["measure_engines"] = first and settings.engine_batches > 0
        spec["bfloat16_recipe"] = settings.bfloat16_recipe if first and used == full else False
        if used != full:  # a subset: time at most the batches it has, after the warm-up one
            spec["batches"] = max(1, min(settings.batches, used["train"] // port.BATCH_SIZE - 1))
        measured = {side: run_worker(side, backend, spec, folder) for side in ("port", "fracture")}
        if spec["bfloat16_recipe"]:
            bfloat16 = run_worker("fracture_bfloat16", backend, spec, folder)
            measured["fracture"]["bfloat16_recipe"] = bfloat16 if "recipe_s" in bfloat16 else None
        for side, figures in measured.items():
            figures["predict_cold_s"] = cold_predict_s(side, backend, figures["checkpoint"], image, folder, spec)
        results[backend] = backend_figures(measured["fracture"], measured["port"], full, used, settings.epochs)
        results[backend]["images"] = {"full": full, "used": used}
        if first and settings.service_requests:
            results[backend]["service"] = service_figures(
                measured["fracture"]["checkpoint"], listing, backend, folder, settings
            )
    return results


def service_figures(checkpoint: str, listing: dict, backend: str, folder: Path, settings: BenchSettings) -> dict:
    """The service's rows (`service.measure_service`) on up to 32 validation images, or {} without the serve
    extra (said on the console)."""
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("httpx") is None:
        console.print("bench: no service rows: the service needs pip install 'fracture[serve]'")
        return {}
    from fracture.benchmarking.service import measure_service

    console.print(f"bench: the service under load on {backend} ...")
    images = sorted(path for paths in listing["val"].values() for path in paths)[:32]
    return measure_service(
        checkpoint,
        images,
        backend,
        folder,
        settings.service_requests,
        settings.service_clients,
        settings.service_configurations,
    )
