"""Runs whose process dies, on a real instance with the repository's dagster.yaml (pools
`ingestion` and `llm`, one step at a time, claimed per step).

A run killed with SIGKILL cannot say it ended: Dagster keeps it STARTED with its pool slots. The
project records each run's process (defs/executor.py) and ends runs whose process is gone
(defs/run_processes.py).
"""

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData

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
)

DAY = "2025-01-02"


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


def test_a_process_is_told_apart_from_a_later_one_with_its_pid() -> None:
    me = this_process()
    assert liveness(me) is Liveness.ALIVE
    assert liveness(type(me)(me.host, me.pid, me.boot_id, (me.start_ticks or 0) + 1)) is Liveness.GONE
    assert liveness(type(me)(me.host, me.pid, "another boot", me.start_ticks)) is Liveness.GONE
    assert liveness(type(me)("another-host", me.pid, me.boot_id, me.start_ticks)) is Liveness.UNKNOWN
    assert liveness(None) is Liveness.UNKNOWN


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
