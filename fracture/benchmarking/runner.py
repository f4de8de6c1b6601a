"""Run the side-by-side benchmark: fracture against the plain port, per backend, in fresh processes.

Every figure is measured in this run. Where a backend trains on a subset of the data (`bench.quick`, or a
backend left out of `full_data_backends`, such as JAX on a CPU), the epoch and recipe times are scaled up
linearly to the full image counts from that subset's measured training and validation seconds; the table
says which figures are scaled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fracture.benchmarking import port
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


def scaled_epochs(measured: dict, full: dict[str, int], used: dict[str, int], epochs: int) -> tuple[float, float]:
    """(one steady epoch, `epochs` epochs) in seconds at the full image counts.

    Training and validation seconds scale with their image counts; the rest of an epoch (callbacks, saving
    checkpoints) does not. The first epoch's extra time (tracing the compiled steps) is counted once."""
    train, val, wall = (np.asarray(measured[f"epoch_{part}_s"]) for part in ("train", "val", "wall"))
    steady = slice(1, None) if len(train) > 1 else slice(None)
    steady_train, steady_val = float(np.median(train[steady])), float(np.median(val[steady]))
    other = float(np.median(wall - train - val))
    epoch = steady_train * full["train"] / used["train"] + steady_val * full["val"] / used["val"] + other
    first_extra = (train[0] - steady_train) + (val[0] - steady_val)
    return epoch, epochs * epoch + first_extra


def extracted_images(extractions: list[dict], full: dict[str, int], used: dict[str, int]) -> float:
    """Backbone passes the extractions would make at the full image counts."""
    return sum(run["images"] * full[run["split"]] / used[run["split"]] for run in extractions)


def first_calls(extractions: list[dict]) -> tuple[float, int]:
    """(seconds, images) of each extraction's first backbone call, which traces and freezes the step."""
    return sum(run["first_call_s"] for run in extractions), sum(run["first_call_images"] for run in extractions)


def backbone_rate(extractions: list[dict]) -> float:
    """Images per second through the backbone in the extractions' calls after each one's first: the steady
    forward rate. Only the first calls' rate when there were no others."""
    first_s, first_images = first_calls(extractions)
    steady_images = sum(run["images"] for run in extractions) - first_images
    steady_s = sum(run["forward_s"] for run in extractions) - first_s
    return steady_images / steady_s if steady_images else first_images / first_s


def scaled_extraction(extractions: list[dict], full: dict[str, int], used: dict[str, int]) -> float:
    """Seconds to extract every split's features at the full counts. The backbone's first call and building its
    engine are counted as measured; its other calls go at the steady rate (`backbone_rate`) over all the
    splits; the rest (decoding, augmentation, storing) scales with each split's image count."""
    first_s, first_images = first_calls(extractions)
    full_images = extracted_images(extractions, full, used)
    forward = first_s + (full_images - first_images) / backbone_rate(extractions)
    setup = sum(run["engine_setup_s"] for run in extractions)
    rest = sum(
        (run["seconds"] - run["forward_s"] - run["engine_setup_s"]) * full[run["split"]] / used[run["split"]]
        for run in extractions
    )
    return forward + setup + rest


def scaled_setup(fracture: dict, full: dict[str, int], used: dict[str, int]) -> float:
    """Seconds of fracture's recipe outside the extraction and the epochs (scanning, decoding and hashing the
    files, building the steps), scaled with the image count. Part of it is fixed, so this overstates it."""
    extraction = sum(run["seconds"] for run in fracture["extractions"])
    rest = fracture["recipe_s"] - extraction - sum(fracture["epoch_wall_s"])
    return max(rest, 0.0) * (full["train"] + full["val"]) / (used["train"] + used["val"])


def backend_figures(fracture: dict, port: dict, full: dict, used: dict, settings: BenchSettings) -> dict:
    """The figures of one backend at the full counts; `scaled` says whether they were scaled up from a subset."""
    scaled = used != full
    port_epoch, port_recipe = scaled_epochs(port, full, used, settings.epochs)
    fracture_epoch, fracture_epochs = scaled_epochs(fracture, full, used, settings.epochs)
    extraction = scaled_extraction(fracture["extractions"], full, used)
    # Measured end to end on the full data; on a subset, each part scaled up.
    if scaled:
        fracture_recipe = extraction + fracture_epochs + scaled_setup(fracture, full, used)
    else:
        fracture_recipe = fracture["recipe_s"]
    return {
        "scaled": scaled,
        "pipeline_img_s": {"fracture": fracture["pipeline_img_s"], "port": port["pipeline_img_s"]},
        "pipeline_headroom": fracture["pipeline_img_s"] / fracture["train_img_s"],
        "train_img_s": {"fracture": fracture["train_img_s"], "port": port["train_img_s"]},
        "extraction_s": extraction,
        "extraction_img_s": extracted_images(fracture["extractions"], full, used) / extraction,
        "epoch_s": {"fracture": fracture_epoch, "port": port_epoch},
        "recipe_s": {"fracture": fracture_recipe, "port": port_recipe},
        "recipe_speedup": port_recipe / fracture_recipe,
        "val_auroc": {"fracture": fracture["val_auroc"], "port": port["val_auroc"]},
        "val_auroc_bfloat16_prediction": fracture.get("val_auroc_bfloat16_prediction"),
        "predict_warm_ms": {"fracture": fracture["predict_warm_ms"], "port": port["predict_warm_ms"]},
        "predict_cold_s": {"fracture": fracture["predict_cold_s"], "port": port["predict_cold_s"]},
        "first_step_s": {"fracture": fracture["first_step_s"], "port": port["first_step_s"]},
        "matmul_gflops": fracture["matmul_gflops"],
        "backbone_img_s": backbone_rate(fracture["extractions"]),
        "extraction_engine": fracture["extractions"][0]["engine"],
        "predict_engine": fracture["predict_engine"],
        "engines": fracture.get("engines", {}),
        "onnx_conversion_s": fracture.get("onnx_conversion_s"),
        "bfloat16_recipe": bfloat16_figures(fracture.get("bfloat16_recipe"), port_recipe),
    }


def bfloat16_figures(measured: dict | None, port_recipe: float) -> dict | None:
    """The recipe with bfloat16 extraction, as measured on the full data (`workers.measure_bfloat16_recipe`)."""
    if measured is None:
        return None
    extraction = sum(part["seconds"] for part in measured["extractions"])
    return {
        "recipe_s": measured["recipe_s"],
        "recipe_speedup": port_recipe / measured["recipe_s"],
        "val_auroc": measured["val_auroc"],
        "extraction_s": extraction,
        "extraction_img_s": sum(part["images"] for part in measured["extractions"]) / extraction,
        "epochs_s": sum(measured["epoch_wall_s"]),
    }


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
        results[backend] = backend_figures(measured["fracture"], measured["port"], full, used, settings)
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
