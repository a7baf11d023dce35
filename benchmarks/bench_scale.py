"""The scale ladder: a year of synthetic history ingested and one full snapshot made, at each size.

    python benchmarks/bench_scale.py --customers 10000 100000 1000000 --out benchmarks/results/scale.json

For each number of customers, in a scratch data folder and an ephemeral Dagster
instance, with the production assets and resources (the synthetic source sized to
that number, the mock LLM):

1. ingestion: `raw_events` over `--days` days as one run, as a single-run
   backfill from the UI does (its asset checks included), then `id_history`
   likewise;
2. the snapshot of the day before the last, untimed, so that segment IDs have a
   previous snapshot to follow, as in a nightly run;
3. the snapshot of the last day, merge_map through report, as one run (the nightly
   job's shape), `--repeats` times (3): its time is the median run's, each asset's
   time that run's step's, from the run's event log; every run's time is listed.

Each phase runs in a child process of its own, so its peak RSS is its own. Results
per rung: events, customers, wall time of each phase and of each asset, throughput,
peak RSS, and time and memory per customer (to show how cost grows); plus the
machine and the command. Before the ingestion and before each timed snapshot run, a
fixed piece of work is timed (`reference_seconds`): on a shared machine whose speed
drifts, it shows whether a run was slow or its hour was.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, peak_rss_bytes, reference_seconds, write_result  # noqa: E402

#: Marks a folder as this benchmark's scratch space, which it may delete.
MARKER = ".bench-scale-scratch"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _resources(scratch: Path, customers: int, first_day: date) -> dict[str, object]:
    from segmentation_pipeline.definitions import defs
    from segmentation_pipeline.defs.resources import EventSourceResource, WarehouseResource

    return {
        **defs.resources,
        "warehouse": WarehouseResource(data_dir=str(scratch)),
        "event_source": EventSourceResource(n_customers=customers, start_date=first_day.isoformat()),
    }


def ingest_phase(scratch: Path, customers: int, first_day: date, last_day: date) -> dict[str, object]:
    """`raw_events` over the range as one run, then `id_history` as another: the first is the
    single-run raw_events backfill the throughput target is about."""
    import dagster as dg

    from segmentation_pipeline.definitions import defs
    from segmentation_pipeline.defs.partitions import range_tags

    resources = _resources(scratch, customers, first_day)
    tags = range_tags(first_day, last_day)
    seconds, cpu = {}, {}
    load = os.getloadavg()[0]
    reference = reference_seconds()
    with dg.DagsterInstance.ephemeral() as instance:
        for name in ("raw_events", "id_history"):
            started, cpu_started = time.perf_counter(), _cpu_seconds()
            result = dg.materialize(
                [defs.get_assets_def(name)], instance=instance, resources=resources, run_config=QUIET, tags=tags
            )
            seconds[name] = round(time.perf_counter() - started, 2)
            cpu[name] = round(_cpu_seconds() - cpu_started, 2)
            if not result.success:
                raise SystemExit(f"the {name} run failed")
    return {
        "run_seconds": seconds,
        # CPU seconds of every thread of the process: what the run cost, whatever else the machine ran.
        "run_cpu_seconds": cpu,
        "reference_seconds": reference,
        # The machine's one-minute load average as the run began (2 cores: above 2, others were waiting too).
        "load_average": round(load, 2),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def snapshot_phase(
    scratch: Path, customers: int, first_day: date, last_day: date, repeats: int = 1
) -> dict[str, object]:
    import dagster as dg

    from segmentation_pipeline.defs.jobs import SNAPSHOT_ASSETS

    assets = SNAPSHOT_ASSETS
    resources = _resources(scratch, customers, first_day)
    with dg.DagsterInstance.ephemeral() as instance:
        previous = (last_day - timedelta(days=1)).isoformat()
        if not dg.materialize(
            assets, instance=instance, resources=resources, partition_key=previous, run_config=QUIET
        ).success:
            raise SystemExit(f"the snapshot of {previous} failed")
        # The last day's snapshot, `repeats` times (a re-run of a day redoes all of its work): on a
        # shared machine one run can be a quarter slower than the next, so the median is reported.
        runs, references, loads, cpu = [], [], [], []
        for _ in range(repeats):
            loads.append(round(os.getloadavg()[0], 2))
            references.append(reference_seconds())
            started, cpu_started = time.perf_counter(), _cpu_seconds()
            result = dg.materialize(
                assets, instance=instance, resources=resources, partition_key=last_day.isoformat(), run_config=QUIET
            )
            seconds = time.perf_counter() - started
            cpu.append(round(_cpu_seconds() - cpu_started, 2))
            if not result.success:
                raise SystemExit(f"the snapshot of {last_day} failed")
            runs.append((seconds, result))
        seconds, result = sorted(runs, key=lambda run: run[0])[(len(runs) - 1) // 2]
        steps = _step_seconds(instance, result.run_id)
        metadata = {
            event.asset_key.to_user_string(): {
                key: value.value for key, value in event.materialization.metadata.items()
            }
            for event in result.get_asset_materialization_events()
        }
    return {
        "seconds": round(seconds, 2),
        "runs_seconds": [round(run_seconds, 2) for run_seconds, _ in runs],
        # The machine's speed just before each run: the same fixed work, in seconds.
        "reference_seconds": references,
        # CPU seconds of each run (the report's chart process excluded) and the load average as it began.
        "runs_cpu_seconds": cpu,
        "load_averages": loads,
        "asset_seconds": {name: steps[name] for name in (asset.key.to_user_string() for asset in assets)},
        "peak_rss_bytes": peak_rss_bytes(),
        "profiled_customers": metadata["profiles"]["dagster/row_count"],
        "k": metadata["clusters"]["k"],
        "adjusted_rand_index": metadata["clusters"].get("adjusted_rand_index"),
        "approved_segments": metadata["viability"]["approved_segments"],
        "segments_ready_for_campaign": metadata["report"]["segments_ready_for_campaign"],
    }


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    """Each step's time from its start to its success, as the run's event log recorded them."""
    import dagster as dg

    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = round(entry.timestamp - started[event.step_key], 2)
    return seconds


def _events(scratch: Path) -> int:
    import duckdb

    with duckdb.connect(str(scratch / "segmentation.duckdb"), read_only=True) as con:
        return con.execute("SELECT count(*) FROM raw_events").fetchone()[0]


def _child(phase: str, scratch: Path, customers: int, first_day: date, days: int, repeats: int) -> dict[str, object]:
    """Run one phase in a fresh interpreter, so that its peak memory is its own."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--phase",
                phase,
                "--scratch",
                str(scratch),
                "--customers",
                str(customers),
                "--first-day",
                first_day.isoformat(),
                "--days",
                str(days),
                "--repeats",
                str(repeats),
                "--phase-out",
                out.name,
            ],
            check=True,
        )
        return json.loads(Path(out.name).read_text())


