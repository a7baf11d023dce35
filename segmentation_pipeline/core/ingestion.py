"""From a source to validated, day-partitioned tables in the warehouse.

The Dagster assets call `ingest`; a notebook can too.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from . import synthetic
from .activation import complete_export_days, export_folder, exported_lists
from .errors import DataValidationError
from .incoming import keep_day_files
from .schemas import unassigned
from .sources import (
    EVENTS,
    FOLDER_SLACK_DAYS,
    MERGES,
    Contract,
    Ingest,
    IngestBatch,
    files_matching,
    files_of_day,
    value_counts,
)
from .suppression import Suppression
from .warehouse import Warehouse, WrittenPartition, days_between, duckdb_memory_limit_bytes

PREVIEW_ROWS = 5
#: Partitions written at once: Parquet encoding releases the GIL, and each file's fsync waits on the disk.
WRITE_THREADS = 4
#: DuckDB memory a chunk's row takes while it is validated, with room for the queries over it (chunk_row_budget).
VALIDATED_ROW_BYTES = 2_000


@dataclass(frozen=True)
class FileSourceSettings:
    """Where real input lands and how its columns are named."""

    incoming_dir: Path
    #: A file or glob holding many days, split by each row's date; empty: one folder per day,
    #: `<incoming_dir>/events/date=YYYY-MM-DD/*.csv|*.parquet`.
    events_path: str = ""
    id_history_path: str = ""
    #: Source column name -> canonical column name.
    event_columns: Mapping[str, str] = field(default_factory=dict)
    id_history_columns: Mapping[str, str] = field(default_factory=dict)
    #: Time zone of timestamps that carry no offset (a plain date is that calendar day in any zone).
    assume_timezone: str = "UTC"

    def path_for(self, contract: Contract) -> str:
        return self.events_path if contract is EVENTS else self.id_history_path

    def columns_for(self, contract: Contract) -> Mapping[str, str]:
        return self.event_columns if contract is EVENTS else self.id_history_columns


Source = synthetic.SyntheticSettings | FileSourceSettings


@dataclass
class IngestSummary:
    """What a run ingested: counts per day and reason, where it went, and a preview."""

    table: str
    days: list[date]
    quarantined_per_day: dict[date, int] = field(default_factory=dict)
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    sources: int = 0
    days_without_input: list[date] = field(default_factory=list)
    written: list[WrittenPartition] = field(default_factory=list)
    unassigned_path: Path | None = None
    unassigned_rows: int = 0
    outside_run: Counter[date] = field(default_factory=Counter)
    preview: pa.Table | None = None
    #: Input rows of erased customers, dropped (core.suppression).
    suppressed_rows: int = 0

    @property
    def rows_per_day(self) -> dict[date, int]:
        return {partition.day: partition.rows for partition in self.written}

    @property
    def valid_rows(self) -> int:
        return sum(partition.rows for partition in self.written)

    @property
    def quarantined_rows(self) -> int:
        return sum(self.quarantined_per_day.values()) + self.unassigned_rows

    @property
    def outside_run_rows(self) -> int:
        return sum(self.outside_run.values())

    def add(self, batch: IngestBatch) -> None:
        """Count a validated batch; its partitions are added to `written` once stored."""
        for day in batch.days:
            self.quarantined_per_day[day.day] = day.quarantined.num_rows
            if day.valid.num_rows:
                self.preview = day.valid.slice(0, PREVIEW_ROWS)
            if "event_type" in day.valid.column_names:
                self.event_types.update(value_counts(day.valid.column("event_type")))
        self.quarantine_reasons.update(batch.quarantine_reasons())
        self.sources += len(batch.sources)
        self.unassigned_rows += batch.unassigned.num_rows
        self.outside_run.update(batch.outside_run)
        self.suppressed_rows += batch.suppressed_rows


def ingest(
    warehouse: Warehouse,
    contract: Contract,
    days: Sequence[date],
    source: Source,
    junk_ids: Iterable[str],
    chunk_days: int = 31,
    chunk_rows: int | None = None,
) -> IngestSummary:
    """Validate and store the source's input for `days`, a chunk of days at a time.

    Chunks bound the memory a long backfill needs; each day's partitions are
    replaced atomically, so a run that stops half-way can simply be run again.
    The steps of neighbouring chunks overlap: the synthetic source generates the
    next chunk while DuckDB validates this one and the previous one is written
    (DuckDB and Parquet writes release the GIL, so numpy generation runs beside
    them on the other core). A few chunks at most are in memory at once.
    """
    days = sorted(days)
    run_days = (days[0], days[-1])
    summary = IngestSummary(contract.spec.name, days)
    # Erased customers' rows are dropped from now on, whatever the source sends (core.erasure).
    suppression = Suppression.load(warehouse)
    chunk_rows = chunk_row_budget() if chunk_rows is None else chunk_rows
    with (
        warehouse.connect() as con,
        ThreadPoolExecutor(1, thread_name_prefix="generate") as generating,
        ThreadPoolExecutor(1, thread_name_prefix="store") as storing,
    ):
        upcoming = generating.submit(_next_chunk, contract, source, days, chunk_days, chunk_rows, warehouse.root)
        stored: Future[list[WrittenPartition]] | None = None
        index = 0
        while upcoming is not None:
            chunk, generated = upcoming.result()
            rest = days[days.index(chunk[-1]) + 1 :]
            upcoming = (
                generating.submit(_next_chunk, contract, source, rest, chunk_days, chunk_rows, warehouse.root)
                if rest
                else None
            )
            # A many-day file is read by every chunk; its undated rows are kept once.
            batch, without_input = ingest_days(
                con,
                contract,
                chunk,
                source,
                junk_ids,
                keep_unassigned=index == 0,
                run_days=run_days,
                generated=generated,
                kept_dir=warehouse.kept_input_dir,
                suppression=suppression,
            )
            if stored is not None:
                summary.written += stored.result()
            stored = storing.submit(store_batch, warehouse, contract, batch)
            summary.add(batch)
            summary.days_without_input += without_input
            if index == 0:
                summary.unassigned_path = _store_unassigned(warehouse, contract, source, batch)
            index += 1
        if stored is not None:
            summary.written += stored.result()
    return summary


def chunk_row_budget(memory_limit_bytes: int | None = None) -> int:
    """At most this many generated rows are validated as one chunk: what DuckDB holds within its memory limit.

    A validated event takes about 600 bytes of DuckDB's memory in the chunk's table, and the queries over
    it (the duplicate search, the sorted read-out) about as much again: 31 days of 5M customers (7.5M
    events) spilled 2.3 GB beyond a 2.5 GB limit and ingested at 199k events/s, where chunks of 1.5M
    events (31 days of 1M customers) stayed in memory at 550k+. Smaller chunks also bound the Arrow
    tables in flight (one chunk generated ahead, one validated, one being written)."""
    limit = duckdb_memory_limit_bytes() if memory_limit_bytes is None else memory_limit_bytes
    return max(1, limit // VALIDATED_ROW_BYTES)


def _next_chunk(
    contract: Contract,
    source: Source,
    days: Sequence[date],
    chunk_days: int,
    chunk_rows: int,
    data_dir: Path | None = None,
) -> tuple[list[date], dict[date, pa.Table] | None]:
    """The first chunk of `days` and its generated tables: at most `chunk_days` days, and for the
    synthetic source no more days than keep the chunk within about `chunk_rows` rows (one day at
    least, however large). Files are read by DuckDB itself: their chunks are `chunk_days` long."""
    if isinstance(source, FileSourceSettings):
        return list(days[:chunk_days]), None
    generate = _day_generator(contract, source, data_dir)
    tables: dict[date, pa.Table] = {}
    rows = 0
    for day in days[:chunk_days]:
        # Stop before a day that, as large as the chunk's mean day, would take it past the budget.
        if tables and rows + rows / len(tables) > chunk_rows:
            break
        tables[day] = generate(day)
        rows += tables[day].num_rows
    return list(tables), tables


def _day_generator(
    contract: Contract, source: synthetic.SyntheticSettings, data_dir: Path | None
) -> Callable[[date], pa.Table]:
    """day -> the synthetic source's table of that day.

    With a campaign_uplift, the events of a day respond to the treatment lists of the latest
    complete export before it under `data_dir` (the warehouse being ingested into)."""
    if contract is not EVENTS:
        return lambda day: synthetic.merges_for_day(source, day)
    if not source.campaign_uplift or data_dir is None:
        return lambda day: synthetic.events_for_day(source, day)
    campaigns = CampaignsRunning(data_dir, source)
    return lambda day: synthetic.events_for_day(source, day, campaigns.customers_on(day))


def _generated_input(
    contract: Contract, source: Source, days: Sequence[date], data_dir: Path | None = None
) -> dict[date, pa.Table] | None:
    """The synthetic source's tables of `days`; None for files, which DuckDB reads itself."""
    if isinstance(source, FileSourceSettings):
        return None
    generate = _day_generator(contract, source, data_dir)
    return {day: generate(day) for day in days}


