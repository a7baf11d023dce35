"""Throughput of the synthetic source: events generated per second on one core.

    python benchmarks/bench_synthetic.py --customers 1000000 --days 30 --out benchmarks/results/synthetic.json

Building the population is a one-off per settings and is reported apart from
the per-day generation it serves, with the memory the population holds (each
customer's personal profiles included) and the peak memory of the process.
Arrow is held to one thread so that the figure is a single-core one. The days
are generated --repeats times (each pass gives identical tables) and the
fastest pass is the figure, the slowest beside it, so that a noisy neighbour on
the machine does not decide the result.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

# Run from a fresh clone without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, peak_rss_bytes, write_result  # noqa: E402
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
    parser.add_argument(
        "--personal-variation",
        type=float,
        default=SyntheticSettings.personal_variation,
        help="how far customers depart from their archetype (0: copies of it)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="passes over the days; the fastest counts")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synthetic.json"))
    return parser.parse_args()


def main() -> None:
    arguments = _arguments()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    settings = SyntheticSettings(
        seed=arguments.seed, n_customers=arguments.customers, personal_variation=arguments.personal_variation
    )
    days = [arguments.first_day + timedelta(days=offset) for offset in range(arguments.days)]

    started = time.perf_counter()
    population_bytes = population(settings).nbytes
    population_seconds = time.perf_counter() - started

    pass_seconds = []
    for _ in range(max(arguments.repeats, 1)):
        events = 0
        started = time.perf_counter()
        # Each day's table is dropped at once, as a pipeline writing day by day would.
        for day in days:
            events += events_for_day(settings, day).num_rows
        pass_seconds.append(time.perf_counter() - started)
    event_seconds = min(pass_seconds)
    sessions = sum(pc.count_distinct(events_for_day(settings, day).column("session_id")).as_py() for day in days)
    merge_records = sum(merges_for_day(settings, day).num_rows for day in days)

    result = {
        "customers": arguments.customers,
        "personal_variation": settings.personal_variation,
        "days": arguments.days,
        "first_day": arguments.first_day.isoformat(),
        "events": events,
        "events_per_day": events / arguments.days,
        "events_per_session": round(events / sessions, 2),
        "merge_records": merge_records,
        "repeats": len(pass_seconds),
        "seconds": round(event_seconds, 3),
        "slowest_seconds": round(max(pass_seconds), 3),
        "events_per_second": round(events / event_seconds),
        "population_seconds": round(population_seconds, 3),
        "population_mb": round(population_bytes / 2**20, 1),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        "machine": machine() | {"arrow_threads": pa.cpu_count()},
        "command": command(),
    }
    write_result(result, arguments.out)


if __name__ == "__main__":
    main()
