"""Runs whose process dies, and runs waiting for a pool slot, on a real instance with the
repository's dagster.yaml (pools `ingestion` and `llm`, one step at a time, claimed per step).

A run killed with SIGKILL cannot say it ended: Dagster keeps it STARTED with its pool slots. The
project records each run's process (defs/executor.py), ends runs whose process is gone
(defs/run_processes.py) and makes a step waiting for a slot sleep and answer SIGTERM
(defs/pool_wait.py, working around Dagster 1.13.28's wait, which spins and cannot be stopped).
"""

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

import segmentation_pipeline.definitions  # noqa: F401 - applies the pool-wait fix, as every run's process does
from segmentation_pipeline.defs import pool_wait
from segmentation_pipeline.defs.run_launcher import ProcessCheckingRunLauncher
from segmentation_pipeline.defs.run_processes import Liveness, liveness, process_metadata, process_of, this_process
from segmentation_pipeline_tests.runs import (
    REPOSITORY,
    environment,
    hold_a_slot,
    instance_home,
    kill,
    materialize_command,
    pool_holders,
    run_messages,
    runs,
    start,
    state_of,
    wait_for_line,
)

DAY = "2025-01-02"
BLOCKED = "Step blocked by limit for pool ingestion"


def started_run(instance: dg.DagsterInstance, process_metadata_value: dict | None) -> dg.DagsterRun:
    run = instance.add_run(
        dg.DagsterRun(job_name="a_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
    )
    if process_metadata_value is not None:
        instance.report_engine_event("steps run here", run, EngineEventData(metadata=process_metadata_value))
    return run


def a_process_that_has_ended() -> dict:
    """The record of a real process that was started and has exited since."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = process_of(child.pid)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return process_metadata(record)


def test_a_step_waiting_for_a_pool_slot_is_given_a_time_to_sleep(tmp_path: Path) -> None:
    """Dagster 1.13.28's wait asks to sleep 0 s or less, so its loop spins; the project's asks for
    the time until the next claim check, at most a second."""
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path))) as instance:
        holder = started_run(instance, process_metadata(this_process()))  # alive: this test's process
        assert instance.event_log_storage.claim_concurrency_slot("ingestion", holder.run_id, "raw_events").is_claimed
        waiting = started_run(instance, None)
        with InstanceConcurrencyContext(instance, waiting) as context:
            assert not context.claim("ingestion", "raw_events")
            assert pool_wait.applied()
            interval = context.interval_to_next_pending_claim_check()
            assert 0 < interval <= pool_wait.WAKE_SECONDS
            # What Dagster's own method answers in the same state: the fault worked around.
            assert pool_wait.original()(context) <= 0
        # The holder is alive: its slot was left alone.
        assert [slot.run_id for slot in instance.event_log_storage.get_concurrency_info("ingestion").claimed_slots] == [
            holder.run_id
        ]


def test_a_waiting_step_takes_back_the_slot_of_a_run_whose_process_is_gone(tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path))) as instance:
        dead = started_run(instance, a_process_that_has_ended())
        assert instance.event_log_storage.claim_concurrency_slot("ingestion", dead.run_id, "raw_events").is_claimed
        waiting = started_run(instance, None)
        with InstanceConcurrencyContext(instance, waiting) as context:
            assert not context.claim("ingestion", "raw_events")
            assert context.interval_to_next_pending_claim_check() == 0  # freed: ask again at once
            assert context.claim("ingestion", "raw_events")
            context.free_step("raw_events")
        ended = instance.get_run_by_id(dead.run_id)
        assert ended.status == dg.DagsterRunStatus.FAILURE
        (failure,) = [entry.message for entry in instance.all_logs(dead.run_id) if "is gone" in (entry.message or "")]
        assert f"run {waiting.run_id}, which was waiting for a pool slot" in failure
        assert any("Took back a pool slot" in (entry.message or "") for entry in instance.all_logs(waiting.run_id))


def test_a_process_is_told_apart_from_a_later_one_with_its_pid() -> None:
    me = this_process()
    assert liveness(me) is Liveness.ALIVE
    assert liveness(type(me)(me.host, me.pid, me.boot_id, (me.start_ticks or 0) + 1)) is Liveness.GONE
    assert liveness(type(me)(me.host, me.pid, "another boot", me.start_ticks)) is Liveness.GONE
    assert liveness(type(me)("another-host", me.pid, me.boot_id, me.start_ticks)) is Liveness.UNKNOWN
    assert liveness(None) is Liveness.UNKNOWN


def test_the_run_launcher_reports_a_run_whose_process_is_gone_as_failed(tmp_path: Path) -> None:
    """What run monitoring asks the launcher of dagster.yaml: Dagster's DefaultRunLauncher cannot say."""
    assert not dg.DefaultRunLauncher().supports_check_run_worker_health
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path))) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, ProcessCheckingRunLauncher) and launcher.supports_check_run_worker_health
        dead = started_run(instance, a_process_that_has_ended())
        alive = started_run(instance, process_metadata(this_process()))
        unrecorded = started_run(instance, None)
        assert launcher.check_run_worker_health(dead).status.value == "FAILED"
        assert "is gone" in launcher.get_run_worker_debug_info(dead)
        # Alive, or not to be judged (monitoring would fail a run reported as anything but running).
        assert launcher.check_run_worker_health(alive).status.value == "RUNNING"
        assert launcher.check_run_worker_health(unrecorded).status.value == "RUNNING"


