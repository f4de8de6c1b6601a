"""How well the content audit finds copies of one radiograph, on the shared X-ray data with random file names.

    python benchmarks/audit_accuracy.py --data ../shared/data/xray-fracture

Copies the dataset with every file renamed to a random name (the truth stays in this script), runs
`python -m fracture.audit` on the copy (timed, cache off), and scores its groups against the truth that the
data's README gives: a file's source radiograph is its class and name prefix (`12-rotated1.jpg` -> 12), with
the README's merges (val/not fractured 3 = train 69, id 4 of not fractured in both splits, and five pairs of
train ids that are one radiograph). Pair precision and recall count every pair of files: a pair is
"predicted same" when the audit puts both in one group, and "truly same" when they share a source.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix

# The README's known identities: (split, class, id) -> the source radiograph it shows.
SAME_RADIOGRAPH = {
    ("train", "not fractured", "69"): "not fractured/3",
    ("val", "not fractured", "3"): "not fractured/3",
    ("train", "not fractured", "4"): "not fractured/4",
    ("val", "not fractured", "4"): "not fractured/4",
    ("train", "fractured", "83"): "train/fractured/57",
    ("train", "fractured", "86"): "train/fractured/60",
    ("train", "fractured", "85"): "train/fractured/59",
    ("train", "not fractured", "46"): "train/not fractured/29",
    ("train", "not fractured", "47"): "train/not fractured/30",
}


def source_of(split: str, label: str, name: str) -> str:
    source_id = re.split(r"[-.]", name, maxsplit=1)[0]
    return SAME_RADIOGRAPH.get((split, label, source_id), f"{split}/{label}/{source_id}")


def renamed_copy(data: Path, target: Path) -> dict[str, str]:
    """Copy `data` with random file names; returns new relative path -> true source."""
    truth = {}
    for path in sorted(data.glob("*/*/*.jpg")):
        split, label = path.parent.parent.name, path.parent.name
        relative = f"{split}/{label}/{secrets.token_hex(8)}.jpg"
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / relative)
        truth[relative] = source_of(split, label, path.name)
    return truth


def pair_scores(truth: list[str], predicted: list[str]) -> tuple[float, float]:
    """Pair precision and recall of a grouping, from the contingency table (no loop over pairs)."""
    _, true_ids = np.unique(truth, return_inverse=True)
    _, predicted_ids = np.unique(predicted, return_inverse=True)
    table = coo_matrix((np.ones(len(truth)), (true_ids, predicted_ids))).toarray()

    def pairs(counts):
        counts = np.asarray(counts, dtype=np.int64)
        return int((counts * (counts - 1) // 2).sum())

    both = pairs(table.ravel())
    return both / pairs(table.sum(axis=0)), both / pairs(table.sum(axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/xray-fracture"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        copy, run, cache = Path(folder) / "data", Path(folder) / "run", Path(folder) / "cache"
        truth = renamed_copy(args.data, copy)
        started = time.perf_counter()
        command = [sys.executable, "-m", "fracture.audit", f"data.root={copy}", f"hydra.run.dir={run}"]
        subprocess.run([*command, f"data.audit_cache={cache}"], check=True, env={**os.environ, "TERM": "dumb"})
        seconds = time.perf_counter() - started
        summary = json.loads((run / "audit.json").read_text())
        cached = next(cache.glob("audit-*.json"))
        audit = json.loads(cached.read_text())
    paths = [record["path"] for record in audit["records"]]
    groups = [f"g{group}" for group in audit["groups"]]
    precision, recall = pair_scores([truth[p] for p in paths], groups)
    sources = len(set(truth.values()))
    crossing_truth = {truth[p] for p in truth if p.startswith("val/")} & {
        truth[p] for p in truth if p.startswith("train/")
    }
    print(
        f"files {len(paths)}, distinct radiographs (truth) {sources}, content groups {summary['content_groups']} "
        f"({summary['content_groups'] / sources - 1:+.1%})"
    )
    print(
        f"groups crossing train/val: found {len(summary['cross_split_groups'])}, truth {len(crossing_truth)}; "
        f"val files sharing a radiograph with train: found {summary['files_sharing_a_group_with_train']}"
    )
    print(f"pair precision {precision:.3f}, pair recall {recall:.3f}; audit wall time {seconds:.0f} s")


if __name__ == "__main__":
    main()
