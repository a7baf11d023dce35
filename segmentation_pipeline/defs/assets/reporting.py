"""report: the day's segmentation as JSON, Markdown and a self-contained HTML page with charts."""

import time
from pathlib import Path

import dagster as dg
from pydantic import Field, ValidationError

from ...core.reporting.document import SAMPLE_PER_SEGMENT, RunSettings, StageSettings, gather_report
from ...core.reporting.publish import publish_report
from ...core.reporting.render import campaigns_table, headline, notices, summary_table
from ...core.schemas import TABLES
from ..checks import REPORT_CHECKS, report_results
from ..metadata import image_file
from ..partitions import daily_partitions, partition_day
from ..resources import EventSourceResource, WarehouseResource
from .activation import AudienceExportsConfig, AudiencesConfig, audience_exports
from .identity import MergeMapConfig, merge_map
from .insights import ActionabilityConfig, ExplanationsConfig, actionability, explanations
from .profiles import ClvBacktestConfig, ProfilesConfig, clv_backtest, profiles
from .results import CampaignResultsConfig, campaign_results
from .segmentation import (
    ClustersConfig,
    RobustnessConfig,
    ViabilityConfig,
    clusters,
    robustness,
    segment_migration,
    viability,
)


class ReportConfig(dg.Config):
    sample_per_segment: int = Field(
        default=SAMPLE_PER_SEGMENT,
        ge=10,
        description="Customers per segment drawn in the feature-distribution chart (the same ones on every run); "
        "the report's statistics use every customer.",
    )


#: The stages whose settings the report records, with the config class that fills in their defaults.
_STAGES: dict[str, type[dg.Config] | None] = {
    "merge_map": MergeMapConfig,
    "clv_backtest": ClvBacktestConfig,
    "profiles": ProfilesConfig,
    "clusters": ClustersConfig,
    "segment_migration": None,
    "robustness": RobustnessConfig,
    "viability": ViabilityConfig,
    "actionability": ActionabilityConfig,
    "explanations": ExplanationsConfig,
    "audiences": AudiencesConfig,
    "audience_exports": AudienceExportsConfig,
    "campaign_results": CampaignResultsConfig,
}


@dg.asset(
    partitions_def=daily_partitions,
    # Everything the report reads of the day; raw_events only through the profiles' window (coverage).
    deps=[
        audience_exports, explanations, actionability, viability, robustness, segment_migration, clusters, profiles,
        clv_backtest, merge_map, campaign_results,
    ],  # fmt: skip
    group_name="reporting",
    kinds={"html", "json", "seaborn"},
    check_specs=REPORT_CHECKS,
)
def report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    warehouse: WarehouseResource,
    event_source: EventSourceResource,
) -> dg.MaterializeResult:
    """The segmentation report of the day: every segment's profile, stability, value, verdict and story.

    One folder per day, reports/date=YYYY-MM-DD/ in the data folder: report.json (the
    full record), report.md (a summary to paste), report.html (one page, charts
    embedded, the campaigns to launch first), summary.pdf (the printable brief and
    the charts) and the charts as PNG files. Once it is published, the day's snapshot is
    complete: the catalog's `_latest` views move to it.
    """
    store = warehouse.warehouse()
    as_of = partition_day(context)
    started_ns = time.time_ns()
    settings, stage_runs = _run_settings(context, config, store.root, event_source.kind)
    draft = gather_report(store, as_of, settings, config.sample_per_segment, daily_partitions.start.date())
    published = publish_report(draft, store.report_dir(as_of))
    store.mark_snapshot_complete(as_of, published.json_path, started_ns)
    store.refresh_catalog(TABLES.values())
    totals = published.report.totals
    for line in notices(published.report):
        context.log.warning(line)
    context.log.info(f"report of {as_of}: {headline(published.report)} ({published.html_path})")
    return dg.MaterializeResult(
        metadata={
            "segments": totals.segments,
            "customers": totals.customers,
            "approved_segments": totals.approved,
            "actionable_segments": totals.actionable,
            "segments_ready_for_campaign": totals.targetable,
            "campaigns_to_launch": len(published.report.campaigns),
            "latest_complete_snapshot": str(store.latest_snapshot()),
            "summary": dg.MetadataValue.md(
                "".join(f"**{line}**\n\n" for line in notices(published.report))
                + f"{headline(published.report)}\n\n"
                + (f"**Campaigns to launch**\n\n{campaigns_table(published.report)}\n\n" if published.report.campaigns else "")
                + f"**Segments**\n\n{summary_table(published.report)}"
            ),
            "dashboard": image_file(published.chart_path("dashboard"), "dashboard"),
            "html_path": dg.MetadataValue.path(str(published.html_path)),
            "json_path": dg.MetadataValue.path(str(published.json_path)),
            "markdown_path": dg.MetadataValue.path(str(published.markdown_path)),
            "pdf_path": dg.MetadataValue.path(str(published.pdf_path)),
            "charts": [chart.file for chart in published.report.charts],
            # Which run stored each stage the report was made from (the report files leave run IDs out).
            "stage_runs": dg.MetadataValue.json(stage_runs),
        },
        check_results=report_results(store, as_of),
    )


def _run_settings(
    context: dg.AssetExecutionContext, config: ReportConfig, data_dir: Path, source: str
) -> tuple[RunSettings, dict[str, str | None]]:
    """The engine's settings and, for each stage, the configuration its stored output of this day was made
    with; beside them the run that stored each stage (None when the instance has no record of one)."""
    found = {name: _stage_settings(context, data_dir, name, config_class) for name, config_class in _STAGES.items()}
    stages = [stage for stage, _ in found.values()]
    given = _given_config(context.run, "report")
    stages.append(StageSettings(stage="report", recorded=True, given=given, config=config.model_dump()))
    runs = {name: run_id for name, (_, run_id) in found.items()} | {"report": context.run.run_id}
    return RunSettings(data_dir=str(data_dir), source=source, stages=stages), runs


def _stage_settings(
    context: dg.AssetExecutionContext, data_dir: Path, name: str, config_class: type[dg.Config] | None
) -> tuple[StageSettings, str | None]:
    """Settings of the latest materialization of the stage for this day that wrote into this data folder,
    and the run that made it."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[context.partition_key]),
        limit=_RECORDS_SEARCHED,
    ).records
    record = next((record for record in records if _wrote_into(record, data_dir)), None)
    if record is None:
        return StageSettings(stage=name), None
    run = context.instance.get_run_by_id(record.run_id)
    given = _given_config(run, name) if run else {}
    settings = StageSettings(stage=name, recorded=True, given=given, config=_full_config(given, config_class))
    return settings, record.run_id


#: How many of a stage's latest materializations of the day are searched for one in this data folder.
_RECORDS_SEARCHED = 20


def _wrote_into(record: dg.EventLogRecord, data_dir: Path) -> bool:
    """Whether the materialization's stored file lies in `data_dir` (every stage records its `path`)."""
    materialization = record.asset_materialization
    path = materialization.metadata.get("path") if materialization else None
    return path is not None and Path(str(path.value)).is_relative_to(data_dir)


def _given_config(run: dg.DagsterRun, asset: str) -> dict:
    """The config the run's Launchpad or schedule gave the asset's step (empty when none)."""
    return dict((run.run_config.get("ops", {}).get(asset, {}) or {}).get("config", {}) or {})


def _full_config(given: dict, config_class: type[dg.Config] | None) -> dict:
    """The given config with the defaults it left out; as given if the class no longer accepts it."""
    if config_class is None:
        return given
    try:
        return config_class(**given).model_dump()
    except ValidationError:
        return given