@pytest.mark.slow
def test_a_run_waiting_for_a_pool_sleeps_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = instance_home(tmp_path / "dagster_home")
    env = environment(home, tmp_path / "data")
    holder, holder_run = hold_a_slot(home, "ingestion", env)
    try:
        waiting = start(materialize_command(["raw_events"], partition=DAY), env)
        wait_for_line(waiting, BLOCKED)
        # Sleeping between its checks (Dagster 1.13.28's loop is always running: R).
        states = []
        for _ in range(20):
            states.append(state_of(waiting.pid))
            time.sleep(0.1)
        assert states.count("S") >= 15, states
        waiting.send_signal(signal.SIGTERM)
        output, _ = waiting.communicate(timeout=120)
        assert waiting.returncode != 0
        (run,) = [run for run in runs(home) if run.run_id != holder_run]
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert any("Execution was interrupted" in message for message in run_messages(home, run.run_id))
        # Its claim is withdrawn; the holder, alive, keeps its slot.
        assert pool_holders(home)["ingestion"] == [holder_run]
    finally:
        kill(holder)


@pytest.mark.slow
def test_a_run_killed_while_holding_a_pool_slot_lets_the_waiting_run_finish(tmp_path: Path) -> None:
    """No daemon: the run waiting for the slot finds the holder's process gone, ends that run and
    takes the slot."""
    home = instance_home(tmp_path / "dagster_home")
    env = environment(home, tmp_path / "data")
    holder, holder_run = hold_a_slot(home, "ingestion", env)
    waiting = start(materialize_command(["raw_events"], partition=DAY), env)
    wait_for_line(waiting, BLOCKED)
    kill(holder)
    output, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, output
    by_id = {run.run_id: run for run in runs(home)}
    assert by_id[holder_run].status == dg.DagsterRunStatus.FAILURE
    (waiting_run,) = [run_id for run_id in by_id if run_id != holder_run]
    assert by_id[waiting_run].status == dg.DagsterRunStatus.SUCCESS
    assert any(message.startswith("Took back a pool slot") for message in run_messages(home, waiting_run))
    assert (tmp_path / "data" / "warehouse" / "raw_events" / f"date={DAY}" / "part-0.parquet").exists()
    assert pool_holders(home) == {"ingestion": [], "llm": []}


@pytest.mark.slow
def test_a_run_started_after_a_run_was_killed_ends_it_and_frees_its_slot(tmp_path: Path) -> None:
    """No daemon: the next run, as it starts, ends the runs on this host whose process is gone."""
    home = instance_home(tmp_path / "dagster_home")
    env = environment(home, tmp_path / "data")
    holder, holder_run = hold_a_slot(home, "ingestion", env)
    kill(holder)
    assert pool_holders(home)["ingestion"] == [holder_run]  # what kill -9 leaves behind
    next_run = subprocess.run(
        materialize_command(["raw_events"], partition=DAY), cwd=REPOSITORY, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert next_run.returncode == 0, next_run.stdout + next_run.stderr
    by_id = {run.run_id: run for run in runs(home)}
    assert by_id[holder_run].status == dg.DagsterRunStatus.FAILURE
    (failure,) = [message for message in run_messages(home, holder_run) if "is gone" in message]
    (next_run_id,) = [run_id for run_id in by_id if run_id != holder_run]
    assert f"run {next_run_id} as it started" in failure and "Run the same assets again" in failure
    assert by_id[next_run_id].status == dg.DagsterRunStatus.SUCCESS
    assert pool_holders(home) == {"ingestion": [], "llm": []}
