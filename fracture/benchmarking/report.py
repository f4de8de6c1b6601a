"""The benchmark's table (fracture over the port, per backend) and `bench.json`."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from fracture.benchmarking.machine import processor_name
from fracture.io import write_json_atomic, write_text_atomic

EFFICIENTNET_B3_GFLOP = 1.98  # per 224 px image, forward; scaled by pixel count for other sizes

# (key in the figures, label, unit, True when higher is better)
ROWS = [
    ("pipeline_img_s", "(a) input pipeline alone", "img/s", True),
    ("train_img_s", "(b) training step, frozen base, uncached", "img/s", True),
    ("epoch_s", "(c) one epoch (fracture: head on cached features)", "s", False),
    ("recipe_s", "(c) 10-epoch recipe, end to end", "s", False),
    ("val_auroc", "    validation AUROC, best checkpoint", "", True),
    ("predict_warm_ms", "(d) warm single-image predict, median", "ms", False),
    ("predict_cold_s", "(d) cold predict, process start to result", "s", False),
    ("first_step_s", "(e) process start to first training step", "s", False),
]
SCALED = {"epoch_s", "recipe_s"}  # scaled up to the full counts when a backend trained on a subset


def backbone_gflop(image_size: int) -> float:
    return EFFICIENTNET_B3_GFLOP * (image_size / 224) ** 2


def add_ceiling(figures: dict, image_size: int) -> None:
    """The backbone's forward FLOP rate as a fraction of the measured matmul rate: the extraction's, and each
    inference engine's."""
    achieved = figures["backbone_img_s"] * backbone_gflop(image_size)
    figures["backbone_gflops"] = achieved
    figures["flop_ceiling_fraction"] = achieved / figures["matmul_gflops"]
    for engine in figures["engines"].values():
        engine["flop_ceiling_fraction"] = (
            engine["extraction_img_s"] * backbone_gflop(image_size) / figures["matmul_gflops"]
        )


def format_value(value: float, unit: str) -> str:
    if unit == "":
        return f"{value:.3f}"
    return f"{value:,.1f} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


def rows(figures: dict, views: int) -> list[tuple[str, str, str, str]]:
    """(figure, fracture, port, fracture/port) for one backend; `*` marks figures scaled up from a subset."""
    mark = "*" if figures["scaled"] else ""
    out = []
    for key, label, unit, higher in ROWS:
        pair = figures[key]
        # A port's AUROC of 0 happens on a few validation images (quick mode): no ratio to give.
        ratio = f"{pair['fracture'] / pair['port']:.2f}x {'↑' if higher else '↓'}" if pair["port"] else "n/a"
        label += mark if key in SCALED else ""
        out.append((label, format_value(pair["fracture"], unit), format_value(pair["port"], unit), ratio))
    out += [
        (f"    recipe speed-up, port / fracture ({views} views){mark}", "", "", f"{figures['recipe_speedup']:.2f}x"),
        (f"    feature extraction, once{mark}", format_value(figures["extraction_s"], "s"), "", ""),
        ("    extraction rate", format_value(figures["extraction_img_s"], "img/s"), "", ""),
        ("    pipeline / training consumption", f"{figures['pipeline_headroom']:.1f}x", "", ""),
        (
            "    backbone forward / float32 matmul rate",
            f"{figures['backbone_gflops']:.0f} / {figures['matmul_gflops']:.0f} GFLOP/s",
            "",
            f"{figures['flop_ceiling_fraction']:.0%}",
        ),
        (
            "    engines used: extraction / prediction",
            f"{figures['extraction_engine']} / {figures['predict_engine']}",
            "",
            "",
        ),
    ]
    out += bfloat16_rows(figures.get("bfloat16_recipe"), figures)
    if figures.get("val_auroc_bfloat16_prediction") is not None:
        predicted = f"{figures['val_auroc_bfloat16_prediction']:.3f} (float32 {figures['val_auroc']['fracture']:.3f})"
        out.append(("    validation AUROC, the recipe's checkpoint predicted in bfloat16", predicted, "", ""))
    if figures["onnx_conversion_s"]:
        conversion = format_value(figures["onnx_conversion_s"], "s")
        out.append(("    engines: converting backbone and classifier to ONNX, once", conversion, "", ""))
    return out + engine_rows(figures["engines"]) + service_rows(figures.get("service", {}))


