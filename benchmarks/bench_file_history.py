"""A long history from one transaction file: the ingestion phase of `make demo SOURCE_CONFIG=...`.

    python benchmarks/bench_file_history.py --cdnow-master /tmp/lt/lifetimes/datasets/CDNOW_master.txt \\
        --repeats 3 --out benchmarks/results/file_history_cdnow.json

The CDNOW master file (23,570 customers, 69,659 purchases, 1997-01-01 .. 1998-06-30) is in
the lifetimes 0.11.3 wheel (`pip download --no-deps lifetimes==0.11.3 -d /tmp/lt`, then unzip
it); it is converted to the shipped sample's columns (customer, date, quantity, amount) in the
scratch folder and read with the shipped sample's source config (data/samples/cdnow.json). Any
file in that shape can be given instead with `--events-csv` and `--first-day`/`--last-day`.

Each run is the demo's ingestion phase in a fresh process with a new Dagster instance on disk
and a new data folder: the instance prepared (segmentation_pipeline.instance), then
`raw_events` and `id_history` materialized over the whole range as one run
(a run of the `ingestion` job, segmentation_pipeline.demo.run_job), as the demo and a single-run backfill do. It is timed
on two instances, in turn, in the same minutes:

- `repository`: the repository's .dagster_home/dagster.yaml (its instance stores Dagster's
  batches of events in one transaction each: segmentation_pipeline/defs/event_log.py);
- `dagster_default`: a dagster.yaml without the instance class, Dagster's own instance, which
  stores each event on its own (the code before that change).

Recorded per run: the seconds of the run (`run_job`), the seconds of the process (Python,
Dagster and the definitions loaded, the instance prepared, the run), the events the run stored
by kind, and `reference_seconds` (a fixed piece of work timed just before: this machine's speed
drifts). Also the same ingestion through the core calls alone (`core_seconds`: no Dagster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, reference_seconds, write_result  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
#: Marks a folder as this benchmark's scratch space, which it may delete.
MARKER = ".bench-file-history-scratch"
SOURCE_CONFIG = REPOSITORY / "data" / "samples" / "cdnow.json"
INSTANCES = {
    "repository": (REPOSITORY / ".dagster_home" / "dagster.yaml").read_text(),
    "dagster_default": "telemetry:\n  enabled: false\n",
}


def cdnow_master_as_csv(master: Path, out: Path) -> Path:
    """CDNOW_master.txt (customer, YYYYMMDD, CDs, dollars; a header line) in the columns of
    data/samples/cdnow_transactions.csv, made the way that file was made from CDNOW_sample.txt."""
    lines = ["customer,date,quantity,amount"]
    for row in master.read_text().splitlines()[1:]:
        if row.strip():
            customer, day, quantity, amount = row.split()
            lines.append(f"{customer},{day[:4]}-{day[4:6]}-{day[6:]},{quantity},{amount}")
    out.write_text("\n".join(lines) + "\n")
    return out


def days_of(events_csv: Path) -> tuple[date, date]:
    import duckdb

    with duckdb.connect() as con:
        return con.execute("SELECT min(date), max(date) FROM read_csv(?, header = true)", [str(events_csv)]).fetchone()


def run_phase(first_day: date, last_day: date) -> dict[str, object]:
    """In a child process whose environment names the instance, the data folder and the source."""
    import dagster as dg

    from segmentation_pipeline.definitions import defs
    from segmentation_pipeline.defs.jobs import ingestion_job
    from segmentation_pipeline.defs.partitions import range_tags
    from segmentation_pipeline.demo import run_job
    from segmentation_pipeline.instance import default_home, pools_of, prepare_instance

    prepare_instance(default_home(), pools_of(defs.assets or ()))
    instance = dg.DagsterInstance.get()
    reference = reference_seconds()
    started = time.perf_counter()
    run_job(instance, ingestion_job.name, range_tags(first_day, last_day))
    seconds = time.perf_counter() - started
    (run,) = instance.get_runs(limit=1)
    stored = Counter(
        record.dagster_event.event_type_value if record.dagster_event else "log message"
        for record in instance.all_logs(run.run_id)
    )
    return {
        "run_seconds": round(seconds, 2),
        "reference_seconds": reference,
        "instance": type(instance).__name__,
        "stored_events": sum(stored.values()),
        "stored_events_by_kind": dict(stored.most_common()),
    }


def core_phase(first_day: date, last_day: date) -> dict[str, object]:
    """The same ingestion through the core calls the assets make, without Dagster."""
    from datetime import timedelta

    from segmentation_pipeline.core.ingestion import EVENTS, MERGES, ingest
    from segmentation_pipeline.core.schemas import DEFAULT_JUNK_IDS
    from segmentation_pipeline.core.warehouse import Warehouse
    from segmentation_pipeline.definitions import defs
    from segmentation_pipeline.defs.partitions import SETTINGS

    warehouse = Warehouse(SETTINGS.data_dir)
    source = defs.resources["event_source"].source(warehouse.root)
    days = [first_day + timedelta(days=offset) for offset in range((last_day - first_day).days + 1)]
    reference = reference_seconds()
    started = time.perf_counter()
    events = ingest(warehouse, EVENTS, days, source, DEFAULT_JUNK_IDS)
    ingest(warehouse, MERGES, days, source, ())
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "reference_seconds": reference,
        "rows": events.valid_rows,
    }


def child(phase: str, scratch: Path, source_config: Path, first_day: date, last_day: date, yaml: str) -> dict:
    """One phase in a fresh interpreter, on a new instance and data folder under `scratch`."""
    shutil.rmtree(scratch / "run", ignore_errors=True)
    home = scratch / "run" / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml)
    out = scratch / "run" / "phase.json"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SEGMENTATION_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(home),
        "SEGMENTATION_DATA_DIR": str(scratch / "run" / "data"),
        "SEGMENTATION_START_DATE": first_day.isoformat(),
        "SEGMENTATION_SOURCE": "files",
        "SEGMENTATION_SOURCE_CONFIG": str(source_config),
    }
    arguments = ["--phase", phase, "--phase-out", str(out), "--first-day", first_day.isoformat()]
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, *arguments, "--last-day", last_day.isoformat()], env=env, check=True)
    result = json.loads(out.read_text())
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    return result


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    import warnings

    import dagster as dg

    # The single-run backfill policy is marked beta; each child would print that once per asset.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    files = parser.add_mutually_exclusive_group()
    files.add_argument("--cdnow-master", type=Path, help="lifetimes' CDNOW_master.txt, converted in the scratch folder")
    files.add_argument("--events-csv", type=Path, help="a transaction file in the columns of cdnow_transactions.csv")
    parser.add_argument("--first-day", type=date.fromisoformat, help="default: the file's first day")
    parser.add_argument("--last-day", type=date.fromisoformat, help="default: the file's last day")
    parser.add_argument("--repeats", type=_at_least_one, default=3, help="runs on each instance, in turn (default 3)")
    parser.add_argument("--scratch", type=Path, default=Path("benchmarks/scratch/file_history"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/file_history.json"))
    parser.add_argument("--phase", choices=["run", "core"], help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.phase:
        phase = run_phase if arguments.phase == "run" else core_phase
        arguments.phase_out.write_text(json.dumps(phase(arguments.first_day, arguments.last_day)))
        return
    if not (arguments.cdnow_master or arguments.events_csv):
        parser.error("give the file: --cdnow-master or --events-csv")

    scratch = arguments.scratch.resolve()
    if scratch.exists() and any(scratch.iterdir()) and not (scratch / MARKER).exists():
        raise SystemExit(f"{scratch} is not empty and is not a benchmark scratch folder; choose another --scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / MARKER).touch()
    if arguments.cdnow_master:
        events_csv = cdnow_master_as_csv(arguments.cdnow_master, scratch / "cdnow_master_transactions.csv")
    else:
        events_csv = arguments.events_csv.resolve()
    file_first, file_last = days_of(events_csv)
    first_day, last_day = arguments.first_day or file_first, arguments.last_day or file_last
    source_config = scratch / "source.json"
    source = json.loads(SOURCE_CONFIG.read_text()) | {
        "incoming_dir": str(events_csv.parent),
        "events_path": events_csv.name,
    }
    source_config.write_text(json.dumps(source))

    runs: dict[str, list[dict]] = {name: [] for name in INSTANCES}
    core = []
    for repeat in range(arguments.repeats):
        for name, yaml in INSTANCES.items():
            runs[name].append(child("run", scratch, source_config, first_day, last_day, yaml))
            print(f"run {repeat + 1}, {name}: {runs[name][-1]['run_seconds']} s", flush=True)
        core.append(child("core", scratch, source_config, first_day, last_day, INSTANCES["dagster_default"]))
    shutil.rmtree(scratch, ignore_errors=True)

    def summary(records: list[dict]) -> dict[str, object]:
        seconds = [record["run_seconds"] for record in records]
        median = statistics.median_low(seconds)
        middle = records[seconds.index(median)]
        return {
            "run_seconds": median,
            "process_seconds": middle["process_seconds"],
            "runs_seconds": seconds,
            "runs_process_seconds": [record["process_seconds"] for record in records],
            "reference_seconds": [record["reference_seconds"] for record in records],
            "instance": middle["instance"],
            "stored_events": middle["stored_events"],
            "stored_events_by_kind": middle["stored_events_by_kind"],
        }

    core_seconds = [record["seconds"] for record in core]
    write_result(
        {
            "benchmark": "file_history",
            "events_file": events_csv.name,
            "first_day": first_day.isoformat(),
            "last_day": last_day.isoformat(),
            "days": (last_day - first_day).days + 1,
            "rows": core[0]["rows"],
            "instances": {name: summary(records) for name, records in runs.items()},
            "core_seconds": statistics.median_low(core_seconds),
            "core_runs_seconds": core_seconds,
            "machine": machine(),
            "command": command(),
        },
        arguments.out,
    )


if __name__ == "__main__":
    main()