class CampaignsRunning:
    """The synthetic customers a campaign runs for on a day: those on the treatment lists of the latest
    complete export before it (what the campaign tools hold); each export is read once."""

    def __init__(self, data_dir: Path, source: synthetic.SyntheticSettings) -> None:
        self.data_dir, self.source = Path(data_dir), source
        self._by_export: dict[date | None, np.ndarray] = {}

    def customers_on(self, day: date) -> np.ndarray:
        exported = complete_export_days(self.data_dir, before=day)
        latest = exported[-1] if exported else None
        if latest not in self._by_export:
            lists = exported_lists(export_folder(self.data_dir, latest)) if latest else {}
            treated = set().union(*lists.values()) if lists else set()
            self._by_export[latest] = synthetic.customers_of(self.source, treated)
        return self._by_export[latest]


def ingest_days(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    days: Sequence[date],
    source: Source,
    junk_ids: Iterable[str],
    keep_unassigned: bool = True,
    run_days: tuple[date, date] | None = None,
    generated: Mapping[date, pa.Table] | None = None,
    kept_dir: Path | None = None,
    suppression: Suppression | None = None,
) -> tuple[IngestBatch, list[date]]:
    """Validate the source's input for `days`; also returns the days that had no input at all.

    `keep_unassigned=False` leaves out rows of no day (unreadable time), so that a
    many-day file read once per chunk reports them once. `generated` holds the
    synthetic source's tables of `days` when they were generated ahead. Files of
    day folders are kept under `kept_dir` and read from there (core.incoming);
    without it they are read where they are. Rows naming a customer on the
    `suppression` list are dropped (counted in the batch's `suppressed_rows`).
    """
    if isinstance(source, FileSourceSettings):
        ingest = Ingest(
            con,
            contract,
            days,
            assume_timezone=source.assume_timezone,
            junk_ids=junk_ids,
            keep_unassigned=keep_unassigned,
            run_days=run_days,
            suppression=suppression,
        )
        _add_files(ingest, contract, days, source, kept_dir)
        batch = ingest.collect()
        return batch, [day.day for day in batch.days if day.rows_in == 0]
    ingest = Ingest(
        con, contract, days, junk_ids=junk_ids, folder_slack_days=0, run_days=run_days, suppression=suppression
    )
    tables = generated if generated is not None else _generated_input(contract, source, days)
    ingest.add_days(tables, f"synthetic:{contract.spec.name}")
    return ingest.collect(), []


