"""raw_events and id_history: validated input, one Parquet file per UTC day.

Both use a single-run backfill policy: a backfill of a date range is one run
that reads the source once and writes one partition per day.
"""


from datetime import date

import dagster as dg
import pyarrow.compute as pc
from pydantic import Field

from ...core.ingestion import EVENTS, MERGES, StoredBatch, ingest_days, store_batch
from ...core import synthetic
from ...core.schemas import DEFAULT_JUNK_IDS, ID_HISTORY, RAW_EVENTS, SYNTHETIC_TRUTH, TABLES
from ..checks import RAW_EVENTS_CHECKS, raw_events_results
from ..metadata import column_schema, counts_table, preview
from ..partitions import daily_partitions, partition_days
from ..resources import EventSourceResource, WarehouseResource


class IngestionConfig(dg.Config):
    junk_ids: list[str] = Field(
        default=list(DEFAULT_JUNK_IDS),
        description="IDs that mean 'no customer' (case-insensitive); events carrying them are quarantined.",
    )
    max_quarantine_rate: float = Field(
        default=0.05, description="Above this share of quarantined input rows the quarantine_rate check warns."
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"parquet", "duckdb"},
    check_specs=RAW_EVENTS_CHECKS,
    metadata={"dagster/column_schema": column_schema(RAW_EVENTS)},
)
def raw_events(
    context: dg.AssetExecutionContext,
    config: IngestionConfig,
    warehouse: WarehouseResource,
    event_source: EventSourceResource,
) -> dg.MaterializeResult:
    """Validated customer events of the day (UTC); rejected rows go to quarantine with a reason.

    One row per event: event_id, customer_id, event_type, timestamp, session, amount,
    quantity, category, channel, device.
    """
    store = warehouse.warehouse()
    days = partition_days(context)
    source = event_source.source(store.root)
    with store.connect() as con:
        batch, without_input = ingest_days(con, EVENTS, days, source, config.junk_ids)
    stored = store_batch(store, EVENTS, batch)
    if isinstance(source, synthetic.SyntheticSettings):
        store.write_file(SYNTHETIC_TRUTH, "synthetic_truth/ground_truth.parquet", synthetic.ground_truth(source))
    store.refresh_catalog(TABLES.values())
    metadata = _ingestion_metadata(stored, without_input)
    metadata["rows_by_event_type"] = counts_table(_by_event_type(stored), "event_type")
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=raw_events_results(store, days, config.max_quarantine_rate),
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"parquet", "duckdb"},
    metadata={"dagster/column_schema": column_schema(ID_HISTORY)},
)
def id_history(
    context: dg.AssetExecutionContext,
    config: IngestionConfig,
    warehouse: WarehouseResource,
    event_source: EventSourceResource,
) -> dg.MaterializeResult:
    """Customer-ID merge records received that day (old_id -> new_id at merged_at).

    One row per merge record; merged_at may lie before the day (late arrivals).
    """
    store = warehouse.warehouse()
    days = partition_days(context)
    with store.connect() as con:
        batch, without_input = ingest_days(con, MERGES, days, event_source.source(store.root), config.junk_ids)
    stored = store_batch(store, MERGES, batch)
    store.refresh_catalog(TABLES.values())
    return dg.MaterializeResult(metadata=_ingestion_metadata(stored, without_input))


def _by_event_type(stored: StoredBatch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for day in stored.batch.days:
        for entry in pc.value_counts(day.valid.column("event_type")).to_pylist():
            counts[entry["values"]] = counts.get(entry["values"], 0) + entry["counts"]
    return dict(sorted(counts.items()))


def _ingestion_metadata(stored: StoredBatch, without_input: list[date]) -> dict[str, object]:
    batch = stored.batch
    rows_per_day = {day.day.isoformat(): day.valid.num_rows for day in batch.days}
    last_day = batch.days[-1]
    metadata: dict[str, object] = {
        "dagster/row_count": batch.valid_rows,
        "days": len(batch.days),
        "quarantined_rows": batch.quarantined_rows,
        "quarantine_reasons": counts_table(batch.quarantine_reasons(), "reason"),
        "input_sources": len(batch.sources),
        "days_without_input": [day.isoformat() for day in without_input],
        "path": dg.MetadataValue.path(str(stored.written[-1].path.parent.parent)),
        "preview": preview(last_day.valid),
    }
    if len(batch.days) > 1:
        metadata["rows_per_day"] = counts_table(rows_per_day, "day")
    if stored.unassigned_path is not None:
        metadata["unassigned_quarantine"] = dg.MetadataValue.path(str(stored.unassigned_path))
    return metadata