def rung(scratch: Path, customers: int, first_day: date, days: int, repeats: int) -> dict[str, object]:
    if scratch.exists() and any(scratch.iterdir()) and not (scratch / MARKER).exists():
        raise SystemExit(f"{scratch} is not empty and is not a benchmark scratch folder; choose another --scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / MARKER).touch()
    ingestion = _child("ingest", scratch, customers, first_day, days, repeats)
    events = _events(scratch)
    snapshot = _child("snapshot", scratch, customers, first_day, days, repeats)
    shutil.rmtree(scratch, ignore_errors=True)
    profiled = snapshot.pop("profiled_customers")
    return {
        "customers": customers,
        "days": days,
        "events": events,
        "profiled_customers": profiled,
        "ingestion": {
            **ingestion,
            # End to end: the whole raw_events run (Dagster, validation, writes, its asset checks).
            "raw_events_per_second": round(events / ingestion["run_seconds"]["raw_events"]),
            "microseconds_per_event": round(1e6 * ingestion["run_seconds"]["raw_events"] / events, 3),
        },
        "snapshot": {
            **snapshot,
            "events_per_second": round(events / snapshot["seconds"]),
            "customers_per_second": round(customers / snapshot["seconds"]),
            "milliseconds_per_1000_customers": round(1e6 * snapshot["seconds"] / customers, 1),
            "peak_rss_kilobytes_per_customer": round(snapshot["peak_rss_bytes"] / 1024 / customers, 2),
        },
    }


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    import dagster as dg

    # The single-run backfill policy is marked beta; each child would print that once per asset.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument(
        "--repeats",
        type=_at_least_one,
        default=3,
        help="runs of the timed snapshot; the median is reported, the lower middle one of an even count (default 3)",
    )
    parser.add_argument("--first-day", type=date.fromisoformat, default=date(2025, 1, 1))
    parser.add_argument("--scratch", type=Path, default=Path("benchmarks/scratch/scale"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    parser.add_argument("--phase", choices=["ingest", "snapshot"], help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    last_day = arguments.first_day + timedelta(days=arguments.days - 1)
    if arguments.phase:
        (customers,) = arguments.customers
        if arguments.phase == "ingest":
            result = ingest_phase(arguments.scratch, customers, arguments.first_day, last_day)
        else:
            result = snapshot_phase(arguments.scratch, customers, arguments.first_day, last_day, arguments.repeats)
        arguments.phase_out.write_text(json.dumps(result))
        return
    rungs = [
        rung(arguments.scratch, customers, arguments.first_day, arguments.days, arguments.repeats)
        for customers in arguments.customers
    ]
    write_result({"rungs": rungs, "machine": machine(), "command": command()}, arguments.out)


if __name__ == "__main__":
    main()
