"""Bulk prediction on Ray Data: an archive's files predicted by a pool of actors, each holding one `Predictor`.

    python -m fracture.predict ckpt_path=... inputs=[/archive] engine=ray ray.actors=4 [ray.address=auto]

Each actor runs `Predictor.predict_batch` on paths, the very call local prediction makes, so the reader, the
shape limits, the calibration and the error rows are the same. Rows stream back in input order and are
written as they come, a few hundred at a time, as Parquet parts under `predictions.parquet/` (one table to
pandas, pyarrow or DuckDB), each part atomically; nothing holds all rows at once. A rerun into the same output
folder predicts only the files that no part holds yet under the same path, size and modification time, so an
interrupted run loses at most the part it was filling, and a changed file is predicted again. At the end
`predictions.csv` is rewritten from every part: the columns of local prediction, each file once, in the order
its part was written (input order for a run that was never interrupted).
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from fracture.console import console, progress_bar
from fracture.data.geometry import DEFAULT_LIMITS, ShapeLimits
from fracture.data.images import expand_inputs
from fracture.errors import ConfigError
from fracture.io import atomic_path
from fracture.ray_cluster import RaySettings, prepare_actor_backend, ray_session

PARTS = "predictions.parquet"
KEY = ["path", "size", "mtime_ns"]
CSV_COLUMNS = ["path", "label", "probability", "threshold", "error"]  # local prediction's predictions.csv
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("label", pa.string()),
        ("probability", pa.float64()),
        ("threshold", pa.float64()),
        ("error", pa.string()),
    ]
)
# The listing: each file's key and its place among the inputs.
LISTING_SCHEMA = pa.schema([*(SCHEMA.field(name) for name in KEY), pa.field("order", pa.int64())])
PART_ROWS = 512  # rows per Parquet part, or fewer when PART_SECONDS pass first
PART_SECONDS = 30.0


@dataclass
class ArchiveSummary:
    """What a bulk prediction did: files listed, already predicted before this run, predicted now, and the
    labels (and `error`) of every row in the output."""

    listed: int
    skipped: int
    predicted: int
    counts: Counter = field(default_factory=Counter)
    parts: Path | None = None
    csv: Path | None = None
    seconds: float = 0.0


def list_files(inputs: list[str | Path]) -> pa.Table:
    """Path, size and modification time of every input file, in `expand_inputs`' order (the resume key).

    A file that cannot be stat'ed (a broken link) gets size and time -1: the predictor gives it its error row."""
    paths, sizes, times = [], [], []
    for path in expand_inputs(inputs):
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        paths.append(str(path))
        sizes.append(size)
        times.append(mtime)
    order = pa.array(np.arange(len(paths), dtype=np.int64))
    return pa.table({"path": paths, "size": sizes, "mtime_ns": times, "order": order}, schema=LISTING_SCHEMA)


def predicted_keys(parts: Path) -> pa.Table | None:
    """The key columns of every row already written under `parts`, or None before the first part."""
    if not parts.is_dir() or not any(parts.glob("*.parquet")):
        return None
    return pads.dataset(parts, format="parquet", schema=SCHEMA).to_table(columns=KEY)


def still_to_predict(listing: pa.Table, done: pa.Table | None) -> pa.Table:
    """The listed files that no written row holds with the same path, size and time, in listing order."""
    if done is None or done.num_rows == 0:
        return listing
    rest = listing.join(done, keys=KEY, join_type="left anti")
    return rest.sort_by("order")


@dataclass(frozen=True)
class PredictorSpec:
    """What each actor needs to build the `Predictor` that local prediction would build (`load_predictor`).

    `backend` holds the entry's `compilation_cache` and `fast_depthwise_conv`, applied in every actor."""

    ckpt_path: str
    gradcam_layer: str | None = None
    max_pixels: int | None = None
    limits: ShapeLimits = DEFAULT_LIMITS
    backend: dict = field(default_factory=dict)


class PredictorActor:
    """One model per Ray actor: loads the checkpoint once, then predicts batches of listed files."""

    def __init__(self, spec: PredictorSpec):
        from fracture.inference.predictor import load_predictor

        prepare_actor_backend(spec.backend)
        self.predictor = load_predictor(spec.ckpt_path, spec.gradcam_layer, spec.max_pixels, spec.limits)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [row[0] for row in self.predictor.predict_batch([str(path) for path in batch["path"]])]
        return {
            "path": batch["path"],
            "size": batch["size"],
            "mtime_ns": batch["mtime_ns"],
            "label": np.array([p.label for p in rows], dtype=object),
            "probability": np.array([np.nan if p.probability is None else p.probability for p in rows]),
            "threshold": np.array([p.threshold for p in rows]),
            "error": np.array([p.error for p in rows], dtype=object),
        }


