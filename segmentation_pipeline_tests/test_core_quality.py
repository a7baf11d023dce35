"""The data-quality rules fail on broken partitions, not only pass on good ones."""

import math
from collections.abc import Callable
from datetime import date, datetime, timezone

import pyarrow as pa
import pytest

from segmentation_pipeline.core import quality
from segmentation_pipeline.core.schemas import (
    CLUSTERS,
    FEATURE_VALUES,
    MERGE_MAP,
    PROFILES,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
    ROBUSTNESS,
    SEGMENTS,
    UTC_TIMESTAMP,
    VIABILITY,
    TableSpec,
)
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
    warehouse.write_partition(
        RAW_EVENTS, DAY, events([("c1", "refund", datetime(2025, 2, 1, 23, 59, tzinfo=timezone.utc))])
    )
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


# ------------------------------------------------------------------ profiles and segments
# A consistent day: c1 and c2 in S1, c3 in S2; `a` was merged into c1; `unknown` is junk.

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
GOOD_SCORES: dict[str, float | None] = {
    "feature_drop_stability": 0.9,
    "time_window_stability": 0.8,
    "bootstrap_stability": 0.85,
    "overall": 0.86,
}
GOOD_SEGMENT_SIZES = {"S1": 2, "S2": 1}


def profiles(canonical_ids: list[str]) -> pa.Table:
    n = len(canonical_ids)
    return pa.table(
        {
            "canonical_id": canonical_ids,
            "n_ids": [1] * n,
            "window_days": [90] * n,
            "first_event": pa.array([T0] * n, UTC_TIMESTAMP),
            "last_event": pa.array([T0] * n, UTC_TIMESTAMP),
            "clv_method": ["historical"] * n,
            "lifecycle_stage": ["active"] * n,
            "repeat_buyer": [True] * n,
        }
    )


def assignments(pairs: list[tuple[str, str]]) -> pa.Table:
    """(canonical_id, segment_id) rows of the clusters table."""
    n = len(pairs)
    return pa.table(
        {
            "canonical_id": [p[0] for p in pairs],
            "segment_id": [p[1] for p in pairs],
            "distance": [0.5] * n,
            "shaped_segments": [True] * n,
        }
    )


def segments(sizes: dict[str, int]) -> pa.Table:
    n = len(sizes)
    total = sum(sizes.values()) or 1
    return pa.table(
        {
            "segment_id": list(sizes),
            "name": [f"Segment {s}" for s in sizes],
            "traits": pa.array([["buys often"]] * n, pa.list_(pa.string())),
            "size": list(sizes.values()),
            "share": [size / total for size in sizes.values()],
            "total_clv": [100.0 * size for size in sizes.values()],
            "mean_clv": [100.0] * n,
            "centroid": pa.array([[("frequency", 1.0)]] * n, FEATURE_VALUES),
            "feature_means": pa.array([[("frequency", 1.0)]] * n, FEATURE_VALUES),
            "is_new": [True] * n,
        }
    )


def robustness(scores: dict[str, dict[str, float | None]]) -> pa.Table:
    """One row per segment: GOOD_SCORES with the given scores replaced."""
    rows = [{**GOOD_SCORES, **replaced} for replaced in scores.values()]
    n = len(rows)
    return pa.table(
        {
            "segment_id": list(scores),
            **{score: pa.array([row[score] for row in rows], pa.float64()) for score in GOOD_SCORES},
            "time_window_windows": [2] * n,
            "bootstrap_samples": [20] * n,
            "band": ["stable"] * n,
            "production_ready": [True] * n,
        }
    )


def viability(decisions: dict[str, tuple[bool, list[str], float]]) -> pa.Table:
    """One row per segment from (approved, reasons, strategic_impact)."""
    n = len(decisions)
    return pa.table(
        {
            "segment_id": list(decisions),
            "size": [1] * n,
            "share": [0.5] * n,
            "total_clv": [100.0] * n,
            "mean_clv": [100.0] * n,
            "campaign_cost": [2.0] * n,
            "incremental_profit": [3.0] * n,
            "expected_roi": [0.5] * n,
            "strategic_impact": [d[2] for d in decisions.values()],
            "strategic_tier": ["medium"] * n,
            "approved": [d[0] for d in decisions.values()],
            "reasons": pa.array([d[1] for d in decisions.values()], pa.list_(pa.string())),
            "failed_criteria": pa.array([[] if d[0] else ["size"] for d in decisions.values()], pa.list_(pa.string())),
        }
    )


