"""What a day's segment IDs follow, and telling when it changed under them (real Parquet files)."""

from datetime import date

import pyarrow as pa

from segmentation_pipeline.core.lineage import previous_snapshot, unchanged_since
from segmentation_pipeline.core.quality import previous_snapshot_unchanged
from segmentation_pipeline.core.schemas import SEGMENTS
from segmentation_pipeline.core.warehouse import Warehouse

JAN_1, JAN_2, JAN_3 = date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3)


def segments(*ids: str, size: int = 10) -> pa.Table:
    rows = [
        {
            "segment_id": segment_id,
            "name": f"segment {segment_id}",
            "traits": [],
            "size": size,
            "share": 1 / len(ids),
            "total_clv": 100.0,
            "mean_clv": 10.0,
            "centroid": [("frequency", float(number))],
            "feature_means": [("frequency", float(number))],
            "is_new": False,
        }
        for number, segment_id in enumerate(ids)
    ]
    return pa.Table.from_pylist(rows, schema=SEGMENTS.schema)


def test_the_previous_snapshot_is_the_latest_stored_day_before_with_every_id_used_before(warehouse: Warehouse) -> None:
    assert previous_snapshot(warehouse, JAN_2).day is None
    warehouse.write_partition(SEGMENTS, JAN_1, segments("S01", "S02", "S05"))
    warehouse.write_partition(SEGMENTS, JAN_2, segments("S01", "S03"))
    warehouse.write_partition(SEGMENTS, JAN_3, segments("S09"))  # after the day: not read
    basis = previous_snapshot(warehouse, JAN_3)
    assert basis.day == JAN_2
    assert basis.segments["segment_id"].to_pylist() == ["S01", "S03"]
    assert basis.segment_ids_before == ("S01", "S02", "S03", "S05")
    assert basis.fingerprint() == previous_snapshot(warehouse, JAN_3).fingerprint()


def test_a_previous_snapshot_that_appears_or_changes_while_a_day_is_made_fails_its_check(
    warehouse: Warehouse,
) -> None:
    warehouse.write_partition(SEGMENTS, JAN_1, segments("S01", "S02"))
    used = previous_snapshot(warehouse, JAN_3)  # what clusters of the 3rd read, while the 2nd is still being made
    assert previous_snapshot_unchanged(warehouse, used).passed

    warehouse.write_partition(SEGMENTS, JAN_2, segments("S01", "S02"))  # a run of the 2nd, side by side
    outcome = previous_snapshot_unchanged(warehouse, used)
    assert not outcome.passed
    assert "follow the snapshot of 2025-01-01" in outcome.summary
    assert "the snapshot of 2025-01-02 was written while it ran" in outcome.summary
    assert "materialize clusters of 2025-01-03 again" in outcome.summary
    assert outcome.metadata["previous_snapshot"] == "2025-01-01"

    used = previous_snapshot(warehouse, JAN_3)
    warehouse.write_partition(SEGMENTS, JAN_2, segments("S01", "S02", size=11))  # the 2nd made again
    unchanged, summary = unchanged_since(warehouse, used)
    assert not unchanged and "the snapshot of 2025-01-02 was written again while it ran" in summary

    used = previous_snapshot(warehouse, JAN_3)
    warehouse.write_partition(SEGMENTS, JAN_1, segments("S01", "S02", "S07"))  # an ID used before, new
    unchanged, summary = unchanged_since(warehouse, used)
    assert not unchanged and "segment IDs of an earlier day changed" in summary
