"""Turn an `Audit` into what a person reads: `audit.json`, `audit.md`, a rich table and a contact sheet."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.table import Table

from fracture.data.audit import Audit
from fracture.data.groups import exact_duplicate_sets
from fracture.io import atomic_path, write_json_atomic, write_text_atomic


def _range(values: list[int]) -> dict[str, float]:
    return {"min": int(min(values)), "median": float(np.median(values)), "max": int(max(values))} if values else {}


def summarize(audit: Audit) -> dict:
    """Everything the audit found, as plain data (the content of `audit.json`)."""
    records = audit.records
    readable = [r for r in records if r.error is None]
    counts: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        counts[record.split][record.label] += 1

    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(audit.groups):
        if group >= 0:
            members[group].append(index)
    group_id = audit.group_of()
    cross_split, conflicts = [], []
    for indices in members.values():
        splits = Counter(records[i].split for i in indices)
        labels = Counter(records[i].label for i in indices)
        entry = {
            "group": group_id[records[indices[0]].path],
            "files": len(indices),
            "splits": dict(splits),
            "classes": dict(labels),
            "examples": [records[i].path for i in indices[:3]],
        }
        if len(splits) > 1:
            cross_split.append(entry)
        if len(labels) > 1:
            conflicts.append(entry)
    cross_split.sort(key=lambda e: -e["files"])
    train_groups = {audit.groups[i] for i, r in enumerate(records) if r.split == "train" and audit.groups[i] >= 0}
    leaked = Counter(r.split for i, r in enumerate(records) if r.split != "train" and audit.groups[i] in train_groups)

    byte_sets = exact_duplicate_sets([r.sha256 for r in records])
    known = {tuple(s) for s in byte_sets}
    pixel_sets = [
        s for s in exact_duplicate_sets([r.pixel_sha256 or r.sha256 for r in records]) if tuple(s) not in known
    ]
    sizes = [len(indices) for indices in members.values()]
    return {
        "root": audit.root,
        "files": len(records),
        "readable": len(readable),
        "counts": {split: dict(classes) for split, classes in counts.items()},
        "width": _range([r.width for r in readable]),
        "height": _range([r.height for r in readable]),
        "modes": dict(Counter(r.mode for r in readable)),
        "formats": dict(Counter(r.format for r in readable)),
        "unreadable": [{"path": r.path, "reason": r.error} for r in records if r.error],
        "byte_duplicates": [[records[i].path for i in s] for s in byte_sets],
        "pixel_duplicates": [[records[i].path for i in s] for s in pixel_sets],
        "content_groups": len(members),
        "group_size": _range(sizes),
        "singletons": sum(size == 1 for size in sizes),
        "cross_split_groups": cross_split,
        "files_sharing_a_group_with_train": dict(leaked),
        "label_conflicts": conflicts,
        "settings": vars(audit.settings),
    }


def audit_table(summary: dict) -> Table:
    table = Table(title=f"dataset audit of {summary['root']}")
    table.add_column("finding", style="cyan")
    table.add_column("value", justify="right")
    for split, classes in summary["counts"].items():
        table.add_row(f"files in {split}/", ", ".join(f"{name}: {n}" for name, n in classes.items()))
    table.add_row("unreadable files", str(len(summary["unreadable"])))
    table.add_row(
        "byte-identical sets / pixel-identical sets",
        f"{len(summary['byte_duplicates'])} / {len(summary['pixel_duplicates'])}",
    )
    table.add_row("content groups (distinct radiographs)", str(summary["content_groups"]))
    table.add_row("groups that cross splits", str(len(summary["cross_split_groups"])))
    for split, count in summary["files_sharing_a_group_with_train"].items():
        total = sum(summary["counts"].get(split, {}).values())
        table.add_row(f"{split} files sharing a radiograph with train", f"{count} of {total}")
    table.add_row("groups with both classes (label conflicts)", str(len(summary["label_conflicts"])))
    return table


def audit_markdown(summary: dict, contact_sheet: str | None) -> str:
    classes = sorted({c for s in summary["counts"].values() for c in s})
    cross = summary["cross_split_groups"]
    lines = [
        f"# Dataset audit: {summary['root']}",
        "",
        f"{summary['files']} files, {summary['readable']} readable, in {summary['content_groups']} content groups "
        f"(files that show the same radiograph; group size {summary['group_size']}).",
        "",
        "| split | " + " | ".join(classes) + " |",
    ]
    lines.append("|---" * (len(classes) + 1) + "|")
    for split, counts in summary["counts"].items():
        lines.append(f"| {split} | " + " | ".join(str(counts.get(c, 0)) for c in classes) + " |")
    lines += [
        "",
        f"- Sizes: width {summary['width']}, height {summary['height']}; modes {summary['modes']}; "
        f"formats {summary['formats']}.",
        f"- Unreadable files: {len(summary['unreadable'])}.",
        f"- Exact duplicates: {len(summary['byte_duplicates'])} byte-identical sets, "
        f"{len(summary['pixel_duplicates'])} more with identical pixels.",
        f"- **Groups that cross splits: {len(summary['cross_split_groups'])}**; files outside train that share a "
        f"radiograph with train: {summary['files_sharing_a_group_with_train'] or 'none'}. Their per-file scores "
        "are inflated: split by group (`data.split=grouped`).",
    ]
    lines += [f"  - {e['group']}: {e['splits']} {e['classes']}, e.g. {e['examples'][:2]}" for e in cross[:20]]
    lines.append(f"- Groups that hold both classes (label conflicts): {len(summary['label_conflicts'])}.")
    lines += [f"  - {e['group']}: {e['classes']}, e.g. {e['examples'][:2]}" for e in summary["label_conflicts"][:20]]
    lines += [f"- unreadable: `{e['path']}`: {e['reason']}" for e in summary["unreadable"][:20]]
    if contact_sheet:
        lines += ["", f"![Examples of cross-split pairs]({contact_sheet})"]
    return "\n".join(lines) + "\n"


def contact_sheet(audit: Audit, path: Path, pairs: int = 8, tile: int = 200) -> Path | None:
    """A PNG of up to `pairs` cross-split pairs side by side (the most similar linked pair of each group)."""
    records, groups = audit.records, audit.groups
    best: dict[int, tuple[float, int, int]] = {}
    for link in audit.links:
        if records[link.a].split != records[link.b].split:
            strength = link.matches + 100 * link.similarity
            group = groups[link.a]
            if group not in best or strength > best[group][0]:
                best[group] = (strength, link.a, link.b)
    chosen = sorted(best.values(), reverse=True)[:pairs]
    if not chosen:
        return None
    root = Path(audit.root)
    font = ImageFont.load_default(size=12)
    sheet = Image.new("RGB", (2 * tile + 30, len(chosen) * (tile + 24) + 6), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (_, a, b) in enumerate(chosen):
        for column, index in enumerate((a, b)):
            with Image.open(root / records[index].path) as image:
                thumb = image.convert("RGB")
                thumb.thumbnail((tile, tile))
            x, y = 10 + column * (tile + 10), 6 + row * (tile + 24)
            sheet.paste(thumb, (x, y))
            caption = f"{records[index].split}: {Path(records[index].path).name}"
            draw.text((x, y + tile + 4), caption[:34], fill=(0, 0, 0), font=font)
    with atomic_path(path) as staging:
        sheet.save(staging, format="PNG")
    return path


def write_audit(audit: Audit, output_dir: str | Path) -> dict:
    """Write `audit.json`, `audit.md` and `cross_split_pairs.png` to `output_dir`; returns the summary."""
    output_dir = Path(output_dir)
    summary = summarize(audit)
    sheet = contact_sheet(audit, output_dir / "cross_split_pairs.png")
    write_json_atomic(output_dir / "audit.json", summary)
    write_text_atomic(output_dir / "audit.md", audit_markdown(summary, sheet.name if sheet else None))
    return summary
