"""Atomic Parquet partitions and the DuckDB catalog, on a real temporary folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core.errors import DataIntegrityError, DataValidationError, PipelineError
from segmentation_pipeline.core.schemas import (
    CLUSTERS,
    FEATURE_VALUES,
    ID_HISTORY,
    MERGE_MAP,
    PROFILES,
    RAW_EVENTS,
    ROBUSTNESS,
    SEGMENTS,
    SNAPSHOT_TABLES,
    SYNTHETIC_TRUTH,
    TABLES,
    VIABILITY,
    conform,
)
from segmentation_pipeline.core.warehouse import (
    DUCKDB_MEMORY_FLOOR_BYTES,
    STALE_TEMPORARY_SECONDS,
    Warehouse,
    duckdb_memory_limit_bytes,
    machine_memory_bytes,
    temporary_path,
    utc_clock_sql,
    verify_checksums,
)

from .damage import a_day_of_events, damage_page

DAY = date(2025, 1, 2)


def events(*customers: str, day: date = DAY) -> pa.Table:
    n = len(customers)
    return pa.table(
        {
            "event_id": [f"e{i}-{day}" for i in range(n)],
            "customer_id": list(customers),
            "event_type": ["page_view"] * n,
            "timestamp": pa.array([datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc)] * n),
        }
    )


def test_partition_is_written_with_the_table_schema_and_replaced_on_rerun(warehouse: Warehouse) -> None:
    first = warehouse.write_partition(RAW_EVENTS, DAY, events("a", "b", "c"))
    assert first.path == warehouse.root / "warehouse/raw_events/date=2025-01-02/part-0.parquet"
    assert pq.read_schema(first.path).names == RAW_EVENTS.columns
    warehouse.write_partition(RAW_EVENTS, DAY, events("x"))
    stored = warehouse.read_partition(RAW_EVENTS, DAY)
    assert stored.column("customer_id").to_pylist() == ["x"]
    assert stored.schema == RAW_EVENTS.schema
    assert sorted(p.name for p in first.path.parent.iterdir()) == ["part-0.parquet"]  # no temporary left behind


def test_empty_partition_keeps_its_column_types(warehouse: Warehouse) -> None:
    written = warehouse.write_partition(RAW_EVENTS, DAY, RAW_EVENTS.empty())
    schema = pq.read_schema(written.path)
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("amount").type == pa.float64()
    assert warehouse.read_partition(RAW_EVENTS, DAY).num_rows == 0


def test_a_missing_required_column_is_refused_before_anything_is_written(warehouse: Warehouse) -> None:
    with pytest.raises(DataValidationError, match="missing required column 'event_type'"):
        warehouse.write_partition(RAW_EVENTS, DAY, events("a").drop_columns(["event_type"]))
    assert not warehouse.partition_path(RAW_EVENTS, DAY).exists()


def test_a_failed_write_leaves_the_previous_partition_intact(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse.write_partition(RAW_EVENTS, DAY, events("a", "b"))

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        warehouse.write_partition(RAW_EVENTS, DAY, events("x"))
    monkeypatch.undo()
    assert warehouse.read_partition(RAW_EVENTS, DAY).column("customer_id").to_pylist() == ["a", "b"]
    assert [p.name for p in warehouse.partition_path(RAW_EVENTS, DAY).parent.iterdir()] == ["part-0.parquet"]


def test_the_next_write_of_a_table_removes_what_killed_writes_left_but_not_a_live_writers_file(
    warehouse: Warehouse,
) -> None:
    days = [date(2025, 1, 5), date(2025, 1, 6)]
    for day in days:
        warehouse.write_partition(RAW_EVENTS, day, events("a", day=day))
    left_by_killed_runs = [
        Path(_killed_writer(warehouse.partition_path(RAW_EVENTS, day)).stdout.strip()) for day in days
    ]
    assert all(path.exists() for path in left_by_killed_runs)
    folder = left_by_killed_runs[1].parent
    # Writers of this table still at work: this very process, and another machine's, seconds ago.
    being_written = temporary_path(warehouse.partition_path(RAW_EVENTS, DAY))
    being_written.parent.mkdir(parents=True)
    being_written.write_bytes(b"PAR1 still writing")
    on_another_machine = folder / f".part-0.parquet.other-host-1.{'a' * 32}.tmp"
    on_another_machine.write_bytes(b"PAR1 still writing")
    # ... and one of another machine's untouched for longer than a write ever takes.
    abandoned = folder / f".part-0.parquet.other-host-2.{'b' * 32}.tmp"
    abandoned.write_bytes(b"PAR1 abandoned")
    long_ago = time.time() - STALE_TEMPORARY_SECONDS - 60
    os.utime(abandoned, (long_ago, long_ago))
    # The next write of one of those days, here, clears its own folder.
    warehouse.write_partition(RAW_EVENTS, days[0], events("b", day=days[0]))
    assert not left_by_killed_runs[0].exists()
    assert left_by_killed_runs[1].exists()
    # The next run's first write of the table, of a third day, clears every folder of the table.
    next_run = subprocess.run(
        [sys.executable, "-c", NEXT_RUN, str(warehouse.root)], capture_output=True, text=True, timeout=120
    )
    assert next_run.returncode == 0, next_run.stderr
    assert not left_by_killed_runs[1].exists() and not abandoned.exists()
    assert being_written.exists() and on_another_machine.exists()
    assert warehouse.read_partition(RAW_EVENTS, days[1]).column("customer_id").to_pylist() == ["a"]
    # Other tables' leftovers wait for a write of their own table.
    merge_map_leftover = warehouse.partition_path(MERGE_MAP, DAY).with_name(
        f".part-0.parquet.other-host-3.{'c' * 32}.tmp"
    )
    merge_map_leftover.parent.mkdir(parents=True)
    merge_map_leftover.write_bytes(b"PAR1")
    os.utime(merge_map_leftover, (long_ago, long_ago))
    assert warehouse.remove_leftovers(RAW_EVENTS, force=True) == []
    assert merge_map_leftover.exists()
    warehouse.write_partition(MERGE_MAP, DAY, merge_map_rows(("a", "a")))
    assert not merge_map_leftover.exists()


#: A writer killed half-way through a partition (kill -9): its temporary file stays behind.
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from segmentation_pipeline.core.warehouse import temporary_path
temporary = temporary_path(Path(sys.argv[1]))
temporary.write_bytes(b"PAR1 half a partition")
print(temporary, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

NEXT_RUN = """
import sys
from datetime import date
from segmentation_pipeline.core.schemas import RAW_EVENTS
from segmentation_pipeline.core.warehouse import Warehouse
Warehouse(sys.argv[1]).write_partition(RAW_EVENTS, date(2025, 1, 9), RAW_EVENTS.empty())
"""


def _killed_writer(path: Path) -> subprocess.CompletedProcess:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return killed


def test_a_damaged_page_fails_its_checksum_and_every_reader_names_the_file(warehouse: Warehouse) -> None:
    written = warehouse.write_partition(RAW_EVENTS, DAY, a_day_of_events(DAY))
    damage_page(written.path, "timestamp")
    for read in (warehouse.read_partition, warehouse.read_required):
        with pytest.raises(DataIntegrityError, match=rf"{written.path} is damaged .*CRC checksum verification failed"):
            read(RAW_EVENTS, DAY)
    with pytest.raises(DataIntegrityError, match="CRC checksum"):
        verify_checksums(written.path, ["customer_id", "timestamp"])
    assert verify_checksums(written.path, ["customer_id", "amount"]) == written.path  # the other pages are intact
    # DuckDB verifies no checksum: what it makes of the page (an error, or garbage instants that
    # break the table's rules) fails a stage's read of the day, naming the file.
    with pytest.raises(DataIntegrityError, match=str(written.path)):
        warehouse.check_invariants(RAW_EVENTS, [DAY])
    with pytest.raises(DataIntegrityError, match=str(written.path)):
        warehouse.read_days(RAW_EVENTS, [DAY])


def test_rows_breaking_a_tables_rules_are_named_with_their_file_and_rule(warehouse: Warehouse) -> None:
    """Files not written by the engine (plain pyarrow, no compression): a timestamp of another day,
    a negative and a NaN amount, and a page damaged where DuckDB decodes garbage."""
    days = [date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 4)]
    tables = {day: conform(a_day_of_events(day, 1000), RAW_EVENTS) for day in days}
    timestamps = tables[days[0]]["timestamp"].to_pylist()
    timestamps[10] = datetime(2025, 1, 2, 0, 0, tzinfo=timezone.utc)  # the next day's first instant
    tables[days[0]] = tables[days[0]].set_column(
        3, "timestamp", pa.array(timestamps, RAW_EVENTS.schema.field("timestamp").type)
    )
    amounts = tables[days[1]]["amount"].to_pylist()
    amounts[3], amounts[5] = -5.0, float("nan")
    tables[days[1]] = tables[days[1]].set_column(5, "amount", pa.array(amounts, pa.float64()))
    for day, table in tables.items():
        path = warehouse.partition_path(RAW_EVENTS, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="none", use_dictionary=False, write_page_checksum=True)
    damage_page(warehouse.partition_path(RAW_EVENTS, days[2]), "timestamp", size=64)
    with pytest.raises(DataIntegrityError) as failure:
        warehouse.check_invariants(RAW_EVENTS, days)
    message = str(failure.value)
    path = {day: str(warehouse.partition_path(RAW_EVENTS, day)) for day in days}
    assert f'{path[days[0]]}: 1 rows break the rule "timestamp inside the partition\'s day (UTC)"' in message
    assert f"{path[days[1]]}: 2 rows break the rule 'amount a number not below zero'" in message
    assert f"{path[days[2]]}: " in message and "timestamp inside the partition's day" in message.split(path[days[2]])[1]
    assert path[days[3]] not in message
    assert "Materialize those days of raw_events again" in message
    # The scan a stage made itself counted nothing: nothing is read again.
    warehouse.check_invariants(RAW_EVENTS, days, detected=[0, None, 0])
    warehouse.check_invariants(RAW_EVENTS, [days[3]])


def test_id_history_read_by_a_stage_keeps_its_rules(warehouse: Warehouse) -> None:
    merges = pa.table(
        {
            "old_id": ["a", "b"],
            "new_id": ["b", "b"],
            "merged_at": pa.array([datetime(2025, 1, 2, 9, tzinfo=timezone.utc)] * 2, pa.timestamp("us", tz="UTC")),
        }
    )
    path = warehouse.partition_path(ID_HISTORY, DAY)
    path.parent.mkdir(parents=True)
    pq.write_table(merges, path)
    with pytest.raises(
        DataIntegrityError, match=rf"{path}: 1 rows break the rule 'old_id and new_id present and different'"
    ):
        warehouse.read_days(ID_HISTORY, [DAY])
    warehouse.write_partition(ID_HISTORY, DAY, merges.slice(0, 1))
    assert warehouse.read_days(ID_HISTORY, [DAY]).num_rows == 1


def test_partition_days_lists_what_is_stored(warehouse: Warehouse) -> None:
    for day in (date(2025, 1, 3), date(2025, 1, 1), date(2025, 1, 5)):
        warehouse.write_partition(RAW_EVENTS, day, events("a", day=day))
    assert warehouse.partition_days(RAW_EVENTS) == [date(2025, 1, 1), date(2025, 1, 3), date(2025, 1, 5)]
    assert warehouse.partition_days(RAW_EVENTS, date(2025, 1, 2), date(2025, 1, 5)) == [
        date(2025, 1, 3),
        date(2025, 1, 5),
    ]
    assert warehouse.read_days(RAW_EVENTS, [date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3)]).num_rows == 2


def merge_map_rows(*pairs: tuple[str, str]) -> pa.Table:
    old, canonical = zip(*pairs)
    n = len(pairs)
    return pa.table(
        {
            "old_id": list(old),
            "canonical_id": list(canonical),
            "component_size": [2] * n,
            "chain_depth": [0] * n,
            "in_cycle": [False] * n,
            "is_junk": [False] * n,
        }
    )


def test_catalog_has_a_view_per_table_and_latest_views(warehouse: Warehouse) -> None:
    warehouse.write_partition(RAW_EVENTS, date(2025, 1, 1), events("a", "b", day=date(2025, 1, 1)))
    warehouse.write_partition(RAW_EVENTS, date(2025, 1, 2), events("c", day=date(2025, 1, 2)))
    warehouse.write_partition(MERGE_MAP, date(2025, 1, 1), merge_map_rows(("a", "b"), ("b", "b")))
    warehouse.write_partition(MERGE_MAP, date(2025, 1, 2), merge_map_rows(("a", "c"), ("b", "c"), ("c", "c")))
    path = warehouse.refresh_catalog(TABLES.values())
    with duckdb.connect(str(path), read_only=True) as con:
        views = {row[0] for row in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        # No view over tables without files; the day of the latest complete snapshot always.
        assert views == {"raw_events", "merge_map", "merge_map_latest", "latest_snapshot"}
        assert con.sql("SELECT date, count(*) FROM raw_events GROUP BY ALL ORDER BY 1").fetchall() == [
            (date(2025, 1, 1), 2),
            (date(2025, 1, 2), 1),
        ]
        assert con.sql("SELECT date, old_id, canonical_id FROM merge_map ORDER BY 1, 2").fetchall() == [
            (date(2025, 1, 1), "a", "b"),
            (date(2025, 1, 1), "b", "b"),
            (date(2025, 1, 2), "a", "c"),
            (date(2025, 1, 2), "b", "c"),
            (date(2025, 1, 2), "c", "c"),
        ]
        # No snapshot is complete (no report): nothing is latest.
        assert con.sql("SELECT * FROM latest_snapshot").fetchall() == [(None,)]
        assert con.sql("SELECT count(*) FROM merge_map_latest").fetchall() == [(0,)]


def snapshot_rows(day: date, segment_id: str) -> dict:
    """A day's snapshot tables: one customer in one segment, told apart by the segment's name and the
    robustness band; the tables this test does not look into are empty."""
    tables = {spec: spec.empty() for spec in SNAPSHOT_TABLES}
    tables[MERGE_MAP] = merge_map_rows(("a", "a"))
    tables[CLUSTERS] = pa.table(
        {"canonical_id": ["a"], "segment_id": [segment_id], "distance": [0.5], "shaped_segments": [True]}
    )
    tables[SEGMENTS] = pa.table(
        {
            "segment_id": [segment_id],
            "name": [f"Segment of {day}"],
            "traits": pa.array([[]], pa.list_(pa.string())),
            "size": [1],
            "share": [1.0],
            "total_clv": [10.0],
            "mean_clv": [10.0],
            "centroid": pa.array([[("recency_days", 1.0)]], FEATURE_VALUES),
            "feature_means": pa.array([[("recency_days", 1.0)]], FEATURE_VALUES),
            "is_new": [True],
        }
    )
    tables[ROBUSTNESS] = pa.table(
        {
            "segment_id": [segment_id],
            "time_window_windows": [0],
            "bootstrap_samples": [0],
            "band": [f"band of {day}"],
            "production_ready": [False],
        }
    )
    return tables


def latest_days(catalog: Path) -> dict[str, list[date]]:
    """The days each `_latest` view shows, and the one of `latest_snapshot`."""
    with duckdb.connect(str(catalog), read_only=True) as con:
        views = [spec.name for spec in SNAPSHOT_TABLES]
        days = {
            view: [row[0] for row in con.sql(f"SELECT DISTINCT date FROM {view}_latest").fetchall()] for view in views
        }
        days["latest_snapshot"] = [con.sql("SELECT as_of FROM latest_snapshot").fetchall()[0][0]]
        # What an analyst joins: a segment's definition and its robustness, of one and the same day.
        days["segments joined to robustness"] = [
            row[0]
            for row in con.sql(
                "SELECT DISTINCT s.date FROM segments_latest s JOIN robustness_latest r USING (segment_id)"
            ).fetchall()
        ]
    return days


#: The tables `snapshot_rows` puts a row in, and what an analyst joins.
WITH_ROWS = ("merge_map", "clusters", "segments", "robustness", "segments joined to robustness")


def on(day: date | None) -> dict[str, list]:
    """What `latest_days` reads when `day` is the latest complete snapshot (None: there is none)."""
    views = [spec.name for spec in SNAPSHOT_TABLES] + ["segments joined to robustness"]
    return {view: [day] if day and view in WITH_ROWS else [] for view in views} | {"latest_snapshot": [day]}


def test_every_latest_view_shows_the_newest_complete_snapshot_and_they_move_together(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    first, second = date(2025, 1, 1), date(2025, 1, 2)
    report = tmp_path / "report.json"
    report.write_text('{"as_of": "2025-01-01"}')
    for spec, table in snapshot_rows(first, "S01").items():
        warehouse.write_partition(spec, first, table)
    catalog = warehouse.refresh_catalog(TABLES.values())
    assert latest_days(catalog) == on(None)  # every table of the day, but no report yet
    warehouse.mark_snapshot_complete(first, report, time.time_ns())
    assert latest_days(catalog) == on(first)  # moved without a rebuild of the catalog
    assert warehouse.latest_snapshot() == first
    # The next day's run writes its stages one after the other (or fails half-way): the views
    # stay on the first day, though clusters and segments of the second are stored.
    second_day = snapshot_rows(second, "S02")
    for spec in (MERGE_MAP, PROFILES, CLUSTERS, SEGMENTS):
        warehouse.write_partition(spec, second, second_day[spec])
    catalog = warehouse.refresh_catalog(TABLES.values())
    assert latest_days(catalog) == on(first)
    for spec in SNAPSHOT_TABLES:
        warehouse.write_partition(spec, second, second_day[spec])
    assert latest_days(catalog) == on(first)
    # Its report lands: every view moves to the second day at once.
    started = time.time_ns()
    report.write_text('{"as_of": "2025-01-02"}')
    warehouse.mark_snapshot_complete(second, report, started)
    assert latest_days(catalog) == on(second)
    with duckdb.connect(str(catalog), read_only=True) as con:
        assert con.sql(
            "SELECT s.name, r.band FROM segments_latest s JOIN robustness_latest r USING (segment_id)"
        ).fetchall() == [("Segment of 2025-01-02", "band of 2025-01-02")]
        assert con.sql("SELECT as_of, report_sha256 FROM complete_snapshots ORDER BY 1").fetchall() == [
            (first, hashlib.sha256(b'{"as_of": "2025-01-01"}').hexdigest()),
            (second, hashlib.sha256(b'{"as_of": "2025-01-02"}').hexdigest()),
        ]
    # A stage of the second day run again: the day is incomplete until its report is published again.
    warehouse.write_partition(CLUSTERS, second, second_day[CLUSTERS])
    assert latest_days(catalog) == on(first)
    assert warehouse.latest_snapshot() == first


def test_a_snapshot_is_complete_only_with_every_table_none_written_after_its_report_began(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    report.write_text("{}")
    tables = snapshot_rows(DAY, "S01")
    for spec in SNAPSHOT_TABLES:
        if spec not in (ROBUSTNESS, VIABILITY):
            warehouse.write_partition(spec, DAY, tables[spec])
    with pytest.raises(PipelineError, match=r"the snapshot of 2025-01-02 has no robustness, viability; materialize"):
        warehouse.mark_snapshot_complete(DAY, report, time.time_ns())
    warehouse.write_partition(ROBUSTNESS, DAY, tables[ROBUSTNESS])
    warehouse.write_partition(VIABILITY, DAY, tables[VIABILITY])
    started = time.time_ns()
    time.sleep(0.05)  # beyond the file system clock's tick
    warehouse.write_partition(SEGMENTS, DAY, tables[SEGMENTS])  # a re-run of clusters while the report was made
    with pytest.raises(PipelineError, match=r"segments of 2025-01-02 were written again while the report was made"):
        warehouse.mark_snapshot_complete(DAY, report, started)
    assert warehouse.latest_snapshot() is None
    warehouse.mark_snapshot_complete(DAY, report, time.time_ns())
    assert warehouse.latest_snapshot() == DAY


def test_catalog_refresh_never_waits_for_an_open_reader(warehouse: Warehouse) -> None:
    warehouse.write_partition(RAW_EVENTS, DAY, events("a"))
    path = warehouse.refresh_catalog(TABLES.values())
    reader = duckdb.connect(str(path), read_only=True)
    try:
        warehouse.write_partition(MERGE_MAP, DAY, merge_map_rows(("a", "a")))
        warehouse.refresh_catalog(TABLES.values())
        assert reader.execute("SELECT count(*) FROM raw_events").fetchone() == (1,)
    finally:
        reader.close()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM merge_map").fetchone() == (1,)
    assert sorted(p.name for p in Path(warehouse.root).iterdir() if p.is_file()) == ["segmentation.duckdb"]


def test_unpartitioned_tables_get_a_view_too(warehouse: Warehouse) -> None:
    truth = pa.table(
        {
            "customer_id": ["G1", "C1"],
            "person_id": ["C1", "C1"],
            "archetype": ["bargain_hunter"] * 2,
            "join_date": pa.array([date(2025, 1, 1)] * 2, pa.date32()),
        }
    )
    path = warehouse.write_file(SYNTHETIC_TRUTH, "ground_truth.parquet", truth)
    assert path == warehouse.root / "warehouse/synthetic_truth/ground_truth.parquet"
    with duckdb.connect(str(warehouse.refresh_catalog(TABLES.values())), read_only=True) as con:
        assert con.execute("SELECT customer_id, person_id FROM synthetic_truth ORDER BY 1").fetchall() == [
            ("C1", "C1"),
            ("G1", "C1"),
        ]


def test_a_data_folder_with_glob_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"contains one of"):
        Warehouse(tmp_path / "data[prod]")


def test_an_unpartitioned_table_reads_all_its_files(warehouse: Warehouse) -> None:
    assert warehouse.read_unpartitioned(SYNTHETIC_TRUTH).num_rows == 0
    rows = {
        "customer_id": ["a", "b"],
        "person_id": ["p1", "p2"],
        "archetype": ["x", "y"],
        "join_date": [date(2025, 1, 1), date(2025, 1, 2)],
    }
    warehouse.write_file(SYNTHETIC_TRUTH, "one.parquet", pa.table(rows))
    warehouse.write_file(SYNTHETIC_TRUTH, "two.parquet", pa.table({k: v[:1] for k, v in rows.items()}))
    table = warehouse.read_unpartitioned(SYNTHETIC_TRUTH)
    assert table.schema == SYNTHETIC_TRUTH.schema
    assert sorted(table["customer_id"].to_pylist()) == ["a", "a", "b"]
    with pytest.raises(PipelineError, match="partitioned by day"):
        warehouse.read_unpartitioned(RAW_EVENTS)


def test_the_catalog_is_rebuilt_only_when_a_table_appears(warehouse: Warehouse) -> None:
    warehouse.write_partition(RAW_EVENTS, DAY, events("a"))
    path = warehouse.refresh_catalog(TABLES.values())
    built = path.stat().st_ino
    # A new partition of a table the catalog has: its view's glob shows it without a rebuild.
    warehouse.write_partition(RAW_EVENTS, DAY + timedelta(days=1), events("b", "c", day=DAY + timedelta(days=1)))
    assert warehouse.refresh_catalog(TABLES.values()).stat().st_ino == built
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_events").fetchone() == (3,)
        assert con.execute("SELECT table_name, files FROM catalog_tables").fetchall() == [
            ("raw_events", warehouse.table_glob(RAW_EVENTS))
        ]
    # A table's first file: rebuilt, with its view.
    warehouse.write_partition(MERGE_MAP, DAY, merge_map_rows(("a", "a")))
    assert warehouse.refresh_catalog(TABLES.values()).stat().st_ino != built
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM merge_map").fetchone() == (1,)
    # A catalog that cannot be read (here: not a database) is replaced, not trusted.
    path.write_bytes(b"not a database")
    warehouse.refresh_catalog(TABLES.values())
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_events").fetchone() == (3,)


def test_an_unchanged_catalog_is_not_opened_again_but_a_replaced_one_is(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse.write_partition(RAW_EVENTS, DAY, events("a"))
    warehouse.refresh_catalog(TABLES.values())
    path = warehouse.refresh_catalog(TABLES.values())  # reads the new file's fingerprint once
    opened: list[str] = []
    real_connect = duckdb.connect

    def counting_connect(database: str = ":memory:", *args, **kwargs):
        opened.append(str(database))
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counting_connect)
    built = path.stat().st_ino
    for _ in range(3):
        assert warehouse.refresh_catalog(TABLES.values()).stat().st_ino == built
    assert str(path) not in opened
    # Another run put a catalog of other tables in its place: it is read, found wrong and rebuilt.
    other = Warehouse(warehouse.root.parent / "other")
    other.write_partition(MERGE_MAP, DAY, merge_map_rows(("a", "a")))
    shutil.copyfile(other.refresh_catalog(TABLES.values()), path.with_name("copy.duckdb"))
    os.replace(path.with_name("copy.duckdb"), path)
    warehouse.refresh_catalog(TABLES.values())
    assert str(path) in opened
    with real_connect(str(path), read_only=True) as con:
        assert con.execute("SELECT table_name FROM catalog_tables").fetchall() == [("raw_events",)]


@pytest.mark.parametrize("session_zone", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
def test_utc_clock_gives_the_utc_date_hour_and_weekday_of_every_instant(session_zone: str) -> None:
    """The epoch arithmetic agrees with the time-zone library on every instant, whatever the session's zone."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{session_zone}'")
    con.execute(
        """CREATE TABLE instants AS SELECT x FROM (VALUES
            (TIMESTAMPTZ '2025-03-10 00:00:00+00'), (TIMESTAMPTZ '2025-03-10 23:59:59.999999+00'),
            (TIMESTAMPTZ '2025-03-30 01:30:00+00'), (TIMESTAMPTZ '2024-02-29 12:00:00+05:30'),
            (TIMESTAMPTZ '1969-12-31 23:59:59.5+00'), (TIMESTAMPTZ '1900-01-01 06:00:00+00'),
            (TIMESTAMPTZ 'infinity'), (TIMESTAMPTZ '-infinity'), (NULL)) AS t(x)
        UNION ALL SELECT TIMESTAMPTZ '2025-01-01 00:00:00+00' + INTERVAL (i * 37) MINUTE FROM range(20000) AS r(i)"""
    )
    clock = utc_clock_sql("x")
    rows = con.execute(
        f"""SELECT count(*),
                count(*) FILTER (WHERE {clock} IS NOT DISTINCT FROM timezone('UTC', x)),
                count(*) FILTER (WHERE CAST({clock} AS DATE) IS NOT DISTINCT FROM CAST(timezone('UTC', x) AS DATE)),
                count(*) FILTER (WHERE hour({clock}) IS NOT DISTINCT FROM hour(timezone('UTC', x))),
                count(*) FILTER (WHERE isodow({clock}) IS NOT DISTINCT FROM isodow(timezone('UTC', x)))
            FROM instants"""
    ).fetchone()
    assert rows == (20009,) * 5
    # Read back in Python: 23:59:59.999999 UTC is still the 10th, at hour 23, a Monday.
    day, hour, weekday = con.execute(
        f"SELECT CAST({clock} AS DATE), hour({clock}), isodow({clock}) FROM instants "
        "WHERE x = TIMESTAMPTZ '2025-03-10 23:59:59.999999+00'"
    ).fetchone()
    assert (day, hour, weekday) == (date(2025, 3, 10), 23, 1)


