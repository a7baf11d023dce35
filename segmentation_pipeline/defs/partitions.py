"""The one partitioning of the graph: UTC days from the configured start date to the last day with input."""

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import dagster as dg

# Not exported by dagster: the type of AssetCheckEvaluation.target_materialization_data, the events
# of a batch (see _logged_together), the asset graph and what a run made in process lacks.
from dagster._check import CheckError
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata, DagsterEventType, generate_event_batch_id

from ..core.settings import Settings
from .metadata import rounded

SETTINGS = Settings.from_env()

#: The days of the built-in synthetic history when no end is set: the year `make demo` ingests.
SYNTHETIC_HISTORY_DAYS = 365


def last_partition_day(settings: Settings) -> date | None:
    """The last day a partition is made for: SEGMENTATION_END_DATE when set (a demo, the backfill of
    an old export); else the last day of the synthetic history (a year from the start); else none: a
    real feed gets a partition a day, the last one yesterday (UTC), as Dagster's daily partitions do,
    so that the nightly schedule has tonight's day to build."""
    if settings.end_date is not None:
        return settings.end_date
    if settings.source == "synthetic":
        return settings.start_date + timedelta(days=SYNTHETIC_HISTORY_DAYS - 1)
    return None


def daily_partitions_for(settings: Settings) -> dg.DailyPartitionsDefinition:
    last_day = last_partition_day(settings)
    return dg.DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        # Dagster's end date is the first day without a partition.
        end_date=(last_day + timedelta(days=1)).isoformat() if last_day else None,
        timezone="UTC",
        fmt="%Y-%m-%d",
    )


daily_partitions = daily_partitions_for(SETTINGS)


def range_tags(first: date, last: date) -> dict[str, str]:
    """The tags of one run over first..last, as a single-run backfill launches it."""
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """Every day of the run's partition key range (one day, or a whole single-run backfill)."""
    return [datetime.strptime(key, "%Y-%m-%d").date() for key in context.partition_keys]


def partition_day(context: dg.AssetExecutionContext) -> date:
    """The as-of day of a run of one partition."""
    return datetime.strptime(context.partition_key, "%Y-%m-%d").date()


@dataclass
class DayResult:
    """What an as-of asset made of one day: the day's metadata and check results."""

    metadata: dict[str, object]
    checks: list[dg.AssetCheckResult] = field(default_factory=list)


#: What an asset of the daily partitions yields: its materialization, then its checks' results.
RunEvent = dg.MaterializeResult | DagsterEvent | dg.Output


def for_each_day(context: dg.AssetExecutionContext, make_day: Callable[[date], DayResult]) -> Iterator[RunEvent]:
    """Run `make_day` for every day of the run in date order: one day (a nightly or ad-hoc run), or
    the range of a single-run backfill, whose days each get their own metadata and check results."""
    days = partition_days(context)
    made = {}
    for day in days:
        made[day] = make_day(day)
        if len(days) > 1:
            context.add_asset_metadata(rounded(made[day].metadata), partition_key=day.isoformat())
    if len(days) == 1:
        metadata = made[days[0]].metadata
    else:
        metadata = {"run_days": len(days), "run_first_day": days[0].isoformat(), "run_last_day": days[-1].isoformat()}
    yield from materialized(context, metadata, {day: result.checks for day, result in made.items()})


def materialized(
    context: dg.AssetExecutionContext,
    metadata: Mapping[str, object],
    checks_by_day: Mapping[date, Sequence[dg.AssetCheckResult]],
) -> Iterator[RunEvent]:
    """The run's materialization, then every day's check results under that day's partition.

    A run of one partition hands its results to Dagster as they are. A ranged run (a single-run
    backfill) has Dagster plan each check once per day of the range but record an
    `AssetCheckResult` without a partition: a 365-day backfill left 365 "Skipped" rows beside one
    result of no day. Here each day's result is recorded as that day's evaluation, against that
    day's materialization of this run.
    """
    if context.has_partition_key:
        day = partition_day(context)
        yield dg.MaterializeResult(
            metadata={**rounded(metadata), **out_of_date_after(context, day)},
            check_results=list(checks_by_day.get(day, [])),
        )
        return
    yield dg.MaterializeResult(metadata=rounded(metadata))
    yield from _day_evaluations(context, checks_by_day)


