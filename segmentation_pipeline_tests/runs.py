"""Runs as an operator starts them: `dagster asset materialize` processes on one real instance.

Used by the tests of killed runs, pools and days made side by side. The instance gets the
repository's dagster.yaml (pools `ingestion` and `llm` one step at a time); every process runs on
the built-in defaults but for the settings a test gives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType

from segmentation_pipeline_tests.service import REPOSITORY, service_environment

POOLS = ("ingestion", "llm")


def instance_home(home: Path) -> Path:
    """A DAGSTER_HOME with the repository's dagster.yaml, its storage and pools made once, before
    any process uses it (two processes making them at the same moment race)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPOSITORY / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(dg.AssetKey("raw_events"))
        for pool in POOLS:
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    return home


def materialize_command(
    select: Iterable[str], partition: str | None = None, partition_range: str | None = None, config: dict | None = None
) -> list[str]:
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize"]
    command += ["-m", "segmentation_pipeline.definitions", "--select", ",".join(select)]
    if partition:
        command += ["--partition", partition]
    if partition_range:
        command += ["--partition-range", partition_range]
    if config:
        command += ["--config-json", json.dumps(config)]
    return command


def start(command: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """A process of its own session; its log lines on a pipe (read them, or give a log file)."""
    output = log.open("w") if log else subprocess.PIPE
    return subprocess.Popen(
        command,
        cwd=REPOSITORY,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def environment(home: Path, data_dir: Path, **settings: str) -> dict[str, str]:
    return service_environment(home, data_dir, **settings)


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float = 300) -> str:
    """Read the process's output until a line holds `needle`; fail if it ends first."""
    deadline = time.monotonic() + timeout
    seen = []
    for line in iter(process.stdout.readline, ""):
        seen.append(line)
        if needle in line:
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"never printed {needle!r}; its last lines:\n" + "".join(seen[-30:]))


def kill(process: subprocess.Popen) -> None:
    """kill -9, and wait for the process to be gone (its run is left as it was)."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    if process.stdout:
        process.stdout.close()


def runs(home: Path) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(reversed(instance.get_runs()))


def run_messages(home: Path, run_id: str) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [entry.message for entry in instance.all_logs(run_id) if entry.message]


def steps_in_flight(home: Path, run_id: str) -> set[str]:
    """Steps the run started and never finished."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        events = [entry.dagster_event for entry in instance.all_logs(run_id) if entry.dagster_event]
    started = {event.step_key for event in events if event.event_type == DagsterEventType.STEP_START}
    ended = {
        event.step_key
        for event in events
        if event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE)
    }
    return started - ended


def pool_holders(home: Path) -> dict[str, list[str]]:
    """Per pool, the runs holding a slot or a queued claim on one."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        infos = instance.event_log_storage.get_concurrency_infos(list(POOLS))
    return {
        pool: sorted({slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps})
        for pool, info in infos.items()
    }


def stored_files(data_dir: Path) -> dict[str, bytes]:
    """Every stored partition and report file (not temporary files, whose names start with a dot)."""
    paths = [path for path in (data_dir / "warehouse").rglob("*") if path.is_file()]
    paths += list((data_dir / "reports").glob("date=*/*"))
    return {
        str(path.relative_to(data_dir)): path.read_bytes()
        for path in sorted(paths)
        if not path.name.startswith(".") and "/." not in str(path.relative_to(data_dir))
    }


HOLDER = """
import os, sys, time, uuid
import dagster as dg
from dagster._core.events import EngineEventData
from segmentation_pipeline.defs.run_processes import process_metadata, this_process

pool = sys.argv[1]
with dg.DagsterInstance.get() as instance:
    run = instance.add_run(
        dg.DagsterRun(job_name="holds_a_slot", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
    )
    instance.report_engine_event("holds a slot", run, EngineEventData(metadata=process_metadata(this_process())))
    status = instance.event_log_storage.claim_concurrency_slot(pool, run.run_id, "holding_step")
    assert status.is_claimed, status
    print(run.run_id, flush=True)
    time.sleep(3600)
"""


def hold_a_slot(home: Path, pool: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Another run's process holding the pool's one slot, as a run in a pooled step does; returns
    it and its run ID."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, pool],
        cwd=REPOSITORY,
        env=env | {"DAGSTER_HOME": str(home)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    run_id = process.stdout.readline().strip()
    assert run_id, "the holder did not start"
    return process, run_id


def state_of(pid: int) -> str:
    """The scheduler state of a process's main thread: R running, S sleeping, ..."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()[0]


def still_running(process: subprocess.Popen) -> bool:
    return process.poll() is None and os.path.exists(f"/proc/{process.pid}")
