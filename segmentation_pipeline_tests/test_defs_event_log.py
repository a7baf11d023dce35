"""The instance of the repository's dagster.yaml stores Dagster's batches of events in one transaction
each (defs/event_log.py): a run over a range of days records the same events, asset rows and partition
statuses as Dagster's own instance, a failed range still shows its days failed, and no asset event of
a range is stored on its own."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events
from segmentation_pipeline.defs.event_log import BatchingSqliteEventLogStorage, SegmentationInstance
from segmentation_pipeline.defs.partitions import daily_partitions, range_tags
from segmentation_pipeline.defs.resources import EventSourceResource, IdentityRulesResource, WarehouseResource
from segmentation_pipeline_tests.runs import instance_home

FIRST, LAST = date(2025, 1, 1), date(2025, 1, 20)
DAYS = [key for key in daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange("2025-01-01", "2025-01-20"))]
ASSET_EVENTS = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_MATERIALIZATION_PLANNED}


def dagsters_own_home(home: Path) -> Path:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def ingest(instance: dg.DagsterInstance, data_dir: Path, **source: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_events, id_history],
        instance=instance,
        resources={
            "warehouse": WarehouseResource(data_dir=str(data_dir)),
            "identity_rules": IdentityRulesResource(),
            "event_source": EventSourceResource(**({"kind": "synthetic", "n_customers": 500} | source)),
        },
        tags=range_tags(FIRST, LAST),
        raise_on_error=False,
    )


class StoreCalls:
    """Which asset events the instance's event log stores on their own, and how many batches it stores."""

    def __init__(self, storage: BatchingSqliteEventLogStorage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.alone: Counter[DagsterEventType] = Counter()
        self.batches: list[Counter[DagsterEventType]] = []
        store_event, store_event_batch = storage.store_event, storage.store_event_batch

        def one(event):
            self.alone[event.dagster_event_type] += 1
            return store_event(event)

        def batch(events):
            self.batches.append(Counter(event.dagster_event_type for event in events))
            return store_event_batch(events)

        monkeypatch.setattr(storage, "store_event", one)
        monkeypatch.setattr(storage, "store_event_batch", batch)


def index_records(home: Path) -> dict[str, object]:
    """What the index database holds, without what differs from run to run (IDs, times, run IDs)."""
    (index,) = home.rglob("index.db")
    with sqlite3.connect(index) as con:
        events = Counter(con.execute("SELECT dagster_event_type, asset_key, partition FROM event_logs").fetchall())
        newest = dict(
            con.execute(
                "SELECT asset_key, max(id) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' GROUP BY 1"
            ).fetchall()
        )
        asset_rows = {}
        for asset_key, last_run_id, last_materialization, timestamp in con.execute(
            "SELECT asset_key, last_run_id, last_materialization, last_materialization_timestamp FROM asset_keys"
        ):
            record = json.loads(last_materialization)
            entry = record["event_log_entry"]
            asset_rows[asset_key] = (
                entry["dagster_event"]["event_specific_data"]["materialization"]["partition"],
                record["storage_id"] == newest[asset_key],
                last_run_id == entry["run_id"],
                timestamp is not None,
            )
        tags = Counter(
            row
            for row in con.execute(
                "SELECT t.asset_key, t.key, e.partition FROM asset_event_tags t JOIN event_logs e "
                "ON e.id = t.event_id AND e.asset_key = t.asset_key"
            ).fetchall()
        )
        # Each check execution row with the event it was made from, and the event it points at.
        checks = Counter(
            (
                asset_key,
                check_name,
                partition,
                status,
                json.loads(evaluation)["dagster_event"]["event_type_value"],
                kind,
            )
            for asset_key, check_name, partition, status, evaluation, kind in con.execute(
                "SELECT c.asset_key, c.check_name, c.partition, c.execution_status, c.evaluation_event, "
                "e.dagster_event_type FROM asset_check_executions c "
                "LEFT JOIN event_logs e ON e.id = c.evaluation_event_storage_id"
            ).fetchall()
        )
    return {"events": events, "asset_rows": asset_rows, "tags": tags, "checks": checks}


def partition_status(instance: dg.DagsterInstance, asset: dg.AssetsDefinition) -> dict[str, list[str]]:
    status = get_and_update_asset_status_cache_value(instance, asset.key, daily_partitions)
    return {
        "materialized": sorted(
            status.deserialize_materialized_partition_subsets(daily_partitions).get_partition_keys()
        ),
        "failed": sorted(status.deserialize_failed_partition_subsets(daily_partitions).get_partition_keys()),
        "in_progress": sorted(status.deserialize_in_progress_partition_subsets(daily_partitions).get_partition_keys()),
    }


def test_a_range_is_stored_in_batches_with_the_records_of_dagsters_own_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batching_home = instance_home(tmp_path / "batching")
    own_home = dagsters_own_home(tmp_path / "dagster")
    with dg.DagsterInstance.from_config(str(batching_home)) as instance:
        assert isinstance(instance, SegmentationInstance)
        assert isinstance(instance.event_log_storage, BatchingSqliteEventLogStorage)
        calls = StoreCalls(instance.event_log_storage, monkeypatch)
        assert ingest(instance, tmp_path / "data_batching").success
        batching_status = {asset.key: partition_status(instance, asset) for asset in (raw_events, id_history)}
    with dg.DagsterInstance.from_config(str(own_home)) as instance:
        assert type(instance) is dg.DagsterInstance
        assert ingest(instance, tmp_path / "data_dagster").success
        own_status = {asset.key: partition_status(instance, asset) for asset in (raw_events, id_history)}

    # 20 days of two assets: 40 planned materializations (with the 6 planned checks) in one batch,
    # then each asset's 20 materializations in one, then raw_events' 6 checks of each of the 20 days
    # in one; no asset event or check result stored on its own.
    assert not (set(calls.alone) & (ASSET_EVENTS | {DagsterEventType.ASSET_CHECK_EVALUATION}))
    assert sorted(sorted((kind.value, count) for kind, count in batch.items()) for batch in calls.batches) == [
        [("ASSET_CHECK_EVALUATION", 6 * 20)],
        [("ASSET_CHECK_EVALUATION_PLANNED", 6), ("ASSET_MATERIALIZATION_PLANNED", 40)],
        [("ASSET_MATERIALIZATION", 20)],
        [("ASSET_MATERIALIZATION", 20)],
    ]
    batching, own = index_records(batching_home), index_records(own_home)
    assert batching == own
    assert batching["events"][("ASSET_MATERIALIZATION", '["raw_events"]', "2025-01-07")] == 1
    assert batching["asset_rows"]['["raw_events"]'] == ("2025-01-20", True, True, True)
    # Each check planned for every day of the range, and its result recorded for every day (the
    # planned row takes the day's result: none is left planned, which the UI shows as skipped).
    assert Counter(
        (partition, status) for (_, _, partition, status, *_), count in batching["checks"].items() for _ in range(count)
    ) == {(day, "SUCCEEDED"): 6 for day in DAYS}
    assert batching_status == own_status
    assert batching_status[raw_events.key] == {"materialized": DAYS, "failed": [], "in_progress": []}


def test_the_days_of_a_failed_range_show_failed(tmp_path: Path) -> None:
    """Why every day keeps its planned event (Dagster can plan a range in one event, but then Dagster's
    own UI no longer shows the days of a failed run as failed): they are stored together, not dropped."""
    data_dir = tmp_path / "data"
    folder = data_dir / "incoming" / "events" / "date=2025-01-05"
    folder.mkdir(parents=True)
    (folder / "export.csv").write_text("customer_id,timestamp\nu1,2025-01-05T09:00:00Z\n")
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path / "home"))) as instance:
        result = ingest(instance, data_dir, kind="files")
        assert not result.success
        assert partition_status(instance, raw_events) == {"materialized": [], "failed": DAYS, "in_progress": []}
