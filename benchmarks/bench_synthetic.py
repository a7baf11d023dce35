"""Throughput of the synthetic source: events generated per second on one core.

    python benchmarks/bench_synthetic.py --customers 1000000 --days 30 --out benchmarks/results/synthetic.json

Building the population is a one-off per settings and is reported apart from
the per-day generation it serves. Arrow is held to one thread so that the
figure is a single-core one.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa

# Run from a fresh clone without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, write_result  # noqa: E402
from segmentation_pipeline.core.synthetic import (  # noqa: E402
    SyntheticSettings,
    events_for_day,
    merges_for_day,
    population,
)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="population size")
    parser.add_argument("--days", type=int, default=30, help="number of consecutive days to generate")
    parser.add_argument(
        "--first-day",
        type=date.fromisoformat,
        default=date(2026, 1, 1),
        help="first day generated; a year into the horizon, when most customers have joined",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synthetic.json"))
    return parser.parse_args()


def main() -> None:
    arguments = _arguments()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    settings = SyntheticSettings(seed=arguments.seed, n_customers=arguments.customers)
    days = [arguments.first_day + timedelta(days=offset) for offset in range(arguments.days)]

    started = time.perf_counter()
    population(settings)
    population_seconds = time.perf_counter() - started

    events, merge_records = 0, 0
    started = time.perf_counter()
    for day in days:
        events += events_for_day(settings, day).num_rows
    event_seconds = time.perf_counter() - started
    for day in days:
        merge_records += merges_for_day(settings, day).num_rows

    result = {
        "customers": arguments.customers,
        "days": arguments.days,
        "first_day": arguments.first_day.isoformat(),
        "events": events,
        "events_per_day": events / arguments.days,
        "merge_records": merge_records,
        "seconds": round(event_seconds, 3),
        "events_per_second": round(events / event_seconds),
        "population_seconds": round(population_seconds, 3),
        "machine": machine() | {"arrow_threads": pa.cpu_count()},
        "command": command(),
    }
    write_result(result, arguments.out)


if __name__ == "__main__":
    main()
