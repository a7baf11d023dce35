"""for_each_day over a real Dagster instance: each day's check results under the day's partition,
a failed blocking check of any day stops the run there, as Dagster's own blocking checks do."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from segmentation_pipeline.defs.checks import check_spec
from segmentation_pipeline.defs.partitions import DayResult, RunEvent, daily_partitions, for_each_day, range_tags

FAILING_DAY = date(2025, 1, 2)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        check_spec("day_is_odd", asset="numbered_days", description="The day of the month is odd."),
        check_spec("not_the_failing_day", asset="numbered_days", description="Not 2 January.", blocking=True),
    ],
)
def numbered_days(context: dg.AssetExecutionContext) -> Iterator[RunEvent]:
    def make_day(day: date) -> DayResult:
        return DayResult(
            metadata={"day_of_month": day.day},
            checks=[
                dg.AssetCheckResult(check_name="day_is_odd", passed=day.day % 2 == 1, description=f"day {day.day}"),
                dg.AssetCheckResult(check_name="not_the_failing_day", passed=day != FAILING_DAY),
            ],
        )

    yield from for_each_day(context, make_day)


@dg.asset(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(), deps=[numbered_days])
def after_numbered_days() -> None:
    """Runs only when every blocking check of numbered_days passed."""


@pytest.fixture
def instance(tmp_path: Path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as test_instance:
        yield test_instance


def records(instance: dg.DagsterInstance, name: str) -> list[tuple[str | None, str]]:
    key = dg.AssetCheckKey(numbered_days.key, name)
    return sorted(
        (record.partition, record.status.value)
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    )


def test_a_ranged_run_records_every_day_and_stops_at_a_failed_blocking_check(instance: dg.DagsterInstance) -> None:
    result = dg.materialize(
        [numbered_days, after_numbered_days],
        instance=instance,
        tags=range_tags(date(2025, 1, 1), date(2025, 1, 3)),
        raise_on_error=False,
    )
    assert not result.success
    assert records(instance, "day_is_odd") == [
        ("2025-01-01", "SUCCEEDED"),
        ("2025-01-02", "FAILED"),
        ("2025-01-03", "SUCCEEDED"),
    ]
    assert records(instance, "not_the_failing_day") == [
        ("2025-01-01", "SUCCEEDED"),
        ("2025-01-02", "FAILED"),
        ("2025-01-03", "SUCCEEDED"),
    ]
    (failure,) = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "numbered_days"
    assert "not_the_failing_day on 2025-01-02" in failure.step_failure_data.error.message
    # The days were stored and materialized; the asset after them never ran.
    assert sorted(e.partition for e in result.get_asset_materialization_events()) == [
        "2025-01-01",
        "2025-01-02",
        "2025-01-03",
    ]
    assert result.get_step_success_events() == []


def test_a_run_of_one_partition_records_one_result_per_check_under_it(instance: dg.DagsterInstance) -> None:
    assert dg.materialize([numbered_days], instance=instance, partition_key="2025-01-03").success
    assert records(instance, "day_is_odd") == [("2025-01-03", "SUCCEEDED")]
    assert records(instance, "not_the_failing_day") == [("2025-01-03", "SUCCEEDED")]
