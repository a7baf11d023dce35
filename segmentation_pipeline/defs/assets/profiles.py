"""profiles: one row per canonical customer over the look-back window ending that day."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from ...core.backtest import backtest_purchase_models, backtest_rows, backtest_tables_metadata, stored_purchases
from ...core.clv import MODEL_NAMES
from ...core.features import FEATURES, FEATURES_BY_NAME
from ...core.lifecycle import STAGES, LifecycleSettings
from ...core.profiles import ProfileResult, ProfileSettings, build_profiles
from ...core.schemas import CLV_BACKTEST, PROFILES, TABLES
from ...core.warehouse import Warehouse
from ..checks import PROFILES_CHECKS, profiles_results
from ..metadata import column_schema, counts_table, markdown_table, preview
from ..partitions import DayResult, RunEvent, daily_partitions, for_each_day
from ..resources import WarehouseResource
from .identity import merge_map
from .ingestion import raw_events

_DEFAULTS = ProfileSettings()
#: clv_model "auto": the model the day's clv_backtest chose; FALLBACK_MODEL when there is none.
AUTO_MODEL = "auto"
FALLBACK_MODEL = _DEFAULTS.clv_model
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
    campaign_cycle_days: int = Field(
        default=_DEFAULTS.campaign_cycle_days,
        description="One campaign cycle in days: cycle_value is each customer's expected spend over it, the value "
        "viability's campaign return is computed on.",
    )
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
        description="Lifecycle: silent for more than this many of their usual gaps between purchase days: lapsed.",
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

    clv_model: str = Field(
        default=AUTO_MODEL,
        description="Purchase model behind P(alive), churn risk and CLV: 'auto' (the one the day's clv_backtest "
        f"chose; {FALLBACK_MODEL} without one) or one of {list(MODEL_NAMES)}.",
    )
    annual_discount_rate: float = Field(
        default=_DEFAULTS.annual_discount_rate,
        description="Yearly rate at which CLV discounts later purchases to today's money (0.10 is 10%).",
    )

    def settings(self, chosen_model: str | None = None) -> ProfileSettings:
        fields = self.model_dump()
        lifecycle = LifecycleSettings(**{name: fields.pop(name) for name in LifecycleSettings.__dataclass_fields__})
        configured = fields.pop("clv_model")
        model = chosen_model or (FALLBACK_MODEL if configured == AUTO_MODEL else configured)
        return ProfileSettings(**fields, clv_model=model, lifecycle=lifecycle)


class ClvBacktestConfig(dg.Config):
    holdout_days: int = Field(
        default=90, description="Days after the split day whose purchases the models must forecast."
    )
    history_days: int = Field(
        default=_DEFAULTS.lookback_days,
        description="Days of purchases (ending on the as-of day) the backtest splits into calibration and holdout.",
    )
    max_customers: int = Field(
        # The published comparisons of these models stand on a few thousand customers (CDNOW: 2,357).
        # The Pareto/NBD fit is most of the step: at 100,000 customers it took 2.6 s of a 100k
        # snapshot's 11.4 s, at 25,000 still 2.5 s of 10.8 s.
        default=10_000,
        description="Above this many customers a fixed sample of them is scored (a model choice needs no more).",
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[raw_events, merge_map],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="segmentation",
    kinds={"parquet", "duckdb"},
    metadata={"dagster/column_schema": column_schema(CLV_BACKTEST)},
)
def clv_backtest(
    context: dg.AssetExecutionContext, config: ClvBacktestConfig, warehouse: WarehouseResource
) -> Iterator[RunEvent]:
    """Churn and CLV models proven on the data's own holdout; the best one serves the day's profiles.

    One row per candidate model (BG/NBD, MBG/NBD, Pareto/NBD) and per baseline (recency, the heuristic):
    fitted on the purchases up to holdout_days before the as-of day, scored on what happened after.
    """
    store = warehouse.warehouse()

    def backtest_day(as_of: date) -> DayResult:
        purchases = stored_purchases(store, as_of, config.history_days, config.max_customers)
        result = backtest_purchase_models(purchases, config.holdout_days, last_day=as_of)
        rows = backtest_rows(result)
        written = store.write_partition(CLV_BACKTEST, as_of, rows, backtest_tables_metadata(result))
        context.log.info(f"{as_of}: {result.reason}")
        return DayResult(
            metadata={
                "dagster/row_count": rows.num_rows,
                "chosen_model": result.chosen_model or "none",
                "reason": result.reason,
                "split_day": str(result.split_day),
                "holdout_days": result.holdout_days,
                "customers_scored": result.customers,
                "scores": markdown_table(rows.select(["name", "error_percent", "mae", "churn_auc", "chosen"]).to_pandas()),
                "notes": list(result.notes),
                "path": dg.MetadataValue.path(str(written.path)),
            }
        )

    yield from for_each_day(context, backtest_day)
    store.refresh_catalog(TABLES.values())


def chosen_clv_model(store: Warehouse, as_of: date, configured: str) -> str:
    """The configured model, or with "auto" the one the day's stored backtest chose (MBG/NBD without one)."""
    if configured != AUTO_MODEL:
        return configured
    path = store.partition_path(CLV_BACKTEST, as_of)
    if not path.exists():
        return FALLBACK_MODEL
    chosen = [row["name"] for row in store.read_partition(CLV_BACKTEST, as_of).to_pylist() if row["chosen"]]
    return chosen[0] if chosen else FALLBACK_MODEL


