"""The file source on real CSV and Parquet files in a temporary folder."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core.errors import DataValidationError
from segmentation_pipeline.core.schemas import QUARANTINE_EVENTS, RAW_EVENTS
from segmentation_pipeline.core.sources import EVENTS, MERGES, Ingest

DAY = date(2025, 3, 10)
MAPPING = {
    "cust": "customer_id",
    "kind": "event_type",
    "when": "timestamp",
    "value": "amount",
    "cat": "product_category",
}


def utc(text: str) -> datetime:
    return pd.Timestamp(text).tz_convert("UTC").to_pydatetime()


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ingest(*files: tuple[Path, date | None], days: list[date] | None = None, contract=EVENTS, **kwargs):
    with duckdb.connect() as con:
        run = Ingest(con, contract, days or [DAY], **{k: v for k, v in kwargs.items() if k != "mapping"})
        for path, day in files:
            run.add_file(path, kwargs.get("mapping", MAPPING if contract is EVENTS else {}), day)
        return run.collect()


def test_good_file_is_read_with_times_in_utc(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "events.csv",
        "cust,kind,when,value,cat,channel\n"
        "c1,purchase,2025-03-10T10:00:00Z,19.99,Books,Web\n"
        "c1,page_view,2025-03-10 12:30:00+05:30,,Books,web\n"
        "c2,session_start,2025-03-10 23:59:59-00:00,,,mobile_app\n"
        "c2,refund,2025-03-10T20:00:00Z,-5.00,Books,WEB\n",
    )
    batch = ingest((path, DAY))
    valid = batch.days[0].valid
    assert valid.schema == RAW_EVENTS.schema
    assert batch.quarantined_rows == 0
    rows = valid.to_pylist()
    assert [r["timestamp"] for r in rows] == [
        utc("2025-03-10T07:00:00Z"),
        utc("2025-03-10T10:00:00Z"),
        utc("2025-03-10T20:00:00Z"),
        utc("2025-03-10T23:59:59Z"),
    ]
    assert [r["event_type"] for r in rows] == ["page_view", "purchase", "refund", "session_start"]
    assert [r["amount"] for r in rows] == [None, 19.99, 5.0, None]  # refunds are stored as positive amounts
    assert {r["channel"] for r in rows} == {"web", "mobile_app"}
    assert rows[1]["product_category"] == "Books"
    assert len({r["event_id"] for r in rows}) == 4


def test_missing_required_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "broken.csv", "cust,when\nc1,2025-03-10\n")
    with pytest.raises(DataValidationError) as error:
        ingest((path, DAY))
    message = str(error.value)
    assert str(path) in message
    assert "'event_type'" in message
    assert "expected customer_id + event_type + timestamp" in message
    assert "found columns ['cust', 'when']" in message


def test_mapping_to_an_unknown_column_is_rejected(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "e.csv", "cust,kind,when\nc1,purchase,2025-03-10\n")
    with pytest.raises(DataValidationError, match="'customer'"):
        ingest((path, DAY), mapping={"cust": "customer", "kind": "event_type", "when": "timestamp"})


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataValidationError, match="events.parquet: cannot be read as Parquet"):
        ingest((path, DAY))


BAD_ROWS = (
    "cust,kind,when,value,qty\n"
    "c1,purchase,2025-03-10T10:00:00Z,10,1\n"  # 1 good
    ",purchase,2025-03-10T10:00:00Z,10,1\n"  # 2 missing customer
    "unknown,purchase,2025-03-10T10:00:00Z,10,1\n"  # 3 junk customer
    "c2,clicked,2025-03-10T10:00:00Z,,\n"  # 4 unknown event type
    "c3,page_view,yesterday,,\n"  # 5 unparsable timestamp
    "c4,page_view,2025-03-12T00:00:00Z,,\n"  # 6 two days after the folder's day
    "c5,purchase,2025-03-10T10:00:00Z,-3,1\n"  # 7 negative purchase amount
    "c6,purchase,2025-03-10T10:00:00Z,ten,1\n"  # 8 unparsable amount
    "c7,purchase,2025-03-10T10:00:00Z,,1\n"  # 9 purchase without amount
    "c8,page_view,,,\n"  # 10 missing timestamp
    "c9,add_to_cart,2025-03-10T11:00:00Z,,two\n"  # 11 unparsable quantity
    "c10,page_view,2025-03-10T12:00:00Z,,\n"  # 12 good
)


def test_bad_rows_are_quarantined_with_reasons_and_every_row_is_accounted_for(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", BAD_ROWS)
    batch = ingest(
        (path, DAY),
        mapping={
            "cust": "customer_id",
            "kind": "event_type",
            "when": "timestamp",
            "value": "amount",
            "qty": "quantity",
        },
    )
    day = batch.days[0]
    assert day.valid.column("customer_id").to_pylist() == ["c1", "c10"]
    quarantined = day.quarantined
    assert quarantined.schema == QUARANTINE_EVENTS.schema
    reasons = dict(zip(quarantined.column("source_row").to_pylist(), quarantined.column("reason").to_pylist()))
    assert reasons == {
        2: "missing_customer_id",
        3: "junk_customer_id",
        4: "unknown_event_type",
        5: "unparsable_timestamp",
        6: "timestamp_outside_partition",
        7: "negative_amount",
        8: "unparsable_amount",
        9: "missing_amount",
        10: "missing_timestamp",
        11: "unparsable_quantity",
    }
    assert day.rows_in == 12
    assert set(quarantined.column("source").to_pylist()) == {str(path)}
    row8 = quarantined.filter(pa.compute.equal(quarantined.column("source_row"), 8)).to_pylist()[0]
    assert row8["amount"] == "ten" and row8["customer_id"] == "c6"  # the raw text is kept


def test_transaction_log_becomes_purchases(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "transactions.csv",
        "customer,date,total\nc1,2025-03-10,12.50\nc2,2025-03-10,7\nc1,2025-03-10,12.50\n",
    )
    batch = ingest((path, DAY), mapping={"customer": "customer_id", "date": "timestamp", "total": "amount"})
    valid = batch.days[0].valid
    assert valid.column("event_type").to_pylist() == ["purchase"] * 3
    assert sorted(valid.column("amount").to_pylist()) == [7.0, 12.5, 12.5]
    assert set(valid.column("timestamp").to_pylist()) == {utc("2025-03-10T00:00:00Z")}
    assert valid.column("session_id").null_count == 3
    # Two identical purchases are two events, with distinct derived IDs.
    assert len(set(valid.column("event_id").to_pylist())) == 3


def test_duplicate_event_ids_are_quarantined(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "e.csv",
        "event_id,customer_id,event_type,timestamp\n"
        "e1,c1,page_view,2025-03-10T01:00:00Z\ne1,c1,page_view,2025-03-10T01:00:00Z\ne2,c1,page_view,2025-03-10T02:00:00Z\n",
    )
    batch = ingest((path, DAY), mapping={})
    assert batch.days[0].valid.column("event_id").to_pylist() == ["e1", "e2"]
    assert batch.days[0].quarantined.column("reason").to_pylist() == ["duplicate_event_id"]
    assert batch.days[0].quarantined.column("source_row").to_pylist() == [2]


def test_parquet_with_naive_times_in_an_assumed_zone(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": ["c1", "c2"],
                "event_type": ["purchase", "page_view"],
                "timestamp": pa.array([datetime(2025, 3, 10, 9, 0), datetime(2025, 3, 10, 20, 0)], pa.timestamp("us")),
                "amount": [3.5, None],
            }
        ),
        path,
    )
    batch = ingest((path, DAY), mapping={}, days=[DAY, date(2025, 3, 11)], assume_timezone="America/New_York")
    # 09:00 in New York is 13:00 UTC; 20:00 in New York is 00:00 UTC the next day, and goes there.
    assert batch.days[0].valid.column("timestamp").to_pylist() == [utc("2025-03-10T13:00:00Z")]
    assert batch.days[1].valid.column("timestamp").to_pylist() == [utc("2025-03-11T00:00:00Z")]
    assert batch.quarantined_rows == 0


def test_text_loses_its_surrounding_spaces_and_blank_text_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    at = pa.array([datetime(2025, 3, 10, 9, i, tzinfo=timezone.utc) for i in range(6)], pa.timestamp("us", "UTC"))
    pq.write_table(
        pa.table(
            {
                "customer_id": [" c1 ", "c2", "\tc3", "c 4", "   ", ""],
                "event_type": [" page_view", "page_view ", "page_view", "page_view", "page_view", "page_view"],
                "timestamp": at,
                "session_id": ["  s1", "s2  ", "", "   ", "s 5", None],
                "product_category": ["  Books  ", " ", "home", None, "a", "b"],
            }
        ),
        path,
    )
    batch = ingest((path, DAY), mapping={})
    valid = batch.days[0].valid.to_pylist()
    # Spaces only: a tab is part of the value, as are spaces inside it.
    assert [row["customer_id"] for row in valid] == ["c1", "c2", "\tc3", "c 4"]
    assert [row["session_id"] for row in valid] == ["s1", "s2", None, None]
    assert [row["product_category"] for row in valid] == ["Books", None, "home", None]
    assert {row["event_type"] for row in valid} == {"page_view"}
    quarantined = batch.days[0].quarantined.to_pylist()
    assert [(row["reason"], row["customer_id"]) for row in quarantined] == [
        ("missing_customer_id", "   "),
        ("missing_customer_id", ""),
    ]


def test_a_local_day_folder_feeds_the_neighbouring_utc_days(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "tokyo.csv",
        "customer_id,event_type,timestamp\n"
        "c1,page_view,2025-03-10T08:00:00+09:00\n"  # 2025-03-09 23:00 UTC
        "c2,page_view,2025-03-10T12:00:00+09:00\n"  # 2025-03-10 03:00 UTC
        "c3,page_view,2025-03-12T12:00:00+09:00\n",  # two days away: not this folder's
    )
    days = [date(2025, 3, 9), DAY, date(2025, 3, 11)]
    batch = ingest((path, DAY), mapping={}, days=days)
    assert [day.valid.column("customer_id").to_pylist() for day in batch.days] == [["c1"], ["c2"], []]
    assert [day.quarantined.column("reason").to_pylist() for day in batch.days] == [
        [],
        ["timestamp_outside_partition"],
        [],
    ]
    # Run for the folder's day alone, the neighbour's row is left to the neighbour's run.
    alone = ingest((path, DAY), mapping={}, days=[DAY])
    assert alone.days[0].valid.column("customer_id").to_pylist() == ["c2"]
    assert alone.quarantined_rows == 1


def test_plain_dates_are_utc_days_in_any_zone(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "customer_id,timestamp,amount\nc1,2025-03-10,5\n")
    batch = ingest((path, DAY), mapping={}, assume_timezone="Europe/Berlin")
    assert batch.days[0].valid.column("timestamp").to_pylist() == [utc("2025-03-10T00:00:00Z")]


def test_an_explicit_mapping_wins_over_a_column_with_the_canonical_name(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "e.csv", "customer_id,cust,event_type,timestamp\nLEGACY-1,c1,page_view,2025-03-10T01:00:00Z\n"
    )
    batch = ingest((path, DAY), mapping={"cust": "customer_id"})
    assert batch.days[0].valid.column("customer_id").to_pylist() == ["c1"]


def test_whole_float_ids_read_as_integers(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([103.0, None, 7.5]),
                "event_type": ["page_view"] * 3,
                "timestamp": pa.array([datetime(2025, 3, 10, 1, tzinfo=timezone.utc)] * 3),
            }
        ),
        path,
    )
    batch = ingest((path, DAY), mapping={})
    assert sorted(batch.days[0].valid.column("customer_id").to_pylist()) == ["103", "7.5"]
    assert batch.days[0].quarantined.column("reason").to_pylist() == ["missing_customer_id"]


def test_ragged_and_empty_csv_files(tmp_path: Path) -> None:
    ragged = write_csv(
        tmp_path / "ragged.csv",
        "customer_id,event_type,timestamp\nc1,page_view,2025-03-10T01:00:00Z,extra\nc2,page_view\n",
    )
    empty = write_csv(tmp_path / "empty.csv", "")
    header_only = write_csv(tmp_path / "header.csv", "customer_id,event_type,timestamp\n")
    batch = ingest((ragged, DAY), (empty, DAY), (header_only, DAY), mapping={})
    assert batch.days[0].valid.column("customer_id").to_pylist() == ["c1"]
    assert batch.days[0].quarantined.column("reason").to_pylist() == ["missing_timestamp"]


def test_one_file_split_by_day(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "all.csv",
        "customer_id,event_type,timestamp,amount\n"
        "c1,purchase,2025-03-09T10:00:00Z,1\n"  # before the range: another run's
        "c1,purchase,2025-03-10T10:00:00Z,2\n"
        "c2,purchase,2025-03-11T23:00:00-02:00,3\n"  # 2025-03-12 01:00 UTC
        "c3,purchase,2025-03-11T10:00:00Z,-4\n"
        "c4,purchase,soon,5\n",
    )
    days = [date(2025, 3, 10), date(2025, 3, 11), date(2025, 3, 12)]
    batch = ingest((path, None), days=days, mapping={})
    by_day = {d.day: d.valid.column("amount").to_pylist() for d in batch.days}
    assert by_day == {date(2025, 3, 10): [2.0], date(2025, 3, 11): [], date(2025, 3, 12): [3.0]}
    assert batch.days[1].quarantined.column("reason").to_pylist() == ["negative_amount"]
    assert batch.unassigned.column("reason").to_pylist() == ["unparsable_timestamp"]
    assert batch.unassigned.column("source_row").to_pylist() == [5]


def test_merge_records_validate_and_allow_late_arrivals(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "merges.csv",
        "old_id,new_id,merged_at\n"
        "A,B,2025-03-10T05:00:00Z\n"
        "B,C,2025-03-07T05:00:00Z\n"  # arrives three days late: valid
        "D,D,2025-03-10T05:00:00Z\n"
        ",E,2025-03-10T05:00:00Z\n"
        "F,G,2025-03-12T05:00:00Z\n"
        "H,I,whenever\n",
    )
    batch = ingest((path, DAY), contract=MERGES)
    day = batch.days[0]
    assert day.valid.column("old_id").to_pylist() == ["B", "A"]
    assert day.quarantined.column("reason").to_pylist() == [
        "self_merge",
        "missing_old_id",
        "merged_at_after_partition",
        "unparsable_merged_at",
    ]


def test_rows_of_days_outside_the_run_are_counted_not_lost(tmp_path: Path) -> None:
    # Filed under 2025-03-11 in local time, the first row happened on 2025-03-10 in UTC.
    path = write_csv(
        tmp_path / "berlin.csv",
        "customer_id,event_type,timestamp\n"
        "c1,page_view,2025-03-11T00:30:00+01:00\n"
        "c2,page_view,2025-03-11T09:00:00+01:00\n",
    )
    batch = ingest((path, date(2025, 3, 11)), mapping={}, days=[date(2025, 3, 11)])
    assert batch.days[0].valid.column("customer_id").to_pylist() == ["c2"]
    assert batch.outside_run == {DAY: 1}


def test_rows_of_a_many_day_file_outside_the_run_are_counted(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "all.csv",
        "customer_id,event_type,timestamp\n"
        "c1,page_view,2025-03-10T01:00:00Z\n"
        "c2,page_view,2205-03-10T01:00:00Z\n"
        "c3,page_view,1925-03-10T01:00:00Z\n"
        "c4,teleport,1925-03-10T01:00:00Z\n",
    )
    batch = ingest((path, None), mapping={})
    assert batch.valid_rows == 1
    assert batch.outside_run == {date(1925, 3, 10): 1, date(2205, 3, 10): 1}


def test_non_finite_and_fractional_numbers_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    nan, inf = float("nan"), float("inf")
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([1.0, nan, 3.0, 4.0, 5.0, 6.0]),
                "event_type": ["purchase", "purchase", "purchase", "refund", "add_to_cart", "add_to_cart"],
                "timestamp": pa.array([datetime(2025, 3, 10, 1, tzinfo=timezone.utc)] * 6),
                "amount": pa.array([9.5, 1.0, nan, inf, None, None]),
                "quantity": pa.array([1.0, 1.0, 1.0, 1.0, 2.5, 3.0]),
            }
        ),
        path,
    )
    batch = ingest((path, DAY), mapping={})
    valid = batch.days[0].valid.sort_by("customer_id")  # same time: stored in event_id order
    assert valid.column("customer_id").to_pylist() == ["1", "6"]
    assert valid.column("quantity").to_pylist() == [1, 3]
    reasons = dict(
        zip(batch.days[0].quarantined["source_row"].to_pylist(), batch.days[0].quarantined["reason"].to_pylist())
    )
    assert reasons == {
        2: "missing_customer_id",
        3: "unparsable_amount",
        4: "unparsable_amount",
        5: "unparsable_quantity",
    }


def test_the_documented_reasons_are_the_ones_the_sql_gives() -> None:
    from segmentation_pipeline.core.sources import EVENT_REASONS, ID_HISTORY_REASONS, _Columns, _event_sql, _merge_sql

    def reasons_in(sql: str) -> set[str]:
        return set(re.findall(r"THEN '([a-z_]+)'", sql))

    event_sql = _event_sql("v", _Columns({}), DAY, DAY, 1, ["unknown"])
    # duplicate_event_id is given afterwards, across the whole chunk.
    assert reasons_in(event_sql) | {"duplicate_event_id"} == set(EVENT_REASONS)
    assert reasons_in(_merge_sql("v", _Columns({}), DAY, DAY, 1, [])) == set(ID_HISTORY_REASONS)


def test_identical_rows_in_two_files_are_two_events(tmp_path: Path) -> None:
    row = "customer_id,timestamp,amount\nc1,2025-03-10,12.50\n"
    first = write_csv(tmp_path / "store1.csv", row)
    second = write_csv(tmp_path / "store2.csv", row)
    batch = ingest((first, DAY), (second, DAY), mapping={})
    assert batch.days[0].valid.num_rows == 2
    assert len(set(batch.days[0].valid.column("event_id").to_pylist())) == 2


def test_times_on_the_edges_of_a_day(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "edges.csv",
        "customer_id,event_type,timestamp\n"
        "c1,page_view,2025-03-10T00:00:00Z\n"  # the first instant of the day
        "c2,page_view,2025-03-10T23:59:59.999999Z\n"  # the last
        "c3,page_view,2025-03-11T00:00:00Z\n"  # the next day's first
        "c4,page_view,2025-03-09T23:59:59.999999Z\n"  # the day before's last
        "c5,page_view,infinity\n",
    )
    batch = ingest((path, DAY), mapping={}, folder_slack_days=0)
    assert batch.days[0].valid.column("customer_id").to_pylist() == ["c1", "c2"]
    assert batch.days[0].quarantined.column("reason").to_pylist() == ["timestamp_outside_partition"] * 3
    # A many-day file keeps the rows of the run's days [first, last] and leaves the rest out.
    many = ingest((path, None), mapping={})
    assert many.days[0].valid.column("customer_id").to_pylist() == ["c1", "c2"]
    assert many.quarantined_rows == 0


def test_devices_and_channels_are_stored_lower_cased(tmp_path: Path) -> None:
    """The profile query counts mobile events by comparing stored devices and channels as they are:
    ingestion is what makes 'Mobile', ' APP ' and 'Tablet' comparable."""
    path = write_csv(
        tmp_path / "devices.csv",
        "customer_id,event_type,timestamp,device,channel\n"
        "c1,page_view,2025-03-10T10:00:00Z,Mobile,Web\n"
        "c1,page_view,2025-03-10T11:00:00Z,desktop, APP \n"
        "c2,page_view,2025-03-10T12:00:00Z,TABLET,Mobile_App\n",
    )
    rows = ingest((path, DAY), mapping={}).days[0].valid.to_pylist()
    assert [(row["device"], row["channel"]) for row in rows] == [
        ("mobile", "web"),
        ("desktop", "app"),
        ("tablet", "mobile_app"),
    ]


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_a_date_column_under_a_date_folder_is_the_files_own(tmp_path: Path, file_format: str) -> None:
    # The incoming layout is `date=YYYY-MM-DD/`, which DuckDB reads as a Hive partition by default:
    # the folder's date then replaced the file's own `date` column, and every row landed on 03-10.
    folder = tmp_path / "events" / "date=2025-03-10"
    rows = {
        "customer_id": ["c1", "c2", "c3"],
        "date": ["2025-03-09", "2025-03-10", "2025-03-11"],
        "amount": ["5", "6", "7"],
    }
    if file_format == "csv":
        path = write_csv(
            folder / "tx.csv",
            "customer_id,date,amount\n" + "".join(f"{c},{d},{a}\n" for c, d, a in zip(*rows.values())),
        )
    else:
        folder.mkdir(parents=True)
        path = folder / "tx.parquet"
        pq.write_table(pa.table(rows), path)
    days = [date(2025, 3, 9), DAY, date(2025, 3, 11)]
    batch = ingest((path, DAY), days=days, mapping={"date": "timestamp"})
    stored = {day.day: day.valid.column("customer_id").to_pylist() for day in batch.days}
    assert stored == {date(2025, 3, 9): ["c1"], DAY: ["c2"], date(2025, 3, 11): ["c3"]}
    assert batch.quarantined_rows == 0


def test_columns_found_are_the_files_own_under_a_date_folder(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events" / "date=2025-03-10" / "broken.csv", "cust,when\nc1,2025-03-10\n")
    with pytest.raises(DataValidationError) as error:
        ingest((path, DAY))
    assert "found columns ['cust', 'when']" in str(error.value)
