"""The nightly schedule and the sensors, evaluated directly, and the runs they ask for."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from segmentation_pipeline.core.errors import PipelineError
from segmentation_pipeline.core.schemas import ID_HISTORY, RAW_EVENTS
from segmentation_pipeline.core.settings import Settings
from segmentation_pipeline.core.warehouse import Warehouse
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.defs.assets.identity import merge_map
from segmentation_pipeline.defs.assets.ingestion import id_history, raw_events
from segmentation_pipeline.defs.assets.profiles import profiles
from segmentation_pipeline.defs.partitions import daily_partitions, daily_partitions_for
from segmentation_pipeline.defs.resources import EventSourceResource, IdentityRulesResource, WarehouseResource
from segmentation_pipeline.defs.schedules import nightly_segmentation
from segmentation_pipeline.defs.sensors import incoming_files, late_input_snapshots

#: The resources of the definitions: the synthetic source (the test settings).
REPOSITORY = defs.get_repository_def()
SYNTHETIC = {key: defs.resources[key] for key in ("event_source", "warehouse")}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def test_the_nightly_schedule_runs_the_whole_graph_for_the_day_just_ended_and_is_off_by_default() -> None:
    assert nightly_segmentation.cron_schedule == "0 1 * * *"
    assert nightly_segmentation.execution_timezone == "UTC"
    assert nightly_segmentation.default_status == dg.DefaultScheduleStatus.STOPPED
    job = defs.resolve_job_def(nightly_segmentation.job_name)
    assert set(job.asset_layer.executable_asset_keys) == {
        key for key in defs.resolve_asset_graph().get_all_asset_keys()
    }
    # The synthetic history (the test settings: from 2025-01-01, no end set) ends a year later.
    assert (daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()) == (
        "2025-01-01",
        "2025-12-31",
    )
    with dg.instance_for_test() as instance:
        for tick, partition in [
            (datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc), "2025-12-31"),
            (datetime(2025, 3, 1, 1, 0, tzinfo=timezone.utc), "2025-02-28"),
            (datetime(2025, 1, 2, 1, 0, tzinfo=timezone.utc), "2025-01-01"),
        ]:
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=tick, resources=SYNTHETIC, repository_def=REPOSITORY
            ) as context:
                data = nightly_segmentation.evaluate_tick(context)
            (request,) = data.run_requests
            assert (request.partition_key, request.run_key) == (partition, partition)
            assert request.tags["dagster/partition"] == partition
            assert request.tags["segmentation/trigger"] == "nightly_segmentation"


def test_the_nightly_schedule_skips_a_day_past_the_history_and_says_why() -> None:
    with dg.instance_for_test() as instance:
        for tick, words in [
            (
                datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc),
                "2026-11-26 is after the last day with input, 2025-12-31 (SEGMENTATION_END_DATE",
            ),
            (
                datetime(2025, 1, 1, 1, 0, tzinfo=timezone.utc),
                "2024-12-31 is before the first day, 2025-01-01 (SEGMENTATION_START_DATE)",
            ),
        ]:
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=tick, resources=SYNTHETIC, repository_def=REPOSITORY
            ) as context:
                data = nightly_segmentation.evaluate_tick(context)
            assert not data.run_requests
            assert words in data.skip_message


def test_the_nightly_schedule_of_the_file_source_waits_for_the_days_events(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    resources = {
        "event_source": EventSourceResource(kind="files", incoming_dir=str(incoming)),
        "warehouse": WarehouseResource(data_dir=str(tmp_path)),
    }
    tick = datetime(2025, 1, 4, 1, 0, tzinfo=timezone.utc)

    def evaluate():  # noqa: ANN202 (the data of a tick: run requests or a skip message)
        with dg.instance_for_test() as instance:
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=tick, resources=resources, repository_def=REPOSITORY
            ) as context:
                return nightly_segmentation.evaluate_tick(context)

    skipped = evaluate()
    assert not skipped.run_requests
    assert skipped.skip_message == (
        f"no events file for 2025-01-03 in {incoming / 'events' / 'date=2025-01-03'}: nothing to build. "
        "Once its files are in, build the day from the UI (the segmentation job, partition 2025-01-03)"
    )
    # Merge records alone are not a day's input; a file still being written (hidden) is not either.
    aged(incoming / "id_history" / "date=2025-01-03" / "crm.csv", "old_id,new_id,merged_at\n")
    aged(incoming / "events" / "date=2025-01-03" / ".shop.csv", EVENTS_CSV)
    assert not evaluate().run_requests
    aged(incoming / "events" / "date=2025-01-03" / "shop.csv", EVENTS_CSV)
    (request,) = evaluate().run_requests
    assert request.partition_key == "2025-01-03"
    # Files archived after the sensor ingested them are kept in the data folder: the day still has input.
    for path in (incoming / "events" / "date=2025-01-03").iterdir():
        path.unlink()
    aged(tmp_path / "ingested" / "events" / "date=2025-01-03" / "shop.csv", EVENTS_CSV)
    assert WarehouseResource(data_dir=str(tmp_path)).warehouse().kept_input_dir == tmp_path / "ingested"
    (request,) = evaluate().run_requests
    assert request.partition_key == "2025-01-03"


def test_partitions_end_at_the_setting_or_the_synthetic_history_and_grow_daily_for_a_feed() -> None:
    settings = Settings.from_env({"SEGMENTATION_START_DATE": "2025-01-01"})
    assert daily_partitions_for(settings).get_last_partition_key() == "2025-12-31"
    assert len(daily_partitions_for(settings).get_partition_keys()) == 365
    ended = Settings.from_env({"SEGMENTATION_START_DATE": "2025-01-01", "SEGMENTATION_END_DATE": "2025-03-31"})
    assert daily_partitions_for(ended).get_last_partition_key() == "2025-03-31"
    feed = Settings.from_env({"SEGMENTATION_SOURCE": "files"})
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    assert daily_partitions_for(feed).end is None
    assert daily_partitions_for(feed).get_last_partition_key() == yesterday
    ended_feed = Settings.from_env({"SEGMENTATION_SOURCE": "files", "SEGMENTATION_END_DATE": "1997-09-30",
                                    "SEGMENTATION_START_DATE": "1997-01-01"})  # fmt: skip
    assert len(daily_partitions_for(ended_feed).get_partition_keys()) == 273
    for value, message in [
        ("2025-13-01", "SEGMENTATION_END_DATE='2025-13-01' is not a date; expected YYYY-MM-DD"),
        ("2024-12-31", "SEGMENTATION_END_DATE=2024-12-31 lies before SEGMENTATION_START_DATE=2025-01-01"),
    ]:
        with pytest.raises(PipelineError, match=re.escape(message)):
            Settings.from_env({"SEGMENTATION_END_DATE": value})


def aged(path: Path, text: str, age: float = 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


EVENTS_CSV = (
    "customer_id,event_type,timestamp,amount\n"
    "u1,purchase,2025-01-03T09:00:00Z,20\n"
    "u2,page_view,2025-01-03T23:30:00-02:00,\n"  # 01:30 UTC on the 4th
    "u3,page_view,2025-01-02T23:59:00Z,\n"
)


def evaluate(data_dir: Path, cursor: str | None = None, **source: object) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={
            "event_source": EventSourceResource(**({"kind": "files"} | source)),
            "warehouse": WarehouseResource(data_dir=str(data_dir)),
        },
    )
    return incoming_files(context)


def land_events_and_merges(incoming: Path) -> None:
    """The events and the ID merges of 2025-01-03, landed an hour ago."""
    aged(incoming / "events" / "date=2025-01-03" / "shop.csv", EVENTS_CSV)
    aged(
        incoming / "id_history" / "date=2025-01-03" / "crm.csv", "old_id,new_id,merged_at\nu3,u1,2025-01-03T08:00:00Z\n"
    )


def files_resources(data_dir: Path) -> dict[str, object]:
    """The resources of runs of the file source on `data_dir`."""
    return {
        "warehouse": WarehouseResource(data_dir=str(data_dir)),
        "identity_rules": IdentityRulesResource(),
        "event_source": EventSourceResource(kind="files"),
    }


def requests_by_asset(result: dg.SensorResult) -> dict[str, dg.RunRequest]:
    return {request.asset_selection[0].to_user_string(): request for request in result.run_requests or []}


def test_the_sensor_asks_once_per_new_file_set_and_again_when_it_changes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    incoming = data_dir / "incoming"
    land_events_and_merges(incoming)
    first = evaluate(data_dir)
    requests = requests_by_asset(first)
    assert set(requests) == {"raw_events", "id_history"}
    events = requests["raw_events"]
    # Rows in the 3rd's folder may belong to the 2nd or the 4th (UTC): those days are ingested again too.
    assert (events.tags[RANGE_START], events.tags[RANGE_END]) == ("2025-01-02", "2025-01-04")
    assert events.partition_key is None and events.job_name in (None, "ingestion")
    assert requests["id_history"].partition_key == "2025-01-03"
    assert RANGE_START not in requests["id_history"].tags
    cursor = json.loads(first.cursor)
    assert set(cursor["raw_events"]) == {"2025-01-03"} and set(cursor["id_history"]) == {"2025-01-03"}

    again = evaluate(data_dir, first.cursor)
    assert not again.run_requests and again.skip_reason.skip_message == "no new files"
    assert again.cursor == first.cursor

    aged(
        incoming / "events" / "date=2025-01-03" / "late.csv",
        "customer_id,event_type,timestamp\nu4,page_view,2025-01-03T12:00:00Z\n",
    )
    changed = requests_by_asset(evaluate(data_dir, first.cursor))
    assert set(changed) == {"raw_events"}
    assert changed["raw_events"].run_key != events.run_key
    assert changed["raw_events"].tags[RANGE_START] == "2025-01-02"

    # A run key names the days and the exact files a run reads: with the cursor lost, the same
    # folders in the same state ask for the same keys, which Dagster launches once per sensor.
    assert {r.run_key for r in evaluate(data_dir).run_requests} == {
        changed["raw_events"].run_key,
        requests["id_history"].run_key,
    }

    # Archiving the processed files (the folder left empty) does not erase the day.
    for path in (incoming / "events" / "date=2025-01-03").iterdir():
        path.unlink()
    emptied = evaluate(data_dir, evaluate(data_dir, first.cursor).cursor)
    assert not emptied.run_requests and emptied.skip_reason.skip_message == "no new files"


def test_a_run_waits_while_a_folder_it_would_read_is_being_written(tmp_path: Path) -> None:
    incoming = tmp_path / "data" / "incoming"
    aged(incoming / "events" / "date=2025-01-03" / "shop.csv", EVENTS_CSV)
    aged(incoming / "events" / "date=2025-01-04" / "shop.csv", EVENTS_CSV, age=1)  # the 3rd's run reads it
    held = evaluate(tmp_path / "data")
    assert not held.run_requests
    assert held.skip_reason.skip_message == "raw_events folders still being written: ['2025-01-04']"
    assert json.loads(held.cursor)["raw_events"] == {}  # nothing recorded: asked again next time
    aged(incoming / "events" / "date=2025-01-04" / "shop.csv", EVENTS_CSV)  # finished
    (request,) = evaluate(tmp_path / "data", held.cursor).run_requests
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2025-01-02", "2025-01-05")


def test_folders_before_the_first_day_are_noted_once_and_never_asked_for(tmp_path: Path) -> None:
    incoming = tmp_path / "data" / "incoming"
    aged(incoming / "events" / "date=2024-12-20" / "old.csv", EVENTS_CSV)
    aged(incoming / "events" / "date=2024-12-31" / "edge.csv", EVENTS_CSV)  # reaches 2025-01-01
    result = evaluate(tmp_path / "data")
    (request,) = result.run_requests
    assert request.partition_key == "2025-01-01"
    assert set(json.loads(result.cursor)["raw_events"]) == {"2024-12-20", "2024-12-31"}
    assert not evaluate(tmp_path / "data", result.cursor).run_requests


def test_consecutive_new_days_are_one_run_and_folders_not_ready_wait(tmp_path: Path) -> None:
    incoming = tmp_path / "data" / "incoming"
    for day in ("2025-01-01", "2025-01-02", "2025-01-06"):
        aged(incoming / "events" / f"date={day}" / "shop.csv", EVENTS_CSV)
    aged(incoming / "events" / "date=2025-01-09" / "shop.csv", EVENTS_CSV, age=1)  # still being copied
    today = datetime.now(timezone.utc).date().isoformat()
    aged(incoming / "events" / f"date={today}" / "shop.csv", EVENTS_CSV)  # the day has not ended
    result = evaluate(tmp_path / "data")
    ranges = sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests)
    # The first day is the partitions' start: there is no 2024-12-31 to ingest.
    assert ranges == [("2025-01-01", "2025-01-03"), ("2025-01-05", "2025-01-07")]
    seen = json.loads(result.cursor)["raw_events"]
    assert set(seen) == {"2025-01-01", "2025-01-02", "2025-01-06"}
    later = evaluate(tmp_path / "data", result.cursor)
    assert not later.run_requests
    assert "still being written: ['2025-01-09']" in later.skip_reason.skip_message
    assert f"days not yet ended: ['{today}']" in later.skip_reason.skip_message


def test_the_sensor_skips_a_synthetic_source_and_a_configured_path(tmp_path: Path) -> None:
    aged(tmp_path / "data" / "incoming" / "events" / "date=2025-01-03" / "shop.csv", EVENTS_CSV)
    synthetic = evaluate(tmp_path / "data", kind="synthetic")
    assert not synthetic.run_requests and "not 'files'" in synthetic.skip_reason.skip_message
    by_path = evaluate(tmp_path / "data", events_path="exports/*.csv")
    assert not by_path.run_requests
    assert "raw_events comes from the configured path" in by_path.skip_reason.skip_message


def test_the_runs_the_sensor_asks_for_ingest_the_new_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    incoming = data_dir / "incoming"
    land_events_and_merges(incoming)
    resources = files_resources(data_dir)
    with dg.instance_for_test() as instance:
        for request in evaluate(data_dir).run_requests:
            asset = raw_events if request.asset_selection == [raw_events.key] else id_history
            result = dg.materialize(
                [asset], instance=instance, resources=resources, partition_key=request.partition_key, tags=request.tags
            )
            assert result.success
    warehouse = Warehouse(data_dir)
    by_day = {
        day: warehouse.read_partition(RAW_EVENTS, day).column("customer_id").to_pylist()
        for day in (date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 4))
    }
    assert by_day == {date(2025, 1, 2): ["u3"], date(2025, 1, 3): ["u1"], date(2025, 1, 4): ["u2"]}
    assert warehouse.read_partition(ID_HISTORY, date(2025, 1, 3)).column("old_id").to_pylist() == ["u3"]


def test_the_sensor_is_defined_with_its_job() -> None:
    sensor = defs.resolve_sensor_def("incoming_files")
    assert sensor.job_name == "ingestion"
    assert sensor.minimum_interval_seconds == 30
    # The default source is synthetic: the sensor starts stopped; SEGMENTATION_SOURCE=files starts it.
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def backfill_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.backfill", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )


def test_make_backfill_says_what_is_wrong_without_a_webserver_or_with_a_reversed_range() -> None:
    reversed_range = backfill_command("--from", "2025-01-05", "--to", "2025-01-01")
    assert reversed_range.returncode == 2
    assert "--to 2025-01-01 lies before --from 2025-01-05" in reversed_range.stderr
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nobody = backfill_command("--from", "2025-01-01", "--to", "2025-01-05", "--port", str(port))
    assert nobody.returncode == 2
    assert f"No Dagster webserver answered at 127.0.0.1:{port} while launching the backfill" in nobody.stderr
    assert "start one with `make dev`" in nobody.stderr


def test_a_late_file_for_a_day_with_a_snapshot_asks_for_that_snapshot_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    incoming = data_dir / "incoming"
    land_events_and_merges(incoming)
    resources = files_resources(data_dir)
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:

        def evaluate_late(cursor: str | None) -> dg.SensorResult:
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"warehouse": resources["warehouse"]}
            )
            return late_input_snapshots(context)

        def materialize(assets: list) -> None:
            assert dg.materialize(assets, instance=instance, resources=resources, partition_key="2025-01-03").success

        materialize([raw_events, id_history])
        materialize([merge_map, profiles])
        # The snapshot was built from the day as it is: nothing to do.
        first = evaluate_late(None)
        assert not first.run_requests
        materialize([raw_events])  # ingested again, same files: same bytes, still nothing to do
        again = evaluate_late(first.cursor)
        assert not again.run_requests and again.cursor != first.cursor

        aged(
            incoming / "events" / "date=2025-01-03" / "late.csv",
            "customer_id,event_type,timestamp\nu4,page_view,2025-01-03T12:00:00Z\n",
        )
        materialize([raw_events])  # the late file, as incoming_files ingests it
        late = evaluate_late(again.cursor)
        (request,) = late.run_requests
        assert request.partition_key == "2025-01-03" and request.job_name in (None, "snapshot")
        assert request.tags["segmentation/trigger"] == "late_input_snapshots"
        assert set(defs.resolve_job_def("snapshot").asset_layer.executable_asset_keys) >= {
            profiles.key,
            dg.AssetKey("report"),
        }
        # Once the profiles are built again from the new input, nothing is asked for.
        materialize([profiles])
        assert not evaluate_late(first.cursor).run_requests


def test_retract_takes_one_file_out_of_its_day_and_ingests_again(tmp_path: Path) -> None:
    data_dir, home = tmp_path / "data", tmp_path / "dagster_home"
    home.mkdir()
    folder = data_dir / "incoming" / "events" / "date=2025-01-03"
    aged(folder / "shop_a.csv", "customer_id,event_type,timestamp\na1,page_view,2025-01-03T10:00:00Z\n")
    aged(folder / "shop_b.csv", "customer_id,event_type,timestamp\nb1,page_view,2025-01-03T11:00:00Z\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTATION_")}
    env |= {"SEGMENTATION_DATA_DIR": str(data_dir), "SEGMENTATION_SOURCE": "files", "DAGSTER_HOME": str(home)}
    repository = Path(__file__).resolve().parents[1]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args], cwd=repository, env=env, capture_output=True, text=True, timeout=300
        )

    ingested = run(
        "dagster", "asset", "materialize", "-m", "segmentation_pipeline.definitions", "--select", "raw_events",
        "--partition-range", "2025-01-02...2025-01-04",
    )  # fmt: skip
    assert ingested.returncode == 0, ingested.stderr
    stored = Warehouse(data_dir)
    assert stored.read_partition(RAW_EVENTS, date(2025, 1, 3)).column("customer_id").to_pylist() == ["a1", "b1"]
    refused = run("segmentation_pipeline.retract", "--day", "2025-01-03", "shop_a.csv")
    assert refused.returncode == 1 and "shop_a.csv is still in the incoming folder" in refused.stderr
    (folder / "shop_a.csv").unlink()
    retracted = run("segmentation_pipeline.retract", "--day", "2025-01-03", "shop_a.csv")
    assert retracted.returncode == 0, retracted.stderr
    assert "shop_a.csv no longer belongs to raw_events of 2025-01-03" in retracted.stdout
    assert stored.read_partition(RAW_EVENTS, date(2025, 1, 3)).column("customer_id").to_pylist() == ["b1"]
