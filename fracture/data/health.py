"""Files a run could not use: skipped when the folders were scanned, or deleted or replaced while it ran.

A long run must not die of one file, and must not hide one either. The data module fingerprints every file
(size and modification time) when it scans the folders; `recheck` compares them again, drops files that
are gone or no longer decode, and every such file is listed in `data_problems.csv`, counted in
`metrics.json` and reported in `report.md`.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fracture.data.folders import SplitFiles, unreadable_reason
from fracture.data.geometry import DEFAULT_LIMITS, ShapeLimits
from fracture.io import write_text_atomic

MISSING = (-1, -1)
PROBLEMS_FILE = "data_problems.csv"


@dataclass(frozen=True)
class FileProblem:
    split: str
    path: str
    problem: str


def fingerprints(paths: list[str]) -> np.ndarray:
    """(size, mtime in ns) per path, as an (N, 2) int64 array; (-1, -1) for a file that is gone."""
    rows = np.empty((len(paths), 2), np.int64)
    for index, path in enumerate(paths):
        try:
            stat = os.stat(path)
            rows[index] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            rows[index] = MISSING
    return rows


def recheck_split(
    files: SplitFiles, before: np.ndarray, limits: ShapeLimits = DEFAULT_LIMITS
) -> tuple[SplitFiles, np.ndarray, list[FileProblem]]:
    """Compare `files` with their fingerprints `before`: (usable files, their fingerprints, problems found).

    A replaced file that still decodes is kept (and reported); one that is gone or no longer decodes is dropped.
    """
    now = fingerprints(files.paths)
    dropped, problems = set(), []
    for index in np.flatnonzero(np.any(now != before, axis=1)):
        path = files.paths[index]
        if tuple(now[index]) == MISSING:
            problem = "deleted during the run; left out"
        elif reason := unreadable_reason(Path(path), limits):
            problem = f"replaced during the run, now unreadable ({reason}); left out"
        else:
            problems.append(FileProblem(files.name, path, "replaced during the run; its new content was used"))
            continue
        problems.append(FileProblem(files.name, path, problem))
        dropped.add(index)
    kept = [index for index in range(len(files)) if index not in dropped]
    return files.subset(kept), now[kept], problems


def skipped_problems(files: SplitFiles) -> list[FileProblem]:
    return [FileProblem(files.name, path, f"skipped at scan: {reason}") for path, reason in files.skipped]


def problem_counts(problems: list[FileProblem]) -> dict[str, int]:
    """The `metrics.json` entries: files skipped at the scan, and files changed while the run went on."""
    skipped = sum(p.problem.startswith("skipped at scan") for p in problems)
    return {"data/skipped_files": skipped, "data/changed_during_run": len(problems) - skipped}


def record_problems(problems: list[FileProblem], output_dir: str | Path) -> dict[str, int]:
    """Write `data_problems.csv` in `output_dir` when there are problems; returns their `metrics.json` counts."""
    if problems:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["split", "path", "problem"])
        writer.writerows((p.split, p.path, p.problem) for p in problems)
        write_text_atomic(Path(output_dir) / PROBLEMS_FILE, buffer.getvalue())
    return problem_counts(problems)
