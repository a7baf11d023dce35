"""End to end through the real service: dagster-webserver and dagster-daemon on 127.0.0.1.

A temporary DAGSTER_HOME (with the repository's dagster.yaml) and data folder;
runs launched through the Dagster GraphQL Python client, carried out by the
daemon's run queue and backfill loop in their own processes; results read back
from the Parquet files, the DuckDB catalog and the instance. Everything started
here is stopped at the end.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from dagster_graphql import DagsterGraphQLClient

from segmentation_pipeline.backfill import launch_backfill, partitioned_assets, wait_for_backfill
from segmentation_pipeline.core.reporting.publish import load_report
from segmentation_pipeline.defs.partitions import range_tags
from segmentation_pipeline.defs.run_processes import recorded_process
from segmentation_pipeline_tests.runs import pool_holders, run_messages, steps_in_flight
from segmentation_pipeline_tests.service import (
    REPOSITORY,
    DagsterService,
    dagster_service,
    file_digests,
    is_running,
    restart_daemon,
)

FIRST, LAST = date(2025, 1, 1), date(2025, 1, 2)
NEXT_DAY = "2025-01-03"
SNAPSHOT_TABLES = ("merge_map", "clv_backtest", "profiles", "clusters", "segments", "robustness", "viability",
                   "actionability", "explanations")  # fmt: skip
BACKFILL_SECONDS = 420
#: Set by the first test once its backfill and run succeeded; the others build on them.
FILLED: dict[str, bool] = {}

SCHEDULES_AND_SENSORS = """
query { repositoriesOrError { ... on RepositoryConnection { nodes {
  schedules { name cronSchedule executionTimezone scheduleState { id status } }
  sensors { name sensorState { status } }
} } } }
"""


STOP_SCHEDULE = """
mutation($id: String) { stopRunningSchedule(id: $id) {
  ... on ScheduleStateResult { scheduleState { status } }
  ... on PythonError { message }
} }
"""

START_SCHEDULE = """
mutation($selector: ScheduleSelector!) { startSchedule(scheduleSelector: $selector) {
  ... on ScheduleStateResult { scheduleState { id status } }
  ... on PythonError { message }
} }
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterService]:
    with dagster_service(tmp_path_factory.mktemp("service")) as running:
        yield running
        started = (running.webserver, running.daemon)
    assert not any(is_running(process) for process in started)  # everything it started is stopped


def wait_for_run(client: DagsterGraphQLClient, run_id: str, timeout: float) -> dg.DagsterRunStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} not finished after {timeout} s")


def daily_runs(instance: dg.DagsterInstance, asset: str, backfill_id: str) -> list[dg.DagsterRun]:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    return [run for run in runs if dg.AssetKey(asset) in (run.asset_selection or set())]


