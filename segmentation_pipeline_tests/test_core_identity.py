"""Merge resolution against hand-made histories whose right answer is known."""

from __future__ import annotations

import random

import pandas as pd
import pyarrow as pa
import pytest

from segmentation_pipeline.core.errors import CircularMergeError, MergeChainTooDeepError
from segmentation_pipeline.core.identity import ResolverSettings, resolve_merges
from segmentation_pipeline.core.schemas import MERGE_MAP


def history(*records: tuple[str, str, str]) -> pa.Table:
    old, new, at = zip(*records) if records else ((), (), ())
    return pa.table(
        {
            "old_id": pa.array(old, pa.string()),
            "new_id": pa.array(new, pa.string()),
            "merged_at": pa.array(pd.to_datetime(list(at), utc=True), pa.timestamp("us", tz="UTC")),
        }
    )


def mapping(table: pa.Table) -> dict[str, str]:
    return dict(zip(table.column("old_id").to_pylist(), table.column("canonical_id").to_pylist()))


def column(table: pa.Table, name: str) -> dict[str, object]:
    return dict(zip(table.column("old_id").to_pylist(), table.column(name).to_pylist()))


def test_chain_resolves_to_its_last_id() -> None:
    result = resolve_merges(history(("A", "B", "2025-01-01"), ("B", "C", "2025-01-05")))
    assert result.merge_map.schema == MERGE_MAP.schema
    assert mapping(result.merge_map) == {"A": "C", "B": "C", "C": "C"}
    assert column(result.merge_map, "chain_depth") == {"A": 2, "B": 1, "C": 0}
    assert column(result.merge_map, "component_size") == {"A": 3, "B": 3, "C": 3}
    assert result.report.customers == 1
    assert result.report.merged_ids == 2
    assert result.report.deepest_chain == 2
    assert result.report.cycles == 0


def test_records_out_of_order_give_the_same_map() -> None:
    records = [("A", "B", "2025-01-01"), ("B", "C", "2025-01-05"), ("X", "Y", "2025-01-02"), ("C", "D", "2025-02-01")]
    in_order = resolve_merges(history(*records)).merge_map
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    reversed_ = resolve_merges(history(*reversed(records))).merge_map
    assert resolve_merges(history(*shuffled)).merge_map.equals(in_order)
    assert reversed_.equals(in_order)
    assert mapping(in_order) == {"A": "D", "B": "D", "C": "D", "D": "D", "X": "Y", "Y": "Y"}


def test_a_late_merge_into_a_retired_id_follows_its_chain() -> None:
    # A -> B -> C, then a cookie D is merged into the retired A: the customer stays C.
    result = resolve_merges(history(("A", "B", "2025-01-01"), ("B", "C", "2025-01-02"), ("D", "A", "2025-01-09")))
    assert mapping(result.merge_map) == {"A": "C", "B": "C", "C": "C", "D": "C"}
    assert column(result.merge_map, "chain_depth") == {"A": 2, "B": 1, "C": 0, "D": 3}


def test_chain_recorded_backwards_in_time_still_ends_at_its_last_id() -> None:
    # B -> C was recorded before A -> B: the latest merge points to B, whose chain ends at C.
    result = resolve_merges(history(("B", "C", "2025-01-01"), ("A", "B", "2025-01-05")))
    assert mapping(result.merge_map) == {"A": "C", "B": "C", "C": "C"}


def test_hub_limit_counts_distinct_neighbours() -> None:
    # P and its 3 neighbours, linked both ways and twice over: 3 neighbours, not 12 links.
    records = [(a, b, "2025-01-01") for n in ("X", "Y", "Z") for a, b in (("P", n), (n, "P"))] * 2
    result = resolve_merges(history(*records), ResolverSettings(max_links_per_id=3))
    assert result.report.junk_ids == []
    assert set(mapping(result.merge_map).values()) == {mapping(result.merge_map)["P"]}
    assert [j.id for j in resolve_merges(history(*records), ResolverSettings(max_links_per_id=2)).report.junk_ids] == [
        "P"
    ]


