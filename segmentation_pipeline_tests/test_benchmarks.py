"""The scale ladder's command, run small: it must keep working as the assets change.

No timing is asserted (speed goals are measured on demand, not in the tests); what is
checked is that the command runs the production graph and that its record adds up.
"""

import json
import os
import statistics
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from segmentation_pipeline.core.ingestion import EVENTS, ingest
from segmentation_pipeline.core.schemas import DEFAULT_JUNK_IDS
from segmentation_pipeline.core.synthetic import SyntheticSettings
from segmentation_pipeline.core.warehouse import Warehouse
from segmentation_pipeline.defs.jobs import SNAPSHOT_ASSETS

REPOSITORY = Path(__file__).resolve().parents[1]
CUSTOMERS, DAYS, FIRST_DAY = 2000, 20, date(2025, 1, 1)


def _ladder(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "benchmarks/bench_scale.py", *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_scale_ladder_records_a_rung_that_adds_up(tmp_path: Path) -> None:
    scratch, out = tmp_path / "scratch", tmp_path / "results" / "scale.json"
    result = _ladder(
        "--customers", str(CUSTOMERS), "--days", str(DAYS), "--repeats", "2",
        "--scratch", str(scratch), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    (rung,) = record["rungs"]
    assert not scratch.exists(), "the rung's scratch folder is removed afterwards"
    assert record["machine"]["cores"] >= 1 and "dagster" in record["machine"]
    assert record["command"].startswith("python benchmarks/bench_scale.py --customers 2000")

    # The events are what ingesting the same synthetic source with the core call stores.
    warehouse = Warehouse(tmp_path / "independent")
    days = [FIRST_DAY + timedelta(days=offset) for offset in range(DAYS)]
    summary = ingest(warehouse, EVENTS, days, SyntheticSettings(n_customers=CUSTOMERS), DEFAULT_JUNK_IDS)
    assert rung["events"] == summary.valid_rows > 0
    assert (rung["customers"], rung["days"]) == (CUSTOMERS, DAYS)

    ingestion, snapshot = rung["ingestion"], rung["snapshot"]
    assert ingestion["raw_events_per_second"] == round(rung["events"] / ingestion["run_seconds"]["raw_events"])
    assert ingestion["reference_seconds"] > 0
    # CPU seconds of the run's threads: some, and at most both cores' worth of its wall time (and a margin).
    for name in ("raw_events", "id_history"):
        assert 0 < ingestion["run_cpu_seconds"][name] <= os.cpu_count() * ingestion["run_seconds"][name] + 1
    assert ingestion["load_average"] >= 0
    # Two runs: the reported one is the lower middle, and each has the machine's speed beside it.
    assert len(snapshot["runs_seconds"]) == len(snapshot["reference_seconds"]) == 2
    assert len(snapshot["runs_cpu_seconds"]) == len(snapshot["load_averages"]) == 2
    assert all(0 < cpu <= os.cpu_count() * run + 1 for cpu, run in zip(snapshot["runs_cpu_seconds"], snapshot["runs_seconds"]))
    assert snapshot["seconds"] == min(snapshot["runs_seconds"]) == statistics.median_low(snapshot["runs_seconds"])
    assert list(snapshot["asset_seconds"]) == [asset.key.to_user_string() for asset in SNAPSHOT_ASSETS]
    assert sum(snapshot["asset_seconds"].values()) <= snapshot["seconds"] + 0.05 * len(SNAPSHOT_ASSETS)
    assert snapshot["customers_per_second"] == round(CUSTOMERS / snapshot["seconds"])
    assert snapshot["milliseconds_per_1000_customers"] == round(1e6 * snapshot["seconds"] / CUSTOMERS, 1)
    assert 0 < rung["profiled_customers"] <= CUSTOMERS and snapshot["k"] >= 2


def test_the_ladder_will_not_empty_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("someone's file")
    result = _ladder("--customers", "100", "--days", "2", "--scratch", str(tmp_path), "--out", str(tmp_path / "o.json"))
    assert result.returncode != 0
    assert "is not empty and is not a benchmark scratch folder" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "someone's file"


def test_the_ladder_refuses_zero_repeats(tmp_path: Path) -> None:
    result = _ladder("--customers", "100", "--repeats", "0", "--scratch", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "--repeats: must be at least 1, got 0" in result.stderr


def test_the_file_history_benchmark_times_the_demos_ingestion_on_both_instances(tmp_path: Path) -> None:
    """Ten days of the shipped CDNOW sample, once on each instance: both store the same events."""
    scratch, out = tmp_path / "scratch", tmp_path / "file_history.json"
    result = subprocess.run(
        [
            sys.executable, "benchmarks/bench_file_history.py", "--events-csv", "data/samples/cdnow_transactions.csv",
            "--last-day", "1997-01-10", "--repeats", "1", "--scratch", str(scratch), "--out", str(out),
        ],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert not scratch.exists(), "the scratch folder is removed afterwards"
    assert (record["first_day"], record["last_day"], record["days"]) == ("1997-01-01", "1997-01-10", 10)
    sample = (REPOSITORY / "data" / "samples" / "cdnow_transactions.csv").read_text().splitlines()[1:]
    assert record["rows"] == sum(1 for line in sample if line.split(",")[1] <= "1997-01-10") > 0
    repository, default = record["instances"]["repository"], record["instances"]["dagster_default"]
    assert (repository["instance"], default["instance"]) == ("FastBackfillInstance", "DagsterInstance")
    assert repository["stored_events_by_kind"] == default["stored_events_by_kind"]
    kinds = repository["stored_events_by_kind"]
    assert kinds["ASSET_MATERIALIZATION"] == kinds["ASSET_MATERIALIZATION_PLANNED"] == 2 * 10
    for timed in (repository, default):
        assert timed["run_seconds"] == timed["runs_seconds"][0] <= timed["process_seconds"]
        assert len(timed["reference_seconds"]) == 1
