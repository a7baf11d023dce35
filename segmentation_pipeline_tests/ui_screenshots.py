"""Screenshots of the Dagster UI's main pages after a short demo, in headless Chromium.

    .venv/bin/python -m segmentation_pipeline_tests.ui_screenshots --out /tmp/ui-shots

builds a short demo history (`segmentation_pipeline.demo`) into a new data folder
and instance under a work folder, starts `make dev`'s command (`dagster dev`:
webserver, daemon and code server) on a free port, and saves one PNG per page:
the asset graph, an asset's partitions, the jobs, a job's runs, the runs and the
run timeline; next to each, the page's rendered DOM (`<page>.html`), for a test
to read what the page says. Compare the PNGs by eye after a change to the
definitions, the demo or Dagster's version: a layout regression shows.

It lives with the tests because it is one (test_ui_screenshots.py runs it) and
shares their service helpers; it measures nothing, so it is not a benchmark.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dagster_graphql import DagsterGraphQLClient

from segmentation_pipeline_tests.service import REPOSITORY, free_port, service_environment, stop

#: The demo's history: its days are the partitions (SEGMENTATION_END_DATE), so every page shows them filled.
FIRST_DAY, LAST_DAY, DAYS, SNAPSHOTS = "2025-01-01", "2025-01-05", 5, 2
STARTUP_SECONDS = 180
WINDOW = (1440, 900)


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    #: Text the rendered page must hold once loaded (it is not a spinner or an error).
    expect: tuple[str, ...]


PAGES = [
    Page("asset_lineage", "/asset-groups", ("ingestion", "identity", "segmentation", "insights", "reporting")),
    Page(
        "asset_graph",
        "/locations/segmentation_pipeline/asset-groups/segmentation",
        ("clusters", "segment_migration", "robustness", "viability"),
    ),
    Page("asset_partitions", "/assets/raw_events?view=partitions", ("5 Partitions", "Materialized (5)", "Missing (0)")),
    Page("jobs", "/jobs", ("ingestion", "segmentation", "snapshot")),
    Page("job_runs", "/locations/segmentation_pipeline/jobs/segmentation/runs", ("segmentation", "Success")),
    Page("runs", "/runs", ("ingestion", "segmentation")),
    Page("timeline", "/overview/activity/timeline", ("ingestion", "segmentation")),
]


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


def run_demo(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "segmentation_pipeline.demo", "--days", str(DAYS), "--snapshots", str(SNAPSHOTS)],
        cwd=REPOSITORY,
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )


def start_dev(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    """`make dev`'s command, in a session of its own (stopped whole by `service.stop`)."""
    return subprocess.Popen(
        [sys.executable, "-W", "ignore:Function `dev_command` is superseded:FutureWarning", "-m", "dagster", "dev",
         "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPOSITORY, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def wait_until_ready(client: DagsterGraphQLClient, port: int, dev: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and dev.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                nodes = client._execute("query { assetNodes { id } }")["assetNodes"]
                if nodes:
                    return
        except Exception:  # noqa: BLE001 - not up yet: connection refused, code location loading
            pass
        time.sleep(1)
    raise RuntimeError(f"dagster dev did not come up:\n{log.read_text()[-3000:]}")


def shoot(browser: str, url: str, png: Path, html: Path, profile: Path) -> None:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        # The UI loads its data after the page: let it settle (virtual time, so no real wait when idle).
        "--virtual-time-budget=20000",
    ]
    for extra, kwargs in ((f"--screenshot={png}", {}), ("--dump-dom", {"stdout": html.open("w")})):
        done = subprocess.run([browser, *flags, extra, url], timeout=180, stderr=subprocess.PIPE, text=True, **kwargs)
        if done.returncode != 0:
            raise RuntimeError(f"chromium failed on {url}: {done.stderr[-2000:]}")


def take_screenshots(out: Path, work: Path, browser: str) -> dict[str, Path]:
    """The demo, then `dagster dev` on it, then every page of PAGES; the PNG of each page by name."""
    out.mkdir(parents=True, exist_ok=True)
    home, data_dir = work / "dagster_home", work / "data"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPOSITORY / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = service_environment(home, data_dir, SEGMENTATION_START_DATE=FIRST_DAY, SEGMENTATION_END_DATE=LAST_DAY)
    run_demo(env)
    port, log = free_port(), work / "dagster_dev.log"
    dev = start_dev(env, port, log)
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        wait_until_ready(client, port, dev, log)
        # The UI greets a new instance on localhost with a community sign-up box over every page: seen.
        client._execute("mutation { setNuxSeen }")
        shots = {}
        for page in PAGES:
            shots[page.name] = out / f"{page.name}.png"
            shoot(browser, f"http://127.0.0.1:{port}{page.path}", shots[page.name], out / f"{page.name}.html",
                  work / "chromium")  # fmt: skip
        return shots
    finally:
        # Ctrl-C, as `make dev` is stopped; then whatever is left of its session.
        try:
            os.killpg(dev.pid, signal.SIGINT)
            dev.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        stop(dev)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs (and each page's DOM)")
    parser.add_argument("--work", type=Path, help="folder for the demo's data and instance (default: a temporary one)")
    args = parser.parse_args(argv)
    browser = chromium()
    if browser is None:
        print("Chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ui-screenshots-") as scratch:
        shots = take_screenshots(args.out, args.work or Path(scratch), browser)
    for name, path in shots.items():
        print(f"{name:<18} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