def test_cycle_is_resolved_by_the_latest_merge_and_reported() -> None:
    records = history(
        ("A", "B", "2025-01-01"), ("B", "C", "2025-01-02"), ("C", "A", "2025-01-03"), ("Q", "R", "2025-01-01")
    )
    result = resolve_merges(records)
    assert mapping(result.merge_map) == {"A": "A", "B": "A", "C": "A", "Q": "R", "R": "R"}
    assert column(result.merge_map, "in_cycle") == {"A": True, "B": True, "C": True, "Q": False, "R": False}
    assert result.report.cycles == 1
    assert result.report.cycle_examples == [["A", "B", "C"]]
    with pytest.raises(CircularMergeError, match="A -> B -> C"):
        resolve_merges(records, ResolverSettings(strict=True))


def test_junk_ids_never_merge_unrelated_customers() -> None:
    records = [
        ("unknown", "C1", "2025-01-01"),
        ("unknown", "C2", "2025-01-02"),
        ("-1", "C3", "2025-01-03"),
        ("A", "C1", "2025-01-04"),
    ]
    hub = [(f"cookie{i}", "HUB", "2025-01-05") for i in range(6)] + [("HUB", "C2", "2025-01-06")]
    result = resolve_merges(history(*records, *hub), ResolverSettings(max_links_per_id=5))
    resolved = mapping(result.merge_map)
    assert resolved["C1"] == "C1" and resolved["A"] == "C1"
    assert resolved["C2"] == "C2" and resolved["C3"] == "C3"
    assert resolved["unknown"] == "unknown" and resolved["-1"] == "-1" and resolved["HUB"] == "HUB"
    assert all(resolved[f"cookie{i}"] == f"cookie{i}" for i in range(6))
    junk = column(result.merge_map, "junk_reason")
    assert junk["unknown"] == "block list" and junk["-1"] == "block list"
    assert junk["HUB"] == "linked to more than 5 IDs"
    assert junk["C1"] is None
    assert {j.id for j in result.report.junk_ids} == {"unknown", "-1", "HUB"}
    assert result.report.ignored_junk_links == 10


def test_duplicates_and_self_links_are_harmless() -> None:
    result = resolve_merges(history(("A", "B", "2025-01-01"), ("A", "B", "2025-01-01"), ("B", "B", "2025-01-03")))
    assert mapping(result.merge_map) == {"A": "B", "B": "B"}
    assert result.report.distinct_links == 1


def test_equal_times_break_ties_deterministically() -> None:
    forward = resolve_merges(history(("A", "B", "2025-01-01"), ("A", "C", "2025-01-01"))).merge_map
    backward = resolve_merges(history(("A", "C", "2025-01-01"), ("A", "B", "2025-01-01"))).merge_map
    assert mapping(forward) == mapping(backward) == {"A": "C", "B": "C", "C": "C"}


def test_empty_history_gives_an_empty_map() -> None:
    result = resolve_merges(history())
    assert result.merge_map.num_rows == 0
    assert result.merge_map.schema == MERGE_MAP.schema


def test_one_component_of_100000_ids() -> None:
    n = 100_000
    times = pd.date_range("2025-01-01", periods=n - 1, freq="min", tz="UTC")
    records = pa.table(
        {
            "old_id": [f"id{i}" for i in range(n - 1)],
            "new_id": [f"id{i + 1}" for i in range(n - 1)],
            "merged_at": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )
    result = resolve_merges(records)
    assert result.merge_map.num_rows == n
    assert set(result.merge_map.column("canonical_id").to_pylist()) == {f"id{n - 1}"}
    assert result.report.largest_component == n
    assert result.report.deepest_chain == n - 1
    depths = column(result.merge_map, "chain_depth")
    assert depths["id0"] == n - 1 and depths["id99990"] == 9
    assert result.report.too_deep_ids == n - 1 - 20
    with pytest.raises(MergeChainTooDeepError, match="max_chain_depth=20"):
        resolve_merges(records, ResolverSettings(strict=True))
