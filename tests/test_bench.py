"""The benchmark's arithmetic, subset, report and entry point; the full run is a slow test."""

import json
import subprocess
import sys

import pytest
from conftest import compose_config, make_class_folders

from fracture.benchmarking.figures import backbone_rate, backend_figures, scaled_epochs, scaled_extraction, scaled_setup
from fracture.benchmarking.report import markdown, rows, write_report
from fracture.benchmarking.runner import BenchSettings, image_counts, launch, make_subset, run_benchmark, split_images
from fracture.errors import DataError

CLASS_NAMES = ("fractured", "not fractured")


def epochs(train, val, other=0.5):
    return {
        "epoch_train_s": list(train),
        "epoch_val_s": list(val),
        "epoch_wall_s": [t + v + other for t, v in zip(train, val, strict=True)],
    }


def test_epochs_scale_with_their_image_counts_and_the_first_epochs_tracing_counts_once():
    measured = epochs([5.0, 1.0, 1.0], [2.0, 0.5, 0.5])  # 4 s + 1.5 s of tracing in the first epoch
    epoch, total = scaled_epochs(measured, {"train": 100, "val": 40}, {"train": 10, "val": 20}, epochs=10)
    assert epoch == pytest.approx(1.0 * 10 + 0.5 * 2 + 0.5)
    assert total == pytest.approx(10 * epoch + 4.0 + 1.5)
    # On the full data nothing is scaled: ten epochs like these take ten times as long, plus the tracing.
    same = {"train": 10, "val": 20}
    assert scaled_epochs(measured, same, same, epochs=3)[1] == pytest.approx(sum(measured["epoch_wall_s"]))


def test_extraction_scales_from_its_steady_rate_and_counts_building_the_engine_once():
    train = {
        "split": "train",
        "images": 96,
        "seconds": 13.0,
        "forward_s": 5.0,
        "first_call_s": 3.0,
        "first_call_images": 32,
        "engine_setup_s": 6.0,  # built for train, reused for val
    }
    val = {"split": "val", "images": 16, "seconds": 1.5, "forward_s": 1.0, "first_call_s": 1.0, "first_call_images": 16}
    val["engine_setup_s"] = 0.0
    seconds = scaled_extraction([train, val], {"train": 480, "val": 160}, {"train": 48, "val": 16})
    # The backbone: first calls (4 s, 48 images) as measured, then 64 images in 2 s: the other 960 + 160 - 48
    # at 32 img/s. Building the engine (6 s) once. The rest (2 s for train, 0.5 s for val) scales with the
    # image counts (10x each).
    assert seconds == pytest.approx(4.0 + (960 + 160 - 48) / 32 + 6.0 + 2.0 * 10 + 0.5 * 10)
    assert backbone_rate([train, val]) == pytest.approx(32.0)  # the table's backbone rate


def test_the_recipes_setup_scales_with_the_image_count():
    measured = {**epochs([1.0], [0.5]), "extractions": [{"seconds": 2.0}], "recipe_s": 2.0 + 2.0 + 1.5}
    # Outside the extraction (2 s) and the epoch (2 s of wall time): 1.5 s for 20 images, so 15 s for 200.
    assert scaled_setup(measured, {"train": 150, "val": 50}, {"train": 15, "val": 5}) == pytest.approx(15.0)


