"""The report stage on a stored snapshot: each chart and the printable PDF, drawn one after another.

    python benchmarks/bench_report.py --data-dir /tmp/scale-100k --as-of 2025-06-29 --out benchmarks/results/report.json

Reads the snapshot of `--as-of` from a data folder the pipeline has built (for
instance the scratch folder of `bench_scale.py --phase ingest` then `--phase
snapshot`), gathers the report and draws every chart and the PDF in this
process, `--repeats` times; reports the CPU seconds of each (the median run): on
a shared machine CPU time moves less than wall time. Then the whole publication
(charts half in a forked process, as the asset does) is timed by the wall clock.
Nothing is written into the data folder: the report goes to a scratch folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, reference_seconds, write_result  # noqa: E402


def run(data_dir: Path, as_of: date, scratch: Path) -> dict[str, float]:
    from segmentation_pipeline.core.reporting import charts
    from segmentation_pipeline.core.reporting.document import RunSettings, gather_report
    from segmentation_pipeline.core.warehouse import Warehouse

    try:
        from segmentation_pipeline.core.reporting.summary_pdf import write_summary_pdf
    except ImportError:  # a version of the code from before the PDF, measured for comparison
        write_summary_pdf = None
    seconds: dict[str, float] = {}
    started = time.process_time()
    draft = gather_report(Warehouse(data_dir), as_of, RunSettings(data_dir=str(data_dir), source="synthetic"))
    seconds["gather"] = time.process_time() - started
    files = []
    for name, maker in charts._MAKERS.items():
        started = time.process_time()
        chart = maker(draft.report, draft.feature_sample)
        if chart is not None:
            files.append(chart.save(scratch))
        seconds[name] = time.process_time() - started
    report = draft.report.model_copy(update={"charts": files})
    if write_summary_pdf is not None:
        started = time.process_time()
        write_summary_pdf(report, scratch, scratch / "summary.pdf")
        seconds["summary_pdf"] = time.process_time() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/report.json"))
    arguments = parser.parse_args()
    from segmentation_pipeline.core.reporting.document import RunSettings, gather_report
    from segmentation_pipeline.core.reporting.publish import publish_report
    from segmentation_pipeline.core.warehouse import Warehouse

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
        for index in range(arguments.repeats):
            folder = Path(scratch) / f"run{index}"
            folder.mkdir()
            runs.append(run(arguments.data_dir, arguments.as_of, folder))
        store = Warehouse(arguments.data_dir)
        draft = gather_report(store, arguments.as_of, RunSettings(data_dir=str(arguments.data_dir), source="synthetic"))
        reference = reference_seconds()
        started = time.perf_counter()
        publish_report(draft, Path(scratch) / "published")
        published_seconds = time.perf_counter() - started
    cpu = {name: round(statistics.median(item[name] for item in runs), 3) for name in runs[0]}
    write_result(
        {
            "as_of": arguments.as_of.isoformat(),
            "segments": len(draft.report.segments),
            "customers": draft.report.totals.customers,
            "cpu_seconds": cpu,
            "charts_cpu_seconds": round(sum(v for k, v in cpu.items() if k not in ("gather", "summary_pdf")), 3),
            "publish_wall_seconds": round(published_seconds, 3),
            "reference_seconds": reference,
            "machine": machine(),
            "command": command(),
        },
        arguments.out,
    )


if __name__ == "__main__":
    main()
