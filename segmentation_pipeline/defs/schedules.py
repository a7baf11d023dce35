"""The nightly schedule: the whole graph for the day that has just ended (UTC), when that day has input."""

from datetime import date, datetime, timedelta, timezone

import dagster as dg

from ..core.incoming import kept_day_folder
from ..core.ingestion import FileSourceSettings
from ..core.sources import EVENTS, files_of_day
from .jobs import segmentation_job
from .partitions import daily_partitions
from .resources import EventSourceResource, WarehouseResource

#: The hour (UTC) of the nightly run: late events of the day just ended have had an hour to arrive.
NIGHTLY_HOUR_UTC = 1


def nightly_day(tick: datetime) -> date:
    """The day a tick builds: the UTC day that ended before it."""
    return tick.astimezone(timezone.utc).date() - timedelta(days=1)


def why_no_input(
    day: date, partitions: dg.DailyPartitionsDefinition, event_source: EventSourceResource, warehouse: WarehouseResource
) -> str | None:
    """Why `day` has nothing to build (None: it has input): a day outside the partitions, or, for the file
    source, no events file for it in the incoming folder nor among the files already ingested."""
    key = day.isoformat()
    first, last = partitions.get_first_partition_key(), partitions.get_last_partition_key()
    if first is None or key < first:
        return f"{key} is before the first day, {first} (SEGMENTATION_START_DATE): nothing to build"
    if partitions.end is not None and last is not None and key > last:
        return (
            f"{key} is after the last day with input, {last} (SEGMENTATION_END_DATE, or the end of the "
            "synthetic history): nothing to build. Set SEGMENTATION_END_DATE later, or leave it unset for "
            "a real feed, to build new days"
        )
    store = warehouse.warehouse()
    source = event_source.source(store.root)
    if not isinstance(source, FileSourceSettings):
        return None  # the synthetic source has every day of its history
    if source.path_for(EVENTS):
        return None  # one file or glob for every day: the run reads that day's rows from it
    kept = kept_day_folder(store.kept_input_dir, EVENTS, day)
    if files_of_day(source.incoming_dir, EVENTS, day) or (kept.is_dir() and any(kept.iterdir())):
        return None
    return (
        f"no events file for {key} in {source.incoming_dir / EVENTS.incoming_folder / f'date={key}'}: "
        "nothing to build. Once its files are in, build the day from the UI (the segmentation job, "
        f"partition {key})"
    )


@dg.schedule(
    name="nightly_segmentation",
    cron_schedule=f"0 {NIGHTLY_HOUR_UTC} * * *",
    execution_timezone="UTC",
    job=segmentation_job,
    # Off until an operator turns it on (UI: Automation, or `dagster schedule start`): the demo's history
    # ended long ago, and a deployment decides when its nights begin.
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every night at 01:00 UTC: ingest the day that has just ended (UTC), resolve IDs and build "
    "that day's snapshot through to the report; the partition is yesterday's date. Skips, saying why, a day "
    "with no input: past the last partition (SEGMENTATION_END_DATE, the end of the synthetic history), or, "
    "with SEGMENTATION_SOURCE=files, no events file for that day. Off by default: turn it on in the UI or "
    "with `dagster schedule start nightly_segmentation`.",
)
def nightly_segmentation(
    context: dg.ScheduleEvaluationContext, event_source: EventSourceResource, warehouse: WarehouseResource
) -> dg.RunRequest | dg.SkipReason:
    day = nightly_day(context.scheduled_execution_time)
    reason = why_no_input(day, daily_partitions, event_source, warehouse)
    if reason:
        return dg.SkipReason(reason)
    return dg.RunRequest(
        run_key=day.isoformat(),
        partition_key=day.isoformat(),
        tags={"segmentation/trigger": "nightly_segmentation"},
    )