def test_columns_that_seldom_repeat_are_stored_without_a_dictionary(tmp_path: Path) -> None:
    store = Warehouse(tmp_path)
    table = events(*[f"c{i % 3}" for i in range(50)]).append_column(
        "session_id", pa.array([f"s{i}" for i in range(50)])
    )
    written = store.write_partition(RAW_EVENTS, DAY, table)
    row_group = pq.ParquetFile(written.path).metadata.row_group(0)
    dictionary = {
        row_group.column(i).path_in_schema: row_group.column(i).has_dictionary_page
        for i in range(row_group.num_columns)
    }
    assert RAW_EVENTS.plain_columns == ("event_id", "timestamp", "session_id")
    assert not any(dictionary[name] for name in RAW_EVENTS.plain_columns)
    assert dictionary["customer_id"] and dictionary["event_type"]
    # The values read back are the ones written.
    back = pq.read_table(written.path)
    for name in table.column_names:
        assert back.column(name).to_pylist() == table.column(name).to_pylist(), name


def test_connections_share_the_process_database_but_not_their_session(warehouse: Warehouse, tmp_path: Path) -> None:
    first, second = warehouse.connect(), warehouse.connect()
    # One database: a table of its catalog is seen by both (the pipeline only makes temporary ones).
    first.execute("CREATE TABLE shared AS SELECT 7 AS x")
    assert second.execute("SELECT x FROM shared").fetchone()[0] == 7
    second.execute("DROP TABLE shared")
    first.execute("CREATE TEMP TABLE mine AS SELECT 1 AS x")
    first.register("registered", pa.table({"x": [1, 2]}))
    with pytest.raises(duckdb.CatalogException):
        second.execute("SELECT * FROM mine")
    with pytest.raises(duckdb.CatalogException):
        second.execute("SELECT * FROM registered")
    second.execute("SET TimeZone = 'America/New_York'")
    for con in (first, second, warehouse.connect()):
        assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == str(warehouse.scratch_dir)
    # A session setting stays in its session (ingestion sets the zone it reads naive times in).
    assert first.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"
    # Another data folder gets a database spilling into its own scratch space; connections to the
    # one before keep working until they are closed.
    other = Warehouse(tmp_path / "other")
    assert other.connect().execute("SELECT current_setting('temp_directory')").fetchone()[0] == str(other.scratch_dir)
    assert first.execute("SELECT sum(x) FROM registered").fetchone()[0] == 3
    first.close()
    second.close()


