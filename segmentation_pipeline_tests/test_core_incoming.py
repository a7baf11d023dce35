"""Fingerprints of the incoming day folders, and the days a changed folder makes us ingest."""

import os
from datetime import date
from pathlib import Path

from segmentation_pipeline.core.incoming import (
    DayFolder,
    IncomingScan,
    contiguous_ranges,
    days_to_ingest,
    plan_ingestion,
    scan_incoming,
)
from segmentation_pipeline.core.sources import EVENTS, MERGES

NOW = 1_800_000_000.0


def put(folder: Path, name: str, text: str, age: float = 3600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    os.utime(path, (NOW - age, NOW - age))
    return path


def test_a_folder_has_the_same_fingerprint_until_a_file_is_added_replaced_or_removed(tmp_path: Path) -> None:
    day = tmp_path / "events" / "date=2025-01-03"
    put(day, "a.csv", "customer_id,event_type,timestamp\nu1,page_view,2025-01-03T10:00:00Z\n")
    first = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    assert first.files == 1 and first.settled
    assert scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)] == first
    put(day, "b.parquet", "not read, only fingerprinted")
    second = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    assert second.files == 2 and second.fingerprint != first.fingerprint
    put(day, "a.csv", "customer_id,event_type,timestamp\nu2,page_view,2025-01-03T11:00:00Z\n", age=1800)
    third = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    assert third.fingerprint not in (first.fingerprint, second.fingerprint)
    (day / "b.parquet").unlink()
    fourth = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    assert fourth.files == 1 and fourth.fingerprint != third.fingerprint


def test_only_input_files_count_and_files_being_written_hold_their_folder_back(tmp_path: Path) -> None:
    day = tmp_path / "events" / "date=2025-01-03"
    put(day, "a.csv", "x")
    baseline = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    put(day, ".hidden.csv", "x")
    put(day, "notes.txt", "x")
    assert scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)] == baseline
    put(day, "b.csv", "x", age=2)  # copied two seconds ago
    fresh = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    assert not fresh.settled
    assert scan_incoming(tmp_path, EVENTS, NOW).unsettled() == [date(2025, 1, 3)]
    assert scan_incoming(tmp_path, EVENTS, NOW).changed({}) == []
    assert scan_incoming(tmp_path, EVENTS, NOW + 60).folders[date(2025, 1, 3)].settled
    put(day, "c.csv.part", "x")
    assert not scan_incoming(tmp_path, EVENTS, NOW + 60).folders[date(2025, 1, 3)].settled


def test_changed_folders_are_those_whose_file_set_was_not_seen(tmp_path: Path) -> None:
    put(tmp_path / "id_history" / "date=2025-01-02", "m.csv", "x")
    put(tmp_path / "id_history" / "date=2025-01-05", "m.csv", "x")
    (tmp_path / "id_history" / "date=2025-01-06").mkdir()  # empty: nothing to ingest
    put(tmp_path / "id_history" / "date=2025-02-30", "m.csv", "x")  # no such day
    put(tmp_path / "id_history", "stray.csv", "x")
    scan = scan_incoming(tmp_path, MERGES, NOW)
    assert scan.table == "id_history"
    assert sorted(scan.folders) == [date(2025, 1, 2), date(2025, 1, 5), date(2025, 1, 6)]
    assert scan.ignored == ["date=2025-02-30", "stray.csv"]
    assert [folder.day for folder in scan.changed({})] == [date(2025, 1, 2), date(2025, 1, 5)]
    seen = {"2025-01-02": scan.folders[date(2025, 1, 2)].fingerprint, "2025-01-05": "another file set"}
    assert [folder.day for folder in scan.changed(seen)] == [date(2025, 1, 5)]
    assert scan_incoming(tmp_path / "nowhere", MERGES, NOW).folders == {}


def test_an_events_folder_reaches_the_days_either_side_and_ranges_join_consecutive_days() -> None:
    changed = [date(2025, 1, 3), date(2025, 1, 4), date(2025, 1, 10)]
    events = days_to_ingest(EVENTS, changed)
    assert events == [date(2025, 1, d) for d in (2, 3, 4, 5, 9, 10, 11)]
    assert days_to_ingest(MERGES, changed) == changed
    assert contiguous_ranges(events) == [(date(2025, 1, 2), date(2025, 1, 5)), (date(2025, 1, 9), date(2025, 1, 11))]
    assert contiguous_ranges(changed) == [(date(2025, 1, 3), date(2025, 1, 4)), (date(2025, 1, 10), date(2025, 1, 10))]
    assert contiguous_ranges([]) == []


