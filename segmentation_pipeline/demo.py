"""`make demo`: backfill a synthetic history, build the latest snapshots and say where the outputs are.

The history is ingested as a backfill ingests it, raw_events and id_history in
one run over the whole range; then each snapshot is one run of every as-of
asset for its day, in date order (segment IDs follow the day before), as the
nightly schedule makes them. They are carried out here,
in this process, and recorded in the Dagster instance in DAGSTER_HOME (made
first, once, if it is new: segmentation_pipeline.instance), so `make dev` shows
them afterwards. The history is synthetic, the storage local
Parquet and DuckDB, the language model the deterministic mock.
"""

import argparse
import os
import sys
import warnings
from datetime import date, timedelta

import dagster as dg
import duckdb

# The single-run backfill policy is marked beta; the demo's reader needs no warning about it.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from .core.activation import export_folder  # noqa: E402
from .core.campaign_results import REVENUE, ResultSettings  # noqa: E402
from .core.reporting.document import SegmentationReport  # noqa: E402
from .core.reporting.publish import load_report  # noqa: E402
from .core.reporting.render import headline, migration_line  # noqa: E402
from .core.schemas import MERGE_MAP, QUARANTINE_EVENTS, RAW_EVENTS  # noqa: E402
from .core.warehouse import Warehouse  # noqa: E402
from .definitions import defs  # noqa: E402
from .defs.assets.ingestion import id_history, raw_events  # noqa: E402
from .defs.jobs import SNAPSHOT_ASSETS  # noqa: E402
from .defs.partitions import SETTINGS, range_tags  # noqa: E402
from .instance import default_home, pools_of, prepare_instance  # noqa: E402

#: Keep the console to warnings; every event is still in the instance for the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_range(instance: dg.DagsterInstance, assets: list[dg.AssetsDefinition], first: date, last: date) -> None:
    """One run over a partition range, as a single-run backfill does."""
    result = dg.materialize(
        assets,
        instance=instance,
        resources=defs.resources,
        run_config=QUIET,
        tags=range_tags(first, last),
    )
    if not result.success:
        raise SystemExit(f"run {result.run_id} failed")


def run_day(instance: dg.DagsterInstance, assets: list[dg.AssetsDefinition], day: date) -> None:
    result = dg.materialize(
        assets, instance=instance, resources=defs.resources, run_config=QUIET, partition_key=day.isoformat()
    )
    if not result.success:
        raise SystemExit(f"run {result.run_id} failed")


