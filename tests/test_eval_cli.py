"""`python -m fracture.eval` on a checkpoint written by `python -m fracture.train`."""

import json

from conftest import DEMO_SMALL, run_cli

REQUIRED = ["auroc", "auroc_ci_low", "auroc_ci_high", "sensitivity", "specificity", "threshold", "brier", "ece"]


def test_eval_command_writes_metrics_five_plots_and_report(tmp_path):
    data = f"paths.data_dir={tmp_path}/data"
    train = run_cli(
        "fracture.train", *DEMO_SMALL, "trainer.epochs=2", "evaluate=false", data, f"hydra.run.dir={tmp_path}/train"
    )
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = tmp_path / "train" / "checkpoints" / "best_model.keras"

    result = run_cli(
        "fracture.eval",
        f"ckpt_path={ckpt}",
        "data=synthetic",
        *DEMO_SMALL[1:4],
        data,
        "split=test",
        "eval.bootstrap_resamples=100",
        f"hydra.run.dir={tmp_path}/eval",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert all(f"test/{key}" in metrics for key in REQUIRED)
    plots = sorted(p.name for p in (tmp_path / "eval" / "plots").glob("*.png"))
    assert plots == [
        "test_confusion_matrix.png",
        "test_pr.png",
        "test_reliability.png",
        "test_roc.png",
        "training_curves.png",
    ]
    assert "## test split" in (tmp_path / "eval" / "report.md").read_text()


def test_eval_on_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.keras").write_text("not a model")
    result = run_cli("fracture.eval", f"ckpt_path={tmp_path / 'model.keras'}", f"hydra.run.dir={tmp_path}/eval")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not a fracture checkpoint" in result.stderr