def bfloat16_rows(bfloat16: dict | None, figures: dict) -> list[tuple[str, str, str, str]]:
    """The recipe with bfloat16 extraction beside the port (`figures.bfloat16_figures`), when it was measured."""
    if not bfloat16:
        return []
    port_recipe, port_auroc = figures["recipe_s"]["port"], figures["val_auroc"]["port"]
    auroc_ratio = f"{bfloat16['val_auroc'] / port_auroc:.2f}x ↑" if port_auroc else "n/a"
    return [
        (
            "(c) 10-epoch recipe, bfloat16 extraction",
            format_value(bfloat16["recipe_s"], "s"),
            format_value(port_recipe, "s"),
            f"{bfloat16['recipe_s'] / port_recipe:.2f}x ↓",
        ),
        ("    validation AUROC, best checkpoint", f"{bfloat16['val_auroc']:.3f}", f"{port_auroc:.3f}", auroc_ratio),
        ("    recipe speed-up, port / fracture (bfloat16 extraction)", "", "", f"{bfloat16['recipe_speedup']:.2f}x"),
        (
            "    feature extraction in bfloat16, once; its rate",
            f"{format_value(bfloat16['extraction_s'], 's')}; {format_value(bfloat16['extraction_img_s'], 'img/s')}",
            "",
            "",
        ),
    ]


def engine_rows(engines: dict) -> list[tuple[str, str, str, str]]:
    """Per inference engine: backbone rate (and its share of the matmul rate), warm single image, parity, set-up."""
    out = []
    for name, engine in engines.items():
        within = all(
            engine[f"{part}_parity_max_abs_difference"] <= engine[f"{part}_parity_bound"]
            for part in ("backbone", "classifier")
        )
        parity = (
            f"{engine['backbone_parity_max_abs_difference']:.1e} / {engine['classifier_parity_max_abs_difference']:.1e}"
        )
        setup = engine["backbone_setup_s"] + engine["classifier_setup_s"]
        out += [
            (
                f"engine {name}: backbone, batches of 32",
                format_value(engine["extraction_img_s"], "img/s"),
                "",
                f"{engine['flop_ceiling_fraction']:.0%} of matmul",
            ),
            (f"engine {name}: warm single image, classifier", format_value(engine["predict_warm_ms"], "ms"), "", ""),
            (
                f"engine {name}: largest difference from Keras, features / probability",
                parity,
                "",
                "within bound" if within else "over bound",
            ),
            (f"engine {name}: compiling, backbone + classifier", format_value(setup, "s"), "", ""),
        ]
    return out


def service_rows(service: dict) -> list[tuple[str, str, str, str]]:
    """Per service configuration: req/s and p95 at the load test's clients, as a ratio to the first row's."""
    first = next(iter(service.values()), None)
    return [
        (
            f"service: {name} ({figures['engine']})",
            f"{figures['req_s']:.1f} req/s, p95 {figures['p95_ms']:,.0f} ms",
            "",
            f"{figures['req_s'] / first['req_s']:.2f}x req/s"
            + (f", {figures['errors']} failed" if figures["errors"] else ""),
        )
        for name, figures in service.items()
    ]


HEADER = ("figure", "fracture", "plain port", "fracture / port")
FOOTNOTE = "↑ higher is better, ↓ lower is better; * scaled up to the full image counts from a subset's epochs"


def table(figures: dict, views: int, title: str) -> Table:
    """A rich table of one backend's `rows`."""
    out = Table(title=title, caption=FOOTNOTE if figures["scaled"] else FOOTNOTE.split(";")[0])
    for index, column in enumerate(HEADER):
        out.add_column(column, justify="left" if index == 0 else "right")
    for row in rows(figures, views):
        out.add_row(*row)
    return out


def markdown(results: dict, views: int, processor: str = "") -> str:
    """Every backend's `rows` as one Markdown table, for the README."""
    lines = [f"Processor: {processor}", ""] if processor else []
    lines += ["| backend | " + " | ".join(HEADER) + " |", "|---|---|---:|---:|---:|"]
    for backend, figures in results.items():
        lines += [f"| {backend} | " + " | ".join(cell.strip() for cell in row) + " |" for row in rows(figures, views)]
    return "\n".join(lines) + f"\n\n{FOOTNOTE}\n"


def write_report(results: dict, settings: dict, out_dir: str | Path, notes: list[str]) -> dict:
    """Add the derived figures, write `bench.json`, and return it. `recipe_speedup` is TensorFlow's when
    TensorFlow was measured (the issue's target), else the first backend's; each backend has its own;
    `recipe_speedup_bfloat16` is the first's with bfloat16 extraction, or None where it was not measured."""
    for figures in results.values():
        add_ceiling(figures, settings["image_size"])
    first = results.get("tensorflow") or next(iter(results.values()))
    report = {
        "processor": processor_name(),
        "recipe_speedup": first["recipe_speedup"],
        "recipe_speedup_bfloat16": (first.get("bfloat16_recipe") or {}).get("recipe_speedup"),
        "backends": results,
        "settings": settings,
        "notes": notes,
    }
    write_json_atomic(Path(out_dir) / "bench.json", report)
    write_text_atomic(Path(out_dir) / "bench.md", markdown(results, settings["views"], report["processor"]))
    return report