def test_a_backfill_then_a_run_of_the_whole_graph_through_the_webserver(service: DagsterService) -> None:
    # The daemon sees the nightly schedule off until an operator turns it on, and the files sensor
    # stopped (the source is synthetic).
    (repository,) = service.client._execute(SCHEDULES_AND_SENSORS)["repositoriesOrError"]["nodes"]
    (schedule,) = repository["schedules"]
    assert {key: schedule[key] for key in ("name", "cronSchedule", "executionTimezone")} == {
        "name": "nightly_segmentation", "cronSchedule": "0 1 * * *", "executionTimezone": "UTC"}  # fmt: skip
    assert schedule["scheduleState"]["status"] == "STOPPED"
    # Turned on as a deployment turns it on (the UI's toggle), then off again for the rest of the test:
    # a tick at 01:00 UTC would add a day to the data compared below.
    selector = {"repositoryLocationName": "segmentation_pipeline", "repositoryName": "__repository__",
                "scheduleName": "nightly_segmentation"}  # fmt: skip
    started = service.client._execute(START_SCHEDULE, {"selector": selector})["startSchedule"]
    assert started["scheduleState"]["status"] == "RUNNING", started
    (repository,) = service.client._execute(SCHEDULES_AND_SENSORS)["repositoriesOrError"]["nodes"]
    assert repository["schedules"][0]["scheduleState"]["status"] == "RUNNING"
    stopped = service.client._execute(STOP_SCHEDULE, {"id": started["scheduleState"]["id"]})
    assert stopped["stopRunningSchedule"]["scheduleState"]["status"] == "STOPPED"
    assert repository["sensors"] == [
        {"name": "incoming_files", "sensorState": {"status": "STOPPED"}},
        {"name": "late_input_snapshots", "sensorState": {"status": "RUNNING"}},
    ]
    assets = partitioned_assets(service.client)
    assert assets == sorted(
        ["raw_events", "id_history", "merge_map", "clv_backtest", "profiles", "clusters", "segment_migration",
         "robustness", "viability", "actionability", "explanations", "audiences", "audience_exports",
         "campaign_results", "report"]
    )  # fmt: skip

    # The CLI of `make backfill` against this webserver: it launches the backfill and follows it.
    backfill = subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.backfill", "--from", FIRST.isoformat(), "--to",
         LAST.isoformat(), "--port", str(service.port), "--timeout", str(BACKFILL_SECONDS)],
        cwd=REPOSITORY, env=service.env, capture_output=True, text=True, timeout=BACKFILL_SECONDS + 60,
    )  # fmt: skip
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    first_line = backfill.stdout.splitlines()[0]
    assert f"of 15 assets, {FIRST} .. {LAST}" in first_line
    backfill_id = first_line.split()[1]
    assert "COMPLETED_SUCCESS: 30/30 asset partitions materialized, 0 failed" in backfill.stdout

    with dg.DagsterInstance.from_config(str(service.home)) as instance:
        # raw_events, id_history, merge_map, clv_backtest and profiles: one run for the whole range.
        (ingestion,) = daily_runs(instance, "raw_events", backfill_id)
        assert ingestion.tags["dagster/asset_partition_range_start"] == FIRST.isoformat()
        assert ingestion.tags["dagster/asset_partition_range_end"] == LAST.isoformat()
        assert {key.to_user_string() for key in ingestion.asset_selection} == {
            "raw_events", "id_history", "merge_map", "clv_backtest", "profiles"}  # fmt: skip
        # clusters: one run for the range too (it makes the days in date order); then the stages
        # after it one run per day, each with every stage of its day, begun after that day's clusters
        # was stored (the clusters run itself may still be writing its end: the daemon goes by the
        # materialization, not by the run's end).
        (clustering,) = daily_runs(instance, "clusters", backfill_id)
        assert clustering.tags["dagster/asset_partition_range_start"] == FIRST.isoformat()
        assert {key.to_user_string() for key in clustering.asset_selection} == {"clusters"}
        later_stages = {
            "segment_migration", "robustness", "viability", "actionability", "explanations", "audiences",
            "audience_exports", "report"}  # fmt: skip
        # The stages after clusters run per day, every stage of a day made by that day's runs, each begun after
        # that day's clusters was stored. Mostly one run a day; when the daemon's tick finds some of a day's
        # stages ready before the others (campaign_results, upstream of viability, is made apart from the
        # day's chain), a day's stages come in more than one run.
        per_day: dict[str, list[dg.DagsterRun]] = {}
        for asset in later_stages:
            for run in daily_runs(instance, asset, backfill_id):
                if "dagster/partition" in run.tags and run not in per_day.get(run.tags["dagster/partition"], []):
                    per_day.setdefault(run.tags["dagster/partition"], []).append(run)
        assert sorted(per_day) == ["2025-01-01", "2025-01-02"]
        for day, runs in per_day.items():
            made = {key.to_user_string() for run in runs for key in run.asset_selection}
            assert later_stages <= made <= later_stages | {"campaign_results"}, (day, made)
        records = {record.dagster_run.run_id: record for record in instance.get_run_records()}
        for day, runs in per_day.items():
            (stored,) = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("clusters"), asset_partitions=[day]), limit=1
            ).records
            assert stored.run_id == clustering.run_id
            assert all(stored.timestamp <= records[run.run_id].start_time for run in runs)

    # Then one run of the whole graph for the next day, as the nightly schedule launches it.
    run_id = service.client.submit_job_execution("segmentation", tags={"dagster/partition": NEXT_DAY})
    assert wait_for_run(service.client, run_id, BACKFILL_SECONDS) == dg.DagsterRunStatus.SUCCESS

    warehouse = service.data_dir / "warehouse"
    days = ["2025-01-01", "2025-01-02", NEXT_DAY]
    for table in ("raw_events", "id_history", *SNAPSHOT_TABLES, "segment_migration"):
        stored = sorted(path.name for path in (warehouse / table).glob("date=*"))
        assert stored == [f"date={day}" for day in days], table
    with duckdb.connect(str(service.data_dir / "segmentation.duckdb"), read_only=True) as con:
        per_day = dict(con.execute("SELECT date::VARCHAR, count(*) FROM raw_events GROUP BY 1").fetchall())
        for day in days:
            assert (
                per_day[day] == pq.read_metadata(warehouse / "raw_events" / f"date={day}" / "part-0.parquet").num_rows
            )
        for table in SNAPSHOT_TABLES:
            (latest,) = con.execute(f"SELECT DISTINCT date::VARCHAR FROM {table}_latest").fetchall()
            assert latest == (NEXT_DAY,), table
        # Every customer with events so far is profiled once, merged IDs under their canonical ID.
        customers = con.execute(
            """SELECT count(DISTINCT coalesce(m.canonical_id, e.customer_id))
               FROM raw_events e LEFT JOIN merge_map_latest m ON e.customer_id = m.old_id"""
        ).fetchone()[0]
        profiled = con.execute("SELECT count(*) FROM profiles_latest").fetchone()[0]
        assert profiled == customers == con.execute("SELECT count(*) FROM clusters_latest").fetchone()[0]
        segment_ids = con.execute(
            "SELECT date::VARCHAR, list(segment_id ORDER BY segment_id) FROM segments GROUP BY 1"
        ).fetchall()
    ids = dict(segment_ids)
    # Segment IDs follow the previous snapshot: each day shares segments with the day before.
    for before, after in zip(days, days[1:]):
        assert set(ids[before]) & set(ids[after]), (before, after)
    report = load_report(service.data_dir / "reports" / f"date={NEXT_DAY}")
    assert report.as_of.isoformat() == NEXT_DAY
    assert [segment.segment.segment_id for segment in report.segments] == ids[NEXT_DAY]
    assert report.migration is not None and report.migration.previous_as_of.isoformat() == "2025-01-02"
    FILLED["backfill"] = True