def _day_evaluations(
    context: dg.AssetExecutionContext, checks_by_day: Mapping[date, Sequence[dg.AssetCheckResult]]
) -> Iterator[DagsterEvent | dg.Output]:
    assets_def = context.assets_def
    output_names = {spec.key: name for name, spec in assets_def.check_specs_by_output_name.items()}
    targets = _run_materializations(context, list(checks_by_day))
    evaluations = [
        dg.AssetCheckEvaluation(
            asset_key=context.asset_key,
            check_name=str(result.check_name),
            passed=result.passed,
            metadata=result.metadata,
            target_materialization_data=targets.get(day),
            severity=result.severity,
            description=result.description,
            blocking=assets_def.get_spec_for_check_key(
                dg.AssetCheckKey(context.asset_key, str(result.check_name))
            ).blocking,
            partition=day.isoformat(),
        )
        for day, results in sorted(checks_by_day.items())
        for result in results
        if dg.AssetCheckKey(context.asset_key, str(result.check_name)) in context.selected_asset_check_keys
    ]
    yield from _logged_together(context, evaluations)
    # Each check's output, done once: what Dagster yields for an AssetCheckResult besides its evaluation.
    for key in dict.fromkeys(evaluation.asset_check_key for evaluation in evaluations):
        yield dg.Output(None, output_name=output_names[key])
    blocked = [e for e in evaluations if e.blocking and not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    if blocked:
        # What Dagster does after a failed blocking check: the step fails, so later steps do not run.
        raise dg.Failure(
            description="blocking checks failed: "
            + "; ".join(f"{e.check_name} on {e.partition}: {e.description}" for e in blocked[:10])
        )


def _logged_together(
    context: dg.AssetExecutionContext, evaluations: Sequence[dg.AssetCheckEvaluation]
) -> Iterator[DagsterEvent]:
    """The evaluations as events of one batch, as Dagster forms for the materializations of a range:
    an instance that stores batches (defs/event_log.py) stores them in one transaction. One at a
    time, the 2,190 results of raw_events' 6 checks over 365 days took 2 minutes of SQLite commits,
    the ingestion itself 13 seconds (9 s in all with the batch)."""
    step = context.op_execution_context._step_execution_context  # noqa: SLF001 (no public way to batch)
    batch = generate_event_batch_id()
    for position, evaluation in enumerate(evaluations):
        yield DagsterEvent.from_step(
            DagsterEventType.ASSET_CHECK_EVALUATION,
            step,
            event_specific_data=evaluation,
            message=f"Asset check '{evaluation.check_name}' of {evaluation.partition} "
            + ("passed." if evaluation.passed else "did not pass.")
            + (f" Description: '{evaluation.description}'" if evaluation.description else ""),
            batch_metadata=DagsterEventBatchMetadata(batch, position == len(evaluations) - 1),
        )


def _run_materializations(
    context: dg.AssetExecutionContext, days: Sequence[date]
) -> dict[date, AssetCheckEvaluationTargetMaterializationData]:
    """This run's materialization of each day: what the day's check results are about (the UI shows a
    check's result as current while it targets the partition's latest materialization)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[day.isoformat() for day in days]),
        limit=len(days),
    ).records
    return {
        datetime.strptime(str(record.partition_key), "%Y-%m-%d").date(): (
            AssetCheckEvaluationTargetMaterializationData(
                run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
            )
        )
        for record in records
        if record.run_id == context.run.run_id
    }


def out_of_date_after(context: dg.AssetExecutionContext, day: date) -> dict[str, object]:
    """Metadata naming the assets after this one whose partition of `day` is stored but not made
    again by this run (an ad-hoc re-run of one stage): they were made from what this run replaced.

    Dagster 1.13 marks such a partition stale ("has a new dependency materialization") on the
    asset's Partitions tab only, not on the asset graph: the run says it where it is read first,
    and logs it."""
    graph = _code_location_graph(context)
    in_run = set(context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys)
    after: list[dg.AssetKey] = []
    frontier = [context.asset_key]
    while frontier:
        for child in sorted(graph.get(frontier.pop()).child_keys):
            if child != context.asset_key and child not in after:
                after.append(child)
                frontier.append(child)
    stale = [
        key.to_user_string()
        for key in after
        if key not in in_run
        and context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=1
        ).records
    ]
    if not stale:
        return {}
    context.log.warning(
        f"{day}: {', '.join(stale)} of this day were made from the {context.asset_key.to_user_string()} this run "
        f"replaced and are now out of date (stale on their Partitions tab): materialize them for {day}"
    )
    return {"out_of_date_after_this_run": stale}


def _code_location_graph(context: dg.AssetExecutionContext) -> BaseAssetGraph:
    """Every asset of the code location, also those the run does not make. A run made in process
    (`dg.materialize`) has no code location: its own job's assets then."""
    try:
        return context.repository_def.asset_graph
    except CheckError:
        return context.job_def.asset_layer.asset_graph
