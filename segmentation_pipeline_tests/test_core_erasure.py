"""Erasure and the suppression list on real Parquet, CSV and DuckDB, with hand-made customers."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core import erasure
from segmentation_pipeline.core import warehouse as warehouse_module
from segmentation_pipeline.core.erasure import customers_of, erase, read_customer_ids
from segmentation_pipeline.core.errors import DataValidationError, ErasureIncompleteError
from segmentation_pipeline.core.identity import ResolverSettings
from segmentation_pipeline.core.ingestion import FileSourceSettings
from segmentation_pipeline.core.schemas import (
    ID_HISTORY,
    MERGE_MAP,
    PROFILES,
    QUARANTINE_EVENTS,
    QUARANTINE_ID_HISTORY,
    RAW_EVENTS,
)
from segmentation_pipeline.core.sources import EVENTS, MERGES, Ingest
from segmentation_pipeline.core.suppression import Suppression, add_to_list, ensure_salt, salted_sha256
from segmentation_pipeline.core.warehouse import Warehouse

DAY = date(2025, 3, 10)


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc)


def merges(*links: tuple[str, str]) -> pa.Table:
    return pa.table(
        {"old_id": [old for old, _ in links], "new_id": [new for _, new in links], "merged_at": [at(DAY)] * len(links)}
    )


def events(*customers: str, day: date = DAY) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"e{index}" for index in range(len(customers))],
            "customer_id": list(customers),
            "event_type": ["purchase"] * len(customers),
            "timestamp": [at(day)] * len(customers),
            "amount": [10.0] * len(customers),
        }
    )


def rejected(*raw_ids: str) -> pa.Table:
    return pa.table(
        {
            "reason": ["negative_amount"] * len(raw_ids),
            "source": ["shop.csv"] * len(raw_ids),
            "source_row": list(range(1, len(raw_ids) + 1)),
            "customer_id": list(raw_ids),
            "amount": ["-5"] * len(raw_ids),
        }
    )


def stored_ids(store: Warehouse, spec, column: str) -> list[str]:
    return sorted(
        value for day in store.partition_days(spec) for value in store.read_partition(spec, day)[column].to_pylist()
    )


def test_a_file_of_ids_is_one_per_line_or_a_customer_id_column(tmp_path: Path) -> None:
    lines = tmp_path / "ids.txt"
    lines.write_text("C1\n  C2 \n\n# asked on 2025-03-01\nC1\n")
    assert read_customer_ids(lines) == ["C1", "C2"]
    table = tmp_path / "ids.csv"
    table.write_text('\ufeffticket,Customer_ID\n17,C3\n18,"C,4"\n')
    assert read_customer_ids(table) == ["C3", "C,4"]
    other = tmp_path / "other.csv"
    other.write_text("ticket,email\n17,a@b\n")
    with pytest.raises(DataValidationError, match="without a customer_id column"):
        read_customer_ids(other)
    with pytest.raises(DataValidationError, match="not found"):
        read_customer_ids(tmp_path / "missing.txt")


def test_a_customer_is_every_id_merged_with_them_both_ways_but_never_through_a_junk_id(warehouse: Warehouse) -> None:
    # A chain G1 -> A1 -> C1, a junk ID linked to two customers, and C2, whom an earlier day's
    # merge map (resolved from records since retracted) still joins with X2.
    history = merges(("G1", "A1"), ("A1", "C1"), ("unknown", "C1"), ("unknown", "C2"))
    warehouse.write_day(ID_HISTORY, QUARANTINE_ID_HISTORY, DAY, history, QUARANTINE_ID_HISTORY.empty())
    earlier = pa.table(
        {
            "old_id": ["X2", "C2"],
            "canonical_id": ["C2", "C2"],
            "component_size": [2, 2],
            "chain_depth": [1, 0],
            "in_cycle": [False, False],
            "is_junk": [False, False],
        }
    )
    warehouse.write_partition(MERGE_MAP, date(2025, 3, 1), earlier)
    with warehouse.connect() as con:
        found = customers_of(warehouse, con, ["A1", "C2", "C9"], ResolverSettings())
    assert found == {"A1": {"G1", "A1", "C1"}, "C2": {"C2", "X2"}, "C9": {"C9"}}


def test_the_suppression_list_holds_salted_hashes_that_duckdb_and_python_compute_alike(warehouse: Warehouse) -> None:
    salt = ensure_salt(warehouse)
    assert ensure_salt(warehouse) == salt and len(salt) == 64
    assert os.stat(warehouse.erasure_dir / "salt").st_mode & 0o777 == 0o600
    assert add_to_list(warehouse, salt, ["C1", "C2"]) == 2
    listed = warehouse.erasure_dir / "suppressed.parquet"
    before = listed.read_bytes()
    assert add_to_list(warehouse, salt, ["C2"]) == 0 and listed.read_bytes() == before  # not written again
    suppression = Suppression.load(warehouse)
    assert suppression.hashes == {hashlib.sha256((salt + value).encode()).hexdigest() for value in ("C1", "C2")}
    assert b"C1" not in before and b"C2" not in before
    with duckdb.connect() as con:
        (in_sql,) = con.execute(f"SELECT {suppression.hash_sql(repr('C1'))}").fetchone()
    assert in_sql == salted_sha256(salt, "C1")
    kept, dropped = suppression.drop_rows(merges(("C1", "C5"), ("C6", "C7"), ("C8", "C2")), ["old_id", "new_id"])
    assert (kept["old_id"].to_pylist(), dropped) == (["C6"], 2)


def test_ingestion_drops_every_row_of_a_suppressed_customer_without_quarantining_it(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    salt = ensure_salt(warehouse)
    add_to_list(warehouse, salt, ["C1", "G1"])
    suppression = Suppression.load(warehouse)
    shop = tmp_path / "shop.csv"
    shop.write_text(
        "customer_id,event_type,timestamp,amount\n"
        "C1,purchase,2025-03-10T09:00:00Z,20\n"
        " C1 ,page_view,2025-03-10T09:01:00Z,\n"  # spaces around an ID are not part of it
        "C1,purchase,2025-03-10T09:02:00Z,-5\n"  # a bad row: not quarantined either
        "C2,purchase,2025-03-10T09:03:00Z,-5\n"
        "C3,page_view,2025-03-10T09:04:00Z,\n"
    )
    crm = tmp_path / "crm.csv"
    crm.write_text(
        "old_id,new_id,merged_at\nG1,C4,2025-03-10T08:00:00Z\nG2,C1,2025-03-10T08:00:00Z\nG3,C3,2025-03-10T08:00:00Z\n"
    )
    with duckdb.connect() as con:
        run = Ingest(con, EVENTS, [DAY], suppression=suppression)
        run.add_file(shop, {}, DAY)
        batch = run.collect()
        merge_run = Ingest(con, MERGES, [DAY], suppression=suppression)
        merge_run.add_file(crm, {}, DAY)
        merge_batch = merge_run.collect()
    (day,) = batch.days
    assert day.valid["customer_id"].to_pylist() == ["C3"]
    assert day.quarantined["customer_id"].to_pylist() == ["C2"]
    assert batch.suppressed_rows == 3
    (merge_day,) = merge_batch.days
    assert merge_day.valid.select(["old_id", "new_id"]).to_pylist() == [{"old_id": "G3", "new_id": "C3"}]
    assert merge_batch.suppressed_rows == 2


def _day_with_a_quarantine(store: Warehouse) -> None:
    store.write_day(RAW_EVENTS, QUARANTINE_EVENTS, DAY, events("C1", "C2", "C1"), rejected("C1 ", "C2", "1.0"))
    store.write_day(
        RAW_EVENTS, QUARANTINE_EVENTS, date(2025, 3, 11), events("C2", day=date(2025, 3, 11)), rejected("C1")
    )
    store.write_partition(PROFILES, DAY, _profiles("C1", "C2"), metadata={"segmentation.window_input": "{}"})


def _profiles(*customers: str) -> pa.Table:
    table = PROFILES.empty()
    return pa.Table.from_pylist(
        [
            {
                "canonical_id": customer,
                "n_ids": 1,
                "window_days": 365,
                "first_event": at(DAY),
                "last_event": at(DAY),
                "clv_method": "heuristic",
                "lifecycle_stage": "new",
                "repeat_buyer": False,
            }
            for customer in customers
        ],
        schema=table.schema,
    )


def test_erasure_rewrites_each_file_without_the_customers_and_keeps_each_days_pair_consistent(
    warehouse: Warehouse,
) -> None:
    _day_with_a_quarantine(warehouse)
    marker = warehouse.partition_path(PROFILES, DAY)
    result = erase(warehouse, ["C1", "1"], None)
    assert stored_ids(warehouse, RAW_EVENTS, "customer_id") == ["C2", "C2"]
    # Raw rejected values match as ingestion would read them: trimmed, a whole float as an integer.
    assert stored_ids(warehouse, QUARANTINE_EVENTS, "customer_id") == ["C2"]
    assert warehouse.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, [DAY, date(2025, 3, 11)]) == {}
    assert warehouse.partition_metadata(PROFILES, DAY)["segmentation.window_input"] == "{}"
    assert stored_ids(warehouse, PROFILES, "canonical_id") == ["C2"] and marker.exists()
    run = result.run
    assert run["status"] == "done"
    assert run["rows_removed"] == {"raw_events": 2, "quarantine_raw_events": 3, "profiles": 1}
    assert (run["ids_requested"], run["ids_found"], run["ids_erased"], run["files_rewritten"]) == (2, 2, 2, 4)
    # Erasing them again finds nothing and writes nothing.
    files = {path: path.read_bytes() for path in warehouse.root.rglob("*") if path.is_file()}
    again = erase(warehouse, ["1", "C1"], None)
    assert again.nothing_to_do
    assert {path: path.read_bytes() for path in warehouse.root.rglob("*") if path.is_file()} == files


def test_a_rewrite_stopped_between_a_days_two_renames_is_completed_by_the_same_erasure(
    warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _day_with_a_quarantine(warehouse)
    ensure_salt(warehouse)
    reference = Warehouse(tmp_path / "reference")
    shutil.copytree(warehouse.root, reference.root)
    erase(reference, ["C1"], None)

    real = warehouse_module.replace_file

    def stopped(source: Path, target: Path, attempts: int = 3) -> None:
        if "quarantine" in str(target):
            raise KeyboardInterrupt("stopped")
        real(source, target, attempts)

    monkeypatch.setattr(warehouse_module, "replace_file", stopped)
    with pytest.raises(KeyboardInterrupt):
        erase(warehouse, ["C1"], None)
    monkeypatch.undo()
    assert warehouse.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, [DAY]) != {}
    (log,) = (warehouse.erasure_dir / "log").glob("*.json")
    assert json.loads(log.read_text())["runs"][-1]["status"] == "in progress"

    completed = erase(warehouse, ["C1"], None)
    assert completed.resumed and completed.run["status"] == "done"
    assert warehouse.incomplete_days(RAW_EVENTS, QUARANTINE_EVENTS, [DAY, date(2025, 3, 11)]) == {}
    tables = sorted(path.relative_to(warehouse.root) for path in warehouse.tables_dir.rglob("*.parquet"))
    assert tables == sorted(path.relative_to(reference.root) for path in reference.tables_dir.rglob("*.parquet"))
    assert [
        name for name in tables if (warehouse.root / name).read_bytes() != (reference.root / name).read_bytes()
    ] == []
    expected = json.loads(next((reference.erasure_dir / "log").glob("*.json")).read_text())["runs"][-1]
    assert completed.run["rows_removed"] == expected["rows_removed"] and completed.run["files"] == expected["files"]


EVENTS_CSV = (
    "\ufeffcustomer_id;event_type;timestamp;product_category\r\n"
    'C1;purchase;2025-03-10T09:00:00Z;"books; music"\r\n'
    'C2;page_view;2025-03-10T09:01:00Z;"a;b"\r\n'
    " C1 ;page_view;2025-03-10T09:02:00Z;toys\r\n"
    "C3;page_view;2025-03-10T09:03:00Z;\r\n"
)


def test_input_files_lose_the_customers_records_and_keep_every_other_byte(warehouse: Warehouse, tmp_path: Path) -> None:
    incoming = warehouse.root / "incoming"
    folder = incoming / "events" / "date=2025-03-10"
    folder.mkdir(parents=True)
    (folder / "shop.csv").write_text(EVENTS_CSV, newline="")
    (folder / "app.csv.gz").write_bytes(
        gzip.compress(b"customer_id,event_type,timestamp\nC1,page_view,2025-03-10\nC4,page_view,2025-03-10\n")
    )
    pq.write_table(
        pa.table({"cust": [1.0, 5.0], "event_type": ["page_view"] * 2, "timestamp": ["2025-03-10"] * 2}),
        folder / "pos.parquet",
    )
    kept = warehouse.kept_input_dir / "events" / "date=2025-03-10"
    kept.mkdir(parents=True)
    for path in folder.iterdir():
        os.link(path, kept / path.name)
    elsewhere = tmp_path / "exports"
    elsewhere.mkdir()
    (elsewhere / "crm.csv").write_text("old_id,new_id,merged_at\nG1,C1,2025-03-10\n")
    source = FileSourceSettings(
        incoming, id_history_path=str(elsewhere / "crm.csv"), event_columns={"cust": "customer_id"}
    )

    result = erase(warehouse, ["C1", "1"], source)

    expected = EVENTS_CSV.replace('C1;purchase;2025-03-10T09:00:00Z;"books; music"\r\n', "").replace(
        " C1 ;page_view;2025-03-10T09:02:00Z;toys\r\n", ""
    )
    assert (folder / "shop.csv").read_bytes() == expected.encode()
    assert (
        gzip.decompress((folder / "app.csv.gz").read_bytes())
        == b"customer_id,event_type,timestamp\nC4,page_view,2025-03-10\n"
    )
    assert pq.read_table(folder / "pos.parquet")["cust"].to_pylist() == [5.0]
    for path in folder.iterdir():
        assert os.path.samefile(path, kept / path.name)  # still one file, not two copies
    assert (elsewhere / "crm.csv").read_text() == "old_id,new_id,merged_at\nG1,C1,2025-03-10\n"  # the source's own
    run = result.run
    assert run["input_files_outside_data_folder"] == [str(elsewhere / "crm.csv")]
    assert run["rows_removed"] == {"input_events": 8}  # 4 rows, in the incoming folder and their kept copies
    # Ingestion reads what is left as it did before.
    with duckdb.connect() as con:
        run_again = Ingest(con, EVENTS, [DAY])
        for path in sorted(folder.iterdir()):
            run_again.add_file(path, source.event_columns, DAY)
        (day,) = run_again.collect().days
    assert sorted(day.valid["customer_id"].to_pylist()) == ["5", "C2", "C3", "C4"]
    assert day.valid.filter(pa.compute.equal(day.valid["customer_id"], "C2"))["product_category"].to_pylist() == ["a;b"]


def test_cached_answers_naming_them_are_removed_and_a_report_naming_one_is_refused(warehouse: Warehouse) -> None:
    warehouse.write_day(RAW_EVENTS, QUARANTINE_EVENTS, DAY, events("C000001", "C000002"), QUARANTINE_EVENTS.empty())
    naming = warehouse.llm_cache_dir / "explanations" / "ab" / "ab12.json"
    other = warehouse.llm_cache_dir / "explanations" / "cd" / "cd34.json"
    for path, text in ((naming, "like customer C000001 who"), (other, "like customer C0000012 who")):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"model": "m", "answer": {"executive_summary": text}}))
    erase(warehouse, ["C000001"], None)
    assert not naming.exists() and other.exists()

    report = warehouse.reports_dir / "date=2025-03-10" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text("Top customer: C000002.\n")
    with pytest.raises(ErasureIncompleteError, match="report"):
        erase(warehouse, ["C000002"], None)
    (log,) = [path for path in (warehouse.erasure_dir / "log").glob("*.json") if "incomplete" in path.read_text()]
    assert json.loads(log.read_text())["runs"][-1]["files_still_holding_them"] == ["reports/date=2025-03-10/report.md"]


def test_the_log_names_no_customer(warehouse: Warehouse) -> None:
    warehouse.write_day(ID_HISTORY, QUARANTINE_ID_HISTORY, DAY, merges(("G1", "C1")), QUARANTINE_ID_HISTORY.empty())
    warehouse.write_day(RAW_EVENTS, QUARANTINE_EVENTS, DAY, events("G1", "C1", "C2"), QUARANTINE_EVENTS.empty())
    result = erase(warehouse, ["C1", "unknown", "C9"], None)
    text = result.log_path.read_text()
    assert all(value not in text for value in ("C1", "G1", "C9"))
    salt = (warehouse.erasure_dir / "salt").read_text().strip()
    assert salt not in text
    run = result.run
    assert sorted(entry["id_sha256"] for entry in run["requested_ids_sha256"]) == sorted(
        salted_sha256(salt, value) for value in ("C1", "C9")
    )
    assert run["merged_ids_sha256"] == [salted_sha256(salt, "G1")]
    assert (run["ids_requested"], run["ids_not_customers"], run["ids_found"], run["ids_erased"]) == (3, 1, 1, 3)
    assert "Erased 1 of the 2 customers asked for (3 IDs with the IDs merged with them)." in erasure.describe(result)