def test_the_same_backfill_again_changes_and_duplicates_nothing(service: DagsterService) -> None:
    if not FILLED:
        pytest.fail("needs the backfill and the run of the test before it, which did not succeed")
    before = file_digests(service.data_dir)
    with duckdb.connect(str(service.data_dir / "segmentation.duckdb"), read_only=True) as con:
        rows_before = con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw_events").fetchone()
    backfill_id = launch_backfill(service.client, FIRST, LAST, partitioned_assets(service.client), title="again")
    status = wait_for_backfill(service.client, backfill_id, BACKFILL_SECONDS)
    assert status["status"] == "COMPLETED_SUCCESS"
    after = file_digests(service.data_dir)
    assert sorted(after) == sorted(before)  # no new file: every partition was replaced
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == []
    with duckdb.connect(str(service.data_dir / "segmentation.duckdb"), read_only=True) as con:
        rows_after = con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw_events").fetchone()
    assert rows_after == rows_before and rows_after[0] == rows_after[1]
    with dg.DagsterInstance.from_config(str(service.home)) as instance:
        assert len(daily_runs(instance, "raw_events", backfill_id)) == 1
        materialized = instance.get_materialized_partitions(dg.AssetKey("report"))
    assert materialized == {"2025-01-01", "2025-01-02", NEXT_DAY}


