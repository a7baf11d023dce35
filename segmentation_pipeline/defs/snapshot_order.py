"""Snapshots of different days made side by side: a day's `clusters` waits for the earlier days
that other runs on the instance are still to store.

A day's segment IDs follow the previous stored snapshot (core/lineage.py). Runs of several days
launched together (CLI runs, a `dagster job backfill`, ad-hoc runs from the Launchpad) would each
take whatever earlier day happens to be stored when their `clusters` step starts, and a day whose
predecessor was still being computed numbers its segments anew, silently. So before it reads the
previous snapshot, `clusters` of a day looks at the other runs in progress on the instance: a run
that plans to materialize `clusters` of an earlier day (its planned materializations, recorded
when it was created) and has not stored it yet is waited for, polling every few seconds (the step
can be stopped meanwhile). Days are waited for in date order only, so two runs never wait for each
other. A run of an earlier day that stays queued (it may be queued behind this very run, for the
one whole-graph run at a time or the runs allowed at once) is waited for up to
`QUEUED_WAIT_SECONDS`, then this day refuses, naming it: run it again once that run is done. A run
whose process is gone is ended (run_processes) rather than waited for, and a run created long ago
but never launched is not waited for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import dagster as dg
from dagster._core.events import DagsterEventType

from .run_processes import end_if_dead

#: Seconds between two looks at the runs in progress.
POLL_SECONDS = 2.0
#: How long a queued run of an earlier day is waited for before the step refuses.
QUEUED_WAIT_SECONDS = 120.0

_ASSET = dg.AssetKey("clusters")
_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
_WAITING = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED}


@dataclass(frozen=True)
class EarlierSnapshotRun:
    """A run in progress that is still to store `clusters` of days before the one being made."""

    run: dg.DagsterRun
    days: tuple[date, ...]

    def describe(self) -> str:
        days = ", ".join(day.isoformat() for day in self.days)
        return f"run {self.run.run_id} ({self.run.status.value}), still to store clusters of {days}"


def runs_making_earlier_snapshots(
    instance: dg.DagsterInstance, own_run_id: str, as_of: date
) -> list[EarlierSnapshotRun]:
    found = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_IN_PROGRESS)):
        run = record.dagster_run
        if run.run_id == own_run_id or _never_launched(record):
            continue
        pending = sorted(day for day in _days_planned_not_stored(instance, run.run_id) if day < as_of)
        if pending:
            found.append(EarlierSnapshotRun(run, tuple(pending)))
    return found


def wait_for_earlier_snapshots(context: dg.AssetExecutionContext, as_of: date) -> None:
    """Return once no other run is still to store clusters of a day before `as_of`; raise a Failure
    if such a run stays queued (see the module's docstring)."""
    instance, own_run_id = context.instance, context.run.run_id
    queued_since: dict[str, float] = {}
    reported: set[str] = set()
    while True:
        waiting_for = []
        for earlier in runs_making_earlier_snapshots(instance, own_run_id, as_of):
            ended = end_if_dead(instance, earlier.run, f"run {own_run_id}, which was waiting for its snapshots")
            if ended:
                context.log.warning(f"clusters of {as_of}: {ended}; not waiting for it.")
            else:
                waiting_for.append(earlier)
        if not waiting_for:
            return
        now = time.monotonic()
        for earlier in waiting_for:
            if earlier.run.status in _WAITING:
                if now - queued_since.setdefault(earlier.run.run_id, now) > QUEUED_WAIT_SECONDS:
                    raise dg.Failure(
                        f"clusters of {as_of} follows the snapshots of the days before it, but "
                        f"{earlier.describe()}, has stayed queued for {QUEUED_WAIT_SECONDS:.0f} s (it may be "
                        "queued behind this run). Materialize this day again once that run is done."
                    )
            else:
                queued_since.pop(earlier.run.run_id, None)
            if earlier.run.run_id not in reported:
                reported.add(earlier.run.run_id)
                context.log.info(
                    f"clusters of {as_of} waits for {earlier.describe()}: its segment IDs follow those days."
                )
        time.sleep(POLL_SECONDS)


def _never_launched(record: dg.RunRecord) -> bool:
    """A run created long ago and never submitted (its creator died first): it will not start."""
    age = time.time() - record.create_timestamp.timestamp()
    return record.dagster_run.status == dg.DagsterRunStatus.NOT_STARTED and age > QUEUED_WAIT_SECONDS


def _days_planned_not_stored(instance: dg.DagsterInstance, run_id: str) -> set[date]:
    """Days of `clusters` the run planned to materialize and has not materialized yet."""
    records = instance.get_records_for_run(
        run_id, of_type={DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_MATERIALIZATION}
    ).records
    planned: set[str] = set()
    stored: set[str] = set()
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.asset_key != _ASSET:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            if event.partition:
                stored.add(event.partition)
            continue
        data = event.event_specific_data
        if data.partition:
            planned.add(data.partition)
        elif data.partitions_subset is not None:
            planned |= set(data.partitions_subset.get_partition_keys())
    return {date.fromisoformat(key) for key in planned - stored}
