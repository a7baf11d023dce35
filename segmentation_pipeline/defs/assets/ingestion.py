"""raw_events and id_history: validated input, one Parquet file per UTC day.

Both use a single-run backfill policy: a backfill of a date range is one run
that reads the source a chunk of days at a time and writes one partition per day.
"""

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import dagster as dg
from pydantic import Field

from ...core import quality, synthetic
from ...core.ingestion import EVENTS, MERGES, FileSourceSettings, IngestSummary, Source, ingest
from ...core.schemas import ID_HISTORY, RAW_EVENTS, SYNTHETIC_TRUTH, TABLES
from ...core.sources import Contract
from ...core.suppression import Suppression
from ...core.warehouse import Warehouse
from ..checks import RAW_EVENTS_CHECKS, raw_events_results, rows_for_other_days_result
from ..metadata import column_schema, counts_table, preview
from ..partitions import RunEvent, daily_partitions, materialized, partition_days
from ..resources import EventSourceResource, IdentityRulesResource, WarehouseResource

ROWS_PER_DAY_TABLE_LIMIT = 31
TRUTH_FILE = "ground_truth.parquet"


class IdHistoryConfig(dg.Config):
    chunk_days: int = Field(
        default=31,
        description="Days validated and written together, at most; bounds the memory of long backfills. "
        "Synthetic input takes fewer days when their events would outgrow DuckDB's memory.",
    )


class RawEventsConfig(IdHistoryConfig):
    max_quarantine_rate: float = Field(
        default=0.05, description="Above this share of quarantined input rows the quarantine_rate check warns."
    )
    expect_input_every_day: bool = Field(
        default=True,
        description="Every day should have events: the every_day_has_input check warns of a day without one "
        "(turn off for a business closed on some days).",
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    # Ranged runs may overlap day for day: dagster.yaml lets one ingestion step run at a time.
    pool="ingestion",
    kinds={"parquet", "duckdb"},
    check_specs=RAW_EVENTS_CHECKS,
    metadata={"dagster/column_schema": column_schema(RAW_EVENTS)},
)
def raw_events(
    context: dg.AssetExecutionContext,
    config: RawEventsConfig,
    warehouse: WarehouseResource,
    event_source: EventSourceResource,
    identity_rules: IdentityRulesResource,
) -> Iterator[RunEvent]:
    """Validated customer events of the day (UTC); rejected rows go to quarantine with a reason.

    One row per event: event_id, customer_id, event_type, timestamp, session, amount,
    quantity, category, channel, device.
    """
    store = warehouse.warehouse()
    source = event_source.source(store.root)
    with ThreadPoolExecutor(1, thread_name_prefix="truth") as background:
        truth = None
        if isinstance(source, synthetic.SyntheticSettings):
            # Beside the ingestion, whose first chunk of days keeps one core waiting on the
            # generator: the truth's sort and write (1.3 s at a million customers) add next to no
            # wall time there. The population both need is drawn first, once (it is cached).
            synthetic.population(source)
            truth = background.submit(_store_ground_truth, store, source)
        summary, outside_run = _ingest(
            context, store, EVENTS, source, identity_rules.junk_ids, config.chunk_days, written_beside=truth
        )
    metadata = _ingestion_metadata(summary)
    has_input = quality.every_day_has_input(summary.rows_per_day)
    if not has_input.passed and config.expect_input_every_day:
        context.log.warning(has_input.summary)
    metadata["rows_by_event_type"] = counts_table(dict(sorted(summary.event_types.items())), "event_type")
    checks = raw_events_results(
        store, summary.days, config.max_quarantine_rate, summary.rows_per_day, config.expect_input_every_day
    )
    # What the run read for days outside it is one finding of the whole run: each of its days says it.
    other_days = rows_for_other_days_result(summary.outside_run_rows, outside_run)
    yield from materialized(context, metadata, {day: [*results, other_days] for day, results in checks.items()})


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    # Ranged runs may overlap day for day: dagster.yaml lets one ingestion step run at a time.
    pool="ingestion",
    kinds={"parquet", "duckdb"},
    metadata={"dagster/column_schema": column_schema(ID_HISTORY)},
)
def id_history(
    context: dg.AssetExecutionContext,
    config: IdHistoryConfig,
    warehouse: WarehouseResource,
    event_source: EventSourceResource,
) -> dg.MaterializeResult:
    """Customer-ID merge records received that day (old_id -> new_id at merged_at).

    One row per merge record; merged_at may lie before the day (late arrivals).
    """
    store = warehouse.warehouse()
    summary, _ = _ingest(context, store, MERGES, event_source.source(store.root), (), config.chunk_days)
    return dg.MaterializeResult(metadata=_ingestion_metadata(summary))


