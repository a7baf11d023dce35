"""The chunked ingestion loop: storage per day, undated rows once, stale rejects removed."""

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core.errors import DataIntegrityError, DataValidationError
from segmentation_pipeline.core.incoming import retract_file
from segmentation_pipeline.core.ingestion import (
    EVENTS,
    VALIDATED_ROW_BYTES,
    FileSourceSettings,
    _next_chunk,
    chunk_row_budget,
    ingest,
    ingest_days,
)
from segmentation_pipeline.core.profiles import ProfileSettings, build_profiles
from segmentation_pipeline.core.schemas import (
    DEFAULT_JUNK_IDS,
    MERGE_MAP,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
    UNASSIGNED_EVENTS,
    TableSpec,
)
from segmentation_pipeline.core.settings import Settings
from segmentation_pipeline.core.synthetic import SyntheticSettings
from segmentation_pipeline.core.warehouse import Warehouse, WrittenPartition

FIRST = date(2025, 1, 1)


def test_a_many_day_file_over_several_chunks(warehouse: Warehouse, tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    export = incoming / "export.csv"
    export.write_text(
        "customer_id,event_type,timestamp\n"
        "c1,page_view,2025-01-01T10:00:00Z\n"
        "c2,page_view,2025-02-15T10:00:00Z\n"
        "c3,page_view,2025-03-31T10:00:00Z\n"
        "c4,page_view,sometime\n"
        "c5,page_view,2025-06-01T10:00:00Z\n"
    )
    source = FileSourceSettings(incoming_dir=incoming, events_path="export.csv")
    days = [FIRST + timedelta(days=offset) for offset in range(90)]
    summary = ingest(warehouse, EVENTS, days, source, (), chunk_days=31)

    assert summary.valid_rows == 3
    assert summary.unassigned_rows == 1  # read by three chunks, counted once
    assert summary.quarantine_reasons == {"unparsable_timestamp": 1}
    assert dict(summary.outside_run) == {date(2025, 6, 1): 1}
    assert len(summary.days_without_input) == 87
    assert warehouse.partition_days(RAW_EVENTS) == days
    assert warehouse.read_partition(RAW_EVENTS, date(2025, 2, 15)).column("customer_id").to_pylist() == ["c2"]
    assert summary.unassigned_path is not None and summary.unassigned_path.exists()
    assert summary.unassigned_path.parent == warehouse.table_dir(UNASSIGNED_EVENTS)

    export.write_text(export.read_text().replace("c4,page_view,sometime\n", ""))
    fixed = ingest(warehouse, EVENTS, days, source, (), chunk_days=31)
    assert fixed.unassigned_rows == 0 and fixed.unassigned_path is None
    assert list(warehouse.table_dir(UNASSIGNED_EVENTS).glob("*.parquet")) == []


def test_a_missing_incoming_folder_or_an_empty_pattern_is_an_error(warehouse: Warehouse, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match=r"incoming folder .*nowhere does not exist"):
        ingest(warehouse, EVENTS, [FIRST], FileSourceSettings(incoming_dir=tmp_path / "nowhere"), ())
    with pytest.raises(DataValidationError, match=r"no .csv or .parquet file matches 'exports/\*.csv'"):
        ingest(warehouse, EVENTS, [FIRST], FileSourceSettings(incoming_dir=tmp_path, events_path="exports/*.csv"), ())
    assert not warehouse.partition_path(RAW_EVENTS, FIRST).exists()


def test_the_shipped_transaction_log(warehouse: Warehouse) -> None:
    config = Settings.from_env({"SEGMENTATION_SOURCE_CONFIG": "data/samples/transactions.json"}).source_config
    source = FileSourceSettings(
        incoming_dir=Path(config["incoming_dir"]),
        events_path=config["events_path"],
        event_columns=config["event_columns"],
    )
    summary = ingest(warehouse, EVENTS, [FIRST, FIRST + timedelta(days=1)], source, ())
    assert summary.rows_per_day == {FIRST: 2, FIRST + timedelta(days=1): 1}
    assert dict(summary.quarantine_reasons) == {"unparsable_amount": 1}
    stored = warehouse.read_partition(RAW_EVENTS, FIRST)
    assert stored.column("event_type").to_pylist() == ["purchase", "purchase"]
    assert sorted(stored.column("amount").to_pylist()) == [12.5, 99.0]


def test_chunks_store_what_one_validation_of_all_days_gives(warehouse: Warehouse) -> None:
    # Chunks are generated, validated and written concurrently; the result must not depend on that.
    source = SyntheticSettings(n_customers=3000, bad_row_rate=0.1)
    days = [FIRST + timedelta(days=offset) for offset in range(8)]
    summary = ingest(warehouse, EVENTS, days, source, DEFAULT_JUNK_IDS, chunk_days=3)
    with warehouse.connect() as con:
        whole, _ = ingest_days(con, EVENTS, days, source, DEFAULT_JUNK_IDS)
    assert [partition.day for partition in summary.written] == days
    assert summary.quarantined_rows == whole.quarantined_rows > 0
    assert summary.quarantine_reasons == whole.quarantine_reasons()
    for day in whole.days:
        assert warehouse.read_partition(RAW_EVENTS, day.day).equals(day.valid)
        assert warehouse.read_partition(QUARANTINE_EVENTS, day.day).equals(day.quarantined)


def test_a_failed_write_stops_the_run(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    days = [FIRST + timedelta(days=offset) for offset in range(5)]
    write_partition = warehouse.write_partition

    def full_disk_at_the_fourth_days_rejects(
        spec: TableSpec, day: date, table: pa.Table, metadata: dict[str, str] | None = None
    ) -> WrittenPartition:
        if spec is QUARANTINE_EVENTS and day == days[3]:
            raise OSError("No space left on device")
        return write_partition(spec, day, table, metadata)

    monkeypatch.setattr(warehouse, "write_partition", full_disk_at_the_fourth_days_rejects)
    with pytest.raises(OSError, match="No space left"):
        ingest(warehouse, EVENTS, days, SyntheticSettings(n_customers=100), (), chunk_days=2)
    assert days[3] not in warehouse.partition_days(QUARANTINE_EVENTS)
    # Its valid rows are written after its quarantine, and so were not written either.
    assert days[3] not in warehouse.partition_days(RAW_EVENTS)


def shop_file(path: Path, customers: range) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "customer_id,event_type,timestamp\n" + "".join(f"c{n},page_view,2025-01-02T10:00:00Z\n" for n in customers)
    )
    return path


def test_a_day_keeps_the_rows_of_files_archived_after_ingestion(warehouse: Warehouse, tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    folder = incoming / "events" / "date=2025-01-02"
    shop_a = shop_file(folder / "shop_a.csv", range(401))
    shop_b = shop_file(folder / "shop_b.csv", range(1000, 1302))
    source = FileSourceSettings(incoming_dir=incoming)
    day = date(2025, 1, 2)

    def stored() -> int:
        ingest(warehouse, EVENTS, [day], source, ())
        return warehouse.read_partition(RAW_EVENTS, day).num_rows

    assert stored() == 703
    archive = tmp_path / "archive"
    archive.mkdir()
    shop_a.rename(archive / "shop_a.csv")  # archived one file at a time, as a retention job does
    assert stored() == 703
    shop_b.rename(archive / "shop_b.csv")
    assert stored() == 703
    # A file replaced under the same name is ingested with its new content.
    shop_file(folder / "shop_b.csv", range(1000, 1100))
    assert stored() == 501
    # Retracting a file is explicit, and refused while the file is still in the incoming folder.
    with pytest.raises(DataValidationError, match=r"shop_b.csv is still in the incoming folder"):
        retract_file(incoming, warehouse.kept_input_dir, EVENTS, day, "shop_b.csv")
    with pytest.raises(
        DataValidationError, match=r"no file 'shop_c.csv' was ingested .*\['shop_a.csv', 'shop_b.csv'\]"
    ):
        retract_file(incoming, warehouse.kept_input_dir, EVENTS, day, "shop_c.csv")
    retract_file(incoming, warehouse.kept_input_dir, EVENTS, day, "shop_a.csv")
    assert stored() == 100
    assert sorted(p.name for p in (warehouse.kept_input_dir / "events" / "date=2025-01-02").iterdir()) == ["shop_b.csv"]


def test_a_kept_copy_is_its_file_at_ingestion_even_when_the_original_is_rewritten_in_a_new_file(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    shop = shop_file(incoming / "events" / "date=2025-01-02" / "shop.csv", range(3))
    ingest(warehouse, EVENTS, [date(2025, 1, 2)], FileSourceSettings(incoming_dir=incoming), ())
    # Writers that replace a file write a new one and rename it over the old: the kept copy is unchanged.
    replacement = shop_file(incoming / "shop.csv.new", range(7))
    replacement.replace(shop)
    kept = warehouse.kept_input_dir / "events" / "date=2025-01-02" / "shop.csv"
    assert kept.read_text().count("\n") == 4
    shop.unlink()
    ingest(warehouse, EVENTS, [date(2025, 1, 2)], FileSourceSettings(incoming_dir=incoming), ())
    assert warehouse.read_partition(RAW_EVENTS, date(2025, 1, 2)).num_rows == 3


def test_a_reader_tells_a_day_whose_valid_rows_and_quarantine_were_not_written_together(
    warehouse: Warehouse,
) -> None:
    """The states a run killed between a day's two writes leaves: its quarantine rewritten and its valid
    rows not (a re-run of the day), or its quarantine stored and no valid rows (its first run)."""
    days = [FIRST + timedelta(days=offset) for offset in range(4)]
    source = SyntheticSettings(n_customers=3000, bad_row_rate=0.1)
    ingest(warehouse, EVENTS, days[:3], source, ())
    assert warehouse.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, days) == {}
    recorded = pq.read_schema(warehouse.partition_path(RAW_EVENTS, days[1])).metadata
    rejects = warehouse.read_partition(QUARANTINE_EVENTS, days[1])
    assert rejects.num_rows > 0 and recorded[b"segmentation.rejects_rows"] == str(rejects.num_rows).encode()
    # A re-run of the second day stopped after its quarantine; the fourth day's first run likewise.
    warehouse.write_partition(QUARANTINE_EVENTS, days[1], rejects.slice(1))
    warehouse.write_partition(QUARANTINE_EVENTS, days[3], rejects.slice(0, 2))
    assert warehouse.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, days) == {
        days[1]: f"quarantine_raw_events is not the one written with raw_events ({rejects.num_rows} rows)",
        days[3]: "quarantine_raw_events is stored but raw_events is not",
    }
    warehouse.partition_path(QUARANTINE_EVENTS, days[2]).unlink()
    assert (
        "quarantine_raw_events rows written with raw_events are missing"
        in (warehouse.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, [days[2]])[days[2]])
    )
    # The profiles of the window refuse the incomplete days, naming them.
    identity = pa.table({"old_id": ["x"], "canonical_id": ["x"], "component_size": [1], "chain_depth": [0]})
    warehouse.write_partition(
        MERGE_MAP, days[3], identity.append_column("in_cycle", [[False]]).append_column("is_junk", [[False]])
    )
    with pytest.raises(DataIntegrityError, match=r"2 days of raw_events are incomplete .*2025-01-02: .*2025-01-03: "):
        build_profiles(warehouse, days[3], ProfileSettings(lookback_days=4))
    # Running the days again makes them whole; valid rows stored without a record are taken as they are.
    ingest(warehouse, EVENTS, days, source, ())
    assert warehouse.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, days) == {}
    pq.write_table(warehouse.read_partition(RAW_EVENTS, days[0]), warehouse.partition_path(RAW_EVENTS, days[0]))
    assert warehouse.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, days) == {}
    assert build_profiles(warehouse, days[3], ProfileSettings(lookback_days=4)).table.num_rows > 0


