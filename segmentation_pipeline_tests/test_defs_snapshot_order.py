"""Snapshots of different days made side by side on one instance.

A day's segment IDs follow the previous day's snapshot. Runs of consecutive days launched together
must give what runs of the days in order give (clusters of a day waits for the runs still making
the days before it), and clusters fails its blocking check when the previous snapshot changed
while it ran.
"""

import json
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData

import segmentation_pipeline.definitions  # noqa: F401 - the definitions as every run's process loads them
from segmentation_pipeline.defs.assets.identity import merge_map
from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events
from segmentation_pipeline.defs.assets.profiles import profiles
from segmentation_pipeline.defs.assets.segmentation import clusters, segment_migration
from segmentation_pipeline.defs.jobs import segmentation_job
from segmentation_pipeline.defs.partitions import range_tags
from segmentation_pipeline.defs.resources import (
    EventSourceResource,
    IdentityRulesResource,
    LLMResource,
    WarehouseResource,
    WebhookResource,
)
from segmentation_pipeline.defs.snapshot_order import runs_making_earlier_snapshots
from segmentation_pipeline_tests.runs import (
    environment,
    instance_home,
    materialize_command,
    run_messages,
    runs,
    start,
    stored_files,
)

HISTORY = (date(2025, 1, 1), date(2025, 1, 31))
DAYS = ["2025-01-29", "2025-01-30", "2025-01-31"]
#: The stages that read other days (clusters: the previous snapshot; segment_migration: its customers).
SNAPSHOT = [merge_map, profiles, clusters, segment_migration]
N_CUSTOMERS = 2000


def resources(data_dir: Path) -> dict[str, object]:
    """The resources the definitions make from SEGMENTATION_DATA_DIR and a source config of N_CUSTOMERS."""
    return {
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(n_customers=N_CUSTOMERS),
        "llm": LLMResource(),
        "webhook": WebhookResource(),
    }


@pytest.mark.slow
def test_consecutive_days_launched_together_give_the_files_of_the_days_in_order(tmp_path: Path) -> None:
    # The history, ingested once and copied; then the days in order, in this process.
    serial_data = tmp_path / "serial" / "data"
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path / "serial" / "dagster_home"))) as instance:
        assert dg.materialize(
            [raw_events, id_history], instance=instance, resources=resources(serial_data), tags=range_tags(*HISTORY)
        ).success
        side_data = tmp_path / "side" / "data"
        shutil.copytree(serial_data, side_data)
        for day in DAYS:
            assert dg.materialize(
                SNAPSHOT, instance=instance, resources=resources(serial_data), partition_key=day
            ).success

    # Side by side: one `dagster asset materialize` process a day on one instance, the last day started first.
    side_home = instance_home(tmp_path / "side" / "dagster_home")
    source = tmp_path / "source.json"
    source.write_text(json.dumps({"n_customers": N_CUSTOMERS}))
    side_env = environment(side_home, side_data, SEGMENTATION_SOURCE_CONFIG=str(source))
    logs = {day: tmp_path / f"side-{day}.log" for day in DAYS}
    select = [asset.key.to_user_string() for asset in SNAPSHOT]
    processes = {day: start(materialize_command(select, partition=day), side_env, logs[day]) for day in reversed(DAYS)}
    for day, process in processes.items():
        assert process.wait(timeout=600) == 0, logs[day].read_text()[-3000:]

    serial, side = stored_files(serial_data), stored_files(side_data)
    tables = {"merge_map", "profiles", "clusters", "segments", "segment_migration"}
    assert len([name for name in serial if name.split("/")[1] in tables]) == len(DAYS) * len(tables)
    assert sorted(side) == sorted(serial)
    assert [name for name in serial if side[name] != serial[name]] == []
    # The later days waited for the earlier ones, and said so.
    by_day = {run.tags["dagster/partition"]: run for run in runs(side_home)}
    for earlier, later in zip(DAYS, DAYS[1:]):
        waits = [message for message in run_messages(side_home, by_day[later].run_id) if " waits for run " in message]
        assert any(f"still to store clusters of {earlier}" in message for message in waits), waits


def test_a_run_still_to_make_an_earlier_snapshot_is_found(tmp_path: Path) -> None:
    """Runs of the whole graph in progress: the clusters of their days, planned when the runs were
    created, are what a later day's clusters waits for until they are stored."""
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path))) as instance:
        job = segmentation_pipeline.definitions.defs.resolve_job_def(segmentation_job.name)

        def started(day: str) -> dg.DagsterRun:
            return instance.create_run_for_job(job, tags={"dagster/partition": day}, status=dg.DagsterRunStatus.STARTED)

        first, second = started("2025-01-01"), started("2025-01-02")
        found = runs_making_earlier_snapshots(instance, "another-run", date(2025, 1, 2))
        assert [(item.run.run_id, item.days) for item in found] == [(first.run_id, (date(2025, 1, 1),))]
        later = runs_making_earlier_snapshots(instance, second.run_id, date(2025, 1, 3))
        assert {item.run.run_id for item in later} == {first.run_id}
        # Nothing earlier than the first day.
        assert runs_making_earlier_snapshots(instance, "another-run", date(2025, 1, 1)) == []
        # Once the first run has stored its day's clusters, it is no longer waited for (its later
        # stages may run for a while).
        stored = dg.AssetMaterialization(asset_key="clusters", partition="2025-01-01")
        instance.report_dagster_event(
            DagsterEvent(
                DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=first.job_name,
                event_specific_data=StepMaterializationData(stored),
            ),
            run_id=first.run_id,
        )
        assert runs_making_earlier_snapshots(instance, "another-run", date(2025, 1, 2)) == []
        assert {item.run.run_id for item in runs_making_earlier_snapshots(instance, "x", date(2025, 1, 3))} == {
            second.run_id
        }
        # Nor is a run that has ended.
        instance.report_run_failed(second)
        assert runs_making_earlier_snapshots(instance, "another-run", date(2025, 1, 3)) == []
        # A single-run backfill of clusters plans every day of its range.
        clusters_job = segmentation_pipeline.definitions.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={dg.AssetKey("clusters")}
        )
        ranged = instance.create_run_for_job(
            clusters_job, tags=range_tags(date(2025, 1, 1), date(2025, 1, 3)), status=dg.DagsterRunStatus.STARTED
        )
        (found,) = runs_making_earlier_snapshots(instance, "another-run", date(2025, 1, 3))
        assert (found.run.run_id, found.days) == (ranged.run_id, (date(2025, 1, 1), date(2025, 1, 2)))
