"""Ingestion and identity resolution: the code the raw_events, id_history and merge_map assets run.

    python benchmarks/bench_ingestion.py --customers 100000 --days 365 --out benchmarks/results/ingestion_100k.json

Ingests `--days` days of synthetic history (events and merge records) into a
scratch warehouse in chunks, exactly as a single-run backfill does, then
resolves the merge map as of the last day. Dagster's own bookkeeping (one
event-log entry per partition) is not included: it depends on the instance's
storage, not on this code.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, peak_rss_bytes, write_result  # noqa: E402
from segmentation_pipeline.core.identity import merges_in_effect, resolve_merges  # noqa: E402
from segmentation_pipeline.core.ingestion import EVENTS, MERGES, ingest  # noqa: E402
from segmentation_pipeline.core.schemas import DEFAULT_JUNK_IDS, ID_HISTORY, MERGE_MAP  # noqa: E402
from segmentation_pipeline.core.synthetic import SyntheticSettings, population  # noqa: E402
from segmentation_pipeline.core.warehouse import Warehouse  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--first-day", type=date.fromisoformat, default=date(2025, 1, 1))
    parser.add_argument("--scratch", type=Path, default=Path("benchmarks/scratch/ingestion"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingestion.json"))
    arguments = parser.parse_args()

    shutil.rmtree(arguments.scratch, ignore_errors=True)
    warehouse = Warehouse(arguments.scratch)
    source = SyntheticSettings(n_customers=arguments.customers, start_date=arguments.first_day)
    days = [arguments.first_day + timedelta(days=offset) for offset in range(arguments.days)]
    population(source)

    started = time.perf_counter()
    events = ingest(warehouse, EVENTS, days, source, DEFAULT_JUNK_IDS)
    events_seconds = time.perf_counter() - started
    started = time.perf_counter()
    merges = ingest(warehouse, MERGES, days, source, ())
    merges_seconds = time.perf_counter() - started
    started = time.perf_counter()
    resolution = resolve_merges(merges_in_effect(warehouse.read_days(ID_HISTORY, days), days[-1]))
    warehouse.write_partition(MERGE_MAP, days[-1], resolution.merge_map)
    resolve_seconds = time.perf_counter() - started

    write_result(
        {
            "customers": arguments.customers,
            "days": arguments.days,
            "events": events.valid_rows,
            "events_quarantined": events.quarantined_rows,
            "raw_events_seconds": round(events_seconds, 2),
            "raw_events_per_second": round(events.valid_rows / events_seconds),
            "merge_records": merges.valid_rows,
            "id_history_seconds": round(merges_seconds, 2),
            "merge_map_ids": resolution.merge_map.num_rows,
            "merge_map_seconds": round(resolve_seconds, 2),
            "parquet_bytes": sum(p.stat().st_size for p in warehouse.tables_dir.rglob("*.parquet")),
            "peak_rss_bytes": peak_rss_bytes(),
            "machine": machine(),
            "command": command(),
        },
        arguments.out,
    )
    shutil.rmtree(arguments.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
