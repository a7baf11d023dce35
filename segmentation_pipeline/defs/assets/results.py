"""campaign_results: each export measured, its treatment group against its control group, once its window passed."""

import dagster as dg
import pyarrow.compute as pc
from pydantic import Field

from ...core import campaign_results as results
from ...core.schemas import CAMPAIGN_RESULTS, TABLES
from ..metadata import column_schema, preview
from ..partitions import daily_partitions, partition_day
from ..resources import WarehouseResource
from .identity import merge_map
from .ingestion import raw_events

_DEFAULTS = results.ResultSettings()


class CampaignResultsConfig(dg.Config):
    window_days: int = Field(
        default=_DEFAULTS.window_days,
        description="Days after an export over which its campaigns are measured: the run of day D measures the "
        "exports of D - window_days.",
    )
    confidence: float = Field(
        default=_DEFAULTS.confidence, description="Level of the uplift intervals (0.95 = 95%)."
    )

    def settings(self) -> results.ResultSettings:
        return results.ResultSettings(window_days=self.window_days, confidence=self.confidence)


@dg.asset(
    partitions_def=daily_partitions,
    # The audiences of the export day are read as stored (an earlier day's), like profiles read their window.
    deps=[raw_events, merge_map],
    group_name="activation",
    kinds={"parquet", "duckdb"},
    metadata={"dagster/column_schema": column_schema(CAMPAIGN_RESULTS)},
)
def campaign_results(
    context: dg.AssetExecutionContext, config: CampaignResultsConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Campaigns measured once their window has passed: treated customers against the control group kept back.

    One row per campaign and metric (conversion rate, orders and revenue per customer) of the export of
    window_days before the day: both groups' values, the uplift with its confidence interval, whether it is
    significant, and a sentence saying so. Viability prices a segment's next campaign at its latest measured
    revenue uplift. See core/campaign_results.py for the statistics.
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    measured = results.measure_campaigns(store, as_of, config.settings())
    written = store.write_partition(CAMPAIGN_RESULTS, as_of, measured.table)
    store.refresh_catalog(TABLES.values())
    if measured.nothing_because:
        context.log.info(f"campaign_results {as_of}: nothing to measure, {measured.nothing_because}")
    if measured.table.num_rows and measured.days_with_events < config.window_days:
        context.log.warning(
            f"only {measured.days_with_events} of the {config.window_days} days after the export of "
            f"{measured.export_day} have events: the campaigns' outcomes are undercounted alike in both groups"
        )
    table = measured.table
    significant = table.filter(pc.equal(table["significant"], True)) if table.num_rows else table
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": table.num_rows,
            "export_day": measured.export_day.isoformat(),
            "campaigns": len(set(table["campaign_key"].to_pylist())),
            "significant_results": significant.num_rows,
            "nothing_measured_because": measured.nothing_because or "",
            "days_with_events": measured.days_with_events,
            "customers_merged_together_since_export": measured.merged_away,
            "results": dg.MetadataValue.md(
                "\n".join(f"- {sentence}" for sentence in table["summary"].to_pylist()) or "none"
            ),
            "preview": preview(
                table.select(
                    ["campaign_key", "metric", "treatment_value", "control_value", "relative_uplift", "significant"]
                ),
                30,
                percent=["relative_uplift"],
            ),
            "path": dg.MetadataValue.path(str(written.path)),
        }
    )
