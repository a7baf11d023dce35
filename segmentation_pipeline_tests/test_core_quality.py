"""The data-quality rules fail on broken partitions, not only pass on good ones."""

from datetime import date, datetime, timezone

import pyarrow as pa

from segmentation_pipeline.core import quality
from segmentation_pipeline.core.schemas import MERGE_MAP, QUARANTINE_EVENTS, RAW_EVENTS
from segmentation_pipeline.core.warehouse import Warehouse

DAY = date(2025, 2, 1)


def events(rows: list[tuple[str, str, datetime]]) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "customer_id": [row[0] for row in rows],
            "event_type": [row[1] for row in rows],
            "timestamp": pa.array([row[2] for row in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def merge_map(pairs: list[tuple[str, str]], junk: tuple[str, ...] = ()) -> pa.Table:
    n = len(pairs)
    return pa.table(
        {
            "old_id": [p[0] for p in pairs],
            "canonical_id": [p[1] for p in pairs],
            "component_size": [1] * n,
            "chain_depth": [0] * n,
            "in_cycle": [False] * n,
            "is_junk": [p[0] in junk for p in pairs],
        }
    )


def test_event_checks_catch_each_violation(warehouse: Warehouse) -> None:
    noon = datetime(2025, 2, 1, 12, tzinfo=timezone.utc)
    warehouse.write_partition(
        RAW_EVENTS,
        DAY,
        events(
            [
                ("c1", "page_view", noon),
                ("  ", "page_view", noon),
                ("c2", "teleport", noon),
                ("c3", "purchase", datetime(2025, 2, 2, 0, 0, tzinfo=timezone.utc)),
            ]
        ),
    )
    warehouse.write_partition(
        QUARANTINE_EVENTS,
        DAY,
        pa.table({"reason": ["missing_customer_id"], "source": ["f.csv"], "source_row": [7]}),
    )
    stats = quality.event_partition_stats(warehouse, [DAY])
    assert stats == quality.EventPartitionStats(
        rows=4, null_customer_ids=1, invalid_event_types=1, outside_partition=1, quarantined=1
    )
    assert not quality.no_null_customer_ids(stats).passed
    assert not quality.valid_event_types(stats).passed
    assert not quality.timestamps_inside_partition(stats).passed
    assert quality.quarantine_rate(stats, max_rate=0.25).passed  # 1 of 5 = 20%
    rate = quality.quarantine_rate(stats, max_rate=0.1)
    assert not rate.passed and rate.metadata["rate"] == 0.2


def test_event_checks_pass_on_good_partitions(warehouse: Warehouse) -> None:
    warehouse.write_partition(RAW_EVENTS, DAY, events([("c1", "refund", datetime(2025, 2, 1, 23, 59, tzinfo=timezone.utc))]))
    stats = quality.event_partition_stats(warehouse, [DAY, date(2025, 2, 2)])
    assert stats == quality.EventPartitionStats(1, 0, 0, 0, 0)
    assert all(
        outcome.passed
        for outcome in (
            quality.no_null_customer_ids(stats),
            quality.valid_event_types(stats),
            quality.timestamps_inside_partition(stats),
            quality.quarantine_rate(stats, 0.0),
        )
    )


def test_merge_map_checks_catch_an_unresolved_chain_and_duplicates(warehouse: Warehouse) -> None:
    warehouse.write_partition(MERGE_MAP, DAY, merge_map([("a", "b"), ("b", "c"), ("c", "c"), ("d", "d"), ("d", "c")]))
    themselves = quality.canonical_ids_map_to_themselves(warehouse, DAY)
    # b is canonical for a but maps to c; d is canonical for itself but also maps to c.
    assert not themselves.passed and themselves.metadata["violations"] == 2
    twice = quality.one_canonical_id_per_id(warehouse, DAY)
    assert not twice.passed and twice.metadata["violations"] == 1  # d
    unresolved = quality.no_unresolved_chains(warehouse, DAY)
    assert not unresolved.passed and unresolved.metadata["violations"] == 2  # a -> b -> c, and d -> d -> c


def test_merge_map_checks_pass_on_a_resolved_map_and_fail_without_one(warehouse: Warehouse) -> None:
    warehouse.write_partition(MERGE_MAP, DAY, merge_map([("a", "c"), ("b", "c"), ("c", "c")]))
    assert quality.canonical_ids_map_to_themselves(warehouse, DAY).passed
    assert quality.one_canonical_id_per_id(warehouse, DAY).passed
    assert quality.no_unresolved_chains(warehouse, DAY).passed
    assert not quality.no_unresolved_chains(warehouse, date(2025, 2, 2)).passed


def test_junk_check_catches_merges_into_and_out_of_junk_ids(warehouse: Warehouse) -> None:
    warehouse.write_partition(
        MERGE_MAP,
        DAY,
        merge_map([("unknown", "c1"), ("c1", "c1"), ("c2", "0"), ("0", "0"), ("c3", "c3")], junk=("unknown", "0")),
    )
    outcome = quality.no_junk_merged(warehouse, DAY)
    assert not outcome.passed and outcome.metadata["violations"] == 2
    warehouse.write_partition(MERGE_MAP, DAY, merge_map([("unknown", "unknown"), ("c1", "c1")], junk=("unknown",)))
    assert quality.no_junk_merged(warehouse, DAY).passed
