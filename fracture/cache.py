"""What fracture's caches hold, and keeping them to a size: `python -m fracture.cache [--prune GB]`.

Prints, for each kind of cache under the cache root ($FRACTURE_CACHE_DIR, else ~/.cache/fracture), how many
entries it holds, their size and their last use. `--prune GB` deletes the least recently used entries until
all of them take at most that many gigabytes (`--prune 0` empties the caches); `--folder` looks at another
folder (a `trainer.feature_cache_dir` of its own). Every entry is rebuilt when a run needs it again, so
pruning loses time, never results. Files that are not fracture's entries (JAX's compilation cache) are
counted but left alone. Setting `$FRACTURE_CACHE_MAX_GB` prunes the cache root every time a new entry is
stored (`fracture.cache_entry`). A plain command line, not Hydra: it writes no run folder.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from rich.table import Table

from fracture.cache_entry import prune_entries, stored_entries
from fracture.console import console
from fracture.errors import ConfigError, user_errors
from fracture.io import cache_root


def kind_of(path: Path, root: Path) -> str:
    """The kind of cache a file under `root` belongs to: its first folder there, or "." for a file in `root`."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else "."


def usage_table(root: Path) -> Table:
    """One row per kind of cache under `root`: its entries, their size, the size of all its files (entries,
    files being written, JAX's cache), and the last use of any entry."""
    files, entries = defaultdict(int), defaultdict(list)
    for path in sorted(path for path in root.rglob("*") if path.is_file()):
        files[kind_of(path, root)] += path.stat().st_size
    for entry in stored_entries(root):
        entries[kind_of(entry.data, root)].append(entry)
    table = Table("cache", "entries", "entries' size", "all files", "last used", title=f"caches in {root}")
    now = time.time()
    for kind, size in files.items():
        found = entries[kind]
        last = f"{(now - max(entry.last_used for entry in found)) / 86400:.1f} days ago" if found else "-"
        table.add_row(kind, str(len(found)), gigabytes(sum(entry.bytes for entry in found)), gigabytes(size), last)
    if foreign := [kind for kind in files if not entries[kind]]:  # "0 entries" beside megabytes looks broken
        table.caption = (
            f"{', '.join(foreign)}: files that are not fracture's entries (JAX's own compilation cache, or files "
            "still being written): counted in all files, never pruned"
        )
    return table


def gigabytes(count: int) -> str:
    """A size for people: GB with two decimals, or MB below a tenth of a GB."""
    return f"{count / 1e9:.2f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(prog="python -m fracture.cache", description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=None, help="the folder to look at (default: the cache root)")
    parser.add_argument("--prune", type=float, metavar="GB", help="delete least recently used entries down to GB")
    args = parser.parse_args(argv)
    root = (args.folder or cache_root()).expanduser()
    if args.folder is not None and not root.is_dir():
        raise ConfigError(f"--folder {root}: there is no such folder.")
    deleted = []
    if args.prune is not None:
        if not args.prune >= 0:
            parser.error("--prune takes a size in GB, 0 or more")
        deleted = prune_entries(root, int(args.prune * 1e9))
        console.print(f"deleted {len(deleted)} entries ({gigabytes(sum(entry.bytes for entry in deleted))})")
    console.print(usage_table(root))
    return deleted


if __name__ == "__main__":
    with user_errors():
        main()
