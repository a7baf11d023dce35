"""profiles: one row per canonical customer over the look-back window ending that day."""

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from ...core.features import FEATURES, FEATURES_BY_NAME
from ...core.lifecycle import STAGES, LifecycleSettings
from ...core.profiles import WINDOW_INPUT_KEY, ProfileResult, ProfileSettings, build_profiles
from ...core.schemas import PROFILES, TABLES
from ...core.warehouse import Warehouse
from ..checks import PROFILES_CHECKS, profiles_results
from ..metadata import column_schema, counts_table, preview
from ..partitions import DayResult, daily_partitions, for_each_day
from ..resources import WarehouseResource
from .identity import merge_map
from .ingestion import raw_events

_DEFAULTS = ProfileSettings()
_LIFECYCLE = _DEFAULTS.lifecycle


class ProfilesConfig(dg.Config):
    lookback_days: int = Field(
        default=_DEFAULTS.lookback_days, description="Days of events (ending on the as-of day) each profile covers."
    )
    top_categories: int = Field(
        default=_DEFAULTS.top_categories,
        description="category_shares keeps this many of the window's most common categories; the rest is 'other'.",
    )
    top_channels: int = Field(
        default=_DEFAULTS.top_channels,
        description="channel_shares keeps this many of the window's most common channels; the rest is 'other'.",
    )
    clv_horizon_days: int = Field(default=_DEFAULTS.clv_horizon_days, description="Horizon of clv_estimate in days.")
    min_repeat_buyers: int = Field(
        default=_DEFAULTS.min_repeat_buyers,
        description="Fewer customers with a repeat purchase day than this: heuristic CLV instead of BG/NBD.",
    )
    churn_gap_floor_days: float = Field(
        default=_DEFAULTS.churn_gap_floor_days,
        description="Smallest 'usual gap between visits' the heuristic churn risk assumes, in days.",
    )

    lapsed_p_alive: float = Field(
        default=_LIFECYCLE.lapsed_p_alive, description="Lifecycle: a buyer whose P(alive) is below this is lapsed."
    )
    at_risk_p_alive: float = Field(
        default=_LIFECYCLE.at_risk_p_alive, description="Lifecycle: a buyer whose P(alive) is below this is at risk."
    )
    at_risk_gaps: float = Field(
        default=_LIFECYCLE.at_risk_gaps,
        description="Lifecycle: silent for more than this many of their usual gaps between purchase days: at risk.",
    )
    lapsed_gaps: float = Field(
        default=_LIFECYCLE.lapsed_gaps,
        description="Lifecycle, where no model was fitted: silent for more than this many usual gaps: lapsed.",
    )
    new_gaps: float = Field(
        default=_LIFECYCLE.new_gaps,
        description="Lifecycle: a one-time buyer is new while silent for at most this many times the usual wait "
        "for a second purchase (the repeat buyers' median gap).",
    )
    loyal_min_purchase_days: int = Field(
        default=_LIFECYCLE.loyal_min_purchase_days,
        description="Lifecycle: a repeat buyer in rhythm with at least this many purchase days is loyal.",
    )
    loyal_clv_quantile: float = Field(
        default=_LIFECYCLE.loyal_clv_quantile,
        description="Lifecycle: a repeat buyer in rhythm whose CLV is above this quantile of all buyers' is loyal.",
    )
    gap_floor_days: float = Field(
        default=_LIFECYCLE.gap_floor_days, description="Lifecycle: the smallest usual gap between purchase days."
    )

    def settings(self) -> ProfileSettings:
        fields = self.model_dump()
        lifecycle = LifecycleSettings(**{name: fields.pop(name) for name in LifecycleSettings.__dataclass_fields__})
        return ProfileSettings(**fields, lifecycle=lifecycle)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[raw_events, merge_map],
    # A backfill profiles every day of its range in one run (with ingestion and merge_map): see clusters.
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="segmentation",
    kinds={"parquet", "duckdb"},
    check_specs=PROFILES_CHECKS,
    metadata={"dagster/column_schema": column_schema(PROFILES)},
)
def profiles(
    context: dg.AssetExecutionContext, config: ProfilesConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Customer profiles: RFM, revenue, engagement, timing, categories, channels, churn risk and CLV.

    One row per canonical customer active in the look-back window ending that day;
    the events of merged IDs count for their canonical customer.
    """
    store = warehouse.warehouse()
    return for_each_day(context, lambda as_of: _profiles_day(context, store, config, as_of))


def _profiles_day(
    context: dg.AssetExecutionContext, store: Warehouse, config: ProfilesConfig, as_of: date
) -> DayResult:
    result = build_profiles(store, as_of, config.settings())
    # The Parquet write runs in Arrow's C++ without the GIL: the summary is worked out meanwhile
    # (1.7 s and 1.3 s one after the other at 30M events, 1.8 s side by side).
    with ThreadPoolExecutor(1, thread_name_prefix="write-profiles") as writer:
        writing = writer.submit(
            store.write_partition, PROFILES, as_of, result.table, {WINDOW_INPUT_KEY: result.window_input.to_json()}
        )
        summary = feature_summary(result)
        written = writing.result()
    store.refresh_catalog(TABLES.values())
    if result.unsupported:
        context.log.warning(f"{as_of}: features the source cannot support (left null): {sorted(result.unsupported)}")
    if result.coverage < 1:
        context.log.warning(
            f"{as_of}: {len(result.window_input.days_with_events)} of {result.window.lookback_days} days "
            "of the window have events"
        )
    return DayResult(
        metadata={
            "dagster/row_count": result.table.num_rows,
            **result.as_metadata(),
            "unsupported_because": dg.MetadataValue.json(result.unsupported),
            "feature_summary": summary,
            "path": dg.MetadataValue.path(str(written.path)),
            "preview": preview(result.table.select(["canonical_id", "n_ids", "lifecycle_stage", *_NUMERIC[:8]])),
            "lifecycle_stages": counts_table(lifecycle_counts(result.table), "lifecycle_stage"),
        },
        checks=profiles_results(store, as_of),
    )


def lifecycle_counts(table: pa.Table) -> dict[str, int]:
    """Customers per lifecycle stage, in the order of a customer's life."""
    counts = {item["values"]: item["counts"] for item in pc.value_counts(table["lifecycle_stage"]).to_pylist()}
    return {stage: counts[stage] for stage in STAGES if stage in counts}


_NUMERIC = [feature.name for feature in FEATURES if feature.transform is not None and not feature.is_share_map]


def feature_summary(result: ProfileResult) -> dg.MetadataValue:
    """Mean, quartiles and nulls of every numeric feature, as a Markdown table."""
    table: pa.Table = result.table
    if table.num_rows == 0:
        return dg.MetadataValue.md("no profiles")
    frame = table.select(_NUMERIC).to_pandas()
    summary = frame.describe(percentiles=[0.25, 0.5, 0.75]).T[["mean", "25%", "50%", "75%"]]
    summary["nulls"] = frame.isna().sum()
    summary["unit"] = [FEATURES_BY_NAME[name].unit for name in summary.index]
    return dg.MetadataValue.md(summary.round(3).to_markdown())
