"""A real Dagster service on 127.0.0.1: dagster-webserver and dagster-daemon over a temporary instance.

Used by the end-to-end tests and by benchmarks/bench_backfill.py. The instance
gets the repository's dagster.yaml; the data folder and the environment are
the caller's. Each process runs in a session of its own, so stopping it stops
the runs its daemon launched too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster_graphql import DagsterGraphQLClient

from segmentation_pipeline.backfill import partitioned_assets
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.instance import pools_of, prepare_instance

REPOSITORY = Path(__file__).resolve().parents[1]
FAST_DAEMON = Path(__file__).with_name("fast_daemon.py")
STARTUP_SECONDS = 180


@dataclass
class DagsterService:
    client: DagsterGraphQLClient
    port: int
    home: Path
    data_dir: Path
    env: dict[str, str]
    webserver: subprocess.Popen
    daemon: subprocess.Popen
    daemon_command: list[str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def service_environment(home: Path, data_dir: Path, **settings: str) -> dict[str, str]:
    """The caller's environment without its SEGMENTATION_/DAGSTER_ settings, then these."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SEGMENTATION_", "DAGSTER_"))}
    return env | {"DAGSTER_HOME": str(home), "SEGMENTATION_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"} | settings


@contextmanager
def dagster_service(root: Path, fast_daemon: bool = True, **settings: str):
    """Start the webserver and the daemon in `root` (instance, data folder, logs); stop both on exit.

    fast_daemon: the daemon loops every 2 s instead of Dagster's fixed 30 s (see fast_daemon.py).
    """
    home, data_dir = root / "dagster_home", root / "data"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPOSITORY / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = service_environment(home, data_dir, **settings)
    # The instance is made here, once, as `make dev` makes it: the webserver, the daemon and the
    # runs making it at the same moment race ("table ... already exists"), and the losers exit.
    prepare_instance(home, pools_of(defs.assets or ()))
    port = free_port()
    bin_dir = Path(sys.executable).parent
    webserver_log, daemon_log = root / "webserver.log", root / "daemon.log"
    daemon_command = [sys.executable, str(FAST_DAEMON)] if fast_daemon else [str(bin_dir / "dagster-daemon")]
    webserver = _start(
        [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        env,
        webserver_log,
    )
    daemon = _start([*daemon_command, "run", "-w", "workspace.yaml"], env, daemon_log)
    running = None
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        _wait_until_ready(client, port, daemon, [webserver_log, daemon_log])
        running = DagsterService(client, port, home, data_dir, env, webserver, daemon, daemon_command)
        yield running
    finally:
        stop(running.daemon if running else daemon)
        stop(webserver)


def restart_daemon(service: DagsterService) -> None:
    """Start the daemon again (after a test killed it), as `make dev` restarted would; wait until it is up."""
    stop(service.daemon)
    log = service.home.parent / "daemon.log"
    service.daemon = _start([*service.daemon_command, "run", "-w", "workspace.yaml"], service.env, log)
    _wait_until_ready(service.client, service.port, service.daemon, [log])


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=REPOSITORY, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process's whole session, SIGKILL if it lingers; returns once none of it is left."""
    group = process.pid
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; other members of the group may still be ending.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not is_running(process):
                return
            time.sleep(0.2)


def is_running(process: subprocess.Popen) -> bool:
    """Whether any process of the session it leads is still alive."""
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


DAEMON_HEALTH = """
query { instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }
"""


def _wait_until_ready(client: DagsterGraphQLClient, port: int, daemon: subprocess.Popen, logs: list[Path]) -> None:
    """Until the webserver has loaded the code location and the daemon's backfill and run-queue
    loops report healthy; fails at once, with the logs, if the daemon exits."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as answer:
                statuses = client._execute(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
                healthy = {status["daemonType"] for status in statuses if status["healthy"]}
                if answer.status == 200 and partitioned_assets(client) and _NEEDED_DAEMONS <= healthy:
                    return
        except Exception:  # noqa: BLE001 - not up yet: connection refused, code location loading
            pass
        time.sleep(1)
    raise RuntimeError("the service did not come up:\n" + "\n".join(log.read_text()[-3000:] for log in logs))


#: The daemon loops the tests and benchmarks depend on.
_NEEDED_DAEMONS = {"BACKFILL", "QUEUED_RUN_COORDINATOR"}


def file_digests(data_dir: Path) -> dict[str, str]:
    """Every stored file (Parquet partitions, quarantine, reports) by the SHA-256 of its bytes."""
    paths = [path for path in (data_dir / "warehouse").rglob("*") if path.is_file()]
    paths += list((data_dir / "reports").glob("date=*/*"))
    return {str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(paths)}
