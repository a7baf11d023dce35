"""`make demo`: backfill a synthetic history, build the latest snapshots and say where the outputs are.

The history is ingested as a backfill ingests it, raw_events and id_history in
one run of the `ingestion` job over the whole range; then each snapshot is one
run of the `segmentation` job's as-of assets for its day, in date order (segment
IDs follow the day before), as the nightly schedule makes them. They are carried
out here, in this process, and recorded in the Dagster instance in DAGSTER_HOME
(made first, once, if it is new: segmentation_pipeline.instance) as runs of
those jobs of the code location `make dev` loads, so its Jobs pages and run
timeline show them afterwards. The history is synthetic, the storage local
Parquet and DuckDB, the language model the deterministic mock.
"""

import argparse
import os
import sys
import time
from collections.abc import Iterable
from datetime import date, timedelta

import dagster as dg
import duckdb
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from .core.activation import export_folder
from .core.campaign_results import REVENUE, ResultSettings
from .core.reporting.document import SegmentationReport
from .core.reporting.publish import load_report
from .core.reporting.render import headline, migration_line
from .core.schemas import MERGE_MAP, QUARANTINE_EVENTS, RAW_EVENTS
from .core.settings import REPOSITORY_ROOT
from .core.warehouse import Warehouse
from .definitions import defs
from .defs.jobs import SNAPSHOT_ASSETS, ingestion_job, segmentation_job
from .defs.partitions import SETTINGS, daily_partitions, range_tags
from .instance import default_home, pools_of, prepare_instance


def console_config(source_kind: str) -> dict[str, object]:
    """The runs' console: warnings about the user's own input (the file source), errors only for the
    synthetic history, whose faults (merge cycles, junk IDs, broken rows) are made on purpose and
    counted in the summary. Every event is still in the instance for the UI."""
    level = "ERROR" if source_kind == "synthetic" else "WARNING"
    return {"loggers": {"console": {"config": {"log_level": level}}}}

#: The module of the definitions, as workspace.yaml (and so `make dev`) loads it.
DEFINITIONS_MODULE = "segmentation_pipeline.definitions"


def code_location() -> RemoteRepositoryOrigin:
    """The repository of the code location workspace.yaml names: where the UI files a run's job."""
    (entry,) = yaml.safe_load((REPOSITORY_ROOT / "workspace.yaml").read_text())["load_from"]
    module = entry["python_module"]
    target = LoadableTargetOrigin(
        executable_path=sys.executable, module_name=module["module_name"], working_directory=str(REPOSITORY_ROOT)
    )
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, location_name=module["location_name"])
    return RemoteRepositoryOrigin(location, defs.get_repository_def().name)


def run_job(
    instance: dg.DagsterInstance,
    job_name: str,
    tags: dict[str, str],
    assets: Iterable[dg.AssetsDefinition] | None = None,
) -> dg.DagsterRun:
    """One run of a named job of the definitions (of `assets` only, when given), here in this process.

    The run records the code location it belongs to, as a run launched from `make dev` does: the
    UI lists a job's runs, and draws its timeline, by that location (a run made with `dg.materialize`
    has none and shows as an unnamed asset job)."""
    selection = frozenset(key for asset in assets for key in asset.keys) if assets is not None else None
    job = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", working_directory=str(REPOSITORY_ROOT)
    ).get_reconstructable_job(job_name)
    if selection:
        job = job.get_subset(asset_selection=selection)
    run = instance.create_run_for_job(
        job_def=job.get_definition(),
        run_config=console_config(defs.resources["event_source"].kind),
        tags=tags,
        asset_selection=selection,
        remote_job_origin=code_location().get_job_origin(job_name),
        job_code_origin=job.get_python_origin(),
    )
    result = execute_run(job, run, instance)
    if not result.success:
        raise SystemExit(f"run {run.run_id} of the {job_name} job failed: see it in the UI (make dev)")
    return run


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
        "--snapshots", type=_positive, default=2, help="snapshots to build, one a day, ending on the last day"
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
    first = SETTINGS.start_date
    last = first + timedelta(days=args.days - 1)
    last_partition = daily_partitions.get_last_partition_key()
    if last_partition is not None and last.isoformat() > last_partition:
        parser.error(
            f"the history would end on {last}, after the last daily partition, {last_partition}: "
            f"set SEGMENTATION_END_DATE={last} (make demo END={last}; make dev END={last} then shows those days)"
        )
    # The same instance `make dev` shows, unless the caller chose another; made before the first run.
    home = default_home()
    os.environ["DAGSTER_HOME"] = str(home)
    prepare_instance(home, pools_of(defs.assets or ()))
    snapshot_days = [last - timedelta(days=back) for back in reversed(range(min(args.snapshots, args.days)))]
    instance = dg.DagsterInstance.get()
    started = time.monotonic()
    print(f"Ingesting {args.days} days ({first} .. {last}) in one run ...", flush=True)
    run_job(instance, ingestion_job.name, range_tags(first, last))
    print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    for day in snapshot_days:
        began = time.monotonic()
        print(f"Resolving IDs, profiling, segmenting, testing, explaining and reporting as of {day} ...", flush=True)
        run_job(instance, segmentation_job.name, {"dagster/partition": day.isoformat()}, SNAPSHOT_ASSETS)
        print(f"  done in {time.monotonic() - began:.0f} s", flush=True)
    print(summary(Warehouse(SETTINGS.data_dir), first, last))
    print(f"\nThe demo took {time.monotonic() - started:.0f} s ({len(snapshot_days)} snapshots).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
