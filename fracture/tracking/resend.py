"""Send what a tracking server missed: `python -m fracture.tracking.resend <run folder> [--tracking-uri URI]`.

A run whose MLflow server went away keeps the records it could not send in `<run>/mlflow_unsent.json`
(`fracture.tracking.mlflow_logger`): metric values with their steps and times, parameters and tags, and the
names of the run folder's files. This sends them to the same MLflow run, ends the run with the status it
ended with, and removes the file. `--tracking-uri` points at the same store by another address (a server's
new port, or its SQLite database directly).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fracture.errors import ConfigError, user_errors
from fracture.tracking.mlflow_client import connect
from fracture.tracking.mlflow_logger import UNSENT_FILE, log_run_file


def resend(run_dir: str | Path, tracking_uri: str | None = None) -> dict:
    """Send `<run_dir>/mlflow_unsent.json` to its MLflow run; returns what was sent (counts and the status)."""
    from mlflow.entities import Metric, Param, RunTag

    run_dir = Path(run_dir)
    path = run_dir / UNSENT_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {UNSENT_FILE}: MLflow already has everything of this run.")
    record = json.loads(path.read_text())
    client = connect(tracking_uri or record["tracking_uri"])
    run_id = record["run_id"]
    metrics = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in record["metrics"]]
    params_and_tags = record["params_and_tags"]
    logged = client.get_run(run_id).data.params
    params = [
        Param(e["key"], e["value"]) for e in params_and_tags if e.get("kind") == "param" and e["key"] not in logged
    ]
    tags = [RunTag(e["key"], e["value"]) for e in params_and_tags if e.get("kind") == "tag"]
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    for name in record["files"]:
        if (run_dir / name).exists():  # a file deleted since is left out
            log_run_file(client, run_id, run_dir, name)
    if record.get("status"):
        client.set_terminated(run_id, status=record["status"])
    path.unlink()
    return {
        "metrics": len(metrics),
        "params": len(params),
        "tags": len(tags),
        "files": len(record["files"]),
        "status": record.get("status"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fracture.tracking.resend", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run folder that holds mlflow_unsent.json")
    parser.add_argument("--tracking-uri", help="the same MLflow store by another address")
    arguments = parser.parse_args(argv)
    with user_errors():
        sent = resend(arguments.run_dir, arguments.tracking_uri)
    print(
        f"sent to MLflow: {sent['metrics']} metric values, {sent['params']} parameters, {sent['tags']} tags, "
        f"{sent['files']} files; run status {sent['status'] or 'unchanged'}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