def _add_files(
    ingest: Ingest, contract: Contract, days: Sequence[date], source: FileSourceSettings, kept_dir: Path | None
) -> None:
    pattern = source.path_for(contract)
    mapping = source.columns_for(contract)
    if not source.incoming_dir.is_dir():
        raise DataValidationError(
            f"incoming folder {source.incoming_dir} does not exist; expected the {contract.spec.name} input there "
            f"({contract.incoming_folder}/date=YYYY-MM-DD/ folders or the configured path)"
        )
    if pattern:
        paths = files_matching(pattern, source.incoming_dir)
        if not paths:
            raise DataValidationError(
                f"no .csv or .parquet file matches {pattern!r} under {source.incoming_dir} for {contract.spec.name}"
            )
        for path in paths:
            ingest.add_file(path, mapping)
        return
    # Neighbouring folders may hold rows of these days in UTC (local-time exports).
    folders = days_between(days[0] - timedelta(days=FOLDER_SLACK_DAYS), days[-1] + timedelta(days=FOLDER_SLACK_DAYS))
    for day in folders if contract is EVENTS else days:
        if kept_dir is None:
            paths = files_of_day(source.incoming_dir, contract, day)
        else:
            paths = keep_day_files(source.incoming_dir, kept_dir, contract, day)
        for path in paths:
            ingest.add_file(path, mapping, day)


def store_batch(warehouse: Warehouse, contract: Contract, batch: IngestBatch) -> list[WrittenPartition]:
    """Write every day's valid and quarantined rows, replacing earlier runs of the same days.

    A day's quarantine partition is written even when empty, so a re-run that
    fixed the input leaves no stale rejects behind; it is written before the day's
    valid rows, which record it (Warehouse.write_day), so that a run stopped
    between the two leaves a day readers know to be incomplete. Days are written
    a few at a time; a failed write is raised once all have finished.
    """
    with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="write") as writing:
        written = [
            writing.submit(warehouse.write_day, contract.spec, contract.quarantine, day.day, day.valid, day.quarantined)
            for day in batch.days
        ]
    return [day.result()[0] for day in written]


def _store_unassigned(warehouse: Warehouse, contract: Contract, source: Source, batch: IngestBatch) -> Path | None:
    """Rows of a many-day file whose date is unreadable: one file per configured path, replaced each run.

    Named after the configured path (not the files' contents), so fixing the
    input and running again removes the file instead of leaving stale rejects.
    """
    if not isinstance(source, FileSourceSettings) or not source.path_for(contract):
        return None
    spec = unassigned(contract.quarantine)
    name = hashlib.sha256(f"{source.incoming_dir}|{source.path_for(contract)}".encode()).hexdigest()[:16]
    if batch.unassigned.num_rows:
        return warehouse.write_file(spec, f"{name}.parquet", batch.unassigned)
    warehouse.remove_file(spec, f"{name}.parquet")
    return None


__all__ = ["EVENTS", "MERGES", "FileSourceSettings", "IngestSummary", "Source", "ingest", "ingest_days", "store_batch"]