def good_day() -> dict[str, pa.Table]:
    return {
        MERGE_MAP.name: merge_map(
            [("a", "c1"), ("c1", "c1"), ("c2", "c2"), ("c3", "c3"), ("unknown", "unknown")], junk=("unknown",)
        ),
        PROFILES.name: profiles(["c1", "c2", "c3"]),
        CLUSTERS.name: assignments([("c1", "S1"), ("c2", "S1"), ("c3", "S2")]),
        SEGMENTS.name: segments(GOOD_SEGMENT_SIZES),
        ROBUSTNESS.name: robustness({"S1": {}, "S2": {}}),
        VIABILITY.name: viability(
            {"S1": (True, ["passes every criterion"], 0.6), "S2": (False, ["smaller than 2% of customers"], 0.2)}
        ),
    }


STORED_TABLES = (MERGE_MAP, PROFILES, CLUSTERS, SEGMENTS, ROBUSTNESS, VIABILITY)


def write_day(warehouse: Warehouse, day: date = DAY, skip: tuple[str, ...] = (), **replaced: pa.Table) -> None:
    """Write the consistent day, with some tables replaced (by table name) and some left out."""
    tables = {**good_day(), **replaced}
    for spec in STORED_TABLES:
        if spec.name not in skip:
            warehouse.write_partition(spec, day, tables[spec.name])


StoredRule = Callable[[Warehouse, date], quality.CheckOutcome]
STORED_RULES: dict[StoredRule, tuple[TableSpec, ...]] = {
    quality.profiles_unique_per_customer: (PROFILES,),
    quality.no_merged_away_ids: (PROFILES, MERGE_MAP),
    quality.every_profile_in_one_segment: (PROFILES, CLUSTERS, SEGMENTS),
    quality.robustness_scores_in_unit_interval: (ROBUSTNESS, SEGMENTS),
    quality.every_segment_decided: (VIABILITY, SEGMENTS),
}


def violations(outcome: quality.CheckOutcome) -> int:
    """The violation count, checked to agree with `passed` and the summary."""
    count = outcome.metadata["violations"]
    assert outcome.passed == (count == 0)
    assert outcome.summary.startswith(f"{count} ")
    return count


@pytest.mark.parametrize("rule", list(STORED_RULES), ids=lambda rule: rule.__name__)
def test_stored_rules_pass_on_a_consistent_day(warehouse: Warehouse, rule: StoredRule) -> None:
    write_day(warehouse)
    outcome = rule(warehouse, DAY)
    assert outcome.passed and outcome.metadata == {"violations": 0}


@pytest.mark.parametrize("rule", list(STORED_RULES), ids=lambda rule: rule.__name__)
def test_stored_rules_read_only_their_own_day(warehouse: Warehouse, rule: StoredRule) -> None:
    write_day(warehouse)
    write_day(
        warehouse,
        date(2025, 2, 2),
        profiles=profiles(["c1", "c1", "a", "unknown"]),
        clusters=assignments([("c1", "S9")]),
        segments=segments({"S1": 5}),
        robustness=robustness({"S1": {"overall": 1.5}}),
        viability=viability({"S1": (False, [], 2.0)}),
    )
    assert violations(rule(warehouse, DAY)) == 0
    assert violations(rule(warehouse, date(2025, 2, 2))) > 0


@pytest.mark.parametrize(
    ("rule", "missing"),
    [(rule, spec) for rule, specs in STORED_RULES.items() for spec in specs],
    ids=lambda value: getattr(value, "__name__", None) or value.name,
)
def test_stored_rules_fail_without_a_partition(warehouse: Warehouse, rule: StoredRule, missing: TableSpec) -> None:
    write_day(warehouse, skip=(missing.name,))
    outcome = rule(warehouse, DAY)
    assert not outcome.passed
    assert f"no {missing.name} partition for {DAY}" in outcome.summary


def test_stored_rules_name_every_missing_table(warehouse: Warehouse) -> None:
    outcome = quality.every_profile_in_one_segment(warehouse, DAY)
    assert not outcome.passed
    assert outcome.summary == f"no profiles, clusters, segments partition for {DAY}"


@pytest.mark.parametrize(
    ("canonical_ids", "expected"),
    [
        pytest.param(["c1", "c1", "c2"], 1, id="one-customer-twice"),
        pytest.param(["c1", "c1", "c1", "c2"], 1, id="one-customer-three-times"),
        pytest.param(["c1", "c2", "c1", "c2", "c3"], 2, id="two-customers-twice"),
    ],
)
def test_profiles_unique_per_customer_counts_repeated_customers(
    warehouse: Warehouse, canonical_ids: list[str], expected: int
) -> None:
    write_day(warehouse, profiles=profiles(canonical_ids))
    assert violations(quality.profiles_unique_per_customer(warehouse, DAY)) == expected