def summary(warehouse: Warehouse, first: date, last: date) -> str:
    with duckdb.connect(str(warehouse.catalog_path), read_only=True) as con:
        events, customers = con.execute("SELECT count(*), count(DISTINCT customer_id) FROM raw_events").fetchone()
        by_type = con.execute("SELECT event_type, count(*) FROM raw_events GROUP BY 1 ORDER BY 2 DESC").fetchall()
        quarantined = con.execute(f"SELECT count(*) FROM {QUARANTINE_EVENTS.name}").fetchone()[0]
        ids, canonical, cycles, junk = con.execute(
            "SELECT count(*), count(DISTINCT canonical_id) FILTER (WHERE NOT is_junk), "
            "count(*) FILTER (WHERE in_cycle), count(*) FILTER (WHERE is_junk) FROM merge_map_latest"
        ).fetchone()
        profiled, clv_method = con.execute("SELECT count(*), mode(clv_method) FROM profiles_latest").fetchone()
        segments = con.execute(
            """SELECT s.segment_id, s.name, s.size, s.share, s.mean_clv, r.overall, r.band, v.approved,
                      v.expected_roi, v.reasons, a.actionable
               FROM segments_latest s JOIN robustness_latest r USING (segment_id)
               JOIN viability_latest v USING (segment_id) JOIN actionability_latest a USING (segment_id)
               ORDER BY s.segment_id"""
        ).fetchall()
        campaigns = con.execute(
            """SELECT segment_id, c.channel, c.timing, c.offer, c.audience_size
               FROM explanations_latest, unnest(recommendations) AS r(c) ORDER BY segment_id"""
        ).fetchall()
        exports = con.execute(
            """SELECT campaign_key, customers, control_customers, added, removed, moved_in, moved_out
               FROM audience_exports_latest ORDER BY campaign_key"""
        ).fetchall()
        provider, model, sources = con.execute(
            """SELECT any_value(provider), any_value(model), string_agg(DISTINCT source, ', ')
               FROM (SELECT * FROM actionability_latest UNION ALL BY NAME SELECT * FROM explanations_latest)"""
        ).fetchone()
    report = load_report(warehouse.report_dir(last))
    approved = sum(1 for row in segments if row[7])
    actionable = sum(1 for row in segments if row[10])
    lines = [
        f"History {first} .. {last} ({(last - first).days + 1} days), source: {defs.resources['event_source'].kind}",
        f"  raw_events:  {events:,} events from {customers:,} customer IDs; {quarantined:,} rows quarantined",
        "               " + ", ".join(f"{kind} {count:,}" for kind, count in by_type),
        f"  merge_map:   {ids:,} IDs in the merge history resolve to {canonical:,} customers as of {last}"
        f" ({cycles} on cycles, {junk} junk IDs kept apart)",
        f"  profiles:    {profiled:,} customers active in the year to {last} (CLV: {clv_method})",
        f"  segments:    {len(segments)}, {approved} approved for targeting, {actionable} actionable",
        f"  insights:    answers by {provider} ({model}), source: {sources}",
        f"  report:      {headline(report)}",
        f"  migration:   {migration_line(report)}",
        "",
        f"  {'id':<4} {'segment':<52} {'customers':>9} {'share':>6} {'mean CLV':>9}  {'robustness':<19}  decision",
    ]
    for segment_id, name, size, share, mean_clv, overall, band, is_approved, roi, reasons, is_actionable in segments:
        decision = f"approved, ROI {roi:.1f}" if is_approved else f"rejected: {'; '.join(reasons)}"
        decision += "" if is_actionable else " (not actionable)"
        lines.append(
            f"  {segment_id:<4} {name[:52]:<52} {size:>9,} {share:>6.1%} {mean_clv:>9,.0f} "
            f" {overall:>5.2f} {band:<13}  {decision}"
        )
    lines += ["", "Campaigns:"] + [
        f"  {segment_id:<4} {channel}, {timing}: {offer} ({audience:,} customers)"
        for segment_id, channel, timing, offer, audience in campaigns
    ]
    export_dir = export_folder(warehouse.root, last)
    lines += ["", f"Audiences exported to {export_dir} (manifest.json lists every file):"] + [
        f"  {key:<20} {customers:>7,} customers to contact, {control:,} kept back as the control group; "
        f"since the last export {added:,} added, {removed:,} removed, {moved_in + moved_out:,} moved"
        for key, customers, control, added, removed, moved_in, moved_out in exports
    ] if exports else ["", "Audiences: no campaign to export (no segment is both approved and actionable)."]
    lines += campaign_results_lines(report)
    report_dir = warehouse.report_dir(last)
    lines += [
        "",
        "Outputs:",
        f"  Report:   {report_dir / 'report.html'} (one page, charts embedded; open it in a browser)",
        f"            {report_dir / 'report.md'} (the summary), {report_dir / 'report.json'} (the full record)",
        f"  Parquet:  {warehouse.tables_dir}/<table>/date=YYYY-MM-DD/part-0.parquet",
        f"            ({RAW_EVENTS.name}, {MERGE_MAP.name}, profiles, clusters, segments, robustness, viability, "
        "actionability, explanations, ...)",
        f"  Exports:  {export_dir.parent}/date=YYYY-MM-DD/<campaign>/audience.csv|parquet, changes.csv|parquet",
        f"  Catalog:  {warehouse.catalog_path}",
        f"            .venv/bin/python -c \"import duckdb; duckdb.connect('{warehouse.catalog_path}', read_only=True)"
        ".sql('select segment_id, executive_summary from explanations_latest').show(max_width=200)\"",
        "  UI:       make dev, then open http://127.0.0.1:3000",
    ]
    return "\n".join(lines)


def campaign_results_lines(report: SegmentationReport) -> list[str]:
    """The last measured revenue uplift of every campaign, or why there is none yet."""
    revenue = [result for result in report.campaign_results if result.metric == REVENUE]
    if not revenue:
        return [
            "",
            f"Campaign results: none measured yet (an export is measured {ResultSettings().window_days} days after "
            "it goes out, against its control group: the campaign_results table)",
        ]
    return ["", "Campaign results (revenue per customer, treated against control):"] + [
        f"  {result.summary}" for result in revenue
    ]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 day, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=_positive, default=365, help="days of history to ingest from the start date")
    parser.add_argument(
        "--snapshots", type=_positive, default=3, help="snapshots to build, one a day, ending on the last day"
    )
    parser.add_argument(
        "--as-of",
        type=date.fromisoformat,
        help="the last day (YYYY-MM-DD): ingest from the start date (SEGMENTATION_START_DATE) to it and build "
        "the snapshots ending on it; instead of --days",
    )
    args = parser.parse_args(argv)
    if args.as_of is not None:
        if args.as_of < SETTINGS.start_date:
            parser.error(f"--as-of {args.as_of} is before the first day, {SETTINGS.start_date} (SEGMENTATION_START_DATE)")
        args.days = (args.as_of - SETTINGS.start_date).days + 1
    # The same instance `make dev` shows, unless the caller chose another; made before the first run.
    home = default_home()
    os.environ["DAGSTER_HOME"] = str(home)
    prepare_instance(home, pools_of(defs.assets or ()))
    first = SETTINGS.start_date
    last = first + timedelta(days=args.days - 1)
    snapshot_days = [last - timedelta(days=back) for back in reversed(range(min(args.snapshots, args.days)))]
    instance = dg.DagsterInstance.get()
    print(f"Ingesting {args.days} days ({first} .. {last}) in one run ...", flush=True)
    run_range(instance, [raw_events, id_history], first, last)
    for day in snapshot_days:
        print(f"Resolving IDs, profiling, segmenting, testing, explaining and reporting as of {day} ...", flush=True)
        run_day(instance, SNAPSHOT_ASSETS, day)
    print(summary(Warehouse(SETTINGS.data_dir), first, last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