def test_an_adhoc_rerun_from_the_launchpad_then_the_assets_after_it(service: DagsterService) -> None:
    """clusters alone with n_clusters=6 for one day, then what follows it, from the stored upstream."""
    if not FILLED:
        pytest.fail("needs the backfill and the run of the first test, which did not succeed")
    profiles_file = service.data_dir / "warehouse" / "profiles" / f"date={NEXT_DAY}" / "part-0.parquet"
    stamp = profiles_file.stat().st_mtime_ns
    with dg.DagsterInstance.from_config(str(service.home)) as instance:
        profiles_before = len(instance.fetch_materializations(dg.AssetKey("profiles"), limit=100).records)
    tags = {"dagster/partition": NEXT_DAY}
    run_id = service.client.submit_job_execution(
        "__ASSET_JOB",
        asset_selection=["clusters"],
        run_config={"ops": {"clusters": {"config": {"n_clusters": 6}}}},
        tags=tags,
    )
    assert wait_for_run(service.client, run_id, BACKFILL_SECONDS) == dg.DagsterRunStatus.SUCCESS
    downstream = [
        "segment_migration", "robustness", "viability", "actionability", "explanations", "audiences", "audience_exports",
        "report",
    ]  # fmt: skip
    run_id = service.client.submit_job_execution(
        "__ASSET_JOB",
        asset_selection=downstream,
        run_config={"ops": {"robustness": {"config": {"n_bootstrap": 12}}}},
        tags=tags,
    )
    assert wait_for_run(service.client, run_id, BACKFILL_SECONDS) == dg.DagsterRunStatus.SUCCESS

    assert profiles_file.stat().st_mtime_ns == stamp  # upstream read, not recomputed
    with dg.DagsterInstance.from_config(str(service.home)) as instance:
        assert len(instance.fetch_materializations(dg.AssetKey("profiles"), limit=100).records) == profiles_before
    with duckdb.connect(str(service.data_dir / "segmentation.duckdb"), read_only=True) as con:
        segment_ids = [row[0] for row in con.execute("SELECT segment_id FROM segments_latest ORDER BY 1").fetchall()]
        behaviours = con.execute("SELECT count(DISTINCT behaviour_cluster) FROM clusters_latest").fetchone()[0]
        samples = {row[0] for row in con.execute("SELECT bootstrap_samples FROM robustness_latest").fetchall()}
        judged = con.execute("SELECT count(*) FROM actionability_latest").fetchone()[0]
    # Six behaviour clusters, as configured, made into segments within the lifecycle groups.
    assert behaviours == 6 and len(segment_ids) >= 6 and samples == {12} and judged == len(segment_ids)
    report = load_report(service.data_dir / "reports" / f"date={NEXT_DAY}")
    assert [segment.segment.segment_id for segment in report.segments] == segment_ids
    stages = {stage.stage: stage for stage in report.settings.stages}
    assert stages["clusters"].given == {"n_clusters": 6}
    assert stages["robustness"].given == {"n_bootstrap": 12}
    assert stages["profiles"].given == {}


def run_process_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    run = instance.get_run_by_id(run_id)
    process = recorded_process(instance, run) if run else None
    return process.pid if process else None


def test_a_run_killed_with_the_daemon_is_failed_by_run_monitoring_and_the_next_run_goes_ahead(
    service: DagsterService,
) -> None:
    """kill -9 of `make dev`'s daemon, with its code server and a run inside a step of the `ingestion`
    pool (a crash, the out-of-memory killer, a reboot): nothing is left to say that the run ended.
    Once the daemon is back, run monitoring finds the run's process gone and fails the run, its slot
    is freed, and the same run launched again finishes, with no step by hand."""
    tags = range_tags(date(2025, 1, 4), date(2025, 2, 28))
    killed = service.client.submit_job_execution("ingestion", tags=tags)
    deadline = time.monotonic() + BACKFILL_SECONDS
    with dg.DagsterInstance.from_config(str(service.home)) as instance:
        while time.monotonic() < deadline:
            pid = run_process_pid(instance, killed)
            if pid and "raw_events" in steps_in_flight(service.home, killed):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the run never started raw_events")
    os.killpg(service.daemon.pid, signal.SIGKILL)  # the daemon, its code server and the run's process
    service.daemon.wait(timeout=60)
    assert "raw_events" in steps_in_flight(service.home, killed)  # killed inside the step
    assert dg.DagsterRunStatus.STARTED == service.client.get_run_status(killed)
    assert killed in pool_holders(service.home)["ingestion"]

    restart_daemon(service)
    again = service.client.submit_job_execution("ingestion", tags=tags)
    assert wait_for_run(service.client, again, BACKFILL_SECONDS) == dg.DagsterRunStatus.SUCCESS
    assert service.client.get_run_status(killed) == dg.DagsterRunStatus.FAILURE
    failure = [message for message in run_messages(service.home, killed) if "Detected run worker status" in message]
    assert failure and f"process (pid {pid} on " in failure[0] and "is gone" in failure[0]
    assert pool_holders(service.home) == {"ingestion": [], "llm": []}