@dg.asset(
    partitions_def=daily_partitions,
    deps=[raw_events, merge_map, clv_backtest],
    # A backfill profiles every day of its range in one run (with ingestion and merge_map): see clusters.
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="segmentation",
    kinds={"parquet", "duckdb"},
    check_specs=PROFILES_CHECKS,
    metadata={"dagster/column_schema": column_schema(PROFILES)},
)
def profiles(
    context: dg.AssetExecutionContext, config: ProfilesConfig, warehouse: WarehouseResource
) -> Iterator[RunEvent]:
    """Customer profiles: RFM, revenue, engagement, timing, categories, channels, churn risk and CLV.

    One row per canonical customer active in the look-back window ending that day;
    the events of merged IDs count for their canonical customer.
    """
    store = warehouse.warehouse()
    yield from for_each_day(context, lambda as_of: _profiles_day(context, store, config, as_of))


def _profiles_day(
    context: dg.AssetExecutionContext, store: Warehouse, config: ProfilesConfig, as_of: date
) -> DayResult:
    settings = config.settings(chosen_clv_model(store, as_of, config.clv_model))
    result = build_profiles(store, as_of, settings)
    # The Parquet write runs in Arrow's C++ without the GIL: the summary is worked out meanwhile
    # (1.7 s and 1.3 s one after the other at 30M events, 1.8 s side by side).
    with ThreadPoolExecutor(1, thread_name_prefix="write-profiles") as writer:
        writing = writer.submit(store.write_partition, PROFILES, as_of, result.table, result.stored_metadata(settings))
        summary = feature_summary(result)
        written = writing.result()
    store.refresh_catalog(TABLES.values())
    if result.unsupported:
        context.log.warning(f"{as_of}: features the source cannot support (left null): {sorted(result.unsupported)}")
    possible = len([day for day in result.window.days if day >= daily_partitions.start.date()])
    with_events = len(result.window_input.days_with_events)
    if with_events < possible:
        context.log.warning(f"{as_of}: {with_events} of the window's {possible} days since the first partition have events")
    return DayResult(
        metadata={
            "dagster/row_count": result.table.num_rows,
            **result.as_metadata(),
            "unsupported_because": dg.MetadataValue.json(result.unsupported),
            "clv_horizon_days": settings.clv_horizon_days,
            "annual_discount_rate": settings.annual_discount_rate,
            "campaign_cycle_days": settings.campaign_cycle_days,
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
    return markdown_table(summary, index=True)
