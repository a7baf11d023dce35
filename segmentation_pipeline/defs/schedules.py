"""The nightly schedule: the whole graph for the day that has just ended (UTC)."""

import dagster as dg

from .jobs import segmentation_job

#: The hour (UTC) of the nightly run: late events of the day just ended have had an hour to arrive.
NIGHTLY_HOUR_UTC = 1

nightly_segmentation = dg.build_schedule_from_partitioned_job(
    segmentation_job,
    name="nightly_segmentation",
    description="Every night at 01:00 UTC: ingest the day that has just ended (UTC), resolve IDs and build "
    "that day's snapshot through to the report. The partition is yesterday's date.",
    hour_of_day=NIGHTLY_HOUR_UTC,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