def test_a_file_moved_away_while_looking_holds_its_folder_back(tmp_path: Path, monkeypatch) -> None:
    day = tmp_path / "events" / "date=2025-01-03"
    put(day, "a.csv", "x")
    real_stat = Path.stat

    def vanished(path: Path, *args, **kwargs):
        if path.name == "a.csv":
            raise FileNotFoundError(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", vanished)
    folder = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    assert not folder.settled


def folder(day: int, fingerprint: str, files: int, settled: bool) -> DayFolder:
    """A scanned folder whose files' stamps are named after its fingerprint."""
    stamps = {f"shop{n}.csv": f"{fingerprint}:{n}" for n in range(files)}
    return DayFolder(date(2025, 1, day), fingerprint, files, settled, stamps)


def test_the_plan_asks_for_settled_changed_folders_within_the_partitions() -> None:
    folders = {
        date(2025, 1, 3): folder(3, "f3", 1, True),
        date(2025, 1, 4): folder(4, "f4", 1, True),
        date(2025, 1, 9): folder(9, "f9", 1, True),
        date(2025, 1, 10): folder(10, "f10", 1, False),
        date(2025, 1, 20): folder(20, "f20", 2, True),
    }
    scan = IncomingScan("raw_events", folders)
    plan = plan_ingestion(scan, EVENTS, {"2025-01-04": {"shop0.csv": "f4:0"}}, date(2025, 1, 1), date(2025, 1, 15))
    (run,) = plan.runs
    # The 3rd reaches the 2nd and 4th, and reads the folders of the 2nd to the 5th (4th unchanged).
    assert (run.first, run.last, run.changed) == (date(2025, 1, 2), date(2025, 1, 4), (date(2025, 1, 3),))
    assert run.reads == {date(2025, 1, 3): "f3", date(2025, 1, 4): "f4"}
    # The 9th's run would read the 10th, still being written; the 20th has not ended.
    assert plan.waiting == [
        "raw_events folders of days not yet ended: ['2025-01-20']",
        "raw_events folders still being written: ['2025-01-10']",
    ]
    same = plan_ingestion(
        scan, EVENTS, {"2025-01-04": {"shop0.csv": "f4:0"}}, date(2025, 1, 1), date(2025, 1, 15)
    ).runs[0]
    assert same.key == run.key and run.key.startswith("2025-01-02..2025-01-04:")
    other = IncomingScan("raw_events", folders | {date(2025, 1, 4): folder(4, "new", 1, True)})
    assert plan_ingestion(other, EVENTS, {}, date(2025, 1, 1), date(2025, 1, 15)).runs[0].key != run.key
    merges = plan_ingestion(scan, MERGES, {}, date(2025, 1, 4), date(2025, 1, 15))
    assert [(r.first, r.last) for r in merges.runs] == [
        (date(2025, 1, 4), date(2025, 1, 4)),
        (date(2025, 1, 9), date(2025, 1, 9)),
    ]
    assert merges.outside == [date(2025, 1, 3)]


def test_a_removed_file_is_no_new_input_but_an_added_or_replaced_one_is(tmp_path: Path) -> None:
    day = tmp_path / "events" / "date=2025-01-03"
    put(day, "shop_a.csv", "a")
    put(day, "shop_b.csv", "b")
    ingested = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    seen = {"2025-01-03": ingested.stamps}
    assert set(ingested.stamps) == {"shop_a.csv", "shop_b.csv"}
    (day / "shop_a.csv").unlink()  # archived
    assert scan_incoming(tmp_path, EVENTS, NOW).changed(seen) == []
    (day / "shop_b.csv").unlink()
    assert scan_incoming(tmp_path, EVENTS, NOW).changed(seen) == []
    put(day, "shop_b.csv", "b, corrected", age=1800)
    assert [folder.day for folder in scan_incoming(tmp_path, EVENTS, NOW).changed(seen)] == [date(2025, 1, 3)]
    put(day, "shop_b.csv", "b", age=3600)
    put(day, "shop_c.csv", "c")
    assert [folder.day for folder in scan_incoming(tmp_path, EVENTS, NOW).changed(seen)] == [date(2025, 1, 3)]


def test_a_cursor_of_whole_folder_fingerprints_still_reads(tmp_path: Path) -> None:
    day = tmp_path / "events" / "date=2025-01-03"
    put(day, "shop_a.csv", "a")
    folder = scan_incoming(tmp_path, EVENTS, NOW).folders[date(2025, 1, 3)]
    assert scan_incoming(tmp_path, EVENTS, NOW).changed({"2025-01-03": folder.fingerprint}) == []
    (day / "shop_a.csv").unlink()
    assert scan_incoming(tmp_path, EVENTS, NOW).changed({"2025-01-03": folder.fingerprint}) == []
    put(day, "shop_b.csv", "b")
    assert len(scan_incoming(tmp_path, EVENTS, NOW).changed({"2025-01-03": folder.fingerprint})) == 1