def test_chunks_sized_by_rows_store_the_same_days_as_chunks_of_a_month(tmp_path: Path) -> None:
    """A large customer base is validated a few days at a time (chunk_rows), a small one a month at a
    time: what is stored is the same either way, byte for byte."""
    source = SyntheticSettings(n_customers=2_000, start_date=FIRST)
    days = [FIRST + timedelta(days=offset) for offset in range(12)]
    by_month, by_rows = Warehouse(tmp_path / "month"), Warehouse(tmp_path / "rows")
    monthly = ingest(by_month, EVENTS, days, source, (), chunk_rows=10**9)
    a_day = min(monthly.rows_per_day.values())
    chunked = ingest(by_rows, EVENTS, days, source, (), chunk_rows=2 * a_day)

    assert chunked.rows_per_day == monthly.rows_per_day and monthly.valid_rows > 0
    assert chunked.quarantined_per_day == monthly.quarantined_per_day
    for table in (RAW_EVENTS, QUARANTINE_EVENTS):
        for day in days:
            assert by_rows.partition_path(table, day).read_bytes() == by_month.partition_path(table, day).read_bytes()


def test_a_chunk_keeps_within_its_row_budget_and_holds_a_day_at_least() -> None:
    source = SyntheticSettings(n_customers=2_000, start_date=FIRST)
    days = [FIRST + timedelta(days=offset) for offset in range(20)]
    one_day = _next_chunk(EVENTS, source, days, 31, 1)
    assert one_day[0] == [FIRST] and list(one_day[1]) == [FIRST]
    rows_per_day = one_day[1][FIRST].num_rows
    chunk, tables = _next_chunk(EVENTS, source, days, 31, 5 * rows_per_day)
    assert 3 <= len(chunk) <= 5 and chunk == days[: len(chunk)]
    assert sum(table.num_rows for table in tables.values()) <= 5.5 * rows_per_day
    assert _next_chunk(EVENTS, source, days, 7, 10**9)[0] == days[:7]
    files = FileSourceSettings(incoming_dir=Path("unused"))
    assert _next_chunk(EVENTS, files, days, 7, 1) == (days[:7], None)


def test_the_row_budget_follows_duckdbs_memory_limit() -> None:
    assert chunk_row_budget(3 * 1024**3) == 3 * 1024**3 // VALIDATED_ROW_BYTES
    assert chunk_row_budget(8_000_000_000) == 4 * chunk_row_budget(2_000_000_000) == 4_000_000
    assert chunk_row_budget(1) == 1