class PartWriter:
    """Buffers predicted rows and writes them as numbered Parquet parts of about `part_rows`, each atomically."""

    def __init__(self, parts: Path, part_rows: int = PART_ROWS):
        self.parts = parts
        self.part_rows = part_rows
        self.parts.mkdir(parents=True, exist_ok=True)
        self.stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")  # parts sort in the order they were written
        self.buffer: list[pa.Table] = []
        self.rows = 0
        self.written = 0
        self.last_flush = time.monotonic()

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.rows += table.num_rows
        if self.rows >= self.part_rows or time.monotonic() - self.last_flush > PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            table = pa.concat_tables(self.buffer).select(SCHEMA.names).cast(SCHEMA)
            with atomic_path(self.parts / f"part-{self.stamp}-{self.written:06d}.parquet") as staging:
                pq.write_table(table, staging)
            self.written += 1
        self.buffer, self.rows, self.last_flush = [], 0, time.monotonic()


def write_csv(parts: Path, listing: pa.Table, path: Path) -> Counter:
    """`predictions.csv` from the parts, a part at a time: the rows of the files listed now, under their
    current size and time (a row of a file changed since is left out: a newer row holds it). Returns the count
    of each label."""
    counts: Counter = Counter()
    with atomic_path(path) as staging, open(staging, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for part in sorted(parts.glob("*.parquet")):
            rows = pq.read_table(part, schema=SCHEMA).join(listing, keys=KEY, join_type="inner")
            for row in rows.sort_by("order").to_pylist():  # a join keeps no order
                probability = "" if row["error"] else f"{row['probability']:.6f}"
                writer.writerow([row["path"], row["label"] or "", probability, row["threshold"], row["error"] or ""])
                counts["error" if row["error"] else row["label"]] += 1
    return counts


def predict_archive(
    spec: PredictorSpec,
    inputs: list[str | Path],
    output_dir: str | Path,
    settings: RaySettings,
    batch_size: int = 16,
    part_rows: int = PART_ROWS,
) -> ArchiveSummary:
    """Predict every file of `inputs` with `spec`'s model on Ray into `output_dir` (`predictions.parquet/`,
    `predictions.csv`), skipping files that an earlier run into the same folder already predicted."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    parts = output_dir / PARTS
    listing = list_files(inputs)
    if not listing.num_rows:
        raise ConfigError(f"no images found in inputs={[str(item) for item in inputs]}.")
    todo = still_to_predict(listing, predicted_keys(parts))
    summary = ArchiveSummary(listed=listing.num_rows, skipped=listing.num_rows - todo.num_rows, predicted=0)
    if summary.skipped:
        console.print(f"resuming: {summary.skipped} of {summary.listed} files already predicted in {parts}")
    if todo.num_rows:
        with ray_session(settings) as session:
            summary.predicted = _run(spec, todo, PartWriter(parts, part_rows), session, batch_size)
    summary.parts, summary.csv = parts, output_dir / "predictions.csv"
    summary.counts = write_csv(parts, listing, summary.csv)
    summary.seconds = time.perf_counter() - started
    return summary


def _run(spec: PredictorSpec, todo: pa.Table, writer: PartWriter, settings: RaySettings, batch_size: int) -> int:
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order
    context.enable_progress_bars = False  # fracture's own bar below counts the rows as they are written
    options = settings.actor_options()
    dataset = ray.data.from_arrow(todo.drop_columns(["order"])).map_batches(
        PredictorActor,
        fn_constructor_args=(spec,),
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=settings.actors),
        batch_format="numpy",
        **options,
    )
    predicted = 0
    description = f"predicting on Ray ({settings.actors} actor(s), {options['num_cpus']:g} CPU each)"
    try:
        with progress_bar() as bar:
            task = bar.add_task(description, total=todo.num_rows)
            for batch in dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
                writer.add(batch)
                predicted += batch.num_rows
                bar.advance(task, batch.num_rows)
    finally:
        writer.flush()  # an interrupted run keeps every row it received
    return predicted
