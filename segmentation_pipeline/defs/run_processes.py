"""Which process executes a run's steps, whether it is still there, and what to do when it is not.

A run whose process is killed (kill -9, the out-of-memory killer, a reboot, `make dev` stopped
hard) cannot report its own end: Dagster keeps it STARTED, with the pool slots it held, and every
later step of those pools waits for good. So the process that executes a run's steps records
itself as the run's first engine event (`executor.py`): host, boot, pid and the kernel's start time
of that pid. Anything on the same host can then tell a dead run from a working one: the pid is
gone, a zombie, or now belongs to a process started later (pid reuse), or the machine has rebooted
since. A run recorded on another host, or not recorded at all, is never judged dead here (run
monitoring's `max_runtime_seconds` still ends it).

Used by the run launcher's health check (the daemon's run monitoring, `make dev`), at the start of
every run, and while a step waits for a pool slot (a CLI `dagster asset materialize` has no daemon).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import GRPC_INFO_TAG

#: Metadata key of the engine event by which a run's process records itself.
PROCESS_METADATA_KEY = "segmentation/run_process"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: Engine events scanned for the record: it is among a run's first few.
_EVENTS_SCANNED = 50


@dataclass(frozen=True)
class RunProcess:
    """One process on one host, told apart from a later process that reuses its pid."""

    host: str
    pid: int
    #: The kernel's boot ID, and the pid's start time in clock ticks since boot (Linux); None elsewhere.
    boot_id: str | None = None
    start_ticks: int | None = None
    #: Instead of start_ticks, when only Dagster's own event names the pid: the time it was logged
    #: (the process had started by then).
    seen_at: float | None = None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


class Liveness(Enum):
    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"  # another host, or nothing recorded


def process_of(pid: int) -> RunProcess:
    """A process of this host, as it can be told apart later."""
    stat = _stat(pid)
    return RunProcess(host=socket.gethostname(), pid=pid, boot_id=_boot_id(), start_ticks=stat[1] if stat else None)


def this_process() -> RunProcess:
    return process_of(os.getpid())


def process_metadata(process: RunProcess) -> dict[str, dg.MetadataValue]:
    return {
        PROCESS_METADATA_KEY: dg.MetadataValue.json(asdict(process)),
        "pid": dg.MetadataValue.text(str(process.pid)),
        "host": dg.MetadataValue.text(process.host),
    }


def recorded_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess | None:
    """The process that executes the run's steps, as it recorded itself; for a run launched through a
    code server on this host that died before recording itself, the process the server started."""
    records = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=_EVENTS_SCANNED
    ).records
    started_by_server = None
    for record in records:
        data = record.event_log_entry.dagster_event.event_specific_data
        metadata = getattr(data, "metadata", None) or {}
        if PROCESS_METADATA_KEY in metadata:
            return RunProcess(**metadata[PROCESS_METADATA_KEY].value)
        message = record.event_log_entry.user_message or ""
        if started_by_server is None and message.startswith("Started process for run") and "pid" in metadata:
            started_by_server = (int(metadata["pid"].value), record.timestamp)
    if started_by_server and _launched_on_this_host(run):
        pid, logged_at = started_by_server
        return RunProcess(host=socket.gethostname(), pid=pid, boot_id=None, seen_at=logged_at)
    return None


def liveness(process: RunProcess | None) -> Liveness:
    if process is None or process.host != socket.gethostname():
        return Liveness.UNKNOWN
    if process.boot_id and process.boot_id != _boot_id():
        return Liveness.GONE  # the machine restarted since
    stat = _stat(process.pid)
    if stat is None:
        return _liveness_without_proc(process.pid)
    state, start_ticks = stat
    if state in ("Z", "X"):
        return Liveness.GONE  # killed, not yet reaped by its parent
    if process.start_ticks is not None and start_ticks != process.start_ticks:
        return Liveness.GONE  # the pid now belongs to another process
    if process.seen_at is not None and _started_at(start_ticks) > process.seen_at + 1:
        return Liveness.GONE
    return Liveness.ALIVE


def run_liveness(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[Liveness, RunProcess | None]:
    process = recorded_process(instance, run)
    return liveness(process), process


def end_if_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, found_by: str) -> str | None:
    """If the run's process is gone: mark the run failed (unless it already ended) and free its pool
    slots and queued claims. Returns what was done, or None when the run is alive or cannot be judged."""
    state, process = run_liveness(instance, run)
    if state is not Liveness.GONE or process is None:
        return None
    done = f"run {run.run_id}: its process ({process.describe()}) is gone"
    if not run.is_finished:
        instance.report_run_failed(
            run,
            f"The process of this run ({process.describe()}) is gone: killed, out of memory, or the "
            f"machine restarted. Marked failed and its pool slots freed by {found_by}. Run the same "
            "assets again; nothing it left needs removing by hand.",
        )
        done += ", marked failed"
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return done + ", pool slots freed"


def end_dead_runs(instance: dg.DagsterInstance, own_run_id: str, found_by: str) -> list[str]:
    """Every run on this host whose process is gone and that is still STARTED or still holds a pool
    slot or a queued claim: marked failed, its slots freed."""
    run_ids = {
        run.run_id
        for run in instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING])
        )
    }
    run_ids |= holders_of_pool_slots(instance)
    run_ids.discard(own_run_id)
    done = []
    for run_id in sorted(run_ids):
        run = instance.get_run_by_id(run_id)
        if run is not None:
            outcome = end_if_dead(instance, run, found_by)
            if outcome:
                done.append(outcome)
    return done


def holders_of_pool_slots(instance: dg.DagsterInstance) -> set[str]:
    """Runs holding a slot, or a queued claim on one, in any pool."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return set()
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    holders = set()
    for info in infos.values():
        holders |= {slot.run_id for slot in info.claimed_slots}
        holders |= {step.run_id for step in info.pending_steps}
    return holders


def _launched_on_this_host(run: dg.DagsterRun) -> bool:
    """Whether the run was launched through a code server on this machine (the default run launcher
    records the server's address on the run)."""
    if GRPC_INFO_TAG not in run.tags:
        return False
    server = json.loads(run.tags[GRPC_INFO_TAG])
    return "socket" in server or server.get("host") in {"localhost", "127.0.0.1", "::1", socket.gethostname()}


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks since boot) of a pid, from /proc; None without it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _started_at(start_ticks: int) -> float:
    """A start time in clock ticks since boot, as a Unix time."""
    boot_time = next(
        int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
    )
    return boot_time + start_ticks / os.sysconf("SC_CLK_TCK")


def _liveness_without_proc(pid: int) -> Liveness:
    """Where /proc has nothing on the pid: gone on Linux; elsewhere, whether a signal can reach it."""
    if Path("/proc/self/stat").exists():
        return Liveness.GONE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return Liveness.GONE
    except PermissionError:
        return Liveness.ALIVE
    return Liveness.ALIVE