def _store_ground_truth(store: Warehouse, source: synthetic.SyntheticSettings) -> None:
    """The synthetic customers' archetypes, for clusters to score against; made again only when the
    settings or the generator changed (2.6 s at a million customers, on every run before)."""
    fingerprint = synthetic.truth_fingerprint(source)
    if store.file_metadata(SYNTHETIC_TRUTH, TRUTH_FILE).get("fingerprint") != fingerprint:
        truth = synthetic.ground_truth(source)
        suppression = Suppression.load(store)
        if suppression is not None:
            truth, _ = suppression.drop_rows(truth, SYNTHETIC_TRUTH.customer_columns)
        store.write_file(SYNTHETIC_TRUTH, TRUTH_FILE, truth, metadata={"fingerprint": fingerprint})


def _ingest(
    context: dg.AssetExecutionContext,
    store: Warehouse,
    contract: Contract,
    source: Source,
    junk_ids: Sequence[str],
    chunk_days: int,
    written_beside: Future[None] | None = None,
) -> tuple[IngestSummary, str]:
    """Ingest the run's days, refresh the catalog, stamp each partition; also says what lies outside the run.

    `written_beside` is a write made meanwhile on another thread; the catalog waits for it, so
    that a table it makes (the synthetic truth, on a first run) gets its view."""
    summary = ingest(store, contract, partition_days(context), source, junk_ids, chunk_days)
    if written_beside is not None:
        written_beside.result()
    store.refresh_catalog(TABLES.values())
    _add_partition_metadata(context, summary)
    outside_run = _outside_run_message(summary)
    if summary.outside_run:
        context.log.warning(outside_run)
    if summary.suppressed_rows and isinstance(source, FileSourceSettings):
        context.log.warning(
            f"{summary.suppressed_rows:,} input rows of erased customers were dropped (the suppression list); the "
            "input files holding them are kept as delivered: run the erasure again to remove them from the data folder"
        )
    return summary, outside_run


def _outside_run_message(summary: IngestSummary) -> str:
    if not summary.outside_run:
        return "every valid row read belongs to a day of this run"
    days = ", ".join(f"{day} ({rows})" for day, rows in sorted(summary.outside_run.items())[:10])
    more = " ..." if len(summary.outside_run) > 10 else ""
    return (
        f"{summary.outside_run_rows} valid {summary.table} rows read by this run belong to days outside it: "
        f"{days}{more}; materialize those partitions to store them"
    )


def _add_partition_metadata(context: dg.AssetExecutionContext, summary: IngestSummary) -> None:
    """Each day's own row counts and file, on that day's materialization."""
    for partition in summary.written:
        context.add_asset_metadata(
            {
                "dagster/row_count": partition.rows,
                "quarantined_rows": summary.quarantined_per_day[partition.day],
                "path": dg.MetadataValue.path(str(partition.path)),
            },
            partition_key=partition.day.isoformat(),
        )


def _ingestion_metadata(summary: IngestSummary) -> dict[str, object]:
    """What the run did as a whole: shown on every partition it materialized."""
    metadata: dict[str, object] = {
        "run_days": len(summary.days),
        "run_rows": summary.valid_rows,
        "run_quarantined_rows": summary.quarantined_rows,
        # Rows of erased customers (the suppression list), dropped: neither stored nor quarantined.
        "run_suppressed_rows": summary.suppressed_rows,
        "quarantine_reasons": counts_table(dict(sorted(summary.quarantine_reasons.items())), "reason"),
        "input_sources": summary.sources,
        "days_without_input": [day.isoformat() for day in summary.days_without_input],
    }
    if summary.preview is not None:
        metadata["preview"] = preview(summary.preview)
    # Every partition of a ranged run carries this metadata, so a long range gets a summary, not a table.
    if 1 < len(summary.days) <= ROWS_PER_DAY_TABLE_LIMIT:
        metadata["rows_per_day"] = counts_table({d.isoformat(): n for d, n in summary.rows_per_day.items()}, "day")
    elif len(summary.days) > ROWS_PER_DAY_TABLE_LIMIT:
        counts = sorted(summary.rows_per_day.values())
        metadata["rows_per_day_min_median_max"] = f"{counts[0]:,} / {counts[len(counts) // 2]:,} / {counts[-1]:,}"
    if summary.unassigned_path is not None:
        metadata["unassigned_quarantine"] = dg.MetadataValue.path(str(summary.unassigned_path))
    if summary.outside_run:
        metadata["rows_for_days_outside_run"] = counts_table(
            {day.isoformat(): rows for day, rows in sorted(summary.outside_run.items())[:ROWS_PER_DAY_TABLE_LIMIT]},
            "day",
        )
    return metadata
