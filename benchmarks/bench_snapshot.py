"""One daily snapshot, merge_map through report (mock LLM), materialized by the assets themselves.

    python benchmarks/bench_snapshot.py --customers 100000 --out benchmarks/results/snapshot_100k.json

Builds `--days` of synthetic history in a scratch warehouse (in a child
process, as bench_ingestion.py does, so that its memory is not counted), then
materializes the snapshot of the day before the last (so that segment IDs have
a previous snapshot to follow, as in a nightly run) and times the snapshot of
the last day asset by asset, each in its own Dagster run on an ephemeral
instance with the production resources and config defaults. Peak RSS is this
process's: Dagster loaded, both snapshots, not the history build. The timed
runs find imports and the page cache warm, as the second asset of a nightly
run does. `events` counts the whole history (the window is its last 365 days).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, peak_rss_bytes, write_result  # noqa: E402

#: Marks a folder as this benchmark's scratch space, which it may delete.
MARKER = ".bench-snapshot-scratch"


def _clear_scratch(scratch: Path) -> None:
    """Empty the scratch folder, refusing one that holds anything but an earlier scratch run."""
    if scratch.exists() and any(scratch.iterdir()) and not (scratch / MARKER).exists():
        raise SystemExit(f"{scratch} is not empty and is not a benchmark scratch folder; choose another --scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / MARKER).touch()


def build_history(scratch: Path, customers: int, first_day: date, days: int) -> None:
    from segmentation_pipeline.core import synthetic
    from segmentation_pipeline.core.ingestion import EVENTS, MERGES, ingest
    from segmentation_pipeline.core.schemas import DEFAULT_JUNK_IDS, SYNTHETIC_TRUTH
    from segmentation_pipeline.core.warehouse import Warehouse

    _clear_scratch(scratch)
    warehouse = Warehouse(scratch)
    source = synthetic.SyntheticSettings(n_customers=customers, start_date=first_day)
    history = [first_day + timedelta(days=offset) for offset in range(days)]
    ingest(warehouse, EVENTS, history, source, DEFAULT_JUNK_IDS)
    ingest(warehouse, MERGES, history, source, ())
    warehouse.write_file(SYNTHETIC_TRUTH, "ground_truth.parquet", synthetic.ground_truth(source))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--first-day", type=date.fromisoformat, default=date(2025, 1, 1))
    parser.add_argument("--scratch", type=Path, default=Path("benchmarks/scratch/snapshot"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/snapshot.json"))
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.build_only:
        build_history(arguments.scratch, arguments.customers, arguments.first_day, arguments.days)
        return

    started = time.perf_counter()
    subprocess.run([sys.executable, *sys.argv, "--build-only"], check=True)
    build_seconds = time.perf_counter() - started

    import dagster as dg

    from segmentation_pipeline.definitions import defs
    from segmentation_pipeline.defs.resources import WarehouseResource

    last = arguments.first_day + timedelta(days=arguments.days - 1)
    names = [
        "merge_map",
        "profiles",
        "clusters",
        "segment_migration",
        "robustness",
        "viability",
        "actionability",
        "explanations",
        "report",
    ]
    assets = [defs.get_assets_def(name) for name in names]
    resources = {**defs.resources, "warehouse": WarehouseResource(data_dir=str(arguments.scratch))}
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    seconds: dict[str, float] = {}
    metadata: dict[str, dict[str, object]] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        day_before = (last - timedelta(days=1)).isoformat()
        dg.materialize(assets, instance=instance, resources=resources, partition_key=day_before, run_config=quiet)
        for name, asset in zip(names, assets):
            started = time.perf_counter()
            result = dg.materialize(
                [asset], instance=instance, resources=resources, partition_key=last.isoformat(), run_config=quiet
            )
            seconds[name] = round(time.perf_counter() - started, 2)
            (event,) = result.get_asset_materialization_events()
            metadata[name] = {key: value.value for key, value in event.materialization.metadata.items()}
    import duckdb

    with duckdb.connect(str(arguments.scratch / "segmentation.duckdb"), read_only=True) as con:
        events = con.execute("SELECT count(*) FROM raw_events").fetchone()[0]
    total = sum(seconds.values())
    profiled = metadata["profiles"]["dagster/row_count"]
    write_result(
        {
            "customers": arguments.customers,
            "days": arguments.days,
            "events": events,
            "profiled_customers": profiled,
            "history_build_seconds": round(build_seconds, 1),
            "asset_seconds": seconds,
            "snapshot_seconds": round(total, 2),
            "profiled_customers_per_second": round(profiled / total),
            "events_per_second": round(events / total),
            "peak_rss_bytes": peak_rss_bytes(),
            "k": metadata["clusters"]["k"],
            "adjusted_rand_index": metadata["clusters"].get("adjusted_rand_index"),
            "clv_method": metadata["profiles"]["clv_method"],
            "approved_segments": metadata["viability"]["approved_segments"],
            "machine": machine(),
            "command": command(),
        },
        arguments.out,
    )
    # The build checked that this is the benchmark's own scratch folder.
    shutil.rmtree(arguments.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