@pytest.mark.parametrize(
    ("canonical_ids", "expected"),
    [
        pytest.param(["c1", "c2"], 0, id="ids-that-map-to-themselves"),
        pytest.param(["c9"], 0, id="id-never-merged"),
        pytest.param(["a", "c2"], 1, id="id-merged-into-c1"),
        pytest.param(["unknown", "c2"], 1, id="junk-id-mapping-to-itself"),
        pytest.param(["a", "unknown", "c1", "c2"], 2, id="merged-and-junk"),
    ],
)
def test_no_merged_away_ids_counts_profiles_of_merged_or_junk_ids(
    warehouse: Warehouse, canonical_ids: list[str], expected: int
) -> None:
    write_day(warehouse, profiles=profiles(canonical_ids))
    assert violations(quality.no_merged_away_ids(warehouse, DAY)) == expected


def test_no_merged_away_ids_counts_a_junk_id_merged_into_a_customer(warehouse: Warehouse) -> None:
    write_day(
        warehouse,
        merge_map=merge_map([("guest", "c1"), ("c1", "c1")], junk=("guest",)),
        profiles=profiles(["guest", "c1"]),
    )
    assert violations(quality.no_merged_away_ids(warehouse, DAY)) == 1


@pytest.mark.parametrize(
    ("canonical_ids", "pairs", "sizes", "expected"),
    [
        pytest.param(
            ["c1", "c2", "c3", "c4"],
            [("c1", "S1"), ("c2", "S1"), ("c3", "S2")],
            GOOD_SEGMENT_SIZES,
            1,
            id="profile-without-assignment",
        ),
        pytest.param(
            ["c1", "c2", "c3"],
            [("c1", "S1"), ("c2", "S1"), ("c3", "S2"), ("c4", "S2")],
            {"S1": 2, "S2": 2},
            1,
            id="assignment-without-profile",
        ),
        pytest.param(
            ["c1", "c2", "c3"],
            [("c1", "S1"), ("c1", "S2"), ("c2", "S1"), ("c3", "S2")],
            {"S1": 2, "S2": 2},
            1,
            id="customer-assigned-twice",
        ),
        pytest.param(
            ["c1", "c2", "c3"],
            [("c1", "S1"), ("c2", "S1"), ("c3", "S9")],
            {"S1": 2},
            1,
            id="assignment-to-unknown-segment",
        ),
        pytest.param(
            ["c1", "c2", "c3"],
            [("c1", "S1"), ("c2", "S1"), ("c3", "S2")],
            {"S1": 3, "S2": 1},
            1,
            id="size-above-member-count",
        ),
        pytest.param(
            ["c1", "c2", "c3"],
            [("c1", "S1"), ("c2", "S1"), ("c3", "S2")],
            {"S1": 1, "S2": 0},
            2,
            id="two-sizes-below-member-count",
        ),
        pytest.param(
            ["c1", "c2", "c3"],
            [("c1", "S1"), ("c2", "S1"), ("c3", "S1")],
            {"S1": 3, "S2": 1},
            1,
            id="segment-with-size-but-no-members",
        ),
        # c3, c4 unassigned (2); c5 has no profile (1); c1 twice (1); c5 in unknown S9 (1); S2 has 1 member, not 2 (1).
        pytest.param(
            ["c1", "c2", "c3", "c4"],
            [("c1", "S1"), ("c1", "S2"), ("c2", "S1"), ("c5", "S9")],
            {"S1": 2, "S2": 2},
            6,
            id="every-breakage-at-once",
        ),
    ],
)
def test_every_profile_in_one_segment_counts_each_breakage(
    warehouse: Warehouse,
    canonical_ids: list[str],
    pairs: list[tuple[str, str]],
    sizes: dict[str, int],
    expected: int,
) -> None:
    write_day(warehouse, profiles=profiles(canonical_ids), clusters=assignments(pairs), segments=segments(sizes))
    assert violations(quality.every_profile_in_one_segment(warehouse, DAY)) == expected


