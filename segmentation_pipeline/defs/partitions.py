"""The one partitioning of the graph: UTC days from the configured start date."""


from datetime import date, datetime

import dagster as dg

from ..core.settings import Settings

SETTINGS = Settings.from_env()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SETTINGS.start_date.isoformat(),
    timezone="UTC",
    fmt="%Y-%m-%d",
)


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """Every day of the run's partition key range (one day, or a whole single-run backfill)."""
    return [datetime.strptime(key, "%Y-%m-%d").date() for key in context.partition_keys]


def partition_day(context: dg.AssetExecutionContext) -> date:
    """The as-of day of a run of one partition."""
    return datetime.strptime(context.partition_key, "%Y-%m-%d").date()

