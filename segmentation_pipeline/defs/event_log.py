"""The Dagster instance of `.dagster_home/dagster.yaml`: Dagster's, whose SQLite event log stores a
batch of events in one transaction per database file instead of one transaction per event.

A run over a range of days records two events a day for each partitioned asset: the
materialization planned (when the run is created) and the materialization (when the step's
output is stored). Dagster 1.13's SQLite event log stores each event on its own: a new
SQLAlchemy engine, a connection, an insert and a commit in the run's database, then the same
again in the index database (plus the asset's row and its tags), then each connection closed,
which checkpoints the write-ahead log. That is 9-12 ms an event on an idle disk and 30 ms and more
on a busy one: ingesting the 546 days of the CDNOW master file (2,215 events) took 22 to 72 s,
4.5 s of it the ingestion itself.

Dagster already hands these events to the storage in batches (every planned event of a run
together, every materialization of one step's output together) once the instance's event batch
size is above 0; its Postgres storage writes a batch at once, its SQLite storage one event at a
time. `BatchingSqliteEventLogStorage` writes the batch as the SQLite storage writes each of its
events, in one transaction per database: the same rows in the run's database, the index, the
asset keys, the asset event tags and the asset check executions. `SegmentationInstance` is
Dagster's instance with that storage at the place Dagster puts its own (the instance folder:
`history/runs/`), so an instance made before keeps its history, and with a batch size of
`EVENT_BATCH_SIZE` (the environment variable DAGSTER_EVENT_BATCH_SIZE overrides it; 0 stores
event by event, as Dagster does by default).

A DAGSTER_HOME whose dagster.yaml does not name the instance class gets Dagster's own instance:
the same runs, events and files, stored one by one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import dagster as dg
import yaml
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy.engine import Connection

#: The Dagster releases whose storage this module was written against and checked on.
PATCHED_DAGSTER = "1.13."
#: Events stored together at most (a batch is also stored when Dagster ends it: at the end of a
#: run's planned events, or of one step output's materializations). 546 days of two assets are two
#: batches of 546 materializations and two of planned events (about 2.5 MB each in the index).
EVENT_BATCH_SIZE = 1000
#: Events a batch stores in one transaction; others (run and step events) are stored one by one,
#: as Dagster does (it never batches them in 1.13).
_BATCHED = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_OBSERVATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
        # The check results of a range, one per day and check (defs/partitions.py batches them).
        DagsterEventType.ASSET_CHECK_EVALUATION,
    }
)


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, storing a batch of asset events in one transaction per database."""

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store `events` as `store_event` stores each of them, in order, in two transactions: the
        run's database, then the index. A batch of other events, or of events of more than one run,
        is stored one event at a time."""
        if (
            not events
            or len({event.run_id for event in events}) > 1
            or any(not event.is_dagster_event or event.dagster_event_type not in _BATCHED for event in events)
        ):
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        # The index keeps asset events and planned checks, under storage IDs of its own (the ones
        # asset queries and the asset rows refer to). If this transaction fails, Dagster stores the
        # batch again one event at a time: the run's own log then lists those events twice, the
        # index once.
        with self.index_transaction() as conn:
            storage_ids = [
                conn.execute(SqlEventLogStorageTable.insert().values(**row)).inserted_primary_key[0] for row in rows
            ]
            stored = list(zip(events, storage_ids, strict=True))
            asset_events = [(event, storage_id) for event, storage_id in stored if not _is_check(event)]
            if asset_events:
                self._store_asset_event_tags(conn, *zip(*asset_events, strict=True))
                for event, storage_id in _last_of_each_kind(asset_events):
                    self._store_asset_event(conn, event, storage_id)
            for event, storage_id in stored:
                if event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                    self._store_check_result(conn, event, storage_id)
        # Each opens its own connection to the index, as `store_event` has it do.
        for event, storage_id in stored:
            if event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
                self.store_asset_check_event(event, storage_id)

    def _store_check_result(self, conn: Connection, event: EventLogEntry, storage_id: int) -> None:
        """Dagster's `_update_asset_check_evaluation` inside the batch's transaction: the result
        takes the row its run planned for the check and partition (a new row if there is none)."""
        evaluation = event.get_dagster_event().asset_check_evaluation_data
        target = evaluation.target_materialization_data
        values = {
            "execution_status": (
                AssetCheckExecutionRecordStatus.SUCCEEDED if evaluation.passed else AssetCheckExecutionRecordStatus.FAILED
            ).value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": storage_id,
            "materialization_event_storage_id": target.storage_id if target else None,
            "partition": evaluation.partition,
        }
        table = AssetCheckExecutionsTable
        planned = (
            (table.c.asset_key == evaluation.asset_key.to_string())
            & (table.c.check_name == evaluation.check_name)
            & (table.c.run_id == event.run_id)
            & (table.c.partition.is_(None) if evaluation.partition is None else table.c.partition == evaluation.partition)
        )
        if conn.execute(table.update().where(planned).values(**values)).rowcount == 0:
            conn.execute(
                table.insert().values(
                    asset_key=evaluation.asset_key.to_string(),
                    check_name=evaluation.check_name,
                    run_id=event.run_id,
                    **values,
                )
            )

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        """Dagster's rows of a planned check, one per partition of the run, with the event serialized
        once: Dagster 1.13 serializes it again for each row, and for a range the event lists every
        day (546 days: 546 serializations of a 546-day list per check)."""
        planned = event.get_dagster_event().asset_check_planned_data
        partitions = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        row = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**row, "partition": key} for key in partitions])


def _is_check(event: EventLogEntry) -> bool:
    return event.dagster_event_type in (
        DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
        DagsterEventType.ASSET_CHECK_EVALUATION,
    )


def _last_of_each_kind(stored: Sequence[tuple[EventLogEntry, int]]) -> list[tuple[EventLogEntry, int]]:
    """The events whose asset row `store_event` would leave in place, in order: an asset's row
    takes columns from each event (a materialization sets the last materialization, run and time; a
    planned materialization the run and time; an observation the time), so the row written for the
    last event of each (asset, kind) in order is the row written for every event in order."""
    last: dict[tuple[object, object], int] = {}
    for position, (event, _) in enumerate(stored):
        last[(event.dagster_event.asset_key, event.dagster_event_type)] = position
    return [stored[position] for position in sorted(last.values())]


class BatchingSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, event log, schedules in one folder), with the batching event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # DagsterSqliteStorage.__init__, with the event log swapped: the same folders.
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = BatchingSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, str]
    ) -> BatchingSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class SegmentationInstance(dg.DagsterInstance):
    """Dagster's instance, on the batching SQLite storage unless dagster.yaml names another storage,
    storing Dagster's batches of events `EVENT_BATCH_SIZE` at a time. On a Dagster release this
    module was not checked on, it is Dagster's own instance (and says so)."""

    @classmethod
    def config_schema(cls) -> dict[str, object]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        defaults = dict(InstanceRef.config_defaults(base_dir))
        if _checked_release():
            defaults["storage"] = ConfigurableClassData(
                __name__, BatchingSqliteStorage.__name__, yaml.dump({"base_dir": base_dir}, default_flow_style=False)
            )
        return defaults

    def _get_event_batch_size(self) -> int:
        if not _checked_release():
            return super()._get_event_batch_size()
        return int(os.getenv("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE)))


def _checked_release() -> bool:
    if dg.__version__.startswith(PATCHED_DAGSTER):
        return True
    warnings.warn(
        f"segmentation_pipeline.defs.event_log was written for Dagster {PATCHED_DAGSTER}x, not {dg.__version__}: "
        "the instance stores events one by one, as Dagster does. Check whether SqliteEventLogStorage still "
        "lacks store_event_batch, and the private methods the batching storage calls.",
        stacklevel=2,
    )
    return False