def test_a_forked_process_opens_a_database_of_its_own(warehouse: Warehouse) -> None:
    import multiprocessing

    warehouse.connect().execute("SELECT 1").fetchone()  # the parent's database exists, with its threads
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)

    def child() -> None:
        with warehouse.connect() as con:
            sending.send(con.execute("SELECT sum(range) FROM range(1000000)").fetchone()[0])

    process = context.Process(target=child)
    process.start()
    sending.close()  # the child's end only: should it die, the wait below ends at once
    try:
        assert receiving.poll(60), "the forked process got no answer from DuckDB"
        assert receiving.recv() == 499999500000
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    assert process.exitcode == 0


def test_duckdbs_memory_limit_is_a_share_of_the_machine() -> None:
    gib = 1024**3
    assert duckdb_memory_limit_bytes(24 * gib) == 3 * gib
    assert duckdb_memory_limit_bytes(64 * gib) == 8 * gib
    assert duckdb_memory_limit_bytes(8 * gib) == 1 * gib
    assert duckdb_memory_limit_bytes(1 * gib) == DUCKDB_MEMORY_FLOOR_BYTES
    assert 0 < machine_memory_bytes() <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_connections_take_the_limit_of_this_machine(warehouse: Warehouse) -> None:
    with warehouse.connect() as con:
        (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
    expected_gib = duckdb_memory_limit_bytes() / 1024**3
    # DuckDB shows its limit rounded, e.g. "2.7 GiB".
    value, unit = limit.split()
    assert unit in ("GiB", "MiB")
    shown_gib = float(value) / (1024 if unit == "MiB" else 1)
    assert abs(shown_gib - expected_gib) < 0.06
