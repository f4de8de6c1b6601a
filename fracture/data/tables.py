"""Find labelled images from label tables (CSV or Parquet): one row per image, its columns named in config.

The public fracture datasets are labelled by tables rather than by folder names: FracAtlas' `dataset.csv`
(`image_id`, `fractured`, body-part and view flags), MURA's lists of image paths whose study folder carries the
label, a PACS export's table keyed by file. `TableSource` says which column holds what (`columns`), which
values mean which class (`labels`), which fields come from the image's path instead (`from_path`, a regular
expression with one group, as MURA's `patient00011/study1_positive/`), and how a path is found (relative to
`root`; with `find_by_name`, by file name anywhere under it). `scan_tables` turns the rows into the same
`SplitFiles` that class folders give, with each image's patient, study and subgroup columns when the table
has them.

Nothing is dropped silently: a row whose file is missing or unreadable is skipped with its reason (listed in
`data_problems.csv`), a second row for one file is listed and left out, and files under `root` that no row
names are counted. A label value that maps to neither class, two labels for one file or one study, a column
that is not in the table, and an empty table stop the scan with one line that says what to set.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracture.data.dicom_index import header_rows
from fracture.data.folders import SplitFiles, is_ignored, unreadable_reasons
from fracture.data.geometry import DEFAULT_LIMITS, ShapeLimits
from fracture.data.images import IMAGE_SUFFIXES
from fracture.errors import ConfigError, DataError
from fracture.io import DEFAULT_CACHE

log = logging.getLogger(__name__)

DEFAULT_LABELS = {
    "positive": ["1", "yes", "true", "positive", "fractured", "abnormal"],
    "negative": ["0", "no", "false", "negative", "not fractured", "normal"],
}
DEFAULT_SPLITS = {"train": ["train", "training"], "val": ["val", "valid", "validation"], "test": ["test"]}
FIELDS = ("path", "label", "patient", "study", "split")


def read_rows(path: Path, header: bool = True) -> list[dict[str, str]]:
    """The rows of a CSV (`,`, `;` or tab separated, with or without a byte-order mark, any line ends) or
    Parquet table, every value as text. Without a `header` line (MURA's lists) the columns are "0", "1", ..."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as parquet
        except ImportError as error:
            raise DataError(f"{path} is Parquet: pip install pyarrow (or the tables extra) to read it.") from error
        columns = parquet.read_table(path).to_pydict()
        count = len(next(iter(columns.values()), []))
        return [
            {key: "" if values[i] is None else str(values[i]) for key, values in columns.items()} for i in range(count)
        ]
    with open(path, newline="", encoding="utf-8-sig") as file:
        text = file.read()
    try:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # one column: no separator to find
    lines = [line for line in text.splitlines() if line.strip()]
    if not header:
        return [{str(i): value.strip() for i, value in enumerate(row)} for row in csv.reader(lines, dialect=dialect)]
    return [
        {key.strip(): (value or "").strip() for key, value in row.items() if key}
        for row in csv.DictReader(lines, dialect=dialect)
    ]


@dataclass
class TableSource:
    """Where the tables are and how to read them (see the module doc and `conf/data/table.yaml`)."""

    tables: list[Path]
    root: Path
    columns: dict = field(default_factory=dict)  # field -> column: path, label, patient, study, split; subgroups: [...]
    labels: dict = field(default_factory=lambda: dict(DEFAULT_LABELS))
    splits: dict = field(default_factory=lambda: dict(DEFAULT_SPLITS))
    from_path: dict = field(default_factory=dict)  # field -> regular expression with one group, on the path value
    find_by_name: bool = False
    header: bool = True  # whether the tables' first line names their columns
    # A DICOM export (fracture.data.dicom_index): the files under `root` are DICOM, their headers give the rows,
    # and the tables' column named `dicom_key` (a header field, e.g. StudyInstanceUID) joins the labels.
    dicom_key: str | None = None
    dicom_cache: str | Path | None = DEFAULT_CACHE

    def column(self, name: str) -> str | None:
        return self.columns.get(name) or None

    def gives(self, name: str) -> bool:
        """Whether the tables say `name` (patient, study, ...) for their images, by a column or a path."""
        return self.column(name) is not None or name in self.from_path


def table_source(table, root, columns=None, label_values=None, split_values=None, **options):
    """(the data root, the `TableSource` of `table`, or None for class folders), from the data module's
    arguments: `table` is one path or a list; the root defaults to the first table's folder."""
    tables = (
        [] if table is None else [Path(t).expanduser() for t in ([table] if isinstance(table, str | Path) else table)]
    )
    if root is None and not tables:
        raise ConfigError("data.root must name the data folder (or data.table a label table).")
    root = Path(root).expanduser() if root is not None else tables[0].parent
    if not tables:
        return root, None
    mappings = {"labels": label_values, "splits": split_values}
    mappings = {key: dict(value) for key, value in mappings.items() if value}
    options["from_path"] = dict(options.get("from_path") or {})
    return root, TableSource(tables, root, dict(columns or {}), **mappings, **options)


def value_map(mapping: dict[str, list], setting: str) -> dict[str, str]:
    """Lower-cased value -> its key (`fractured` -> `positive`), refusing a value listed under two keys."""
    found: dict[str, str] = {}
    for key, values in mapping.items():
        for value in values:
            text = str(value).strip().lower()
            if found.get(text, key) != key:
                raise DataError(f"{setting} lists {value!r} under both {found[text]!r} and {key!r}.")
            found[text] = key
    return found


def field_values(source: TableSource, rows: list[dict], table: Path) -> dict[str, list[str | None]]:
    """Each field's value per row, from its column or from the path (`from_path`); None where it has none."""
    header = set(rows[0])
    wanted = {name: source.column(name) for name in FIELDS} | {
        f"subgroup:{c}": c for c in source.columns.get("subgroups") or []
    }
    missing = {name: column for name, column in wanted.items() if column and column not in header}
    if missing:
        setting = ", ".join(
            f"data.columns.subgroups: {column}" if name.startswith("subgroup:") else f"data.columns.{name}={column}"
            for name, column in missing.items()
        )
        raise DataError(f"{table} has no column(s) for {setting}; its columns are {sorted(header)}.")
    if not wanted["path"]:
        raise DataError("data.columns.path must name the table's column of image paths.")
    values = {name: [row[column] if column else None for row in rows] for name, column in wanted.items()}
    for key, pattern in source.from_path.items():
        name = key if key in FIELDS else f"subgroup:{key}"  # any other field is a subgroup (MURA's body part)
        compiled = re.compile(pattern)
        found = [compiled.search(path) for path in values["path"]]
        unmatched = [path for path, match in zip(values["path"], found, strict=True) if match is None]
        if unmatched:
            raise DataError(
                f"data.from_path.{key}={pattern!r} does not match {len(unmatched)} path(s), e.g. {unmatched[0]}."
            )
        values[name] = [match.group(1) for match in found]
    if values["label"][0] is None:
        raise DataError("data.columns.label (or data.from_path.label) must say where each image's label is.")
    return values


def mapped(values: list[str], mapping: dict[str, str], setting: str, column: str) -> list[str]:
    """`values` through `mapping`; unknown values stop the scan with the values seen and the setting."""
    unknown = sorted({value for value in values if value.strip().lower() not in mapping})
    if unknown:
        raise DataError(
            f"{column} has value(s) {unknown[:10]} that {setting} does not map (it maps {sorted(mapping)}); add them "
            f"to {setting}."
        )
    return [mapping[value.strip().lower()] for value in values]


def files_under(root: Path) -> list[Path]:
    """Every file under `root`, system clutter left out."""
    return [path for path in root.rglob("*") if path.is_file() and not is_ignored(path.relative_to(root))]


def resolver(source: TableSource, files: list[Path]):
    """path value -> the file it names: under `root`, under its parent when the value starts with the root's
    own name (MURA's lists), or with `find_by_name` any of `files` (those under `root`) of that name; None
    when missing."""
    by_name: dict[str, list[Path]] = {}
    for path in files if source.find_by_name else []:
        by_name.setdefault(path.name, []).append(path)

    def resolve(value: str) -> Path | None:
        candidates = [source.root / value]
        if Path(value).parts[:1] == (source.root.name,):
            candidates.append(source.root.parent / value)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        named = by_name.get(Path(value).name, [])
        if len(named) > 1:
            raise DataError(
                f"{len(named)} files under {source.root} are named {Path(value).name} ({named[0]}, {named[1]}, ...); "
                "the table must give paths, not bare names."
            )
        return named[0] if named else None

    return resolve


def check_studies(studies: list[str | None], labels: list[int]) -> None:
    """One study, one label: a study's label is a finding about the study (MURA labels studies)."""
    seen: dict[str, set[int]] = {}
    for study, label in zip(studies, labels, strict=True):
        if study is not None:
            seen.setdefault(study, set()).add(label)
    mixed = sorted(study for study, found in seen.items() if len(found) > 1)
    if mixed:
        raise DataError(f"{len(mixed)} stud(ies) have images of both labels, e.g. {mixed[0]}; a study has one finding.")


def table_entries(source: TableSource, files: list[Path]) -> tuple[dict[Path, tuple[int, str, dict]], list[tuple]]:
    """({file: (label, split, fields)}, [(path, why it is left out)]) from every row of the tables; `files`
    are those under the root (`files_under`)."""
    label_of = value_map(source.labels, "data.label_values")
    split_of = value_map(source.splits, "data.split_values")
    resolve = resolver(source, files)
    entries: dict[Path, tuple[int, str, dict]] = {}
    skipped: list[tuple[str, str]] = []
    for table in source.tables:
        if not table.is_file():
            raise DataError(f"label table not found: {table}. Set data.table to a CSV or Parquet file.")
        rows = read_rows(table, source.header)
        if not rows:
            raise DataError(f"{table} has no rows: a label table needs a header and one row per image.")
        if source.dicom_key:
            rows, problems = header_rows(source.root, rows, source.dicom_key, source.dicom_cache)
            skipped += problems
            if not rows:
                raise DataError(f"no DICOM file under {source.root} matches a row of {table} by {source.dicom_key}.")
        values = field_values(source, rows, table)
        labels = mapped(values["label"], label_of, "data.label_values", f"{table}'s labels")
        splits = values["split"]
        if splits[0] is not None:
            splits = mapped(splits, split_of, "data.split_values", f"{table}'s splits")
        for index, path_value in enumerate(values["path"]):
            row = f"{table.name} (row {index + 1 + source.header})"
            file = resolve(path_value)
            if file is None:
                skipped.append((str(source.root / path_value), f"listed in {row} but not found"))
                continue
            label = 1 if labels[index] == "positive" else 0
            fields = {name: column[index] for name, column in values.items() if name not in ("path", "label", "split")}
            fields |= {name: fields[name] or None for name in ("patient", "study")}  # an empty id joins nothing
            if file in entries:
                if entries[file][0] != label:
                    raise DataError(f"{file} is listed with both labels in {table}; one file, one label.")
                skipped.append((str(file), f"listed again in {row}; the first row is used"))
                continue
            entries[file] = (label, splits[index] or "all", fields)
    return entries, skipped


def scan_tables(
    source: TableSource, class_names: tuple[str, str], limits: ShapeLimits = DEFAULT_LIMITS, workers: int = 8
) -> tuple[dict[str, SplitFiles], int]:
    """({split: SplitFiles}, files under `root` that no row names). Without a split column or field every
    image is in `"all"`, to be cut by group (`data.split=grouped`)."""
    present = files_under(source.root)
    entries, skipped = table_entries(source, present)
    files = sorted(entries)
    reasons = unreadable_reasons(files, limits, workers)
    usable = [file for file, reason in zip(files, reasons, strict=True) if reason is None]
    skipped += [(str(file), reason) for file, reason in zip(files, reasons, strict=True) if reason]
    result = {}
    for split in dict.fromkeys(entries[file][1] for file in usable):
        chosen = [file for file in usable if entries[file][1] == split]
        fields = [entries[file][2] for file in chosen]
        result[split] = SplitFiles(
            split,
            [str(file) for file in chosen],
            np.asarray([entries[file][0] for file in chosen], dtype=np.int32),
            [str(file) for file in chosen],
            patients=[f["patient"] for f in fields] if source.gives("patient") else None,
            studies=[f["study"] for f in fields] if source.gives("study") else None,
            subgroups={
                name.removeprefix("subgroup:"): [f[name] for f in fields]
                for name in (fields[0] if fields else {})
                if name.startswith("subgroup:")
            },
        )
    if not result:
        raise DataError(f"no readable image is listed in {[str(t) for t in source.tables]} under {source.root}.")
    first = next(iter(result.values()))
    result[first.name].skipped = skipped  # counted once
    if source.gives("study"):  # across splits too
        check_studies([entries[file][2]["study"] for file in usable], [entries[file][0] for file in usable])
    for files in result.values():
        empty = [class_names[1 - label] for label, count in files.class_counts().items() if count == 0]
        if empty and files.name != "test":
            raise DataError(f"the {files.name} images of {source.tables[0]} hold no {empty} image.")
    listed = set(entries)
    unlisted = sum(1 for path in present if path.suffix.lower() in IMAGE_SUFFIXES and path not in listed)
    if unlisted:
        log.warning(
            "%d image file(s) under %s are in no row of the label table; they are not used.", unlisted, source.root
        )
    if skipped:
        log.warning("Skipped %d row(s) or file(s) of the label table, e.g. %s: %s", len(skipped), *skipped[0])
    return result, unlisted
