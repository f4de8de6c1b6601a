"""`RunFolder`: the one writer of a run's metrics.json, the owner of its backup, and how resume finds a run."""

import json

from fracture.run_folder import RunFolder


def test_metrics_are_written_then_added_to_and_a_failure_is_recorded(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.metrics() == {} and run.failure() is None
    run.write_metrics({"status": "finished", "val/auc_approx": 0.5})
    run.add_metrics({"val/auroc": 0.75})  # evaluation's figures beside training's
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {
        "status": "finished",
        "val/auc_approx": 0.5,
        "val/auroc": 0.75,
    }
    run.write_metrics({"status": "interrupted"})  # a new record replaces the old one whole
    assert run.metrics() == {"status": "interrupted"}
    run.record_failure(ValueError("bad lr"))
    assert run.failure() == "ValueError: bad lr"


def test_resume_finds_the_newest_unfinished_run_and_only_runs_with_a_backup(tmp_path):
    runs = tmp_path / "runs"
    for name in ("2026-12-01_10-00-00", "2026-12-01_11-00-00", "2026-12-01_12-00-00"):
        (runs / name).mkdir(parents=True)
    for name in ("2026-12-01_10-00-00", "2026-12-01_11-00-00"):
        RunFolder(runs / name).backup_dir.mkdir()
    newest = RunFolder.to_resume(True, runs)
    assert newest.path == runs / "2026-12-01_11-00-00"  # the 12:00 run finished: it has no backup
    assert RunFolder.to_resume(str(runs / "2026-12-01_10-00-00"), runs).path == runs / "2026-12-01_10-00-00"
    assert RunFolder.to_resume(str(runs / "2026-12-01_12-00-00"), runs) is None  # nothing to continue there
    assert RunFolder.to_resume(False, runs) is None and RunFolder.to_resume(True, tmp_path / "none") is None
    newest.finish()
    assert not newest.unfinished and RunFolder.to_resume(True, runs).path == runs / "2026-12-01_10-00-00"


def test_prepare_records_run_info(tmp_path):
    run = RunFolder(tmp_path / "run").prepare()
    assert "packages" in json.loads(run.file("run_info.json").read_text())
