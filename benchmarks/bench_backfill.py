"""A backfill of the whole graph through the real service, twice: how long it takes, and that the second changes nothing.

Starts dagster-webserver and dagster-daemon on 127.0.0.1 over a scratch instance
(the repository's dagster.yaml) and data folder, launches the same asset
backfill `make backfill` launches over N days from the start date, waits for
it, then launches it again and compares every stored file byte for byte.

    .venv/bin/python benchmarks/bench_backfill.py --days 30 --out benchmarks/results/backfill_30d.json

By default the daemon is Dagster's own on the repository's instance, whose class
shortens the backfill loop from Dagster's fixed 30 s to 5 s (what `make dev` users
get: segmentation_pipeline/defs/daemon_loop.py); --fast-daemon uses the tests' 2 s
loop to see what the runs alone cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, write_result  # noqa: E402
from segmentation_pipeline.backfill import launch_backfill, partitioned_assets, wait_for_backfill  # noqa: E402
from segmentation_pipeline.core.settings import DEFAULT_START_DATE  # noqa: E402
from segmentation_pipeline.defs.daemon_loop import BACKFILL_LOOP_SECONDS  # noqa: E402
from segmentation_pipeline_tests.service import dagster_service, file_digests  # noqa: E402

SCRATCH = Path(__file__).resolve().parent / "scratch" / "backfill"


def run_backfill(service, first: date, last: date, timeout: float) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    backfill_id = launch_backfill(service.client, first, last, partitioned_assets(service.client))
    status = wait_for_backfill(service.client, backfill_id, timeout, poll_seconds=5)
    seconds = time.monotonic() - started
    with dg.DagsterInstance.from_config(str(service.home)) as instance:
        runs = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    busy = sum((record.end_time or 0) - (record.start_time or 0) for record in runs)
    return {
        "backfill_id": backfill_id,
        "status": status["status"],
        "wall_seconds": round(seconds, 1),
        "runs": len(runs),
        "run_seconds_total": round(busy, 1),
        "seconds_per_day": round(seconds / ((last - first).days + 1), 1),
        # The machine is shared: the 1-minute load average before and after tells a busy hour apart.
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--fast-daemon", action="store_true", help="loop every 2 s instead of the instance's 5 s")
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    parser.add_argument("--keep", action="store_true", help=f"keep the instance and data in {SCRATCH}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backfill.json"))
    args = parser.parse_args(argv)
    # A plain `kill` stops the webserver and daemon too (the service is stopped on the way out).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    first = date.fromisoformat(DEFAULT_START_DATE)
    last = first + timedelta(days=args.days - 1)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    with dagster_service(SCRATCH, fast_daemon=args.fast_daemon) as service:
        print(f"backfill of {first} .. {last} through 127.0.0.1:{service.port} ...", flush=True)
        once = run_backfill(service, first, last, args.timeout)
        print(once, flush=True)
        before = file_digests(service.data_dir)
        again = run_backfill(service, first, last, args.timeout)
        print(again, flush=True)
        after = file_digests(service.data_dir)
    changed = sorted(name for name in before if before.get(name) != after.get(name))
    added = sorted(set(after) - set(before))
    result = {
        "benchmark": "backfill",
        "days": args.days,
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "daemon_loop_seconds": 2 if args.fast_daemon else BACKFILL_LOOP_SECONDS,
        "synthetic_customers": 20_000,
        "first_backfill": once,
        "same_backfill_again": again,
        "stored_files": len(before),
        "files_changed_by_second_backfill": changed,
        "files_added_by_second_backfill": added,
        "machine": machine(),
        "command": command(),
    }
    write_result(result, args.out)
    if not args.keep:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    print(f"{len(before)} files; changed by the second backfill: {len(changed)}, added: {len(added)}")
    return 0 if once["status"] == again["status"] == "COMPLETED_SUCCESS" and not changed and not added else 1


if __name__ == "__main__":
    sys.exit(main())
