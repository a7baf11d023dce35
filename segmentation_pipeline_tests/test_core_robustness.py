"""Segment robustness: obvious segments are recovered, noise dissolves, and the arithmetic is right."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from segmentation_pipeline.core import robustness
from segmentation_pipeline.core.errors import SensitivityTestError
from segmentation_pipeline.core.robustness import RobustnessSettings


@pytest.fixture(autouse=True, scope="module")
def one_thread_per_kmeans() -> Iterator[None]:
    # A few hundred rows gain nothing from threads, and OpenMP threads on a busy machine are slow.
    with threadpool_limits(limits=1):
        yield


def kmeans(matrix: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(matrix)


def three_blobs(seed: int, per_blob: int = 100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Corners of a simplex: any two coordinates still tell the three apart, so no feature drop hurts.
    centres = 10.0 * np.eye(3)
    return np.vstack([rng.normal(centre, 0.5, size=(per_blob, 3)) for centre in centres])


def blobs_and_noise(seed: int) -> np.ndarray:
    """Two tight blobs of 100 customers and 200 customers scattered uniformly in a far-away cube, in 20-D.

    With k=8 the blobs take two clusters and the other six cut the cube arbitrarily: in 20
    dimensions there is no natural way to cut a uniform cloud, so each resample cuts it anew.
    """
    rng = np.random.default_rng(seed)
    left = rng.normal(0.0, 0.3, size=(100, 20))
    left[:, 0] -= 20
    right = rng.normal(0.0, 0.3, size=(100, 20))
    right[:, 0] += 20
    noise = rng.uniform(-3.0, 3.0, size=(200, 20))
    noise[:, 1] += 20
    return np.vstack([left, right, noise])


# ------------------------------------------------------------------ Jaccard


def test_jaccard_of_masks() -> None:
    a = np.array([True, True, True, False, False])
    b = np.array([False, True, True, True, False])
    assert robustness.jaccard(a, b) == pytest.approx(2 / 4)
    assert robustness.jaccard(a, a) == 1.0
    assert robustness.jaccard(a, ~a) == 0.0
    # Nothing to recover is not a perfect recovery.
    assert robustness.jaccard(np.zeros(3, bool), np.zeros(3, bool)) == 0.0
    with pytest.raises(SensitivityTestError, match="same shape"):
        robustness.jaccard(a, b[:3])


def test_best_match_jaccard_by_hand() -> None:
    reference = np.array([0, 0, 0, 1, 1, 1])
    candidate = np.array([1, 1, 0, 0, 0, 0])
    # Reference 0 = {0,1,2}: candidate 1 = {0,1} gives 2/3, candidate 0 = {2,3,4,5} gives 1/6.
    # Reference 1 = {3,4,5}: candidate 0 gives 3/4, candidate 1 gives 0.
    assert robustness.best_match_jaccard(reference, candidate) == pytest.approx({0: 2 / 3, 1: 3 / 4})
    # Relabelling the candidate changes nothing; keys are the reference's labels, as Python ints.
    scores = robustness.best_match_jaccard(reference, np.array([7, 7, 3, 3, 3, 3]))
    assert scores == pytest.approx({0: 2 / 3, 1: 3 / 4})
    assert all(type(label) is int for label in scores)
    assert robustness.best_match_jaccard(np.array([], int), np.array([], int)) == {}


def test_best_match_jaccard_agrees_with_masks() -> None:
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 4, size=500)
    candidate = rng.integers(0, 6, size=500)
    expected = {a: max(robustness.jaccard(reference == a, candidate == b) for b in range(6)) for a in range(4)}
    assert robustness.best_match_jaccard(reference, candidate) == pytest.approx(expected)


# ------------------------------------------------------------------ bands and overall


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (0.0, "dissolved"),
        (0.5, "dissolved"),
        (0.5001, "unstable"),
        (0.5999, "unstable"),
        (0.6, "doubtful"),
        (0.7499, "doubtful"),
        (0.75, "stable"),
        (0.8499, "stable"),
        (0.85, "highly_stable"),
        (1.0, "highly_stable"),
        (math.nan, "unmeasured"),
    ],
)
def test_stability_bands_follow_clusterboot(score: float, band: str) -> None:
    assert robustness.stability_band(score) == band


def test_stability_band_rejects_scores_outside_unit_interval() -> None:
    with pytest.raises(SensitivityTestError, match=r"\[0, 1\]"):
        robustness.stability_band(1.2)


def test_overall_renormalises_over_the_tests_that_have_a_score() -> None:
    weights = {"feature_drop": 0.3, "time_window": 0.3, "bootstrap": 0.4}
    all_three = {"feature_drop": 0.9, "time_window": 0.6, "bootstrap": 0.5}
    assert robustness.overall_stability(all_three, weights) == pytest.approx(0.3 * 0.9 + 0.3 * 0.6 + 0.4 * 0.5)
    no_window = {"feature_drop": 0.9, "time_window": math.nan, "bootstrap": 0.5}
    assert robustness.overall_stability(no_window, weights) == pytest.approx((0.3 * 0.9 + 0.4 * 0.5) / 0.7)
    assert math.isnan(robustness.overall_stability(dict.fromkeys(weights, math.nan), weights))


def test_production_ready_needs_the_threshold_and_no_failed_test() -> None:
    settings = RobustnessSettings()
    assert robustness.is_production_ready({"a": 0.8, "b": math.nan}, 0.8, settings)
    assert not robustness.is_production_ready({"a": 0.74, "b": 0.74}, 0.74, settings)
    # A strong overall does not hide one test below 0.5.
    assert not robustness.is_production_ready({"a": 1.0, "b": 1.0, "c": 0.45}, 0.82, settings)
    assert not robustness.is_production_ready({"a": math.nan}, math.nan, settings)


def test_settings_reject_nonsense() -> None:
    with pytest.raises(SensitivityTestError, match="weights"):
        RobustnessSettings(feature_drop_weight=0, time_window_weight=0, bootstrap_weight=0)
    with pytest.raises(SensitivityTestError, match="n_bootstrap"):
        RobustnessSettings(n_bootstrap=0)
    with pytest.raises(SensitivityTestError, match="production_ready_threshold"):
        RobustnessSettings(production_ready_threshold=1.5)


# ------------------------------------------------------------------ time window


def test_time_window_stability_by_hand() -> None:
    reference = pd.Series([0, 0, 0, 1, 1, 1, 2], index=["c1", "c2", "c3", "c4", "c5", "c6", "c8"])
    # A shorter window lost c6 and c8. On c1..c5: segment 0 = {c1,c2,c3} best matches
    # {c1,c2} (2/3); segment 1 = {c4,c5} best matches {c3,c4,c5} (2/3).
    shorter = pd.Series([5, 5, 7, 7, 7], index=["c1", "c2", "c3", "c4", "c5"])
    # A shifted window holds c4..c6 (all together) and a new customer c7 the reference lacks:
    # segment 1 = {c4,c5,c6} is recovered exactly (1.0); segments 0 and 2 are not in it.
    shifted = pd.Series([9, 9, 9, 3], index=["c4", "c5", "c6", "c7"])

    table = robustness.time_window_jaccards(reference, [shorter, shifted])
    assert table.loc[0].tolist()[0] == pytest.approx(2 / 3) and math.isnan(table.loc[0, 1])
    assert table.loc[1].tolist() == pytest.approx([2 / 3, 1.0])
    assert table.loc[2].isna().all()

    stability = robustness.time_window_stability(reference, [shorter, shifted])
    assert stability[0] == pytest.approx(2 / 3)
    assert stability[1] == pytest.approx((2 / 3 + 1.0) / 2)
    # No window has any customer of segment 2: not measured, not 0.
    assert math.isnan(stability[2])


def test_time_window_rejects_duplicate_customers() -> None:
    reference = pd.Series([0, 1], index=["c1", "c2"])
    with pytest.raises(SensitivityTestError, match="more than once"):
        robustness.time_window_stability(reference, [pd.Series([0, 1], index=["c1", "c1"])])


# ------------------------------------------------------------------ three obvious segments


def test_three_separated_blobs_are_highly_stable_on_every_test() -> None:
    matrix = three_blobs(seed=0)
    labels = kmeans(matrix, 3, 0)
    customer_ids = pd.Index([f"c{i}" for i in range(len(matrix))])
    reference = pd.Series(labels, index=customer_ids)
    rng = np.random.default_rng(1)
    windows = []
    for seed in (1, 2):
        # A window sees 80% of the customers, with slightly different profiles.
        kept = np.sort(rng.choice(len(matrix), size=240, replace=False))
        shifted = matrix[kept] + rng.normal(0, 0.2, size=(240, 3))
        windows.append(pd.Series(kmeans(shifted, 3, seed), index=customer_ids[kept]))

    settings = RobustnessSettings(n_bootstrap=10)
    assessment = robustness.assess_robustness(
        matrix,
        labels,
        feature_names=["recency", "frequency", "monetary"],
        cluster_fn=kmeans,
        k=3,
        seed=0,
        settings=settings,
        time_window_reference=reference,
        time_window_alternatives=windows,
    )
    table = assessment.segments
    assert list(table.columns) == list(robustness.ROBUSTNESS_COLUMNS)
    assert table["segment"].tolist() == [0, 1, 2]
    for column in ("feature_drop_stability", "time_window_stability", "bootstrap_stability", "overall"):
        assert (table[column] >= 0.95).all(), column
    assert table["time_window_windows"].tolist() == [2, 2, 2]
    assert table["bootstrap_samples"].tolist() == [10, 10, 10]
    assert table["band"].tolist() == ["highly_stable"] * 3
    assert table["production_ready"].tolist() == [True, True, True]
    assert assessment.feature_drop["feature"].tolist() == ["recency", "frequency", "monetary"]


def test_without_time_windows_the_other_tests_carry_the_score() -> None:
    matrix = three_blobs(seed=4)
    labels = kmeans(matrix, 3, 4)
    table = robustness.assess_robustness(
        matrix,
        labels,
        feature_names=["a", "b", "c"],
        cluster_fn=kmeans,
        k=3,
        seed=4,
        settings=RobustnessSettings(n_bootstrap=5),
    ).segments
    assert table["time_window_stability"].isna().all()
    assert table["time_window_windows"].tolist() == [0, 0, 0]
    expected = (0.3 * table["feature_drop_stability"] + 0.4 * table["bootstrap_stability"]) / 0.7
    assert table["overall"].tolist() == pytest.approx(expected.tolist())
    assert table["production_ready"].all()


# ------------------------------------------------------------------ noise dissolves


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_segment_of_pure_noise_dissolves(seed: int) -> None:
    matrix = blobs_and_noise(seed)
    labels = kmeans(matrix, 8, seed)
    blob_segments = {int(labels[0]), int(labels[100])}
    # The fixture is what it claims: each blob is one segment and no segment mixes blob and noise.
    assert len(set(labels[:100])) == len(set(labels[100:200])) == 1 and len(blob_segments) == 2
    assert not blob_segments & set(labels[200:].tolist())

    result = robustness.bootstrap_stability(matrix, labels, kmeans, 8, n_bootstrap=20, sample_size=20_000, seed=seed)
    for segment, score in result.stability.items():
        if segment in blob_segments:
            assert score >= 0.85 and robustness.stability_band(score) == "highly_stable"
        else:
            assert score <= 0.5 and robustness.stability_band(score) == "dissolved", (segment, score)
    assert set(result.samples.values()) == {20}


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    matrix = blobs_and_noise(0)
    labels = kmeans(matrix, 8, 0)
    first = robustness.bootstrap_stability(matrix, labels, kmeans, 8, n_bootstrap=5, sample_size=300, seed=11)
    again = robustness.bootstrap_stability(matrix, labels, kmeans, 8, n_bootstrap=5, sample_size=300, seed=11)
    other = robustness.bootstrap_stability(matrix, labels, kmeans, 8, n_bootstrap=5, sample_size=300, seed=12)
    assert first == again
    assert first.stability != other.stability


def test_assessment_is_deterministic_for_a_seed() -> None:
    matrix = blobs_and_noise(1)
    labels = kmeans(matrix, 8, 1)
    arguments = {
        "feature_names": [f"f{i}" for i in range(20)],
        "feature_groups": {"position": [0, 1], "shape": list(range(2, 20))},
        "cluster_fn": kmeans,
        "k": 8,
        "seed": 5,
        "settings": RobustnessSettings(n_bootstrap=4, sample_size=300),
    }
    first = robustness.assess_robustness(matrix, labels, **arguments)
    again = robustness.assess_robustness(matrix, labels, **arguments)
    pd.testing.assert_frame_equal(first.segments, again.segments)
    pd.testing.assert_frame_equal(first.feature_drop, again.feature_drop)
    assert first.feature_drop["n_columns"].tolist() == [2, 18]
    noise = first.segments[~first.segments["segment"].isin([labels[0], labels[100]])]
    assert not noise["production_ready"].any()


def test_bootstrap_resample_is_capped_by_sample_size() -> None:
    matrix = three_blobs(seed=2, per_blob=400)
    labels = kmeans(matrix, 3, 2)
    sizes: list[int] = []

    def recording_kmeans(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
        sizes.append(len(rows))
        return kmeans(rows, k, seed)

    robustness.bootstrap_stability(matrix, labels, recording_kmeans, 3, n_bootstrap=3, sample_size=150, seed=0)
    assert sizes == [150, 150, 150]


# ------------------------------------------------------------------ feature drop


def test_dropping_the_only_separating_feature_collapses_stability() -> None:
    rng = np.random.default_rng(7)
    # Two groups apart on "spend" only; "visits" and "tenure" are the same noise for both.
    spend = np.r_[rng.normal(-5, 0.5, 150), rng.normal(5, 0.5, 150)]
    matrix = np.column_stack([spend, rng.normal(0, 1, 300), rng.normal(0, 1, 300)])
    labels = np.r_[np.zeros(150, int), np.ones(150, int)]

    result = robustness.feature_drop_stability(
        matrix, labels, ["spend", "visits", "tenure"], kmeans, k=2, seed=0, sample_size=20_000
    )
    by_feature = result.jaccard_by_feature
    # Keeping spend, the two groups come back exactly.
    assert by_feature.loc["visits"].tolist() == [1.0, 1.0]
    assert by_feature.loc["tenure"].tolist() == [1.0, 1.0]
    # Without it k-means halves the noise, which overlaps each group by about a third.
    assert (by_feature.loc["spend"] < 0.6).all()
    assert result.worst_feature == {0: "spend", 1: "spend"}
    for segment in (0, 1):
        assert result.stability[segment] == pytest.approx((by_feature.loc["spend", segment] + 2.0) / 3)
    table = result.feature_table()
    assert list(table.columns) == list(robustness.FEATURE_DROP_COLUMNS)
    assert table.set_index("feature").loc["spend", "min_jaccard"] < 0.6
    assert table.set_index("feature").loc["visits", "mean_jaccard"] == 1.0


def test_a_feature_group_is_dropped_as_one() -> None:
    rng = np.random.default_rng(8)
    # The groups differ on two share columns together; either one alone still separates them.
    shares = np.r_[rng.normal(-5, 0.5, (100, 2)), rng.normal(5, 0.5, (100, 2))]
    matrix = np.column_stack([shares, rng.normal(0, 1, 200)])
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    names = ["share_books", "share_games", "tenure"]

    one_by_one = robustness.feature_drop_stability(matrix, labels, names, kmeans, 2, 0, 20_000)
    assert one_by_one.stability == {0: 1.0, 1: 1.0}
    grouped = robustness.feature_drop_stability(
        matrix, labels, names, kmeans, 2, 0, 20_000, feature_groups={"category_shares": [0, 1], "tenure": [2]}
    )
    assert grouped.worst_feature == {0: "category_shares", 1: "category_shares"}
    assert (grouped.jaccard_by_feature.loc["category_shares"] < 0.6).all()


# ------------------------------------------------------------------ inconsistent inputs


@pytest.mark.parametrize(
    ("rows", "labels", "k", "message"),
    [
        (10, np.zeros(9, int), 2, "10 rows but there are 9 segment labels"),
        (10, np.zeros(10, int), 1, "k must be at least 2"),
        (3, np.zeros(3, int), 4, "3 rows cannot be clustered into k=4"),
        (10, np.zeros(10), 2, "integer"),
    ],
)
def test_inconsistent_inputs_are_refused(rows: int, labels: np.ndarray, k: int, message: str) -> None:
    with pytest.raises(SensitivityTestError, match=message):
        robustness.assess_robustness(
            np.zeros((rows, 2)), labels, feature_names=["a", "b"], cluster_fn=kmeans, k=k, seed=0
        )


def test_feature_names_and_groups_must_fit_the_matrix() -> None:
    matrix = three_blobs(seed=0)
    labels = kmeans(matrix, 3, 0)
    with pytest.raises(SensitivityTestError, match="2 names but the matrix has 3 columns"):
        robustness.feature_drop_stability(matrix, labels, ["a", "b"], kmeans, 3, 0, 100)
    with pytest.raises(SensitivityTestError, match="columns 0..2"):
        robustness.feature_drop_stability(matrix, labels, ["a", "b", "c"], kmeans, 3, 0, 100, {"x": [0], "y": [5]})
    with pytest.raises(SensitivityTestError, match="at least two feature groups"):
        robustness.feature_drop_stability(matrix, labels, ["a", "b", "c"], kmeans, 3, 0, 100, {"x": [0, 1]})


def test_a_clustering_function_with_the_wrong_output_is_reported() -> None:
    matrix = three_blobs(seed=0)
    labels = kmeans(matrix, 3, 0)
    with pytest.raises(SensitivityTestError, match="returned labels of shape"):
        robustness.bootstrap_stability(matrix, labels, lambda rows, k, seed: np.zeros(3, int), 3, 2, 100, 0)


def test_windows_without_a_reference_are_refused() -> None:
    matrix = three_blobs(seed=0)
    labels = kmeans(matrix, 3, 0)
    with pytest.raises(SensitivityTestError, match="without the reference"):
        robustness.assess_robustness(
            matrix,
            labels,
            feature_names=["a", "b", "c"],
            cluster_fn=kmeans,
            k=3,
            seed=0,
            time_window_alternatives=[pd.Series([0], index=["c0"])],
        )


def test_the_full_assessment_keeps_noise_out_of_production() -> None:
    matrix = blobs_and_noise(0)
    labels = kmeans(matrix, 8, 0)
    blob_segments = {int(labels[0]), int(labels[100])}
    table = robustness.assess_robustness(
        matrix,
        labels,
        feature_names=[f"f{i}" for i in range(20)],
        cluster_fn=kmeans,
        k=8,
        seed=0,
        settings=RobustnessSettings(n_bootstrap=10),
    ).segments.set_index("segment")
    for segment, row in table.iterrows():
        if segment in blob_segments:
            assert row.production_ready and row.band == "highly_stable"
        else:
            assert row.bootstrap_stability <= 0.5
            assert not row.production_ready
            assert row.band in {"dissolved", "unstable", "doubtful"}


def test_one_feature_leaves_feature_drop_unscored() -> None:
    rng = np.random.default_rng(3)
    matrix = np.concatenate([rng.normal(0, 0.3, 60), rng.normal(10, 0.3, 60)]).reshape(-1, 1)
    labels = kmeans(matrix, 2, 3)
    assessment = robustness.assess_robustness(
        matrix,
        labels,
        feature_names=["frequency"],
        cluster_fn=kmeans,
        k=2,
        seed=3,
        settings=RobustnessSettings(n_bootstrap=5),
    )
    table = assessment.segments
    assert table["feature_drop_stability"].isna().all()
    assert table["feature_drop_worst_feature"].tolist() == ["", ""]
    # The bootstrap alone carries the score.
    assert table["overall"].tolist() == pytest.approx(table["bootstrap_stability"].tolist())
    assert table["bootstrap_stability"].tolist() == pytest.approx([1.0, 1.0])
    assert assessment.feature_drop.empty