def test_backend_figures_give_ratios_and_the_recipe_speedup(tmp_path):
    fracture = {
        **epochs([1.0, 0.1, 0.1], [0.2, 0.05, 0.05]),
        "extractions": [
            {
                "split": "train",
                "images": 64,
                "seconds": 2.0,
                "forward_s": 2.0,
                "first_call_s": 1.0,
                "first_call_images": 32,
                "engine": "openvino",
                "engine_setup_s": 0.0,
            }
        ],
        "recipe_s": 3.0,
        "pipeline_img_s": 900.0,
        "train_img_s": 30.0,
        "val_auroc": 0.9,
        "predict_warm_ms": 40.0,
        "predict_cold_s": 10.0,
        "first_step_s": 15.0,
        "matmul_gflops": 200.0,
        "predict_engine": "openvino",
        "onnx_conversion_s": 50.0,
        "engines": {
            name: {
                "extraction_img_s": rate,
                "predict_warm_ms": 1000.0 / rate,
                "backbone_setup_s": 20.0,
                "classifier_setup_s": 5.0,
                "backbone_parity_max_abs_difference": difference,
                "backbone_parity_bound": 1e-3,
                "classifier_parity_max_abs_difference": 0.0,
                "classifier_parity_bound": 1e-3,
            }
            for name, rate, difference in (
                ("keras", 40.0, 0.0),
                ("openvino", 50.0, 1e-7),
                ("openvino bfloat16", 80.0, 1e-2),
            )
        },
    }
    port = {**fracture, **epochs([3.0, 2.0], [1.0, 1.0]), "pipeline_img_s": 1000.0, "val_auroc": 0.8}
    full = {"train": 64, "val": 16}
    figures = backend_figures(fracture, port, full, full, epochs=2)
    assert not figures["scaled"] and figures["recipe_s"]["fracture"] == 3.0  # measured, not projected
    assert figures["recipe_s"]["port"] == pytest.approx(2 * 3.5 + 1.0)  # two steady epochs + the first's extra
    assert figures["recipe_speedup"] == pytest.approx(8.0 / 3.0)
    assert figures["pipeline_headroom"] == pytest.approx(30.0)
    report = write_report({"tensorflow": figures}, {"image_size": 224, "views": 2}, tmp_path, [])
    assert report["recipe_speedup"] == figures["recipe_speedup"]
    # The backbone's steady rate in the extraction: 32 images in 1 s after the first call.
    assert figures["flop_ceiling_fraction"] == pytest.approx(32.0 * 1.98 / 200.0)
    labels = [row[0].strip() for row in rows(figures, 2)]
    assert any(label.startswith("(e)") for label in labels) and "*" not in "".join(labels)
    bfloat16_row = "validation AUROC, the recipe's checkpoint predicted in bfloat16"
    assert bfloat16_row not in labels  # not measured: no row
    figures["val_auroc_bfloat16_prediction"] = 0.88
    assert {row[0].strip(): row[1] for row in rows(figures, 2)}[bfloat16_row] == "0.880 (float32 0.900)"
    # Each engine's rows: its backbone rate as a share of the matmul rate, and its parity against the bound.
    engine_rows = {row[0]: row[1:] for row in rows(figures, 2) if row[0].startswith("engine ")}
    assert engine_rows["engine openvino: backbone, batches of 32"] == (
        "50.0 img/s",
        "",
        f"{50 * 1.98 / 200:.0%} of matmul",
    )
    assert engine_rows["engine openvino: largest difference from Keras, features / probability"][2] == "within bound"
    assert engine_rows["engine openvino bfloat16: largest difference from Keras, features / probability"] == (
        "1.0e-02 / 0.0e+00",
        "",
        "over bound",
    )
    figures["service"] = {
        "one at a time, keras": {"req_s": 20.0, "p50_ms": 400.0, "p95_ms": 500.0, "errors": 0, "engine": "keras"},
        "batches of 8, auto engine": {
            "req_s": 50.0,
            "p50_ms": 150.0,
            "p95_ms": 200.0,
            "errors": 1,
            "engine": "openvino",
        },
    }
    assert rows(figures, 2)[-1] == (
        "service: batches of 8, auto engine (openvino)",
        "50.0 req/s, p95 200 ms",
        "",
        "2.50x req/s, 1 failed",
    )
    assert "| tensorflow | (a) input pipeline alone | 900.0 img/s | 1,000 img/s | 0.90x ↑ |" in markdown(
        {"tensorflow": figures}, 2
    )
    # A port whose AUROC is 0 (seen on quick mode's 8 validation images) gets no ratio, not a crash.
    figures["val_auroc"]["port"] = 0.0
    assert "| tensorflow | validation AUROC, best checkpoint | 0.900 | 0.000 | n/a |" in markdown(
        {"tensorflow": figures}, 2
    )


def test_the_bfloat16_recipe_gets_its_own_rows_beside_the_port_and_none_where_it_was_not_measured(tmp_path):
    from fracture.benchmarking.figures import bfloat16_figures

    port_recipe = 1000.0
    assert bfloat16_figures(None, port_recipe) is None
    measured = {
        "recipe_s": 80.0,
        "val_auroc": 0.95,
        "epoch_wall_s": [3.0, 2.0],
        "extractions": [{"images": 300, "seconds": 50.0}, {"images": 100, "seconds": 10.0}],
    }
    bfloat16 = bfloat16_figures(measured, port_recipe)
    assert bfloat16["recipe_speedup"] == pytest.approx(12.5) and bfloat16["epochs_s"] == 5.0
    assert bfloat16["extraction_s"] == 60.0 and bfloat16["extraction_img_s"] == pytest.approx(400 / 60)
    figures = {"recipe_s": {"port": port_recipe}, "val_auroc": {"port": 0.8}, "recipe_speedup": 4.0}
    from fracture.benchmarking.report import bfloat16_rows

    table = {row[0].strip(): row[1:] for row in bfloat16_rows(bfloat16, figures)}
    assert table["(c) 10-epoch recipe, bfloat16 extraction"] == ("80.0 s", "1,000 s", "0.08x ↓")
    assert table["validation AUROC, best checkpoint"] == ("0.950", "0.800", "1.19x ↑")
    assert table["recipe speed-up, port / fracture (bfloat16 extraction)"][2] == "12.50x"
    assert bfloat16_rows(None, figures) == []


