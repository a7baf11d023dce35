"""From a source to validated, day-partitioned tables in the warehouse.

The Dagster assets call `ingest_days` and `store_batch`; a notebook can too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb

from . import synthetic
from .sources import EVENTS, MERGES, Contract, Ingest, IngestBatch, files_matching, files_of_day, fingerprint
from .warehouse import Warehouse, WrittenPartition


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
    #: Time zone of timestamps that carry no offset (and of plain dates).
    assume_timezone: str = "UTC"

    def path_for(self, contract: Contract) -> str:
        return self.events_path if contract is EVENTS else self.id_history_path

    def columns_for(self, contract: Contract) -> Mapping[str, str]:
        return self.event_columns if contract is EVENTS else self.id_history_columns


Source = synthetic.SyntheticSettings | FileSourceSettings


@dataclass
class StoredBatch:
    batch: IngestBatch
    written: list[WrittenPartition]
    quarantine_written: list[WrittenPartition]
    unassigned_path: Path | None


def ingest_days(
    con: duckdb.DuckDBPyConnection,
    contract: Contract,
    days: Sequence[date],
    source: Source,
    junk_ids: Iterable[str],
) -> tuple[IngestBatch, list[date]]:
    """Validate the source's input for `days`; also returns the days that had no input at all."""
    if isinstance(source, FileSourceSettings):
        ingest = Ingest(con, contract, days, assume_timezone=source.assume_timezone, junk_ids=junk_ids)
        _add_files(ingest, contract, days, source)
        return ingest.collect(), _empty_days(ingest, contract, days, source)
    ingest = Ingest(con, contract, days, junk_ids=junk_ids)
    generate = synthetic.events_for_day if contract is EVENTS else synthetic.merges_for_day
    for day in days:
        ingest.add_table(generate(source, day), f"synthetic:{contract.spec.name}:{day.isoformat()}", day)
    return ingest.collect(), []


def _add_files(ingest: Ingest, contract: Contract, days: Sequence[date], source: FileSourceSettings) -> None:
    pattern = source.path_for(contract)
    mapping = source.columns_for(contract)
    if pattern:
        for path in files_matching(pattern, source.incoming_dir):
            ingest.add_file(path, mapping)
        return
    for day in days:
        for path in files_of_day(source.incoming_dir, contract, day):
            ingest.add_file(path, mapping, day)


def _empty_days(ingest: Ingest, contract: Contract, days: Sequence[date], source: FileSourceSettings) -> list[date]:
    if source.path_for(contract):
        return [] if ingest.sources else list(days)
    return [day for day in days if not files_of_day(source.incoming_dir, contract, day)]


def store_batch(warehouse: Warehouse, contract: Contract, batch: IngestBatch) -> StoredBatch:
    """Write every day's valid and quarantined rows, replacing earlier runs of the same days.

    A day's quarantine partition is written even when empty, so a re-run that
    fixed the input leaves no stale rejects behind.
    """
    written = [warehouse.write_partition(contract.spec, day.day, day.valid) for day in batch.days]
    quarantined = [warehouse.write_partition(contract.quarantine, day.day, day.quarantined) for day in batch.days]
    unassigned_path = None
    if batch.unassigned.num_rows:
        name = fingerprint(Path(source) for source in batch.sources if Path(source).exists())
        unassigned_path = warehouse.write_file(
            contract.quarantine, f"{contract.quarantine.folder}_unassigned/{name}.parquet", batch.unassigned
        )
    return StoredBatch(batch, written, quarantined, unassigned_path)


__all__ = ["EVENTS", "MERGES", "FileSourceSettings", "Source", "StoredBatch", "ingest_days", "store_batch"]
