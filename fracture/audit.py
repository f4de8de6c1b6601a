"""Audit a dataset from its pixels: `python -m fracture.audit data.root=/path/to/dataset`.

Prints a table and writes `audit.json`, `audit.md` and `cross_split_pairs.png` to the run folder
(outputs/audit/runs/<time>/). The method is in `fracture.data.audit`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import CONFIG_DIR, build
from fracture.console import console
from fracture.data.audit import AuditSettings, cached_audit
from fracture.data.audit_report import audit_table, write_audit
from fracture.data.records import audit_files, scan_records
from fracture.errors import user_errors


def audit(cfg: DictConfig) -> dict:
    """Audit the data group's images (its class folders, or the files its label tables list) with its audit
    settings; returns the summary written to `audit.json`."""
    data = cfg.data
    settings = AuditSettings(**data.audit, min_side=data.min_side, max_aspect=data.max_aspect)
    datamodule = build(data, group_by=None)
    files = None
    if datamodule.source is not None:
        limits = datamodule.shape_limits
        splits, _ = scan_records(datamodule.root, datamodule.source, datamodule.class_names, None, limits)
        files = audit_files(splits, datamodule.class_names)
    result = cached_audit(datamodule.root, data.audit_cache, settings, files)
    summary = write_audit(result, Path(cfg.paths.output_dir))
    console.print(audit_table(summary))
    console.print(f"audit: {Path(cfg.paths.output_dir) / 'audit.md'}")
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="audit")
def main(cfg: DictConfig) -> None:
    with user_errors():
        audit(cfg)


if __name__ == "__main__":
    main()
