"""The one partitioning of the graph: UTC days from the configured start date to the last day with input."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import dagster as dg

from ..core.settings import Settings
from .checks import over_days

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


def for_each_day(context: dg.AssetExecutionContext, make_day: Callable[[date], DayResult]) -> dg.MaterializeResult:
    """Run `make_day` for every day of the run in date order: one day (a nightly or ad-hoc run), or
    the range of a single-run backfill, whose days each get their own metadata and whose checks
    pass when they passed on every day."""
    days = partition_days(context)
    made = {}
    for day in days:
        made[day] = make_day(day)
        if len(days) > 1:
            context.add_asset_metadata(made[day].metadata, partition_key=day.isoformat())
    if len(days) == 1:
        metadata = made[days[0]].metadata
    else:
        metadata = {"run_days": len(days), "run_first_day": days[0].isoformat(), "run_last_day": days[-1].isoformat()}
    return dg.MaterializeResult(metadata=metadata, check_results=over_days({d: r.checks for d, r in made.items()}))
