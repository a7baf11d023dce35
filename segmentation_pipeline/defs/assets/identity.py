"""merge_map: every customer ID seen so far, resolved to its canonical ID."""

from collections.abc import Iterator
from datetime import date

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from ...core.identity import ResolverSettings, merges_in_effect, resolve_merges
from ...core.schemas import ID_HISTORY, MERGE_MAP, QUARANTINE_ID_HISTORY, TABLES
from ...core.warehouse import Warehouse, days_between
from ..checks import MERGE_MAP_CHECKS, merge_map_results
from ..metadata import column_schema, preview
from ..partitions import SETTINGS, DayResult, RunEvent, daily_partitions, for_each_day
from ..resources import IdentityRulesResource, WarehouseResource
from .ingestion import id_history


class MergeMapConfig(dg.Config):
    strict: bool = Field(
        default=False,
        description="Raise on merge cycles and over-deep chains instead of resolving and reporting them.",
    )
    max_chain_depth: int = Field(
        default=ResolverSettings.max_chain_depth,
        description="Chains longer than this many merges are reported (or raise).",
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[id_history],
    # A backfill resolves every day of its range in one run (with ingestion and profiles): see clusters.
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="identity",
    kinds={"parquet", "duckdb"},
    check_specs=MERGE_MAP_CHECKS,
    metadata={"dagster/column_schema": column_schema(MERGE_MAP)},
)
def merge_map(
    context: dg.AssetExecutionContext,
    config: MergeMapConfig,
    warehouse: WarehouseResource,
    identity_rules: IdentityRulesResource,
) -> Iterator[RunEvent]:
    """Every customer ID seen in id_history up to the end of the day, mapped to its canonical ID.

    One row per ID (canonical IDs map to themselves), with its component size,
    chain depth, and whether it sits on a cycle or is a junk ID.
    """
    store = warehouse.warehouse()
    yield from for_each_day(context, lambda as_of: _merge_map_day(context, store, config, identity_rules, as_of))


def _merge_map_day(
    context: dg.AssetExecutionContext,
    store: Warehouse,
    config: MergeMapConfig,
    identity_rules: IdentityRulesResource,
    as_of: date,
) -> DayResult:
    window = days_between(min(SETTINGS.start_date, as_of), as_of)
    present = store.partition_days(ID_HISTORY, window[0], as_of)
    store.check_complete(ID_HISTORY, QUARANTINE_ID_HISTORY, present)
    resolution = resolve_merges(
        merges_in_effect(store.read_days(ID_HISTORY, present), as_of),
        ResolverSettings(
            junk_ids=tuple(identity_rules.junk_ids),
            max_links_per_id=identity_rules.max_links_per_id,
            max_chain_depth=config.max_chain_depth,
            strict=config.strict,
        ),
    )
    written = store.write_partition(MERGE_MAP, as_of, resolution.merge_map)
    store.refresh_catalog(TABLES.values())
    report = resolution.report
    missing = sorted(set(window) - set(present))
    if report.cycles:
        context.log.warning(
            f"{as_of}: {report.cycles} merge cycle(s) resolved by the latest merge: {report.cycle_examples}"
        )
    if report.too_deep_ids:
        context.log.warning(f"{as_of}: {report.too_deep_ids} IDs on chains deeper than {config.max_chain_depth}")
    return DayResult(
        metadata={
            "dagster/row_count": resolution.merge_map.num_rows,
            **report.as_metadata(),
            "id_history_days_present": len(present),
            "id_history_days_in_window": len(window),
            "id_history_days_missing": [day.isoformat() for day in missing[:31]],
            "path": dg.MetadataValue.path(str(written.path)),
            "preview": preview(_merged_ids(resolution.merge_map)),
        },
        checks=merge_map_results(store, as_of),
    )


def _merged_ids(merge_map_table: pa.Table) -> pa.Table:
    """The rows worth a look: IDs that resolve to another ID."""
    return merge_map_table.filter(pc.not_equal(merge_map_table["old_id"], merge_map_table["canonical_id"]))
