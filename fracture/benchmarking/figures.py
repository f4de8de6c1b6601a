"""A backend's figures at the full image counts, from what its workers measured (`fracture.benchmarking.workers`).

A backend that trained on a subset (`bench.quick`, or one left out of `full_data_backends`) has its epoch,
extraction and recipe times scaled up to the full counts, part by part: what scales with the images scales,
what is paid once (tracing the first step, building an engine) is counted once.
"""

from __future__ import annotations

import numpy as np


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


def backend_figures(fracture: dict, port: dict, full: dict, used: dict, epochs: int) -> dict:
    """The figures of one backend at the full counts; `scaled` says whether they were scaled up from a subset."""
    scaled = used != full
    port_epoch, port_recipe = scaled_epochs(port, full, used, epochs)
    fracture_epoch, fracture_epochs = scaled_epochs(fracture, full, used, epochs)
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