def test_a_launched_process_is_timed_to_its_exit_and_a_failure_shows_its_output(tmp_path):
    log = tmp_path / "run.log"
    assert launch(["-c", "import time; print('working'); time.sleep(0.5)"], "tensorflow", log) >= 0.5
    assert "working" in log.read_text()
    with pytest.raises(RuntimeError, match="failed \\(exit 3\\)"):
        launch(["-c", "import sys; sys.exit(3)"], "tensorflow", log)


def test_the_subset_links_the_first_images_of_each_class_that_fracture_trains_on(tmp_path):
    root = make_class_folders(tmp_path / "data", per_class=5)
    (root / "train" / "fractured" / "0-notes.txt").write_text("not an image")  # sorts first; not counted
    (root / "train" / "fractured" / "9-scan.tif").write_bytes(
        (root / "train" / "fractured" / "0-rotated1.png").read_bytes()
    )
    listing = split_images(root, CLASS_NAMES)
    subset = make_subset(listing, tmp_path / "subset", {"train": 3, "val": 2})
    assert image_counts(root, CLASS_NAMES) == {"train": 11, "val": 10}  # the readable file named .tif counts
    assert image_counts(subset, CLASS_NAMES) == {"train": 6, "val": 4}
    linked = sorted((subset / "train" / "fractured").iterdir())
    assert all(p.is_symlink() for p in linked) and [p.name for p in linked] == [f"{i}-rotated1.png" for i in range(3)]
    # A second run into the same folder (a fixed hydra.run.dir) replaces the subset; the images stay.
    subset = make_subset(listing, tmp_path / "subset", {"train": 2, "val": 2})
    assert image_counts(subset, CLASS_NAMES) == {"train": 4, "val": 4}
    assert image_counts(root, CLASS_NAMES) == {"train": 11, "val": 10}
    (subset / "val" / "fractured" / "mine.png").write_bytes(b"")  # not a link: somebody's file, kept
    with pytest.raises(DataError, match="did not put there"):
        make_subset(listing, tmp_path / "subset", {"train": 2, "val": 2})
    with pytest.raises(DataError, match=r"1 image\(s\) .* e.g. 9-scan.tif, have names that the plain port"):
        run_benchmark(root, tmp_path / "out", BenchSettings())  # it would train on one image fewer


def test_too_few_training_images_are_refused_before_anything_runs(tmp_path):
    root = make_class_folders(tmp_path / "data", per_class=5)  # 10 training images: fewer than two batches
    with pytest.raises(DataError, match="at least 32 training images"):
        run_benchmark(root, tmp_path / "out", BenchSettings(full_data_backends=["tensorflow", "jax"]))
    assert not (tmp_path / "out" / "tensorflow").exists()


def test_quick_mode_leaves_out_what_cannot_fit_in_five_minutes(tmp_path):
    from fracture.bench import settings_from

    quick, _ = settings_from(compose_config(tmp_path, "bench.quick=true", "bench.weights=null", name="bench"))
    full, _ = settings_from(compose_config(tmp_path, "bench.weights=null", name="bench"))
    assert quick.backends == ["tensorflow"] and full.backends == ["tensorflow", "jax"]
    assert quick.engine_batches == 0 < full.engine_batches  # no ONNX conversion
    assert quick.service_requests == 0 < full.service_requests  # no server start-ups
    assert quick.subset_per_class == {"train": 16, "val": 4} and full.full_data_backends == ["tensorflow"]


@pytest.mark.slow
def test_the_quick_benchmark_prints_every_figure_and_writes_bench_json(tmp_path, synthetic_root):
    command = [
        sys.executable,
        "-m",
        "fracture.bench",
        "bench.quick=true",
        f"data.root={synthetic_root}",
        "data.image_size=64",
        "bench.quick_settings.subset_per_class={train:16,val:4}",
        # what quick mode leaves out for time, back in: both backends, the engine rows, the engine service
        "bench.quick_settings.backends=[tensorflow,jax]",
        "bench.quick_settings.engine_batches=2",
        "bench.quick_settings.service_requests=40",
        f"hydra.run.dir={tmp_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report["backends"]) == {"tensorflow", "jax"} and report["recipe_speedup"] > 0
    for figures in report["backends"].values():
        assert figures["scaled"] and all(v > 0 for v in figures["recipe_s"].values())
    engines = report["backends"]["tensorflow"]["engines"]  # the engines and the service on the first backend
    assert {"keras", "onnxruntime", "openvino"} <= set(engines) and not report["backends"]["jax"]["engines"]
    assert all(engine["extraction_img_s"] > 0 for engine in engines.values())
    service = report["backends"]["tensorflow"]["service"]
    assert len(service) == 2 and all(row["req_s"] > 0 and row["errors"] == 0 for row in service.values())
    assert report["processor"] and report["processor"] in (tmp_path / "bench.md").read_text()
    assert "recipe speed-up" in done.stderr and (tmp_path / "bench.md").is_file()
