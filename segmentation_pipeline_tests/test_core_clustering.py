"""Clustering: three obvious groups are recovered, the arithmetic is right by hand, and IDs stay stable."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from sklearn.cluster import MiniBatchKMeans

from segmentation_pipeline.core import clustering
from segmentation_pipeline.core.clustering import ClusteringSettings, Segmentation
from segmentation_pipeline.core.errors import ClusteringError, DataValidationError, InsufficientDataError
from segmentation_pipeline.core.features import SHARE_MAP
from segmentation_pipeline.core.schemas import CLUSTERS, PROFILES, SEGMENT_MIGRATION, SEGMENTS, conform

WINDOW_END = datetime(2024, 3, 31, tzinfo=timezone.utc)
FEATURES = ("frequency", "monetary_total", "weekend_share", "channel_shares")

#: Three groups that differ on every feature by far more than their jitter.
GROUPS = {
    "weekend_web": {"frequency": 2, "monetary_total": 40.0, "weekend_share": 0.8, "web": 0.9},
    "weekday_app": {"frequency": 8, "monetary_total": 150.0, "weekend_share": 0.1, "web": 0.1},
    "big_spender": {"frequency": 30, "monetary_total": 5_000.0, "weekend_share": 0.45, "web": 0.5},
    # Appears only in the third snapshot of the stable-ID test: far from all the others, and in a new channel.
    "store_bargain": {"frequency": 60, "monetary_total": 15.0, "weekend_share": 0.95, "web": 0.1, "store": 0.9},
}


def customer(canonical_id: str, centre: dict[str, float], active_days: int = 5) -> dict[str, object]:
    web = centre["web"]
    store = centre.get("store", 0.0)
    channels = [("app", 1.0 - web - store), ("web", web)] + ([("store", store)] if store else [])
    return {
        "canonical_id": canonical_id,
        "frequency": int(centre["frequency"]),
        "monetary_total": float(centre["monetary_total"]),
        "weekend_share": float(centre["weekend_share"]),
        "channel_shares": channels,
        "active_days": active_days,
    }


def group_customers(group: str, n: int, seed: int, first: int = 0, active_days: int = 5) -> list[dict[str, object]]:
    """`n` customers of `group` named `<group>-<number>` from `first` on, with small seeded jitter."""
    rng = np.random.default_rng(seed)
    centre = GROUPS[group]
    rows = []
    for number in range(first, first + n):
        jittered = {
            **centre,
            "frequency": centre["frequency"] + int(rng.integers(0, 2)),
            "monetary_total": centre["monetary_total"] * float(np.exp(rng.normal(0.0, 0.1))),
            "weekend_share": float(np.clip(centre["weekend_share"] + rng.normal(0.0, 0.03), 0.0, 1.0)),
            "web": float(np.clip(centre["web"] + rng.normal(0.0, 0.03), 0.0, 1.0 - centre.get("store", 0.0))),
        }
        rows.append(customer(f"{group}-{number:03d}", jittered, active_days))
    return rows


def profiles_table(rows: list[dict[str, object]], window_days: int = 90) -> pa.Table:
    """A PROFILES table of the given feature columns (and `lifecycle` stage); the other features are null."""
    stages = [row.get("lifecycle", "active") for row in rows]
    rows = [{name: value for name, value in row.items() if name != "lifecycle"} for row in rows]
    names = list(rows[0])
    table = pa.Table.from_pylist(rows, schema=pa.schema([PROFILES.schema.field(name) for name in names]))
    n = table.num_rows
    required = {
        "n_ids": pa.array([1] * n, pa.int64()),
        "window_days": pa.array([window_days] * n, pa.int64()),
        "first_event": pa.array([WINDOW_END] * n, pa.timestamp("us", tz="UTC")),
        "last_event": pa.array([WINDOW_END] * n, pa.timestamp("us", tz="UTC")),
        "clv_method": pa.array(["heuristic"] * n, pa.string()),
        "lifecycle_stage": pa.array(stages, pa.string()),
        "repeat_buyer": pa.array([True] * n),
    }
    for name, column in required.items():
        table = table.append_column(name, column)
    return conform(table, PROFILES)


#: The lifecycle stages of the three groups' customers: one stage dominates two of them.
GROUP_STAGES = {"weekend_web": ["lapsed"], "weekday_app": ["new", "active"], "big_spender": ["loyal"]}


def three_groups(seed: int = 0, per_group: int = 60) -> list[dict[str, object]]:
    groups = ["weekend_web", "weekday_app", "big_spender"]
    return [
        row | {"lifecycle": GROUP_STAGES[group][number % len(GROUP_STAGES[group])]}
        for index, group in enumerate(groups)
        for number, row in enumerate(group_customers(group, per_group, seed + index))
    ]


def segment_of_group(assignments: pa.Table) -> dict[str, str]:
    """Group -> its segment; fails unless every group is exactly one segment and no two groups share one."""
    segments_of: dict[str, set[str]] = defaultdict(set)
    for canonical_id, segment_id in zip(assignments["canonical_id"].to_pylist(), assignments["segment_id"].to_pylist()):
        segments_of[canonical_id.rsplit("-", 1)[0]].add(segment_id)
    assert all(len(ids) == 1 for ids in segments_of.values()), dict(segments_of)
    mapping = {group: next(iter(ids)) for group, ids in segments_of.items()}
    assert len(set(mapping.values())) == len(mapping), mapping
    return mapping


def truth_of(rows: list[dict[str, object]]) -> pa.Table:
    ids = [str(row["canonical_id"]) for row in rows]
    return pa.table({"customer_id": ids, "archetype": [cid.rsplit("-", 1)[0] for cid in ids]})


def segment_rows(result: Segmentation) -> dict[str, dict[str, object]]:
    return {row["segment_id"]: row for row in result.segments.to_pylist()}


#: min_active_days fixed here: the customers below have 5 active days, the thin ones 1 or 2. A segment
#: is a behaviour cluster here; the lifecycle groups are tested on their own further down.
SETTINGS = ClusteringSettings(features=FEATURES, min_active_days=3, within_lifecycle=False)


@pytest.fixture(scope="module")
def three_group_rows() -> list[dict[str, object]]:
    return three_groups()


@pytest.fixture(scope="module")
def segmented(three_group_rows: list[dict[str, object]]) -> Segmentation:
    return clustering.segment_customers(profiles_table(three_group_rows), SETTINGS)


# ------------------------------------------------------------------ three groups


def test_three_groups_recovered_exactly_with_k_3(
    segmented: Segmentation, three_group_rows: list[dict[str, object]]
) -> None:
    assert segmented.selection.k == 3
    assert [candidate.k for candidate in segmented.selection.candidates] == list(range(3, 11))
    mapping = segment_of_group(segmented.assignments)
    # Equal sizes: IDs go by label order, so only the set is fixed.
    assert sorted(mapping.values()) == ["S01", "S02", "S03"]
    assert clustering.adjusted_rand_against_truth(segmented.assignments, truth_of(three_group_rows)) == (1.0, 180)

    assert segmented.assignments.schema == CLUSTERS.schema
    assert segmented.segments.schema == SEGMENTS.schema
    assert segmented.segments["segment_id"].to_pylist() == ["S01", "S02", "S03"]
    assert segmented.segments["size"].to_pylist() == [60, 60, 60]
    assert segmented.segments["share"].to_pylist() == pytest.approx([1 / 3] * 3)
    assert all(segmented.segments["is_new"].to_pylist())
    assert segmented.segments["match_distance"].null_count == 3
    assert all(segmented.assignments["shaped_segments"].to_pylist())
    assert clustering.features_of(segmented.segments) == list(FEATURES)
    assert clustering.features_of(SEGMENTS.empty()) == []


def test_centroids_are_the_group_means_in_original_units(
    segmented: Segmentation, three_group_rows: list[dict[str, object]]
) -> None:
    mapping = segment_of_group(segmented.assignments)
    rows = segment_rows(segmented)
    profiles = profiles_table(three_group_rows)
    ids = profiles["canonical_id"].to_pylist()
    for group in ("weekend_web", "weekday_app", "big_spender"):
        members = np.array([cid.startswith(group) for cid in ids])
        centroid = dict(rows[mapping[group]]["centroid"])
        # log1p features average in log space; shares average as they are.
        monetary = profiles["monetary_total"].to_numpy()[members]
        assert centroid["monetary_total"] == pytest.approx(np.expm1(np.log1p(monetary).mean()), rel=1e-6)
        weekend = profiles["weekend_share"].to_numpy()[members]
        assert centroid["weekend_share"] == pytest.approx(weekend.mean(), abs=1e-6)
        assert centroid["channel_shares[web]"] == pytest.approx(GROUPS[group]["web"], abs=0.02)
        means = dict(rows[mapping[group]]["feature_means"])
        assert means["monetary_total"] == pytest.approx(monetary.mean(), rel=1e-6)


def test_k_3_beats_2_and_4_when_2_is_allowed(three_group_rows: list[dict[str, object]]) -> None:
    settings = replace(SETTINGS, k_min=2, k_max=6)
    result = clustering.segment_customers(profiles_table(three_group_rows), settings)

    assert result.selection.k == 3
    assert result.selection.elbow_k == 3
    segment_of_group(result.assignments)
    scores = {candidate.k: candidate.score for candidate in result.selection.candidates}
    assert scores[3] > scores[2] and scores[3] > scores[4]
    assert scores[3] == max(scores.values())


def test_scores_follow_the_documented_formula(three_group_rows: list[dict[str, object]]) -> None:
    settings = replace(SETTINGS, k_min=2, k_max=6)
    matrix = clustering.feature_matrix(profiles_table(three_group_rows), FEATURES)
    selection = clustering.choose_k(matrix.values, settings)
    candidates = selection.candidates

    def normalised(values: list[float]) -> np.ndarray:
        array = np.array(values)
        return (array - array.min()) / (array.max() - array.min())

    silhouette = normalised([c.silhouette for c in candidates])
    calinski = normalised([c.calinski_harabasz for c in candidates])
    davies = 1.0 - normalised([c.davies_bouldin for c in candidates])
    # Elbow: 1 - |k - k_elbow| / (k_max - k_min), here k_max - k_min = 4.
    elbow = np.array([1.0 - abs(c.k - selection.elbow_k) / 4 for c in candidates])
    expected = 0.4 * silhouette + 0.2 * calinski + 0.2 * davies + 0.2 * elbow
    assert [c.score for c in candidates] == pytest.approx(expected.tolist(), abs=1e-6)
    assert selection.k == candidates[int(np.argmax(expected))].k
    assert selection.sample_size == 180


def test_minibatch_path_recovers_the_groups(
    three_group_rows: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    fitted_rows: list[int] = []

    class CountingMiniBatchKMeans(MiniBatchKMeans):
        def fit(self, X, y=None, sample_weight=None):
            fitted_rows.append(len(X))
            return super().fit(X, y, sample_weight)

    monkeypatch.setattr(clustering, "MiniBatchKMeans", CountingMiniBatchKMeans)
    settings = replace(SETTINGS, minibatch_above=50)
    result = clustering.segment_customers(profiles_table(three_group_rows), settings)

    assert fitted_rows == [180]
    assert result.selection.k == 3
    segment_of_group(result.assignments)
    assert clustering.adjusted_rand_against_truth(result.assignments, truth_of(three_group_rows)) == (1.0, 180)


def test_same_inputs_and_seed_give_identical_tables(three_group_rows: list[dict[str, object]]) -> None:
    profiles = profiles_table(three_group_rows)
    first = clustering.segment_customers(profiles, SETTINGS)
    second = clustering.segment_customers(profiles, SETTINGS)
    assert first.assignments.equals(second.assignments)
    assert first.segments.equals(second.segments)
    assert first.selection == second.selection


# ------------------------------------------------------------------ names and traits


def test_big_spenders_are_named_high_value_with_a_monetary_trait(
    segmented: Segmentation, three_group_rows: list[dict[str, object]]
) -> None:
    mapping = segment_of_group(segmented.assignments)
    rows = segment_rows(segmented)
    big = rows[mapping["big_spender"]]
    # "Frequent high-value" rather than "High-value frequent": see test_the_documented_name_example.
    assert "high-value" in big["name"].lower()
    # Its strongest trait, in original units: the members' mean against everyone's.
    monetary = [float(row["monetary_total"]) for row in three_group_rows]
    big_mean = np.mean(
        [value for row, value in zip(three_group_rows, monetary) if row["canonical_id"].startswith("big")]
    )
    assert 4_500 < big_mean < 5_500
    assert big["traits"][0] == f"high monetary total: {big_mean:,.0f} vs {np.mean(monetary):,.0f} overall"
    assert any(trait.startswith("high frequency:") for trait in big["traits"])
    # A lifecycle stage that holds 60% of a segment or more leads its name.
    assert big["name"] == "Loyal frequent high-value shoppers"
    for group in ("weekend_web", "weekday_app"):
        assert "high-value" not in rows[mapping[group]]["name"].lower()
    assert rows[mapping["weekend_web"]]["name"] == "Lapsed occasional weekend web shoppers"
    assert rows[mapping["weekday_app"]]["name"] == "Weekday app shoppers"
    assert rows[mapping["weekday_app"]]["lifecycle_mix"] == [("new", 0.5), ("active", 0.5)]
    assert big["lifecycle_mix"] == [("loyal", 1.0)]
    names = segmented.segments["name"].to_pylist()
    assert len(set(names)) == len(names)


def test_segment_names_keep_the_word_order_and_clashes_get_ids() -> None:
    # name_words has put the words in feature order already.
    assert clustering.segment_names(
        [["occasional", "high-value", "weekend", "electronics-focused", "web"]], ["S01"]
    ) == ["Occasional high-value weekend electronics-focused web shoppers"]
    assert clustering.segment_names([["frequent"], ["frequent", "frequent"], []], ["S01", "S02", "S03"]) == [
        "Frequent shoppers (S01)",
        "Frequent shoppers (S02)",
        "Typical shoppers",
    ]


def test_the_documented_name_example() -> None:
    assert clustering.segment_names([["frequent", "high-value", "electronics-focused"]], ["S01"]) == [
        "Frequent high-value electronics-focused shoppers"
    ]


def trait(column: str, word: str) -> clustering.Trait:
    return clustering.Trait(column=column, z=1.0, word=word, sentence="")


def test_name_words_follow_the_feature_list_whatever_their_strength() -> None:
    # Strongest first: churn_risk, channel_shares[web], monetary_total, mobile_share.
    traits = [
        trait("churn_risk", "at-risk"),
        trait("channel_shares[web]", "web"),
        trait("monetary_total", "high-value"),
        trait("mobile_share", "mobile"),
    ]
    # FEATURES order: monetary_total ... channel_shares, mobile_share, churn_risk.
    assert clustering.name_words(traits, 3) == ["high-value", "web", "at-risk"]
    assert clustering.name_words(traits, 4) == ["high-value", "web", "mobile", "at-risk"]
    # Two words of one feature keep their strength order; traits without a word are skipped.
    shares = [
        trait("category_shares[toys]", "toys-focused"),
        trait("tenure_days", ""),
        trait("category_shares[books]", "books-focused"),
    ]
    assert clustering.name_words(shares, 3) == ["toys-focused", "books-focused"]


# ------------------------------------------------------------------ feature matrix


def hand_made_profiles() -> pa.Table:
    rows = [
        {"recency": 1.0, "log_money": 0.0, "weekend": 0.0, "channels": [("web", 1.0)]},
        {"recency": 3.0, "log_money": 1.0, "weekend": 0.2, "channels": [("web", 0.5), ("app", 0.5)]},
        {"recency": None, "log_money": 2.0, "weekend": 0.2, "channels": [("app", 1.0)]},
        {"recency": 7.0, "log_money": 3.0, "weekend": 0.2, "channels": None},
        {"recency": 9.0, "log_money": 4.0, "weekend": 1.0, "channels": [("app", 0.75), ("web", 0.25)]},
    ]
    table = pa.table(
        {
            "canonical_id": [f"c{index}" for index in range(len(rows))],
            "recency_days": pa.array([row["recency"] for row in rows], pa.float64()),
            "monetary_total": pa.array([math.expm1(row["log_money"]) for row in rows], pa.float64()),
            "weekend_share": pa.array([row["weekend"] for row in rows], pa.float64()),
            "morning_share": pa.array([0.5] * len(rows), pa.float64()),
            "channel_shares": pa.array([row["channels"] for row in rows], type=SHARE_MAP),
            "n_ids": pa.array([1] * len(rows), pa.int64()),
            "window_days": pa.array([30] * len(rows), pa.int64()),
            "first_event": pa.array([WINDOW_END] * len(rows), pa.timestamp("us", tz="UTC")),
            "last_event": pa.array([WINDOW_END] * len(rows), pa.timestamp("us", tz="UTC")),
            "clv_method": ["heuristic"] * len(rows),
            "lifecycle_stage": [row.get("lifecycle", "active") for row in rows],
            "repeat_buyer": [True] * len(rows),
        }
    )
    return conform(table, PROFILES)


MATRIX_FEATURES = ("recency_days", "monetary_total", "weekend_share", "morning_share", "sessions", "channel_shares")


def test_feature_matrix_by_hand() -> None:
    matrix = clustering.feature_matrix(hand_made_profiles(), MATRIX_FEATURES)

    assert matrix.columns == [
        "recency_days",
        "monetary_total",
        "weekend_share",
        "morning_share",
        "channel_shares[app]",
        "channel_shares[web]",
    ]
    assert matrix.groups == {
        "recency_days": [0],
        "monetary_total": [1],
        "weekend_share": [2],
        "morning_share": [3],
        "channel_shares": [4, 5],
    }
    assert matrix.dropped == ["sessions"]
    assert matrix.log1p.tolist() == [False, True, False, False, False, False]

    # recency: the null takes the window, 30 -> [1, 3, 30, 7, 9]; median 7, quartiles 3 and 9, IQR 6.
    assert matrix.values[:, 0] == pytest.approx([-1.0, -2 / 3, 23 / 6, 0.0, 1 / 3])
    # monetary: log1p gives [0, 1, 2, 3, 4]; median 2, quartiles 1 and 3, IQR 2.
    assert matrix.values[:, 1] == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    # weekend: [0, .2, .2, .2, 1]; IQR 0, so the standard deviation: sqrt(0.608 / 5).
    weekend_std = math.sqrt(0.608 / 5)
    assert matrix.values[:, 2] == pytest.approx([(value - 0.2) / weekend_std for value in (0, 0.2, 0.2, 0.2, 1)])
    # morning: constant, IQR and deviation 0, so scale 1 around 0.5.
    assert matrix.values[:, 3] == pytest.approx([0.0] * 5)
    assert matrix.scale[3] == 1.0
    # app: missing key and null map are 0 -> [0, .5, 1, 0, .75]; median .5, quartiles 0 and .75.
    assert matrix.values[:, 4] == pytest.approx([-2 / 3, 0.0, 2 / 3, -2 / 3, 1 / 3])
    # web: [1, .5, 0, 0, .25]; median .25, quartiles 0 and .5.
    assert matrix.values[:, 5] == pytest.approx([1.5, 0.5, -0.5, -0.5, 0.0])
    assert matrix.center == pytest.approx([7.0, 2.0, 0.2, 0.5, 0.5, 0.25])
    assert matrix.scale == pytest.approx([6.0, 2.0, weekend_std, 1.0, 0.75, 0.5])


def test_feature_matrix_round_trips() -> None:
    matrix = clustering.feature_matrix(hand_made_profiles(), MATRIX_FEATURES)
    original = np.array(
        [
            [1.0, 0.0, 0.0, 0.5, 0.0, 1.0],
            [30.0, math.e**2 - 1, 0.2, 0.5, 1.0, 0.0],
            [12.5, 1234.5, 0.9, 0.1, 0.3, 0.7],
        ]
    )
    assert matrix.to_original(matrix.from_original(original)) == pytest.approx(original)
    # The filled profile values come back from the matrix.
    assert matrix.to_original(matrix.values)[2, :2] == pytest.approx([30.0, math.e**2 - 1])


def test_a_feature_the_same_for_everyone_keeps_the_segment_ids() -> None:
    # A column of 1/3s among others has a computed standard deviation of about 8e-16, not 0. Taken
    # as its scale, the previous snapshot's centroid (stored to six decimals, 0.333333) came out
    # 4e8 away from every centre, and the same customers got three new segment IDs the next day.
    rows = three_groups()
    for row in rows:
        row["weekend_share"] = 1 / 3
    assert (np.full((len(rows), 5), 1 / 3).std(axis=0) > 0).all()
    profiles = profiles_table(rows)
    matrix = clustering.feature_matrix(profiles, FEATURES)
    assert matrix.scale[matrix.columns.index("weekend_share")] == 1.0
    assert (matrix.values[:, matrix.columns.index("weekend_share")] == 0.0).all()

    first = clustering.segment_customers(profiles, SETTINGS)
    ids = first.segments["segment_id"].to_pylist()
    second = clustering.segment_customers(profiles, SETTINGS, first.segments, ids)
    assert second.segments["segment_id"].to_pylist() == ids
    assert second.segments["is_new"].to_pylist() == [False, False, False]
    assert segment_of_group(second.assignments) == segment_of_group(first.assignments)


def test_every_feature_null_is_an_error() -> None:
    with pytest.raises(ClusteringError, match="nothing to cluster"):
        clustering.feature_matrix(hand_made_profiles(), ("sessions", "pages_per_session"))


# ------------------------------------------------------------------ kneedle


def test_kneedle_by_hand() -> None:
    # x -> [0, .25, .5, .75, 1]; y -> (y - 22) / 78 = [1, .231, .103, .038, 0];
    # gap 1 - x - y = [0, .519, .397, .212, 0]: the farthest below the chord is k = 2.
    assert clustering.kneedle([1, 2, 3, 4, 5], [100, 40, 30, 25, 22]) == 2
    # Same shape on k 3..7 with the knee one step later: gaps [0, .2, .45, .2, 0] -> k = 5.
    assert clustering.kneedle([3, 4, 5, 6, 7], [100, 70, 30, 10, 0]) == 5
    # Nothing below the chord: a curve bending the wrong way, a flat one, too few points.
    assert clustering.kneedle([1, 2, 3, 4, 5], [100, 90, 70, 40, 0]) is None
    assert clustering.kneedle([1, 2, 3], [5, 5, 5]) is None
    assert clustering.kneedle([1, 2], [100, 10]) is None
    assert clustering.kneedle([2, 3, 4, 5, 6], [9, 7, 5, 3, 1]) is None


def test_kneedle_finds_no_elbow_on_any_straight_line() -> None:
    # x = [0, 1/3, 2/3, 1], y = [1, 2/3, 1/3, 0]: every point is on the chord.
    assert clustering.kneedle([1, 2, 3, 4], [40, 30, 20, 10]) is None
    assert clustering.kneedle(list(range(3, 11)), [80, 70, 60, 50, 40, 30, 20, 10]) is None


# ------------------------------------------------------------------ stable IDs


def test_segment_ids_follow_the_groups_across_snapshots() -> None:
    first = clustering.segment_customers(profiles_table(three_groups(seed=0)), SETTINGS)
    first_ids = segment_of_group(first.assignments)

    # Snapshot 2: the first 10 of each group gone, 10 new ones, fresh jitter, shuffled rows.
    rows = [
        row
        for index, group in enumerate(["weekend_web", "weekday_app", "big_spender"])
        for row in group_customers(group, 60, seed=10 + index, first=10)
    ]
    rows = [rows[index] for index in np.random.default_rng(7).permutation(len(rows))]
    used = first.segments["segment_id"].to_pylist()
    second = clustering.segment_customers(profiles_table(rows), SETTINGS, first.segments, used)

    assert segment_of_group(second.assignments) == first_ids
    assert second.segments["is_new"].to_pylist() == [False, False, False]
    assert second.segments["match_distance"].null_count == 0

    # Snapshot 3: weekday_app is gone; a far-away group arrives, in a channel never seen before.
    rows = [
        *group_customers("weekend_web", 60, seed=20),
        *group_customers("big_spender", 60, seed=21),
        *group_customers("store_bargain", 60, seed=22),
    ]
    third = clustering.segment_customers(profiles_table(rows), SETTINGS, second.segments, ["S01", "S02", "S03", "S07"])
    third_ids = segment_of_group(third.assignments)
    assert third_ids["weekend_web"] == first_ids["weekend_web"]
    assert third_ids["big_spender"] == first_ids["big_spender"]
    assert third_ids["store_bargain"] == "S08"
    assert first_ids["weekday_app"] not in third.segments["segment_id"].to_pylist()
    segments = segment_rows(third)
    assert segments["S08"]["is_new"] is True
    assert segments["S08"]["match_distance"] is None
    for group in ("weekend_web", "big_spender"):
        assert segments[third_ids[group]]["is_new"] is False

    # Only the tolerance keeps the newcomers from inheriting the retired segment's ID.
    loose = replace(SETTINGS, match_tolerance=5.0)
    inherited = clustering.segment_customers(profiles_table(rows), loose, second.segments, ["S01", "S02", "S03", "S07"])
    assert segment_of_group(inherited.assignments)["store_bargain"] == first_ids["weekday_app"]


def test_new_ids_count_on_largest_segment_first() -> None:
    rows = [
        *group_customers("weekend_web", 30, seed=0),
        *group_customers("weekday_app", 90, seed=1),
        *group_customers("big_spender", 60, seed=2),
    ]
    result = clustering.segment_customers(profiles_table(rows), SETTINGS, used_ids=["S04"])
    assert segment_of_group(result.assignments) == {"weekday_app": "S05", "big_spender": "S06", "weekend_web": "S07"}


# ------------------------------------------------------------------ little history


def test_customers_with_little_history_join_the_nearest_segment_without_shaping_it(
    three_group_rows: list[dict[str, object]], segmented: Segmentation
) -> None:
    newcomer = customer("newcomer-000", GROUPS["weekend_web"], active_days=1)
    whales = [
        customer(f"whale-{number:03d}", {**GROUPS["big_spender"], "monetary_total": 50_000.0}, active_days=2)
        for number in range(5)
    ]
    result = clustering.segment_customers(profiles_table([*three_group_rows, newcomer, *whales]), SETTINGS)

    assignments = {row["canonical_id"]: row for row in result.assignments.to_pylist()}
    groups = segment_of_group(result.assignments.filter(result.assignments["shaped_segments"]))
    assert assignments["newcomer-000"]["segment_id"] == groups["weekend_web"]
    assert assignments["newcomer-000"]["shaped_segments"] is False
    for number in range(5):
        assert assignments[f"whale-{number:03d}"]["segment_id"] == groups["big_spender"]
        assert assignments[f"whale-{number:03d}"]["shaped_segments"] is False
    assert int(result.shaping.sum()) == 180
    assert result.selection.k == 3
    assert result.selection.sample_size == 180

    base_groups = segment_of_group(segmented.assignments)
    base, with_thin = segment_rows(segmented), segment_rows(result)
    for group in ("weekend_web", "weekday_app", "big_spender"):
        before = dict(base[base_groups[group]]["centroid"])
        after = dict(with_thin[groups[group]]["centroid"])
        assert after.keys() == before.keys()
        for column, value in before.items():
            assert after[column] == pytest.approx(value, rel=1e-5, abs=1e-6), (group, column)
    assert with_thin[groups["big_spender"]]["size"] == 65
    assert with_thin[groups["weekend_web"]]["size"] == 61

    # The same whales with enough history do move the big spenders' centroid.
    settled = [{**whale, "active_days": 5} for whale in whales]
    shaped = clustering.segment_customers(
        profiles_table([*three_group_rows, *settled]), replace(SETTINGS, n_clusters=3)
    )
    segment_of = dict(zip(shaped.assignments["canonical_id"].to_pylist(), shaped.assignments["segment_id"].to_pylist()))
    assert segment_of["whale-000"] == segment_of["big_spender-000"]
    moved = dict(segment_rows(shaped)[segment_of["big_spender-000"]]["centroid"])["monetary_total"]
    assert moved > 1.05 * dict(base[base_groups["big_spender"]]["centroid"])["monetary_total"]


def test_established_customers() -> None:
    rows = [customer(f"c-{index}", GROUPS["weekend_web"], active_days=days) for index, days in enumerate([5, 3, 2])]
    profiles = profiles_table(rows)
    assert clustering.established_customers(profiles, 3).tolist() == [True, True, False]
    # Fewer than two established customers: everyone shapes the segments.
    assert clustering.established_customers(profiles, 4).tolist() == [True, True, True]
    unknown = profiles.set_column(
        profiles.schema.get_field_index("active_days"), "active_days", pa.array([5, None, 4], pa.int64())
    )
    assert clustering.established_customers(unknown, 3).tolist() == [True, False, True]
    assert clustering.established_customers(unknown, 3, minimum=3).tolist() == [True, True, True]


def test_a_handful_of_established_customers_do_not_shape_the_segments_alone(
    three_group_rows: list[dict[str, object]],
) -> None:
    """Early in a history (the 13th day of a backfill) two customers had five active days: the
    segments were to be chosen among those two, and clustering failed. Everyone shapes them then."""
    thin = [{**row, "active_days": 1} for row in three_group_rows]
    thin[0]["active_days"] = thin[1]["active_days"] = 5
    result = clustering.segment_customers(profiles_table(thin), SETTINGS)
    assert int(result.shaping.sum()) == len(thin) == 180
    assert result.selection.k == 3
    # 30 established customers (10 per segment of the smallest k, 3) shape them alone.
    for row in thin[:30]:
        row["active_days"] = 5
    assert int(clustering.segment_customers(profiles_table(thin), SETTINGS).shaping.sum()) == 30


def test_nearest_center_in_batches() -> None:
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.array([[1.0, 1.0], [9.0, -1.0], [-1.0, 8.0], [6.0, 1.0], [1.0, 6.0]])
    assert clustering.nearest_center(points, centers, batch_rows=2).tolist() == [0, 1, 2, 1, 2]


def test_distance_to_center_in_batches() -> None:
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    points = np.array([[3.0, 4.0], [10.0, -2.0], [0.0, 0.0], [4.0, 8.0], [13.0, 4.0]])
    labels = np.array([0, 1, 0, 1, 1])
    # 3-4-5 triangles and a point on its centre; the fourth point is 6 across and 8 up from centre 1.
    assert clustering.distance_to_center(points, centers, labels, batch_rows=2).tolist() == [5.0, 2.0, 0.0, 10.0, 5.0]
    with pytest.raises(ClusteringError, match="6 segment labels for 4 rows"):
        clustering.distance_to_center(points[:4], centers, np.zeros(6, dtype=np.int64), batch_rows=2)


# ------------------------------------------------------------------ migration and ARI


def assignments_table(segments: dict[str, str]) -> pa.Table:
    return conform(
        pa.table(
            {
                "canonical_id": list(segments),
                "segment_id": list(segments.values()),
                "distance": [0.0] * len(segments),
                "shaped_segments": [True] * len(segments),
            }
        ),
        CLUSTERS,
    )


def migration_rows(table: pa.Table) -> set[tuple[str | None, str | None, int]]:
    return {(row["from_segment_id"], row["to_segment_id"], row["customers"]) for row in table.to_pylist()}


def test_segment_migration_by_hand() -> None:
    previous = assignments_table({"a": "S01", "b": "S01", "c": "S02", "d": "S02"})
    current = assignments_table({"a": "S01", "b": "S02", "c": "S02", "e": "S03"})
    migration = clustering.segment_migration(previous, current, date(2024, 3, 30))

    assert migration.schema == SEGMENT_MIGRATION.schema
    assert migration.num_rows == 5
    assert migration_rows(migration) == {
        ("S01", "S01", 1),
        ("S01", "S02", 1),
        ("S02", "S02", 1),
        ("S02", None, 1),
        (None, "S03", 1),
    }
    assert migration["previous_as_of"].to_pylist() == [date(2024, 3, 30)] * 5


def test_segment_migration_without_a_previous_snapshot() -> None:
    current = assignments_table({"a": "S01", "b": "S02", "c": "S02", "e": "S03"})
    migration = clustering.segment_migration(None, current, None)
    assert migration.schema == SEGMENT_MIGRATION.schema
    assert migration_rows(migration) == {(None, "S01", 1), (None, "S02", 2), (None, "S03", 1)}
    assert migration["previous_as_of"].null_count == 3


def test_adjusted_rand_against_truth_by_hand() -> None:
    assignments = assignments_table({"a": "S01", "b": "S01", "c": "S02", "d": "S02", "unknown": "S02"})
    truth = pa.table({"customer_id": ["a", "b", "c", "d", "elsewhere"], "archetype": ["x", "x", "y", "y", "x"]})
    # Perfect over the four customers in both; "unknown" and "elsewhere" are left out.
    assert clustering.adjusted_rand_against_truth(assignments, truth) == (1.0, 4)

    # Truth x x x y against S01 S01 S02 S02: pairs together in both 1, in segments 2, in truth 3, of 6;
    # expected 2 x 3 / 6 = 1, so ARI = (1 - 1) / ((2 + 3) / 2 - 1) = 0.
    mixed = pa.table({"customer_id": ["a", "b", "c", "d"], "archetype": ["x", "x", "x", "y"]})
    ari, matched = clustering.adjusted_rand_against_truth(assignments, mixed)
    assert ari == pytest.approx(0.0, abs=1e-12)
    assert matched == 4

    ari, matched = clustering.adjusted_rand_against_truth(
        assignments, pa.table({"customer_id": ["z"], "archetype": ["x"]})
    )
    assert math.isnan(ari) and matched == 0


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"k_min": 1}, ClusteringError, "k_range"),
        ({"k_min": 5, "k_max": 4}, ClusteringError, "k_range"),
        ({"n_clusters": 1}, ClusteringError, "n_clusters"),
        ({"features": ()}, ClusteringError, "no clustering features"),
        ({"features": ("frequency", "top_category")}, ClusteringError, "label"),
        ({"features": ("frequency", "shoe_size")}, DataValidationError, "unknown feature"),
    ],
)
def test_bad_settings_are_rejected(options: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ClusteringSettings(**options)


def test_too_few_customers() -> None:
    with pytest.raises(InsufficientDataError, match="no profiles"):
        clustering.segment_customers(PROFILES.empty(), SETTINGS)

    groups = ["weekend_web", "weekday_app", "big_spender", "weekend_web"]
    rows = [customer(f"c-{index}", GROUPS[group]) for index, group in enumerate(groups)]
    # k needs a customer to spare (the silhouette is undefined with one customer per segment).
    with pytest.raises(InsufficientDataError, match="too few for k in 3..10"):
        clustering.segment_customers(profiles_table(rows[:3]), SETTINGS)
    with pytest.raises(InsufficientDataError, match="too few for k in 5..5"):
        clustering.segment_customers(profiles_table(rows), replace(SETTINGS, n_clusters=5))
    # Four customers are enough for k = 3.
    assert clustering.segment_customers(profiles_table(rows), SETTINGS).selection.k == 3
    with pytest.raises(InsufficientDataError, match="cannot form 5 segments"):
        clustering.cluster_labels(np.zeros((4, 2)), 5, seed=0)


def test_the_silhouette_is_scikit_learns() -> None:
    """The same value as sklearn's silhouette_score on precomputed distances: labels with gaps in
    their numbering, a point alone in its cluster (it scores 0), well and badly separated clusters."""
    from sklearn.metrics import pairwise_distances, silhouette_score

    rng = np.random.default_rng(7)
    centres = rng.normal(scale=6.0, size=(5, 4))
    points = np.vstack([centre + rng.normal(size=(60, 4)) for centre in centres] + [np.full((1, 4), 40.0)])
    distances = pairwise_distances(points)
    true_labels = np.r_[np.repeat([3, 8, 11, 20, 42], 60), 99]
    for labels in (true_labels, rng.integers(0, 4, len(points)), np.r_[np.zeros(150), np.ones(151)]):
        expected = silhouette_score(distances, labels, metric="precomputed")
        assert clustering.silhouette(distances, labels) == pytest.approx(expected, abs=1e-12)
    assert clustering.silhouette(distances, true_labels) > 0.5


def test_the_modes_of_segments_skip_nulls_and_break_ties_alphabetically():
    values = pa.chunked_array([["toys", None, "books", "toys"], ["books", None, "home", "home", "home"]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    # Segment 0: toys twice, books once. Segment 1: books, home (twice), with a null. Segment 2: home.
    assert clustering._modes(values, labels, 4) == ["toys", "home", "home", None]
    tie = pa.chunked_array([["toys", "books", None]])
    assert clustering._modes(tie, np.array([0, 0, 1]), 2) == ["books", None]
    assert clustering._modes(pa.chunked_array([[None, None]], pa.string()), np.array([0, 1]), 2) == [None, None]


# ------------------------------------------------------------------ lifecycle groups


def test_segments_never_mix_lifecycle_groups_and_keep_the_behaviour_clusters() -> None:
    """The weekday app customers are half new and half active: one behaviour cluster, two segments, each
    named after its stage; the behaviour clusters are those found without lifecycle groups."""
    rows = three_groups()
    staged = clustering.segment_customers(profiles_table(rows), replace(SETTINGS, within_lifecycle=True))
    plain = clustering.segment_customers(profiles_table(rows), SETTINGS)
    assert staged.assignments["behaviour_cluster"].equals(plain.assignments["behaviour_cluster"])
    stage_of = {row["canonical_id"]: row.get("lifecycle") for row in rows}
    segments_of: dict[str, set[str]] = defaultdict(set)
    for canonical_id, segment_id in zip(
        staged.assignments["canonical_id"].to_pylist(), staged.assignments["segment_id"].to_pylist()
    ):
        segments_of[segment_id].add(stage_of[canonical_id])
    assert sorted(map(sorted, segments_of.values())) == [["active"], ["lapsed"], ["loyal"], ["new"]]
    by_id = segment_rows(staged)
    groups = {row["lifecycle_group"] for row in by_id.values()}
    assert groups == {"new", "active+loyal", "at_risk+lapsed"}
    names = {row["lifecycle_group"]: row["name"] for row in by_id.values() if row["size"] == 30}
    assert names["new"].startswith("New ") and names["active+loyal"].startswith("Active ")
    lapsed = next(row for row in by_id.values() if row["lifecycle_group"] == "at_risk+lapsed")
    assert lapsed["name"].startswith("Lapsed ") and lapsed["size"] == 60


def test_a_segment_of_most_customers_is_split_and_a_tiny_one_joins_its_group() -> None:
    """Cells by hand: 70 of 100 customers in one cell is above half, so it is split by behaviour; a cell of
    3 customers (below 10) joins the nearest cell of its own lifecycle group, never another group's."""
    rng = np.random.default_rng(0)
    big = np.vstack([rng.normal(0.0, 0.1, (35, 2)), rng.normal(5.0, 0.1, (35, 2))])
    values = np.vstack([big, rng.normal(10.0, 0.1, (3, 2)), rng.normal(9.0, 0.1, (12, 2)), rng.normal(-9, 0.1, (15, 2))])
    behaviour = np.array([0] * 70 + [1] * 3 + [2] * 12 + [3] * 15)
    groups = np.array([0] * 70 + [1] * 3 + [1] * 12 + [0] * 15)
    cells = clustering.lifecycle_cells(values, behaviour, groups, ClusteringSettings(seed=1))
    sizes = np.bincount(cells.labels)
    assert sorted(sizes.tolist()) == [15, 15, 35, 35]
    # The 70 are split along their two clumps; the 3 join the 12 of their group (group 1), not group 0.
    assert len(set(cells.labels[:35])) == 1 and len(set(cells.labels[35:70])) == 1
    assert cells.labels[0] != cells.labels[35]
    assert len(set(cells.labels[70:85])) == 1
    assert cells.groups[cells.labels[70]] == 1
    assert all(len(set(groups[cells.labels == label])) == 1 for label in range(len(sizes)))
    assert any("split in 2" in note for note in cells.notes) and any("joined" in note for note in cells.notes)