def test_every_profile_in_one_segment_accepts_an_empty_segment_of_size_zero(warehouse: Warehouse) -> None:
    write_day(warehouse, segments=segments({**GOOD_SEGMENT_SIZES, "S3": 0}))
    assert violations(quality.every_profile_in_one_segment(warehouse, DAY)) == 0


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        pytest.param({"S1": {"overall": 1.2}, "S2": {}}, 1, id="overall-above-1"),
        pytest.param({"S1": {"feature_drop_stability": -0.1}, "S2": {}}, 1, id="feature-drop-below-0"),
        pytest.param({"S1": {}, "S2": {"bootstrap_stability": 1.2}}, 1, id="bootstrap-above-1"),
        pytest.param({"S1": {"time_window_stability": -0.1}, "S2": {}}, 1, id="time-window-below-0"),
        pytest.param(
            {"S1": {"feature_drop_stability": 1.2, "overall": -0.1}, "S2": {}}, 1, id="two-bad-scores-one-row"
        ),
        pytest.param({"S1": {"overall": 1.2}, "S2": {"overall": -0.1}}, 2, id="two-bad-rows"),
        pytest.param({"S1": {"overall": None}, "S2": {}}, 1, id="overall-null"),
        pytest.param({"S1": {"overall": math.nan}, "S2": {}}, 1, id="overall-nan"),
        pytest.param({"S1": {"time_window_stability": None}, "S2": {}}, 0, id="time-window-not-measured"),
        pytest.param(
            {"S1": {"time_window_stability": None, "bootstrap_stability": None}, "S2": {}},
            0,
            id="two-tests-not-measured",
        ),
        pytest.param(
            {"S1": {"time_window_stability": None, "bootstrap_stability": 1.2}, "S2": {}}, 1, id="null-and-bad"
        ),
        pytest.param(
            {"S1": dict.fromkeys(GOOD_SCORES, 0.0), "S2": dict.fromkeys(GOOD_SCORES, 1.0)}, 0, id="bounds-included"
        ),
        pytest.param({"S1": {}}, 1, id="segment-without-scores"),
        pytest.param({"S1": {"overall": None}}, 2, id="segment-without-scores-and-null-overall"),
    ],
)
def test_robustness_scores_in_unit_interval_counts_bad_or_missing_scores(
    warehouse: Warehouse, scores: dict[str, dict[str, float | None]], expected: int
) -> None:
    write_day(warehouse, robustness=robustness(scores))
    assert violations(quality.robustness_scores_in_unit_interval(warehouse, DAY)) == expected


def test_robustness_scores_in_unit_interval_allows_a_nan_time_window_score(warehouse: Warehouse) -> None:
    write_day(warehouse, robustness=robustness({"S1": {"time_window_stability": math.nan}, "S2": {}}))
    assert violations(quality.robustness_scores_in_unit_interval(warehouse, DAY)) == 0


@pytest.mark.parametrize(
    ("decisions", "expected"),
    [
        pytest.param(
            {"S1": (True, ["passes every criterion"], 0.6), "S2": (True, ["passes every criterion"], 0.4)},
            0,
            id="approved-with-reasons",
        ),
        pytest.param({"S1": (True, [], 0.6), "S2": (True, [], 0.4)}, 0, id="approved-without-reasons"),
        pytest.param({"S1": (True, ["ok"], 0.0), "S2": (False, ["too small"], 1.0)}, 0, id="impact-bounds-included"),
        pytest.param({"S1": (True, ["ok"], 0.6), "S2": (False, [], 0.2)}, 1, id="rejected-without-reasons"),
        pytest.param({"S1": (True, ["ok"], 1.5), "S2": (False, ["too small"], 0.2)}, 1, id="impact-above-1"),
        pytest.param({"S1": (True, ["ok"], -0.2), "S2": (False, ["too small"], 0.2)}, 1, id="impact-below-0"),
        pytest.param({"S1": (True, ["ok"], math.nan), "S2": (False, ["too small"], 0.2)}, 1, id="impact-nan"),
        pytest.param(
            {"S1": (True, ["ok"], 0.6), "S2": (False, [], 1.5)}, 1, id="rejected-without-reasons-and-bad-impact"
        ),
        pytest.param({"S1": (True, ["ok"], 0.6)}, 1, id="segment-without-decision"),
        pytest.param({"S1": (False, [], 1.5)}, 2, id="no-decision-and-bad-row"),
    ],
)
def test_every_segment_decided_counts_undecided_or_unexplained_segments(
    warehouse: Warehouse, decisions: dict[str, tuple[bool, list[str], float]], expected: int
) -> None:
    write_day(warehouse, viability=viability(decisions))
    assert violations(quality.every_segment_decided(warehouse, DAY)) == expected
