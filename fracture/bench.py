"""Benchmark fracture against a plain Keras 3 port of the notebook: `python -m fracture.bench data.root=...`.

Prints one table of ratios (fracture over the port) per backend and writes `bench.json` into the run folder;
see `fracture.benchmarking` for what is measured and how.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from fracture.benchmarking.report import table, write_report
from fracture.benchmarking.runner import BenchSettings, run_benchmark
from fracture.cli import CONFIG_DIR
from fracture.console import console
from fracture.errors import user_errors
from fracture.models.backbones import EFFNET_WEIGHTS_FILE, keras_cache_dir


def resolve_weights(weights: str | None) -> tuple[str | None, list[str]]:
    """`auto` means ImageNet when Keras has the file cached, else random weights, said in a note."""
    if weights != "auto":
        return weights, []
    if (keras_cache_dir() / EFFNET_WEIGHTS_FILE).is_file():
        return "imagenet", []
    note = (
        f"random backbone weights: {EFFNET_WEIGHTS_FILE} is not in {keras_cache_dir()}. Speed is the same; "
        "the AUROC compares heads trained on random features. bench.weights=imagenet downloads it."
    )
    return None, [note]


def settings_from(cfg: DictConfig) -> tuple[BenchSettings, list[str]]:
    options = OmegaConf.to_container(cfg.bench, resolve=True)
    quick, quick_settings = options.pop("quick"), options.pop("quick_settings")
    options.pop("image")
    if quick:
        options.update(quick_settings)
    weights, notes = resolve_weights(options.pop("weights"))
    settings = BenchSettings(
        **options,
        weights=weights,
        image_size=cfg.data.image_size,
        seed=cfg.seed,
        compilation_cache=cfg.compilation_cache,
        fast_depthwise_conv=cfg.fast_depthwise_conv,
        class_names=[cfg.data.positive_class, cfg.data.negative_class],
        callbacks=OmegaConf.to_container(cfg.callbacks, resolve=True),
    )
    return settings, notes


def bench(cfg: DictConfig) -> dict:
    settings, notes = settings_from(cfg)
    out_dir = Path(cfg.paths.output_dir)
    results = run_benchmark(cfg.data.root, out_dir, settings, cfg.bench.image)
    report = write_report(results, vars(settings), out_dir, notes)
    mode = "quick" if cfg.bench.quick else "full"
    for backend, figures in results.items():
        console.print(table(figures, settings.views, f"fracture vs a plain Keras 3 port: {backend}, {mode}"))
    for note in notes:
        console.print(f"note: {note}")
    bfloat16 = report["recipe_speedup_bfloat16"]
    with_bfloat16 = f" ({bfloat16:.2f}x with bfloat16 extraction)" if bfloat16 else ""
    console.print(f"recipe speed-up: {report['recipe_speedup']:.2f}x{with_bfloat16}; bench.json in {out_dir}")
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    with user_errors():
        bench(cfg)


if __name__ == "__main__":
    main()
