"""The LLM layer without a network: statistics, rubric, mock answers, faithfulness, prompts, cache and runner.

Three hand-made segments of 500 customers in all. S01 is concentrated (60% electronics, 70% app,
70% evening, 60% weekend, CLV 2.5x the average); S02 is diffuse: S03 mirrors S01 around it, so the
population's shares are exactly S02's, and S02's CLV is a quarter of the average.
"""

from __future__ import annotations

import json
import threading
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from segmentation_pipeline.core.business import Business
from segmentation_pipeline.core.errors import PipelineError
from segmentation_pipeline.core.llm import explainer, faithfulness
from segmentation_pipeline.core.llm.actionability import (
    NOT_MEASURABLE,
    Rubric,
    measured_by,
    mock_actionability,
    preference_strength,
    verdict_problems,
)
from segmentation_pipeline.core.llm.cache import AnswerCache, cache_key
from segmentation_pipeline.core.llm.campaigns import (
    LIFECYCLE_OFFERS,
    OWNED_CHANNEL_SCORE,
    lifecycle_offer,
    rhythm_timing,
)
from segmentation_pipeline.core.llm.explainer import (
    HIGH_CONFIDENCE_ROBUSTNESS,
    MEDIUM_CONFIDENCE_ROBUSTNESS,
    allowed_channels,
    confidence_level,
    mock_explanation,
    weakest_test,
)
from segmentation_pipeline.core.llm.facts import (
    DAY_PART_HOURS,
    LIFECYCLE_MIX,
    REORDER_WINDOW_DAYS,
    TOP_LABELS,
    LabelShare,
    PurchaseRhythm,
    RhythmRow,
    RobustnessFacts,
    SegmentFacts,
    snapshot_facts,
    stored_snapshot_facts,
)
from segmentation_pipeline.core.llm.faithfulness import Statistics, quotes, unfaithful
from segmentation_pipeline.core.llm.prompts import (
    ACTIONABILITY_TASK,
    PROMPT_VERSION,
    SYSTEM,
    actionability_messages,
    actionability_statistics,
    explanation_messages,
    explanation_statistics,
    statistics_of,
)
from segmentation_pipeline.core.llm.providers import Completion, LLMSettings, ProviderUnavailableError
from segmentation_pipeline.core.llm.questions import (
    actionability_question,
    answers_table,
    current_evaluations,
    explanation_question,
    stale_answers,
)
from segmentation_pipeline.core.llm.runner import Answerer, parse_answer
from segmentation_pipeline.core.schemas import (
    CLUSTERS,
    PROFILES,
    ROBUSTNESS,
    SEGMENTS,
    VIABILITY,
    ActionabilityAnswer,
    ExplanationAnswer,
)
from segmentation_pipeline.core.warehouse import Warehouse

AS_OF = date(2024, 3, 31)
RUBRIC = Rubric()


# ---------------------------------------------------------------- inputs


def shares(feature: str, **by_label: float) -> dict[str, float]:
    return {f"{feature}[{label}]": share for label, share in by_label.items()}


def day_parts(morning: float, afternoon: float, evening: float, night: float) -> dict[str, float]:
    return {"morning_share": morning, "afternoon_share": afternoon, "evening_share": evening, "night_share": night}


CONCENTRATED_MEANS = {
    "frequency": 12.0,
    "monetary_total": 2400.0,
    "avg_order_value": 200.0,
    "recency_days": 10.0,
    "churn_risk": 0.1,
    "weekend_share": 0.6,
    **day_parts(morning=0.1, afternoon=0.1, evening=0.7, night=0.1),
    **shares("category_shares", electronics=0.6, fashion=0.1, grocery=0.1, home=0.05, toys=0.05, other=0.1),
    **shares("channel_shares", app=0.7, web=0.2, store=0.1),
}
DIFFUSE_MEANS = {
    "frequency": 2.0,
    "monetary_total": 150.0,
    "avg_order_value": 75.0,
    "recency_days": 120.0,
    "churn_risk": 0.5,
    "weekend_share": 0.3,
    **day_parts(morning=0.25, afternoon=0.25, evening=0.25, night=0.25),
    **shares("category_shares", electronics=0.2, fashion=0.2, grocery=0.2, home=0.15, toys=0.15, other=0.1),
    **shares("channel_shares", app=0.3, web=0.4, store=0.3),
}
# S03 (200 customers) = S02 - (S01 - S02) / 2: with S01's 100 it averages back to S02's shares exactly.
MIRROR_MEANS = {
    "frequency": 5.0,
    "monetary_total": 800.0,
    "avg_order_value": 160.0,
    "recency_days": 40.0,
    "churn_risk": 0.3,
    "weekend_share": 0.15,
    **day_parts(morning=0.325, afternoon=0.325, evening=0.025, night=0.325),
    **shares("category_shares", electronics=0.0, fashion=0.25, grocery=0.25, home=0.2, toys=0.2, other=0.1),
    **shares("channel_shares", app=0.1, web=0.5, store=0.4),
}

#: (segment_id, name, size, total_clv, feature means): mean CLV 1,000 / 100 / 400, population 200,000 / 500 = 400.
SEGMENT_ROWS = [
    ("S01", "Weekend gadget lovers", 100, 100_000.0, CONCENTRATED_MEANS),
    ("S02", "Occasional shoppers", 200, 20_000.0, DIFFUSE_MEANS),
    ("S03", "Weekday browsers", 200, 80_000.0, MIRROR_MEANS),
]
#: (segment_id, overall, band, production_ready)
ROBUSTNESS_ROWS = [
    ("S01", 0.9, "highly_stable", True),
    ("S02", 0.7, "doubtful", False),
    ("S03", 0.5, "dissolved", False),
]
#: (segment_id, campaign_cost, incremental_profit, expected_roi, tier, approved, reasons)
VIABILITY_ROWS = [
    ("S01", 200.0, 3000.0, 14.0, "high", True, []),
    ("S02", 400.0, 600.0, 0.5, "low", False, ["expected ROI 0.50 is below the minimum 1.00"]),
    ("S03", 400.0, 2400.0, 5.0, "medium", True, []),
]


def segments_table(rows: list[tuple[str, str, int, float, dict[str, float]]]) -> pa.Table:
    population = sum(row[2] for row in rows)
    return pa.Table.from_pylist(
        [
            {
                "segment_id": segment_id,
                "name": name,
                "traits": ["hand-made"],
                "size": size,
                "share": size / population,
                "total_clv": total_clv,
                "mean_clv": total_clv / size,
                "centroid": [("frequency", means["frequency"])],
                "feature_means": list(means.items()),
                "top_category": None,
                "top_channel": None,
                "is_new": True,
                "match_distance": None,
            }
            for segment_id, name, size, total_clv, means in rows
        ],
        schema=SEGMENTS.schema,
    )


def robustness_table(rows: list[tuple[str, float | None, str, bool]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "segment_id": segment_id,
                "feature_drop_stability": overall,
                "feature_drop_worst_feature": "frequency",
                "time_window_stability": overall,
                "time_window_windows": 3,
                "bootstrap_stability": overall,
                "bootstrap_samples": 20,
                "overall": overall,
                "band": band,
                "production_ready": ready,
            }
            for segment_id, overall, band, ready in rows
        ],
        schema=ROBUSTNESS.schema,
    )


def viability_table(rows: list[tuple], segment_rows: list[tuple] = SEGMENT_ROWS) -> pa.Table:
    sizes = {row[0]: (row[2], row[3]) for row in segment_rows}
    population = sum(size for size, _ in sizes.values())
    return pa.Table.from_pylist(
        [
            {
                "segment_id": segment_id,
                "size": sizes[segment_id][0],
                "share": sizes[segment_id][0] / population,
                "total_clv": sizes[segment_id][1],
                "mean_clv": sizes[segment_id][1] / sizes[segment_id][0],
                "campaign_cost": cost,
                "incremental_profit": profit,
                "expected_roi": roi,
                "strategic_impact": 0.5,
                "strategic_tier": tier,
                "approved": approved,
                "reasons": reasons,
                "failed_criteria": [] if approved else ["min_expected_roi"],
            }
            for segment_id, cost, profit, roi, tier, approved, reasons in rows
        ],
        schema=VIABILITY.schema,
    )


def snapshot(segment_rows: list[tuple] = SEGMENT_ROWS) -> dict[str, SegmentFacts]:
    ids = {row[0] for row in segment_rows}
    facts = snapshot_facts(
        segments_table(segment_rows),
        robustness_table([row for row in ROBUSTNESS_ROWS if row[0] in ids]),
        viability_table([row for row in VIABILITY_ROWS if row[0] in ids], segment_rows),
        AS_OF,
    )
    return {item.segment_id: item for item in facts}


@pytest.fixture(scope="module")
def facts() -> dict[str, SegmentFacts]:
    return snapshot()


def transaction_only_rows() -> list[tuple]:
    """A source with purchases only: no categories, channels or timestamps beyond the day."""
    numeric = ("frequency", "monetary_total", "avg_order_value", "recency_days", "churn_risk")
    return [
        ("S01", "Big spenders", 100, 100_000.0, {key: CONCENTRATED_MEANS[key] for key in numeric}),
        ("S02", "Small spenders", 200, 20_000.0, {key: DIFFUSE_MEANS[key] for key in numeric}),
    ]


def label(item: LabelShare) -> tuple[str, float, float, float | None]:
    return (item.label, item.share, item.population_share, item.lift)


# ---------------------------------------------------------------- facts


def test_population_shares_are_size_weighted_means_of_the_segments(facts: dict[str, SegmentFacts]) -> None:
    concentrated = facts["S01"]
    # electronics: (0.6 x 100 + 0.2 x 200 + 0.0 x 200) / 500 = 0.2; lift 0.6 / 0.2 = 3.0
    assert label(concentrated.categories[0]) == ("electronics", 0.6, 0.2, 3.0)
    # app: (0.7 x 100 + 0.3 x 200 + 0.1 x 200) / 500 = 0.3; lift 0.7 / 0.3 = 2.33
    assert label(concentrated.channels[0]) == ("app", 0.7, 0.3, 2.33)
    # weekend: (0.6 x 100 + 0.3 x 200 + 0.15 x 200) / 500 = 0.3
    assert (concentrated.weekend_share, concentrated.population_weekend_share) == (0.6, 0.3)
    # churn risk: (0.1 x 100 + 0.5 x 200 + 0.3 x 200) / 500 = 0.34
    assert (concentrated.churn_risk, concentrated.population_churn_risk) == (0.1, 0.34)
    # The diffuse segment's shares are the population's: lift 1 everywhere.
    assert {item.label: item.lift for item in facts["S02"].channels} == {"web": 1.0, "app": 1.0, "store": 1.0}
    assert facts["S02"].population_weekend_share == 0.3


def test_segment_figures_and_clv_against_the_population(facts: dict[str, SegmentFacts]) -> None:
    concentrated = facts["S01"]
    assert concentrated.name == "Weekend gadget lovers"
    assert concentrated.as_of == "2024-03-31"
    assert (concentrated.customers, concentrated.population_customers, concentrated.segments_in_snapshot) == (
        100,
        500,
        3,
    )
    assert concentrated.share_of_customers == 0.2
    assert (concentrated.mean_orders, concentrated.mean_net_revenue, concentrated.avg_order_value) == (
        12.0,
        2400.0,
        200.0,
    )
    assert concentrated.mean_days_since_purchase == 10.0
    # population mean CLV: (100,000 + 20,000 + 80,000) / 500 = 400
    assert {item.population_mean_clv for item in facts.values()} == {400.0}
    assert {key: item.mean_clv for key, item in facts.items()} == {"S01": 1000.0, "S02": 100.0, "S03": 400.0}
    assert {key: item.clv_vs_population for key, item in facts.items()} == {"S01": 2.5, "S02": 0.25, "S03": 1.0}
    # 100,000 of 200,000
    assert concentrated.share_of_total_clv == 0.5
    assert concentrated.total_clv == 100_000.0


def test_robustness_and_viability_facts_come_from_their_rows(facts: dict[str, SegmentFacts]) -> None:
    assert facts["S01"].robustness == RobustnessFacts(
        overall=0.9, band="highly_stable", production_ready=True, feature_drop=0.9, time_window=0.9, bootstrap=0.9
    )
    viability = facts["S02"].viability
    assert (viability.approved, viability.expected_roi, viability.campaign_cost) == (False, 0.5, 400.0)
    # 400 over 200 customers
    assert viability.cost_per_customer == 2.0
    assert viability.reasons == ["expected ROI 0.50 is below the minimum 1.00"]
    assert (facts["S01"].viability.strategic_tier, facts["S01"].viability.incremental_profit) == ("high", 3000.0)


def test_segments_come_out_in_segment_order_whatever_the_table_order() -> None:
    shuffled = [SEGMENT_ROWS[2], SEGMENT_ROWS[0], SEGMENT_ROWS[1]]
    facts = snapshot_facts(
        segments_table(shuffled), robustness_table(ROBUSTNESS_ROWS), viability_table(VIABILITY_ROWS), AS_OF
    )
    assert [item.segment_id for item in facts] == ["S01", "S02", "S03"]


def test_other_is_never_listed_and_at_most_top_labels_by_share(facts: dict[str, SegmentFacts]) -> None:
    # S01: electronics 0.6, then fashion, grocery and other at 0.1, home and toys at 0.05.
    assert [(item.label, item.share) for item in facts["S01"].categories] == [
        ("electronics", 0.6),
        ("fashion", 0.1),
        ("grocery", 0.1),
        ("home", 0.05),
    ]
    for item in facts.values():
        assert len(item.categories) <= TOP_LABELS
        assert "other" not in [category.label for category in item.categories]
        assert [category.share for category in item.categories] == sorted(
            (category.share for category in item.categories), reverse=True
        )
    # The population has six category bins (other among them, as a bin of activity) and three channels.
    assert facts["S01"].categories_in_population == 6
    assert facts["S01"].channels_in_population == 3


def test_categories_in_population_counts_labels_of_every_segment() -> None:
    # Every segment has every label's column (clustering fills a missing share with 0).
    rows = [
        ("S01", "Readers", 100, 1000.0, {"frequency": 1.0, **shares("category_shares", books=1.0, garden=0.0)}),
        ("S02", "Gardeners", 100, 1000.0, {"frequency": 1.0, **shares("category_shares", books=0.0, garden=1.0)}),
    ]
    facts = snapshot(rows)
    assert facts["S01"].categories_in_population == 2
    # books: (1.0 x 100 + 0.0 x 100) / 200 = 0.5; lift 1.0 / 0.5 = 2.0
    assert [label(item) for item in facts["S01"].categories] == [("books", 1.0, 0.5, 2.0), ("garden", 0.0, 0.5, 0.0)]
    assert (facts["S01"].channels, facts["S01"].channels_in_population) == ([], 0)


def test_day_parts_carry_their_hours(facts: dict[str, SegmentFacts]) -> None:
    concentrated = facts["S01"]
    assert {part.label: part.hours for part in concentrated.day_parts} == DAY_PART_HOURS
    evening = next(part for part in concentrated.day_parts if part.label == "evening")
    # (0.7 x 100 + 0.25 x 200 + 0.025 x 200) / 500 = 0.25; lift 0.7 / 0.25 = 2.8
    assert (evening.share, evening.population_share, evening.lift, evening.hours) == (0.7, 0.25, 2.8, "18:00-24:00")


@pytest.mark.parametrize("table", ["robustness", "viability"])
def test_a_missing_row_raises_naming_the_segment(table: str) -> None:
    robustness = ROBUSTNESS_ROWS if table == "viability" else ROBUSTNESS_ROWS[:1] + ROBUSTNESS_ROWS[2:]
    viability = VIABILITY_ROWS if table == "robustness" else VIABILITY_ROWS[:1] + VIABILITY_ROWS[2:]
    with pytest.raises(PipelineError, match=rf"{table} has no row for segment\(s\) \['S02'\]"):
        snapshot_facts(segments_table(SEGMENT_ROWS), robustness_table(robustness), viability_table(viability), AS_OF)


def test_a_transaction_only_source_has_no_labels_and_no_weekend_share() -> None:
    facts = snapshot(transaction_only_rows())
    for item in facts.values():
        assert (item.categories, item.channels, item.day_parts) == ([], [], [])
        assert (item.categories_in_population, item.channels_in_population) == (0, 0)
        assert (item.weekend_share, item.population_weekend_share) == (None, None)
    # Still the CLV: 120,000 / 300 = 400, S01 at 1,000
    assert facts["S01"].clv_vs_population == 2.5


def test_an_empty_snapshot_has_no_facts() -> None:
    assert snapshot_facts(segments_table([]), robustness_table([]), viability_table([]), AS_OF) == []


def test_an_unmeasured_segment_has_no_overall_robustness_and_low_confidence() -> None:
    robustness = [("S01", None, "unmeasured", False), *ROBUSTNESS_ROWS[1:]]
    facts = snapshot_facts(
        segments_table(SEGMENT_ROWS), robustness_table(robustness), viability_table(VIABILITY_ROWS), AS_OF
    )
    assert facts[0].robustness.overall is None
    assert facts[0].robustness.band == "unmeasured"
    assert confidence_level(facts[0]) == "low"
    question = explanation_question(facts[0], mock_actionability(facts[0], RUBRIC))
    explained = question.fallback()
    assert explained.confidence_justification.startswith("No robustness test could be run")
    assert question.check(explained) == []


def with_lifecycle_mix(segments: pa.Table, *mixes: dict[str, float] | None) -> pa.Table:
    """The segments with their lifecycle_mix column set, one mix per row, as the segmentation stores it."""
    column = pa.array([list(mix.items()) if mix else None for mix in mixes], pa.map_(pa.string(), pa.float64()))
    return segments.set_column(segments.schema.get_field_index(LIFECYCLE_MIX), LIFECYCLE_MIX, column)


def lifecycle_rows(s01_mix: dict[str, float], s02_mix: dict[str, float]) -> pa.Table:
    """The transaction-only segments with their lifecycle mix."""
    return with_lifecycle_mix(segments_table(transaction_only_rows()), s01_mix, s02_mix)


#: S01 (100 customers) is mostly lapsed, S02 (200) mostly new; the population is the size-weighted mean.
LAPSED_MIX = {"lapsed": 0.8, "at_risk": 0.1, "active": 0.1}
NEW_MIX = {"new": 0.7, "active": 0.2, "lapsed": 0.1}
#: Purchase rhythm as stored_purchase_rhythm returns it: S01 buys every 40.4 days and last bought 95.6
#: days ago (medians); S02 has no repeat buyer; everyone: (customers, repeat buyers, gap, days since).
RHYTHM = {
    "S01": RhythmRow(100, 60, 40.4, 95.6),
    "S02": RhythmRow(200, 0, None, 12.0),
    None: RhythmRow(300, 60, 40.4, 20.2),
}


def transaction_log(
    s01_mix: dict[str, float] = LAPSED_MIX, s02_mix: dict[str, float] = NEW_MIX, rhythm=RHYTHM
) -> dict[str, SegmentFacts]:
    rows = transaction_only_rows()
    facts = snapshot_facts(
        lifecycle_rows(s01_mix, s02_mix),
        robustness_table(ROBUSTNESS_ROWS[:2]),
        viability_table(VIABILITY_ROWS[:2], rows),
        AS_OF,
        rhythm=rhythm,
    )
    return {item.segment_id: item for item in facts}


def profile_rows(rows: list[tuple[str, int, float | None, float]]) -> pa.Table:
    """Profiles of (canonical_id, purchase_days, recency_days, tenure_days); every other feature left null
    (the lifecycle stage, required, is "new" for all: the facts read the segments' mix, not the stages)."""
    instant = pa.scalar(0, pa.timestamp("us", tz="UTC"))
    return pa.Table.from_pylist(
        [
            {
                "canonical_id": canonical_id,
                "n_ids": 1,
                "window_days": 365,
                "first_event": instant.as_py(),
                "last_event": instant.as_py(),
                "purchase_days": purchase_days,
                "recency_days": recency,
                "tenure_days": tenure,
                "clv_method": "heuristic",
                "lifecycle_stage": "new",
                "repeat_buyer": purchase_days >= 2,
            }
            for canonical_id, purchase_days, recency, tenure in rows
        ]
    )


def test_stored_facts_read_the_rhythm_from_the_profiles_and_the_lifecycle_mix_from_the_segments(
    tmp_path: Path,
) -> None:
    warehouse = Warehouse(tmp_path / "data")
    # S01: gaps (100 - 10) / 2 = 45 and (61 - 20) / 1 = 41 -> median 43; since 10, 20, 30 -> 20; 2 of 3 repeat.
    # S02: one one-time buyer 200 days ago and one customer without a purchase: no gap, since 200.
    # Everyone: gaps 45, 41 -> 43; since 10, 20, 30, 200 -> 25; 2 of 5 repeat buyers.
    warehouse.write_partition(
        PROFILES,
        AS_OF,
        profile_rows(
            [("c1", 3, 10.0, 100.0), ("c2", 2, 20.0, 61.0), ("c3", 1, 30.0, 30.0), ("c4", 1, 200.0, 200.0)]
            + [("c5", 0, None, 50.0)]
        ),
    )
    warehouse.write_partition(
        CLUSTERS,
        AS_OF,
        pa.table(
            {
                "canonical_id": ["c1", "c2", "c3", "c4", "c5"],
                "segment_id": ["S01", "S01", "S01", "S02", "S02"],
                "distance": [0.0] * 5,
                "shaped_segments": [True] * 5,
            }
        ),
    )
    rows = [
        (segment_id, name, size, total, means)
        for (segment_id, name, _, total, means), size in zip(transaction_only_rows(), (3, 2))
    ]
    segments = segments_table(rows)
    warehouse.write_partition(SEGMENTS, AS_OF, segments)
    warehouse.write_partition(ROBUSTNESS, AS_OF, robustness_table(ROBUSTNESS_ROWS[:2]))
    warehouse.write_partition(VIABILITY, AS_OF, viability_table(VIABILITY_ROWS[:2], rows))
    without_mix = {item.segment_id: item for item in stored_snapshot_facts(warehouse, AS_OF)}
    assert without_mix["S01"].lifecycle is None
    assert without_mix["S01"].rhythm == PurchaseRhythm(
        repeat_buyers=2,
        repeat_buyer_share=0.667,
        population_repeat_buyer_share=0.4,
        median_days_between_purchases=43,
        population_median_days_between_purchases=43,
        median_days_since_purchase=20,
        population_median_days_since_purchase=25,
    )
    assert without_mix["S02"].rhythm.model_dump(include={"repeat_buyers", "median_days_between_purchases"}) == {
        "repeat_buyers": 0,
        "median_days_between_purchases": None,
    }
    assert without_mix["S02"].rhythm.median_days_since_purchase == 200

    # Segments with their lifecycle mix (a snapshot made before lifecycle stages has none, as above).
    warehouse.write_partition(
        SEGMENTS, AS_OF, with_lifecycle_mix(segments, {"lapsed": 2 / 3, "new": 1 / 3}, {"new": 1.0})
    )
    with_mix = {item.segment_id: item for item in stored_snapshot_facts(warehouse, AS_OF)}
    # lapsed: 2/3 x 3 / 5 = 0.4; new: (1/3 x 3 + 1 x 2) / 5 = 0.6
    assert [label(item) for item in with_mix["S01"].lifecycle] == [
        ("lapsed", 0.667, 0.4, 1.67),
        ("new", 0.333, 0.6, 0.56),
    ]
    assert with_mix["S01"].sha256 != without_mix["S01"].sha256


def test_the_lifecycle_mix_is_read_with_the_population_shares_and_lifts() -> None:
    lapsed = transaction_log()["S01"]
    # lapsed: (0.8 x 100 + 0.1 x 200) / 300 = 0.333, lift 0.8 / 0.333 = 2.4
    # active: (0.1 x 100 + 0.2 x 200) / 300 = 0.167; at risk 0.1 x 100 / 300 = 0.033; new 0.7 x 200 / 300 = 0.467
    assert [label(item) for item in lapsed.lifecycle] == [
        ("lapsed", 0.8, 0.333, 2.4),
        ("active", 0.1, 0.167, 0.6),
        ("at_risk", 0.1, 0.033, 3.0),
        ("new", 0.0, 0.467, 0.0),
    ]
    # Without the column there is no lifecycle at all, not an empty one.
    assert snapshot(transaction_only_rows())["S01"].lifecycle is None


def test_the_purchase_rhythm_is_rounded_to_whole_days_with_the_population_beside_it() -> None:
    facts = transaction_log()
    assert facts["S01"].rhythm == PurchaseRhythm(
        repeat_buyers=60,
        repeat_buyer_share=0.6,
        population_repeat_buyer_share=0.2,
        median_days_between_purchases=40,
        population_median_days_between_purchases=40,
        median_days_since_purchase=96,
        population_median_days_since_purchase=20,
        reorder_window_days=REORDER_WINDOW_DAYS,
    )
    assert (facts["S02"].rhythm.repeat_buyer_share, facts["S02"].rhythm.median_days_between_purchases) == (0.0, None)
    # Statistics of the segment tables alone have no rhythm.
    assert snapshot(transaction_only_rows())["S01"].rhythm is None


# ---------------------------------------------------------------- actionability


def scores(what: float, when: float, how: float, who: float) -> dict[str, float]:
    return {"what": what, "when": when, "how": how, "who": who}


def test_rubric_counts_a_score_of_exactly_strong_score_as_strong() -> None:
    assert RUBRIC.strong(scores(0.5, 0.5, 0.5, 0.0)) == ["what", "when", "how"]
    assert RUBRIC.verdict(scores(0.5, 0.5, 0.5, 0.0)) is True
    assert RUBRIC.strong(scores(0.5, 0.5, 0.49, 0.0)) == ["what", "when"]
    assert RUBRIC.verdict(scores(0.5, 0.5, 0.49, 0.0)) is False
    strict = Rubric(strong_score=0.8, min_strong_dimensions=2)
    assert strict.verdict(scores(0.8, 0.0, 0.0, 0.8)) is True
    assert strict.verdict(scores(0.79, 1.0, 0.0, 0.0)) is False


def test_the_rubric_asks_proportionally_fewer_strong_dimensions_when_fewer_are_measurable() -> None:
    # ceil(3 x measurable / 4)
    assert [RUBRIC.required(measurable) for measurable in (4, 3, 2, 1, 0)] == [3, 3, 2, 1, 0]
    # ceil(2 x measurable / 4)
    assert [Rubric(min_strong_dimensions=2).required(measurable) for measurable in (4, 3, 2, 1)] == [2, 2, 1, 1]
    unmeasured = {"what": None, "when": None}
    assert RUBRIC.verdict(unmeasured | {"how": 0.5, "who": 0.5}) is True
    assert RUBRIC.verdict(unmeasured | {"how": 0.5, "who": 0.49}) is False
    assert RUBRIC.verdict({"what": None, "when": 0.9, "how": 0.9, "who": 0.1}) is False
    assert RUBRIC.verdict(dict.fromkeys(("what", "when", "how", "who"))) is False
    # Not measurable is not weak: a None never counts as strong.
    assert RUBRIC.strong({"what": None, "when": 0.5, "how": 0.0, "who": None}) == ["when"]
    assert RUBRIC.describe() == (
        "A dimension is strong when its score is at least 0.5. With all 4 dimensions measurable, the segment is "
        "actionable when at least 3 of them are strong. A dimension the data cannot measure has no score (null, "
        "never 0) and is left out: of the measurable ones at least ceil(3 x measurable / 4) must be strong "
        "(3 of 3, 2 of 2, 1 of 1). With none measurable the segment is not actionable. A segment viability did "
        "not approve (viability.approved false) is not actionable either, whatever its scores: say in the reason "
        "that the data is clear enough but the segment is not worth a campaign now."
    )
    # A rejected segment is never actionable, however clear its data.
    assert RUBRIC.clear(unmeasured | {"how": 0.9, "who": 0.9}) is True
    assert RUBRIC.verdict(unmeasured | {"how": 0.9, "who": 0.9}, approved=False) is False
    assert Rubric().owned_channels == ["email"]
    assert Rubric(owned_channels=[" sms "]).owned_channels == ["sms"]
    with pytest.raises(ValidationError, match="owned_channels.0"):
        Rubric(owned_channels=[" "])


def actionability_answer(what: float, when: float, how: float, who: float, actionable: bool) -> ActionabilityAnswer:
    return ActionabilityAnswer(
        what_score=what,
        what_evidence="Mostly electronics.",
        when_score=when,
        when_evidence="Evenings.",
        how_score=how,
        how_evidence="The app.",
        who_score=who,
        who_evidence="High value.",
        actionable=actionable,
        reason="By the rubric.",
    )


def test_verdict_problems_flags_a_verdict_against_the_scores() -> None:
    contradicting = actionability_answer(0.9, 0.9, 0.9, 0.1, actionable=False)
    assert verdict_problems(contradicting, RUBRIC) == [
        "actionable is false but 3 dimension(s) score at least 0.5 (what, when, how); the rubric makes it true"
    ]
    overclaiming = actionability_answer(0.9, 0.1, 0.1, 0.1, actionable=True)
    assert verdict_problems(overclaiming, RUBRIC) == [
        "actionable is true but 1 dimension(s) score at least 0.5 (what); the rubric makes it false"
    ]
    assert verdict_problems(actionability_answer(0.9, 0.9, 0.9, 0.1, actionable=True), RUBRIC) == []
    assert verdict_problems(actionability_answer(0.1, 0.1, 0.1, 0.1, actionable=False), RUBRIC) == []


def test_preference_strength_by_hand() -> None:
    main = LabelShare(label="a", share=0.4, population_share=0.2, lift=2.0)
    second = LabelShare(label="b", share=0.3, population_share=0.3, lift=1.0)
    # even spread over 4 labels: 0.25; concentration (0.4 - 0.25) / (0.5 - 0.25) = 0.6
    # distinctiveness (2.0 - 1) / (3.0 - 1) = 0.5; strength 0.5 x 0.6 + 0.5 x 0.5 = 0.55
    strength, chosen = preference_strength([second, main], n_labels=4, full_lift=3.0)
    assert strength == pytest.approx(0.55)
    assert chosen == main
    # Two labels: even 0.5 is not below FULL_SHARE, so concentration is full at 1.0:
    # (0.8 - 0.5) / (1.0 - 0.5) = 0.6; distinctiveness (1.6 - 1) / (2.0 - 1) = 0.6
    pair = LabelShare(label="a", share=0.8, population_share=0.5, lift=1.6)
    assert preference_strength([pair], n_labels=2, full_lift=2.0) == (pytest.approx(0.6), pair)
    # Below the even spread and far above full lift: 0 + 0.5 x 1
    rare = LabelShare(label="a", share=0.1, population_share=0.01, lift=10.0)
    assert preference_strength([rare], n_labels=4, full_lift=3.0)[0] == pytest.approx(0.5)
    assert preference_strength([], n_labels=4, full_lift=3.0) == (0.0, None)
    assert preference_strength([main], n_labels=1, full_lift=3.0) == (0.0, None)


def test_mock_actionability_of_the_concentrated_segment(facts: dict[str, SegmentFacts]) -> None:
    answer = mock_actionability(facts["S01"], RUBRIC)
    # what: 0.6 is above FULL_SHARE and lift 3.0 is full -> 1.0
    # how: 0.7 is above FULL_SHARE -> 1; lift 2.33 -> (2.33 - 1) / 2 = 0.665; 0.5 + 0.3325 -> 0.83
    # when: evening 0.7, lift 2.8 -> 1.0; weekend 0.6 against 0.3, lift 2 -> 1.0; min(1, 1 + 0.25) = 1.0
    # who: 2.5 / 3.5 = 0.714 -> 0.71
    assert (answer.what_score, answer.when_score, answer.how_score, answer.who_score) == (1.0, 1.0, 0.83, 0.71)
    assert answer.actionable is True
    assert answer.what_evidence == "60.0% of their activity is in electronics (population: 20.0%, 3.00x)."
    assert answer.how_evidence == "70.0% of their events come through app (population: 30.0%, 2.33x)."
    assert answer.when_evidence == (
        "70.0% of their activity is in the evening (18:00-24:00 UTC; population: 25.0%); "
        "60.0% of their activity falls on weekends (population: 30.0%)."
    )
    assert answer.reason == (
        "A campaign can be aimed at these customers. The data is clear on what to offer, when to send, how to "
        "reach them and what they are worth."
    )


def test_mock_actionability_of_the_diffuse_segment(facts: dict[str, SegmentFacts]) -> None:
    answer = mock_actionability(facts["S02"], RUBRIC)
    # what: grocery 0.2 (the last of three ties at 0.2), lift 1: (0.2 - 1/6) / (0.5 - 1/6) = 0.1 -> 0.05
    # how: web 0.4, lift 1: (0.4 - 1/3) / (0.5 - 1/3) = 0.4 -> 0.2
    # when: every day part 0.25, the even spread, and the population's weekend share -> 0
    # who: 0.25 / 1.25 = 0.2
    assert (answer.what_score, answer.when_score, answer.how_score, answer.who_score) == (0.05, 0.0, 0.2, 0.2)
    assert answer.actionable is False
    assert answer.reason == (
        "Not a campaign target as it stands: nothing is clear enough, not what to offer, when to send, how to "
        "reach them and what they are worth (0 of 4 dimensions clear; 3 of them needed)."
    )
    assert mock_actionability(facts["S03"], RUBRIC).actionable is False


def test_a_transaction_log_without_lifecycle_or_rhythm_is_judged_by_the_owned_channel_and_value() -> None:
    """Before this change WHAT, WHEN and HOW scored 0 here ("nothing to go on") and the segment could never
    be actionable. Now WHAT and WHEN are not measurable (no score), HOW is the owned channel email, and
    2 strong of the 2 measurable are needed."""
    answer = mock_actionability(snapshot(transaction_only_rows())["S01"], RUBRIC)
    assert (answer.what_score, answer.when_score, answer.how_score, answer.who_score) == (None, None, 0.5, 0.71)
    assert answer.what_evidence == "Not measurable from this data: no product categories and no lifecycle stages."
    assert answer.when_evidence == "Not measurable from this data: no times of day, weekdays or purchase rhythm."
    assert answer.how_evidence == (
        "No channel in the data: the owned channel email, which reaches every customer you can contact."
    )
    assert answer.actionable is True
    assert answer.reason == (
        "A campaign can be aimed at these customers. The data is clear on how to reach them and what they are "
        "worth. The data cannot tell what to offer and when to send."
    )
    # S02 is worth a quarter of the average: WHO 0.2 is weak, 1 strong of the 2 needed.
    small = mock_actionability(snapshot(transaction_only_rows())["S02"], RUBRIC)
    assert (small.how_score, small.who_score, small.actionable) == (0.5, 0.2, False)
    assert small.reason.endswith(
        "only how to reach them is clear, not what they are worth (1 of 2 dimensions clear; 2 of them needed). "
        "The data cannot tell what to offer and when to send."
    )


def test_without_categories_channels_clock_times_or_lifecycle_only_who_is_measurable() -> None:
    """No owned channel either: WHAT, WHEN and HOW have nothing to be judged by. The rubric asks
    ceil(3 x 1 / 4) = 1 strong dimension of the 1 measurable."""
    no_owned_channel = Rubric(owned_channels=[])
    facts = snapshot(transaction_only_rows())
    assert measured_by(facts["S01"], []) == {
        "what": None,
        "when": None,
        "how": None,
        "who": "customer lifetime value",
    }
    answer = mock_actionability(facts["S01"], no_owned_channel)
    assert (answer.what_score, answer.when_score, answer.how_score, answer.who_score) == (None, None, None, 0.71)
    for dimension in ("what", "when", "how"):
        assert getattr(answer, f"{dimension}_evidence").startswith("Not measurable from this data: ")
    assert answer.how_evidence == "Not measurable from this data: no channels, and no owned channel set."
    assert answer.actionable is True
    assert answer.reason == (
        "A campaign can be aimed at these customers. The data is clear on what they are worth. "
        "The data cannot tell what to offer, when to send and how to reach them."
    )
    assert mock_actionability(facts["S02"], no_owned_channel).actionable is False
    question = actionability_question(facts["S01"], no_owned_channel)
    assert question.check(answer) == []


# ---------------------------------------------------------------- campaigns from a transaction log


def test_a_lapsed_segment_gets_a_win_back_scored_by_the_lapsed_share() -> None:
    answer = mock_actionability(transaction_log()["S01"], RUBRIC)
    # WHAT: the largest stage is lapsed, 80% of the segment: a win-back that fits 0.8 of it.
    assert answer.what_score == 0.8
    assert answer.what_evidence == (
        "No product categories in the data: the lifecycle offer is a win-back, for the 80.0% of the segment "
        "who are lapsed customers (population: 33.3%)."
    )
    # HOW: no channel in the data, the owned channel email at OWNED_CHANNEL_SCORE.
    assert answer.how_score == OWNED_CHANNEL_SCORE == 0.5
    assert answer.how_evidence.startswith("No channel in the data: the owned channel email")
    # WHEN: no time of day and no weekend share here: the rhythm alone, 60% repeat buyers -> 0.6.
    assert answer.when_score == 0.6
    assert answer.when_evidence == (
        "60.0% of the segment are repeat buyers (population: 20.0%), buying every 40 days at the median; "
        "96 days since their last purchase at the median."
    )
    # WHO: 2.5 / 3.5 -> 0.71. Four measurable, all strong.
    assert answer.who_score == 0.71
    assert answer.actionable is True
    assert answer.reason.startswith("A campaign can be aimed at these customers.")


@pytest.mark.parametrize("stage", sorted(LIFECYCLE_OFFERS))
def test_each_dominant_stage_gets_its_lifecycle_offer(stage: str) -> None:
    mix = {stage: 0.55, **{other: 0.45 / 5 for other in LIFECYCLE_OFFERS if other != stage}}
    answer = mock_actionability(transaction_log(s01_mix=mix)["S01"], RUBRIC)
    assert answer.what_score == 0.55
    assert f"the lifecycle offer is a {LIFECYCLE_OFFERS[stage]}, for the 55.0% of the segment" in answer.what_evidence


def test_a_mixed_segment_is_a_weak_what() -> None:
    """No stage holds most of the segment: the win-back fits only 40% of it."""
    mixed = {"lapsed": 0.4, "active": 0.35, "new": 0.25}
    answer = mock_actionability(transaction_log(s01_mix=mixed)["S01"], RUBRIC)
    assert answer.what_score == 0.4
    # WHAT weak, WHEN 0.6, HOW 0.5, WHO 0.71: 3 strong of 4 is still actionable.
    assert answer.actionable is True
    # New one-time buyers: second-purchase nudge 0.7 fits, but nobody has a rhythm (WHEN 0) and WHO is 0.2.
    new = mock_actionability(transaction_log()["S02"], RUBRIC)
    assert (new.what_score, new.when_score, new.how_score, new.who_score) == (0.7, 0.0, 0.5, 0.2)
    assert new.actionable is False


def test_rich_data_is_judged_by_its_categories_channels_and_day_parts_whatever_its_rhythm_and_lifecycle(
    facts: dict[str, SegmentFacts],
) -> None:
    """The substitutes stand in only for what the data lacks: the synthetic source's answers are unchanged."""
    richer = {
        key: item.model_copy(
            update={"rhythm": transaction_log()["S01"].rhythm, "lifecycle": transaction_log()["S01"].lifecycle}
        )
        for key, item in facts.items()
    }
    for key, item in richer.items():
        assert measured_by(item, ["email"]) == {
            "what": "product categories",
            "when": "time of day and weekends",
            "how": "channels",
            "who": "customer lifetime value",
        }
        answer = mock_actionability(item, RUBRIC)
        assert answer == mock_actionability(facts[key], RUBRIC)
        approved = item.model_copy(update={"viability": item.viability.model_copy(update={"approved": True})})
        explained = mock_explanation(approved, answer)
        plain = mock_explanation(facts[key].model_copy(update={"viability": approved.viability}), answer)
        # Only the offer changes: a segment mostly of one lifecycle stage gets that stage's offer on its range.
        strip = {"recommendations": [r.model_copy(update={"offer": ""}) for r in explained.recommendations]}
        assert explained.model_copy(update=strip) == plain.model_copy(
            update={"recommendations": [r.model_copy(update={"offer": ""}) for r in plain.recommendations]}
        )
        offer = lifecycle_offer(item)
        for recommendation in explained.recommendations:
            if offer.stage.share >= explainer.STAGE_LEADS_FROM and offer.offer in explainer.RANGE_OFFERS:
                assert recommendation.offer.startswith(explainer.RANGE_OFFERS[offer.offer].split("{range}")[0])
            else:
                assert recommendation.offer in {r.offer for r in plain.recommendations}


def test_the_rhythm_combines_with_a_weekend_pattern() -> None:
    """The stronger timing pattern plus a quarter of the weaker: rhythm 0.6, weekend lift 2 -> 1.0."""
    facts = transaction_log()["S01"].model_copy(
        update={"weekend_share": 0.6, "population_weekend_share": 0.3, "weekend_lift": 2.0}
    )
    answer = mock_actionability(facts, RUBRIC)
    assert answer.when_score == 1.0
    assert answer.when_evidence.endswith("; 60.0% of their activity falls on weekends (population: 30.0%).")
    # At the population's weekend share the weekend adds nothing: 0.6 + 0.25 x 0 = 0.6
    flat = facts.model_copy(update={"weekend_share": 0.3, "weekend_lift": 1.0})
    assert mock_actionability(flat, RUBRIC).when_score == 0.6
    assert measured_by(flat, ["email"])["when"] == "purchase rhythm and weekends"


def test_rhythm_timing_near_the_reorder_day_or_now_when_past_it() -> None:
    rhythm = transaction_log()["S01"].rhythm
    # 96 days since the last purchase, past the usual 40.
    assert rhythm_timing(rhythm) == (
        "now: 96 days since their last purchase, past their usual reorder day (they buy every 40 days; medians)"
    )
    due = rhythm.model_copy(update={"median_days_since_purchase": 30})
    assert rhythm_timing(due) == (
        "within 14 days of their usual reorder day: they buy every 40 days and last bought 30 days ago (medians)"
    )
    # One-time buyers are timed by the population's repeat buyers.
    assert rhythm_timing(transaction_log()["S02"].rhythm) == (
        "within 14 days of the usual second-purchase day: repeat buyers buy again every 40 days and last "
        "bought 12 days ago (medians)"
    )
    assert rhythm_timing(None) is None


def test_the_verdict_check_rejects_a_score_for_a_dimension_the_data_cannot_measure() -> None:
    facts = snapshot(transaction_only_rows())["S01"]
    question = actionability_question(facts, RUBRIC)
    mock = question.fallback()
    assert question.check(mock) == []
    scored = mock.model_copy(update={"what_score": 0.6})
    # (Its verdict agrees with its scores: 3 strong of 3 scored. The score itself is what is wrong.)
    assert question.check(scored) == ["what_score is 0.6 but WHAT is not measurable from this data: answer null"]
    # Zero for "nothing to go on" is a score too: refused, and it would raise the bar to 3 of 3.
    zeroed = mock.model_copy(update={"when_score": 0.0})
    assert question.check(zeroed) == [
        "when_score is 0.0 but WHEN is not measurable from this data: answer null",
        "actionable is true but 2 dimension(s) score at least 0.5 (how, who) of 3 measurable, 3 needed; "
        "the rubric makes it false",
    ]
    # And a null for what the data can measure.
    unscored = mock.model_copy(update={"how_score": None})
    assert question.check(unscored) == [
        "how_score is null but HOW can be measured from this data (by owned channels)",
    ]


def test_verdict_problems_count_strong_dimensions_among_the_measurable() -> None:
    # 2 measurable, both strong: ceil(3 x 2 / 4) = 2 needed.
    both = actionability_answer(0.0, 0.9, 0.9, 0.0, actionable=False).model_copy(
        update={"what_score": None, "who_score": None}
    )
    assert verdict_problems(both, RUBRIC) == [
        "actionable is false but 2 dimension(s) score at least 0.5 (when, how) of 2 measurable, 2 needed; "
        "the rubric makes it true"
    ]
    assert verdict_problems(both.model_copy(update={"actionable": True}), RUBRIC) == []
    # Nothing measurable is never actionable.
    nothing = both.model_copy(update={"when_score": None, "how_score": None, "actionable": True})
    assert verdict_problems(nothing, RUBRIC) == [
        "actionable is true but 0 dimension(s) score at least 0.5 (none) of 0 measurable, 0 needed; "
        "the rubric makes it false"
    ]


def test_a_model_answer_scoring_an_unmeasurable_dimension_is_sent_back(tmp_path: Path) -> None:
    facts = snapshot(transaction_only_rows())["S01"]
    question = actionability_question(facts, RUBRIC)
    mock = mock_actionability(facts, RUBRIC)
    zeroed = mock.model_copy(update={"what_score": 0.0, "what_evidence": "Nothing to go on."})
    provider = ScriptedProvider(answer_json(zeroed), answer_json(mock))
    answered = Answerer(LLM, AnswerCache(tmp_path), provider=provider).answer(question)
    assert (answered.provenance.source, answered.answer) == ("llm", mock)
    assert (
        "- what_score is 0.0 but WHAT is not measurable from this data: answer null"
        in provider.requests[1][-1]["content"]
    )


# ---------------------------------------------------------------- explainer


def test_mock_explanation_recommends_campaigns_only_when_approved_and_actionable(
    facts: dict[str, SegmentFacts],
) -> None:
    targeted = mock_explanation(facts["S01"], mock_actionability(facts["S01"], RUBRIC))
    # app 0.7 (2.33x the population's share); web carries 0.2 of the segment's events but is under-indexed
    # (0.2 against the population's 0.4): no campaign goes out through it.
    web = next(item for item in facts["S01"].channels if item.label == "web")
    assert web.lift < 1
    assert [item.channel for item in targeted.recommendations] == ["app"]
    assert {item.audience_size for item in targeted.recommendations} == {100}
    assert targeted.recommendations[0].timing == "weekends, evening, 18:00-24:00 UTC"
    assert targeted.recommendations[0].offer == "early access and premium bundles from the electronics range"
    assert targeted.expected_roi == 14.0
    assert "Worth a campaign: an expected return of 1,400% on its cost of $2.00 per customer." in (
        targeted.executive_summary
    )

    # Approved but not actionable.
    mirror = mock_explanation(facts["S03"], mock_actionability(facts["S03"], RUBRIC))
    assert mirror.recommendations == []
    assert "Not a campaign target as it stands: " in mirror.executive_summary
    assert mirror.expected_roi == 5.0

    # Actionable (as an answer may claim) but not approved.
    claimed = actionability_answer(0.9, 0.9, 0.9, 0.9, actionable=True)
    diffuse = mock_explanation(facts["S02"], claimed)
    assert diffuse.recommendations == []
    assert "Not worth a campaign now: expected ROI 0.50 is below the minimum 1.00." in diffuse.executive_summary
    assert diffuse.expected_roi == 0.5


def test_mock_explanation_without_channels_recommends_one_campaign_to_the_whole_segment() -> None:
    facts = snapshot(transaction_only_rows())["S01"].model_copy(deep=True)
    facts.viability.approved = True
    explanation = mock_explanation(facts, actionability_answer(0.9, 0.9, 0.9, 0.9, actionable=True))
    assert len(explanation.recommendations) == 1
    # No channel in the data: the owned channel (email by default).
    assert explanation.recommendations[0].channel == "email"
    assert explanation.recommendations[0].audience_size == 100
    assert explanation.recommendations[0].timing == "any time"
    without_owned = mock_explanation(
        facts, actionability_answer(0.9, 0.9, 0.9, 0.9, actionable=True), Business(owned_channels=())
    )
    assert [item.channel for item in without_owned.recommendations] == ["the channel the customer last bought through"]


def test_a_transaction_log_campaign_names_the_lifecycle_offer_the_owned_channel_and_the_rhythm() -> None:
    facts = transaction_log()["S01"]
    question = explanation_question(facts, mock_actionability(facts, RUBRIC))
    explanation = question.fallback()
    assert question.check(explanation) == []
    (campaign,) = explanation.recommendations
    assert campaign.channel == "email"
    assert campaign.offer == "a win-back offer: a reason to come back for customers who have stopped buying"
    # 96 days since the last purchase at the median, past the usual 40 days between purchases.
    assert campaign.timing == (
        "now: 96 days since their last purchase, past their usual reorder day (they buy every 40 days; medians)"
    )
    assert campaign.audience_size == 100
    assert campaign.rationale == (
        "No channel in the data: the owned channel email, which reaches every customer you can contact. "
        "The win-back fits the 80.0% who are lapsed customers. "
        "Timed by their purchase rhythm: 60.0% of them are repeat buyers."
    )
    assert (
        "They are mostly lapsed customers (80.0% against 33.3% overall); last bought 96 days ago at the median, "
        "and the repeat buyers among them (60.0%) buy every 40 days." in explanation.executive_summary
    )


def test_an_active_segment_is_offered_an_upsell_above_its_average_order_near_its_reorder_day() -> None:
    active = {"active": 0.9, "lapsed": 0.1}
    rhythm = {**RHYTHM, "S01": RhythmRow(100, 80, 30.0, 20.0)}
    facts = transaction_log(s01_mix=active, rhythm=rhythm)["S01"]
    answer = mock_actionability(facts, Rubric(owned_channels=["email", "sms"]))
    assert (answer.what_score, answer.when_score, answer.how_score) == (0.9, 0.8, 0.5)
    assert answer.how_evidence.startswith("No channel in the data: the owned channels email and sms")
    explanation = mock_explanation(facts, answer, Business(owned_channels=("email", "sms")))
    assert [item.channel for item in explanation.recommendations] == ["email", "sms"]
    campaign = explanation.recommendations[0]
    # The segment's average order value is 200.00 (CONCENTRATED_MEANS).
    assert campaign.offer == "an upsell by basket size: a bundle or free delivery above their average order of 200.00"
    assert campaign.timing == (
        "within 14 days of their usual reorder day: they buy every 30 days and last bought 20 days ago (medians)"
    )


def test_timing_names_only_clear_preferences(facts: dict[str, SegmentFacts]) -> None:
    """Weekdays 84% against 70% overall (lift 1.2) is a preference; an evening at the population's rate is not."""
    evening = facts["S01"].day_parts[2].model_copy(update={"share": 0.3, "population_share": 0.3, "lift": 1.0})
    weekday_shoppers = facts["S01"].model_copy(
        update={
            "weekend_share": 0.16,
            "population_weekend_share": 0.3,
            "weekend_lift": 0.53,
            "weekday_share": 0.84,
            "population_weekday_share": 0.7,
            "weekday_lift": 1.2,
            "day_parts": [evening],
        }
    )
    question = explanation_question(weekday_shoppers, mock_actionability(weekday_shoppers, RUBRIC))
    explanation = question.fallback()
    assert explanation.recommendations[0].timing == "weekdays"
    assert "prefer weekdays (84.0% of their activity against 70.0% overall)" in explanation.executive_summary
    assert "evening" not in explanation.executive_summary
    assert question.check(explanation) == []


def with_robustness(facts: SegmentFacts, weakest: float, production_ready: bool) -> SegmentFacts:
    """The segment with its time-window test at `weakest`, the other two tests and the mean high."""
    robustness = facts.robustness.model_copy(
        update={
            "overall": 0.95,
            "production_ready": production_ready,
            "time_window": weakest,
            "feature_drop": 0.97,
            "bootstrap": 0.99,
        }
    )
    return facts.model_copy(update={"robustness": robustness})


@pytest.mark.parametrize(
    ("weakest", "production_ready", "level"),
    [
        (HIGH_CONFIDENCE_ROBUSTNESS, True, "high"),
        (1.0, True, "high"),
        (HIGH_CONFIDENCE_ROBUSTNESS, False, "medium"),
        (0.84, True, "medium"),
        (MEDIUM_CONFIDENCE_ROBUSTNESS, False, "medium"),
        (0.74, True, "low"),
        (0.0, False, "low"),
    ],
)
def test_confidence_level_follows_the_weakest_robustness_test(
    facts: dict[str, SegmentFacts], weakest: float, production_ready: bool, level: str
) -> None:
    """The overall (weighted mean) is 0.95 in every case: only the weakest test tells the levels apart."""
    assert (HIGH_CONFIDENCE_ROBUSTNESS, MEDIUM_CONFIDENCE_ROBUSTNESS) == (0.85, 0.75)
    assert confidence_level(with_robustness(facts["S01"], weakest, production_ready)) == level
    tests = [("time window", weakest), ("feature drop", 0.97), ("bootstrap", 0.99)]
    assert weakest_test(with_robustness(facts["S01"], weakest, production_ready)) == min(tests, key=lambda t: t[1])


def test_mock_explanation_confidence_follows_robustness(facts: dict[str, SegmentFacts]) -> None:
    levels = {
        key: mock_explanation(item, mock_actionability(item, RUBRIC)).confidence_level for key, item in facts.items()
    }
    # Every test of S01 scores 0.9, of S02 0.7 (below 0.75), of S03 0.5.
    assert levels == {"S01": "high", "S02": "low", "S03": "low"}
    justification = mock_explanation(facts["S01"], mock_actionability(facts["S01"], RUBRIC)).confidence_justification
    assert justification == (
        "Robustness 0.90 (highly stable, production-ready): bootstrap 0.90, time window 0.90, "
        "feature drop 0.90; 100 customers."
    )


# ---------------------------------------------------------------- faithfulness


def quoted(text: str) -> list[tuple[float, int, str, bool]]:
    return [(quote.value, quote.decimals, quote.unit, quote.currency) for quote in quotes(text)]


def test_quotes_parses_numbers_with_their_units() -> None:
    assert quoted("1,782 customers") == [(1782.0, 0, "", False)]
    assert quoted("13.2% of them") == [(13.2, 1, "%", False)]
    assert quoted("worth $1.27M") == [(1.27, 2, "M", True)]
    assert quoted("4.67x the average") == [(4.67, 2, "x", False)]
    assert quoted("a change of -0.71") == [(-0.71, 2, "", False)]
    assert quoted("segment S05 and Q3") == []


def test_quotes_takes_dates_and_clock_times_out() -> None:
    assert quoted("on 2024-03-31 from 18:00 to 24:00, 7 days") == [(7.0, 0, "", False)]
    assert faithfulness.dates_in("on 2024-03-31 and 2024-04-01") == ["2024-03-31", "2024-04-01"]
    assert faithfulness.times_in("18:00-24:00 on 2024-03-31, 9:30") == ["18:00", "24:00", "09:30"]


def supported(statistics: Statistics, text: str) -> bool:
    found = list(quotes(text))
    assert len(found) == 1, found
    return statistics.supports(found[0])


def test_statistics_support_a_share_as_percent_and_as_a_fraction() -> None:
    statistics = Statistics([{"share": 0.491}])
    assert supported(statistics, "49.1%")
    assert supported(statistics, "49%")
    assert supported(statistics, "0.49")
    assert not supported(statistics, "48%")
    assert not supported(statistics, "0.45")


def test_statistics_support_money_in_millions_and_in_full() -> None:
    statistics = Statistics([{"total_clv": 1266347.0}])
    assert supported(statistics, "$1.27M")
    assert supported(statistics, "1.27 million")
    assert supported(statistics, "1,266,347")
    assert not supported(statistics, "12,345")
    assert not supported(statistics, "$1.5M")


def test_small_bare_counts_are_not_statistics() -> None:
    statistics = Statistics([{"total_clv": 1266347.0}])
    assert statistics.problems("3 of 4 dimensions are strong", "reason") == []
    assert statistics.problems("13 of 14 dimensions are strong", "reason") == [
        "reason: '13' is not in the statistics",
        "reason: '14' is not in the statistics",
    ]


def test_problems_flag_other_dates_and_hours_that_are_no_day_part_boundary() -> None:
    statistics = Statistics([{"as_of": "2024-03-31", "evening": "18:00-24:00"}])
    assert statistics.dates == {"2024-03-31"} and statistics.times == {"18:00", "24:00"}
    assert statistics.problems("send on 2024-03-31 at 18:00", "timing") == []
    assert statistics.problems("send on 2024-04-01 at 09:00", "timing") == [
        "timing: date 2024-04-01 is not in the statistics",
        "timing: time 09:00 is not a day-part boundary of the statistics",
    ]


def test_a_clock_time_off_the_hour_is_no_day_part_boundary() -> None:
    statistics = Statistics([{"as_of": "2024-03-31", "evening": "18:00-24:00"}])
    assert statistics.problems("send at 18:45", "timing") == [
        "timing: time 18:45 is not a day-part boundary of the statistics"
    ]


def test_unfaithful_skips_judged_fields_and_flags_invented_numbers() -> None:
    statistics = Statistics([{"share": 0.491, "customers": 1782}])
    answer = actionability_answer(0.37, 0.0, 0.0, 0.0, actionable=False).model_copy(
        update={"what_evidence": "49.1% of 1,782 customers buy electronics."}
    )
    assert unfaithful(answer, statistics, judged=("what_score", "when_score", "how_score", "who_score")) == []
    assert unfaithful(answer, statistics, judged=("when_score", "how_score", "who_score")) == [
        "what_score: 0.37 is not in the statistics"
    ]
    invented = answer.model_copy(update={"reason": "12,345 of them bought twice."})
    assert unfaithful(invented, statistics, judged=("what_score", "when_score", "how_score", "who_score")) == [
        "reason: '12,345' is not in the statistics"
    ]


def test_every_mock_answer_is_faithful_to_its_own_statistics(facts: dict[str, SegmentFacts]) -> None:
    every = [*facts.values(), *snapshot(transaction_only_rows()).values(), *transaction_log().values()]
    due = transaction_log()["S01"]
    due = due.model_copy(update={"rhythm": due.rhythm.model_copy(update={"median_days_since_purchase": 30})})
    for item in [*every, due]:
        for rubric in (RUBRIC, Rubric(owned_channels=[]), Rubric(owned_channels=["email", "sms"])):
            question = actionability_question(item, rubric)
            actionability = question.fallback()
            assert question.check(actionability) == [], item.segment_id
            approved = item.model_copy(update={"viability": item.viability.model_copy(update={"approved": True})})
            explaining = explanation_question(approved, actionability, rubric.business)
            explained = explaining.fallback()
            assert explaining.check(explained) == [], (item.segment_id, explained)


def test_the_explanation_check_catches_what_the_mock_never_does(facts: dict[str, SegmentFacts]) -> None:
    actionability = mock_actionability(facts["S02"], RUBRIC)
    question = explanation_question(facts["S02"], actionability)
    targeted = mock_explanation(facts["S01"], mock_actionability(facts["S01"], RUBRIC))
    wrong = question.fallback().model_copy(update={"expected_roi": 14.0, "recommendations": targeted.recommendations})
    problems = question.check(wrong)
    assert "expected_roi 14.0 is not the viability's expected ROI 0.5" in problems
    assert "recommends campaigns for a segment that is not approved by viability" in problems


# ---------------------------------------------------------------- runner.parse_answer


def answer_json(answer: ActionabilityAnswer) -> str:
    return json.dumps(answer.model_dump())


def test_parse_answer_reads_json_plain_and_fenced(facts: dict[str, SegmentFacts]) -> None:
    expected = mock_actionability(facts["S01"], RUBRIC)
    assert parse_answer(answer_json(expected), ActionabilityAnswer) == (expected, [])
    assert parse_answer(f"```json\n{answer_json(expected)}\n```", ActionabilityAnswer) == (expected, [])
    assert parse_answer(f"  ```\n{answer_json(expected)}```  ", ActionabilityAnswer) == (expected, [])


def test_parse_answer_reports_what_is_wrong(facts: dict[str, SegmentFacts]) -> None:
    answer, problems = parse_answer("{'what_score': 1}", ActionabilityAnswer)
    assert answer is None
    assert len(problems) == 1 and problems[0].startswith("the answer is not valid JSON: ")

    document = mock_actionability(facts["S01"], RUBRIC).model_dump()
    document["how_score"] = 1.5
    del document["reason"]
    answer, problems = parse_answer(json.dumps(document), ActionabilityAnswer)
    assert answer is None
    assert sorted(problem.split(":")[0] for problem in problems) == ["how_score", "reason"]

    assert parse_answer("   ", ActionabilityAnswer) == (None, ["the answer was empty"])
    assert parse_answer("```json\n```", ActionabilityAnswer) == (None, ["the answer was empty"])


# ---------------------------------------------------------------- cache


MESSAGES = [{"role": "system", "content": "rules"}, {"role": "user", "content": "question"}]
SCHEMA = {"type": "object"}


def test_cache_key_changes_with_every_part_of_the_request() -> None:
    key = cache_key("v1", "openai", "model-a", MESSAGES, SCHEMA)
    assert key == cache_key("v1", "openai", "model-a", [dict(message) for message in MESSAGES], dict(SCHEMA))
    changed = [
        cache_key("v2", "openai", "model-a", MESSAGES, SCHEMA),
        cache_key("v1", "mock", "model-a", MESSAGES, SCHEMA),
        cache_key("v1", "openai", "model-b", MESSAGES, SCHEMA),
        cache_key("v1", "openai", "model-a", [*MESSAGES[:1], {"role": "user", "content": "question!"}], SCHEMA),
        cache_key("v1", "openai", "model-a", MESSAGES, {"type": "array"}),
    ]
    assert key not in changed
    assert len(set(changed)) == len(changed)


def test_answer_cache_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    key = cache_key("v1", "openai", "model-a", MESSAGES, SCHEMA)
    assert cache.get("actionability", key) is None
    path = cache.put("actionability", key, {"actionable": True, "reason": "café"}, model="model-a")
    assert path == tmp_path / "actionability" / key[:2] / f"{key}.json"
    assert cache.get("actionability", key) == {"actionable": True, "reason": "café"}
    assert cache.get("explanation", key) is None
    assert [file.relative_to(tmp_path) for file in tmp_path.rglob("*") if file.is_file()] == [
        path.relative_to(tmp_path)
    ]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"answer": "text"}'])
def test_an_unreadable_cache_entry_is_a_miss(tmp_path: Path, content: bytes) -> None:
    cache = AnswerCache(tmp_path)
    path = cache.path("actionability", "ab" + "0" * 62)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert cache.get("actionability", "ab" + "0" * 62) is None


# ---------------------------------------------------------------- runner.Answerer


def completion(content: str, finish_reason: str = "stop") -> Completion:
    return Completion(content, prompt_tokens=100, completion_tokens=20, requests=1, finish_reason=finish_reason)


class ScriptedProvider:
    """The network edge: answers from a script, in order (the last one repeats), and records every request."""

    def __init__(self, *answers: str | Completion | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[list[dict[str, str]]] = []
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, str]], schema_name: str, schema: dict) -> Completion:
        with self._lock:
            self.requests.append([dict(message) for message in messages])
            scripted = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(scripted, Exception):
            raise scripted
        return scripted if isinstance(scripted, Completion) else completion(scripted)


LLM = LLMSettings(provider="openai", model="test-model")


def test_the_mock_provider_answers_every_question_as_mock_at_no_cost(
    facts: dict[str, SegmentFacts], tmp_path: Path
) -> None:
    answerer = Answerer(LLMSettings(provider="mock"), AnswerCache(tmp_path))
    answered = answerer.answer_all([actionability_question(item, RUBRIC) for item in facts.values()])
    assert [item.segment_id for item in answered] == ["S01", "S02", "S03"]
    for item in answered:
        assert item.answer == mock_actionability(facts[item.segment_id], RUBRIC)
        assert item.provenance.model_dump() == {
            "source": "mock",
            "provider": "mock",
            "model": "rules",
            "prompt_version": PROMPT_VERSION,
            "fallback_reason": None,
            "statistics_sha256": facts[item.segment_id].sha256,
        }
    assert set(answerer.usage.as_metadata().values()) == {0}
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_answer_is_sent_back_and_the_valid_retry_is_taken(
    facts: dict[str, SegmentFacts], tmp_path: Path
) -> None:
    question = actionability_question(facts["S01"], RUBRIC)
    # The model's own answer: the mock's scores with its own (number-free) reason.
    own = mock_actionability(facts["S01"], RUBRIC).model_copy(update={"reason": "Clear on all four dimensions."})
    provider = ScriptedProvider("Sure! Here is the answer.", answer_json(own))
    answerer = Answerer(LLM, AnswerCache(tmp_path), provider=provider)

    answered = answerer.answer(question)

    assert answered.answer == own
    assert answered.provenance.source == "llm"
    assert (answered.provenance.provider, answered.provenance.model) == ("openai", "test-model")
    assert answered.provenance.fallback_reason is None
    usage = answerer.usage.as_metadata()
    assert (usage["requests"], usage["rejected_answers"], usage["fallbacks"], usage["retries"]) == (2, 1, 0, 0)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (200, 40)
    first, retry = provider.requests
    assert first == question.messages
    assert retry[: len(first)] == first
    assert retry[len(first)] == {"role": "assistant", "content": "Sure! Here is the answer."}
    assert retry[-1]["role"] == "user"
    assert retry[-1]["content"].startswith("Your answer was rejected:\n- the answer is not valid JSON: ")
    assert len(retry) == len(first) + 2


def test_an_answer_against_the_rubric_is_sent_back_with_the_problem(
    facts: dict[str, SegmentFacts], tmp_path: Path
) -> None:
    question = actionability_question(facts["S01"], RUBRIC)
    mock = mock_actionability(facts["S01"], RUBRIC)
    against = mock.model_copy(update={"actionable": False})
    provider = ScriptedProvider(answer_json(against), answer_json(mock))
    answered = Answerer(LLM, AnswerCache(tmp_path), provider=provider).answer(question)
    assert answered.provenance.source == "llm"
    assert "- actionable is false but 4 dimension(s) score at least 0.5" in provider.requests[1][-1]["content"]


def test_an_answer_that_stays_unfaithful_falls_back_to_the_mock(facts: dict[str, SegmentFacts], tmp_path: Path) -> None:
    question = actionability_question(facts["S01"], RUBRIC)
    invented = mock_actionability(facts["S01"], RUBRIC).model_copy(
        update={"what_evidence": "12,345 of their orders are electronics."}
    )
    provider = ScriptedProvider(answer_json(invented))
    answerer = Answerer(LLM, AnswerCache(tmp_path), provider=provider)

    answered = answerer.answer(question)

    assert answered.provenance.source == "fallback"
    assert answered.answer == mock_actionability(facts["S01"], RUBRIC)
    assert answered.provenance.fallback_reason == (
        "no valid answer in 2 attempt(s): what_evidence: '12,345' is not in the statistics"
    )
    assert len(provider.requests) == LLM.answer_attempts == 2
    usage = answerer.usage.as_metadata()
    assert (usage["requests"], usage["rejected_answers"], usage["fallbacks"]) == (2, 2, 1)
    assert [file for file in tmp_path.rglob("*") if file.is_file()] == []


def test_a_cut_off_answer_is_rejected(facts: dict[str, SegmentFacts], tmp_path: Path) -> None:
    question = actionability_question(facts["S01"], RUBRIC)
    cut = completion(answer_json(mock_actionability(facts["S01"], RUBRIC)), finish_reason="length")
    answered = Answerer(LLM, AnswerCache(tmp_path), provider=ScriptedProvider(cut)).answer(question)
    assert answered.provenance.source == "fallback"
    assert "the answer was cut off at max_tokens=1500" in answered.provenance.fallback_reason


def test_an_unavailable_provider_falls_back_and_counts_its_requests(
    facts: dict[str, SegmentFacts], tmp_path: Path
) -> None:
    question = actionability_question(facts["S02"], RUBRIC)
    provider = ScriptedProvider(ProviderUnavailableError("no answer after 4 request(s); last: APITimeoutError", 4))
    answerer = Answerer(LLM, AnswerCache(tmp_path), provider=provider)

    answered = answerer.answer(question)

    assert answered.provenance.source == "fallback"
    assert answered.provenance.fallback_reason == (
        "provider unavailable: no answer after 4 request(s); last: APITimeoutError"
    )
    assert answered.answer == mock_actionability(facts["S02"], RUBRIC)
    usage = answerer.usage.as_metadata()
    assert (usage["requests"], usage["retries"], usage["fallbacks"], usage["rejected_answers"]) == (4, 3, 1, 0)
    assert len(provider.requests) == 1


def test_a_second_run_answers_from_the_cache_without_asking(facts: dict[str, SegmentFacts], tmp_path: Path) -> None:
    questions = [actionability_question(item, RUBRIC) for item in facts.values()]
    answers = [answer_json(mock_actionability(item, RUBRIC)) for item in facts.values()]

    first = ScriptedProvider(*answers)
    for question in questions:
        Answerer(LLM, AnswerCache(tmp_path), provider=first).answer(question)
    assert len(first.requests) == 3

    second = ScriptedProvider("never asked")
    answerer = Answerer(LLM, AnswerCache(tmp_path), provider=second)
    answered = answerer.answer_all(questions)
    assert second.requests == []
    assert [item.provenance.source for item in answered] == ["llm"] * 3
    assert [item.answer for item in answered] == [mock_actionability(item, RUBRIC) for item in facts.values()]
    usage = answerer.usage.as_metadata()
    assert (usage["cache_hits"], usage["requests"], usage["prompt_tokens"]) == (3, 0, 0)

    # Another model is another key: nothing cached for it.
    other = ScriptedProvider(answers[0])
    Answerer(LLMSettings(provider="openai", model="other-model"), AnswerCache(tmp_path), provider=other).answer(
        questions[0]
    )
    assert len(other.requests) == 1


def test_read_cache_false_asks_again(facts: dict[str, SegmentFacts], tmp_path: Path) -> None:
    question = actionability_question(facts["S01"], RUBRIC)
    cached = mock_actionability(facts["S01"], RUBRIC)
    Answerer(LLM, AnswerCache(tmp_path), provider=ScriptedProvider(answer_json(cached))).answer(question)

    fresh = cached.model_copy(update={"reason": "Asked again."})
    provider = ScriptedProvider(answer_json(fresh))
    answered = Answerer(LLM, AnswerCache(tmp_path), provider=provider, read_cache=False).answer(question)
    assert len(provider.requests) == 1
    assert answered.answer == fresh
    # The fresh answer replaced the cached one.
    again = ScriptedProvider("never asked")
    assert Answerer(LLM, AnswerCache(tmp_path), provider=again).answer(question).answer == fresh
    assert again.requests == []


def test_a_fallback_is_never_cached(facts: dict[str, SegmentFacts], tmp_path: Path) -> None:
    question = actionability_question(facts["S01"], RUBRIC)
    down = ScriptedProvider(ProviderUnavailableError("no answer after 1 request(s); last: APIConnectionError", 1))
    assert Answerer(LLM, AnswerCache(tmp_path), provider=down).answer(question).provenance.source == "fallback"

    back = ScriptedProvider(answer_json(mock_actionability(facts["S01"], RUBRIC)))
    answered = Answerer(LLM, AnswerCache(tmp_path), provider=back).answer(question)
    assert len(back.requests) == 1
    assert answered.provenance.source == "llm"


def test_a_cached_answer_that_no_longer_passes_the_check_is_asked_again(
    facts: dict[str, SegmentFacts], tmp_path: Path
) -> None:
    question = actionability_question(facts["S01"], RUBRIC)
    cache = AnswerCache(tmp_path)
    key = cache_key(PROMPT_VERSION, LLM.provider, LLM.model, question.messages, ActionabilityAnswer.model_json_schema())
    invented = mock_actionability(facts["S01"], RUBRIC).model_copy(update={"reason": "12,345 customers."})
    cache.put("actionability", key, invented.model_dump(mode="json"), LLM.model)

    provider = ScriptedProvider(answer_json(mock_actionability(facts["S01"], RUBRIC)))
    answerer = Answerer(LLM, cache, provider=provider)
    assert answerer.answer(question).answer == mock_actionability(facts["S01"], RUBRIC)
    assert len(provider.requests) == 1
    assert answerer.usage.cache_hits == 0


# ---------------------------------------------------------------- prompts


def test_the_actionability_prompt_carries_rubric_statistics_and_schema(facts: dict[str, SegmentFacts]) -> None:
    rubric = Rubric(strong_score=0.6, min_strong_dimensions=2)
    system, user = actionability_messages(facts["S01"], rubric)
    assert system == {"role": "system", "content": SYSTEM}
    assert user["role"] == "user"
    text = user["content"]
    assert ACTIONABILITY_TASK.format(rubric=rubric.describe()) in text
    assert (
        "A dimension is strong when its score is at least 0.6. With all 4 dimensions measurable, the segment is "
        "actionable when at least 2 of them are strong."
    ) in text
    assert "(2 of 3, 1 of 2, 1 of 1)" in text
    assert statistics_of(text) == actionability_statistics(facts["S01"], rubric)
    assert statistics_of(text)["measured_by"] == {
        "what": "product categories",
        "when": "time of day and weekends",
        "how": "channels",
        "who": "customer lifetime value",
    }
    assert statistics_of(text)["segment"]["categories"][0]["label"] == "electronics"
    assert json.dumps(ActionabilityAnswer.model_json_schema(), sort_keys=True) in text


def test_the_actionability_prompt_says_what_a_transaction_log_is_judged_by() -> None:
    facts = transaction_log()["S01"]
    _, user = actionability_messages(facts, Rubric(owned_channels=["email", "sms"]))
    text = user["content"]
    statistics = statistics_of(text)
    assert statistics["measured_by"] == {
        "what": "lifecycle stage",
        "when": "purchase rhythm",
        "how": "owned channels",
        "who": "customer lifetime value",
    }
    assert statistics["rubric"]["owned_channels"] == ["email", "sms"]
    assert statistics["segment"]["rhythm"]["median_days_between_purchases"] == 40
    assert [stage["label"] for stage in statistics["segment"]["lifecycle"]][0] == "lapsed"
    assert f"Where measured_by is null the dimension is {NOT_MEASURABLE}: answer its score as null" in text
    assert "lapsed: win-back, at_risk: reactivation, loyal: loyalty reward, new: second-purchase nudge" in text
    assert "rhythm.repeat_buyer_share" in text
    # Not measurable: null in measured_by.
    _, bare = actionability_messages(snapshot(transaction_only_rows())["S01"], Rubric(owned_channels=[]))
    assert statistics_of(bare["content"])["measured_by"]["how"] is None


def test_the_explanation_prompt_carries_the_actionability_answer(facts: dict[str, SegmentFacts]) -> None:
    actionability = mock_actionability(facts["S02"], RUBRIC)
    _, user = explanation_messages(facts["S02"], actionability)
    statistics = statistics_of(user["content"])
    assert statistics == explanation_statistics(facts["S02"], actionability, Business())
    assert statistics["actionability"]["actionable"] is False
    assert statistics["owned_channels"] == ["email"]
    _, sms = explanation_messages(facts["S02"], actionability, Business(owned_channels=("sms",)))
    assert statistics_of(sms["content"])["owned_channels"] == ["sms"]
    assert json.dumps(ExplanationAnswer.model_json_schema(), sort_keys=True) in user["content"]


def test_a_percent_is_read_as_a_share_never_as_the_number_itself() -> None:
    statistics = Statistics([{"expected_roi": 4.2, "share": 0.491}])
    assert statistics.problems("an ROI of 420%", "summary") == []
    assert statistics.problems("an ROI of 4.2%", "summary") == ["summary: '4.2%' is not in the statistics"]
    assert statistics.problems("0.5% of them", "summary") == ["summary: '0.5%' is not in the statistics"]
    assert statistics.problems("49.1 per cent of them", "summary") == []


def test_a_quoted_number_keeps_its_sign() -> None:
    statistics = Statistics([{"expected_roi": -0.3}])
    assert statistics.problems("an expected ROI of -0.30", "summary") == []
    assert statistics.problems("a positive ROI of 0.30", "summary") == ["summary: '0.30' is not in the statistics"]


def test_only_counts_of_things_pass_unquoted() -> None:
    statistics = Statistics([{"mean_orders": 3.1}])
    assert statistics.problems("3 of 4 dimensions; fewer than 3 strong dimensions; top 3; 2 channels", "r") == []
    assert statistics.problems("about 8 orders each", "r") == ["r: '8' is not in the statistics"]
    assert statistics.problems("a 10 day window", "r") == ["r: '10' is not in the statistics"]


def test_the_parts_of_the_snapshot_date_may_be_quoted() -> None:
    statistics = Statistics([{"as_of": "2025-12-31"}])
    assert statistics.problems("by Q4 2025, as of December 31", "summary") == []
    assert statistics.problems("by 2026", "summary") == ["summary: '2026' is not in the statistics"]


def test_an_roi_that_could_not_be_computed_stays_empty_and_never_reaches_the_prompt_as_nan() -> None:
    rows = [VIABILITY_ROWS[0], ("S02", 0.0, 0.0, float("nan"), "low", False, ["no customers"]), VIABILITY_ROWS[2]]
    facts = snapshot_facts(
        segments_table(SEGMENT_ROWS), robustness_table(ROBUSTNESS_ROWS), viability_table(rows), AS_OF
    )
    unpriced = facts[1]
    assert unpriced.viability.expected_roi is None
    question = explanation_question(unpriced, mock_actionability(unpriced, RUBRIC))
    assert "NaN" not in question.messages[1]["content"]
    explained = question.fallback()
    assert explained.expected_roi is None
    assert question.check(explained) == []
    assert question.check(explained.model_copy(update={"expected_roi": 0.5})) == [
        "expected_roi 0.5 is not the viability's expected ROI None"
    ]


def test_answers_made_from_other_statistics_are_stale(facts: dict[str, SegmentFacts]) -> None:
    snapshot_now = list(facts.values())
    answered = Answerer(LLMSettings(provider="mock"), None).answer_all(
        [actionability_question(item, RUBRIC) for item in snapshot_now]
    )
    table = answers_table(answered, "actionability")
    assert stale_answers(snapshot_now, table) == []
    assert set(current_evaluations(snapshot_now, table)) == {"S01", "S02", "S03"}
    repriced = facts["S02"].model_copy(
        update={"viability": facts["S02"].viability.model_copy(update={"expected_roi": 0.7})}
    )
    assert repriced.sha256 != facts["S02"].sha256
    later = [facts["S01"], repriced]
    assert stale_answers(later, table.slice(0, 1)) == ["S02: no answer"]
    assert stale_answers(later, table) == ["S02: answered on other statistics than the stored snapshot's"]
    with pytest.raises(PipelineError, match="actionability does not match the snapshot"):
        current_evaluations(later, table)


def test_a_segment_of_one_lifecycle_stage_gets_its_offer_on_the_range_it_buys(facts: dict[str, SegmentFacts]) -> None:
    """With categories, a segment mostly of lapsed customers is offered a win-back on its range, one mostly of
    new customers a second-purchase nudge on it; a segment without a leading stage keeps the value-led offer."""
    base = facts["S01"]
    answer = mock_actionability(base, RUBRIC)
    approved = base.model_copy(update={"viability": base.viability.model_copy(update={"approved": True})})

    def offers(mix: dict[str, float]) -> set[str]:
        stages = [
            LabelShare(label=label, share=share, population_share=0.3, lift=share / 0.3) for label, share in mix.items()
        ]
        with_mix = approved.model_copy(update={"lifecycle": stages})
        return {item.offer for item in mock_explanation(with_mix, answer).recommendations}

    assert offers({"lapsed": 0.9, "at_risk": 0.1}) == {
        "a win-back offer on the electronics range: a reason to come back"
    }
    assert offers({"new": 0.7, "active": 0.3}) == {"a second-purchase nudge on the electronics range"}
    assert offers({"active": 0.5, "lapsed": 0.5}) == {"early access and premium bundles from the electronics range"}


# ---------------------------------------------------------------- the business: verdicts, channels, money, time


def test_a_rejected_segment_is_never_called_actionable_however_clear(facts: dict[str, SegmentFacts]) -> None:
    """S01 scores 1.0, 1.0, 0.83 and 0.71: clear on every dimension. Rejected by viability, it is not actionable,
    and the reason says both things in plain words; the explanation then says it is not worth a campaign."""
    rejected = facts["S01"].model_copy(
        update={"viability": facts["S01"].viability.model_copy(update={"approved": False})}
    )
    answer = mock_actionability(rejected, RUBRIC)
    assert (answer.what_score, answer.when_score, answer.how_score, answer.who_score) == (1.0, 1.0, 0.83, 0.71)
    assert answer.actionable is False
    assert answer.reason == (
        "Not a campaign target now: it is not worth a campaign, although the data is clear on what to offer, "
        "when to send, how to reach them and what they are worth."
    )
    assert "a campaign can be aimed" not in answer.reason.lower()
    assert actionability_question(rejected, RUBRIC).check(answer) == []
    explanation = mock_explanation(rejected, answer)
    assert explanation.recommendations == []
    assert "Not worth a campaign now" in explanation.executive_summary
    assert "actionable" not in explanation.executive_summary


def test_campaigns_use_only_channels_the_segment_over_indexes_on_or_owned_ones(facts: dict[str, SegmentFacts]) -> None:
    """S01: app 2.33x (over-indexed), web 0.2 against 0.4 (0.5x). No over-indexed channel: the owned ones."""
    answer = mock_actionability(facts["S01"], RUBRIC)
    assert {item.label: item.lift for item in facts["S01"].channels}["web"] < 1
    assert allowed_channels(facts["S01"], ["email"]) == {"app", "email"}
    assert [item.channel for item in mock_explanation(facts["S01"], answer).recommendations] == ["app"]
    # The same segment when no channel stands out: every lift at most 1.
    flat = facts["S01"].model_copy(
        update={"channels": [item.model_copy(update={"lift": min(item.lift, 1.0)}) for item in facts["S01"].channels]}
    )
    campaigns = mock_explanation(flat, answer, Business(owned_channels=("email", "sms"))).recommendations
    assert [item.channel for item in campaigns] == ["email", "sms"]
    assert campaigns[0].rationale.startswith("No channel stands out for the segment: the owned channel email.")
    # The check a real provider's answer goes through: web is refused, email (owned) and app pass.
    question = explanation_question(facts["S01"], answer)
    web = mock_explanation(facts["S01"], answer)
    web = web.model_copy(update={"recommendations": [web.recommendations[0].model_copy(update={"channel": "web"})]})
    assert question.check(web) == [
        "recommendations[0].channel 'web' is one the segment does not use more than the whole base (lift above 1) "
        "and not an owned channel; use one of ['app', 'email']"
    ]
    email = web.model_copy(update={"recommendations": [web.recommendations[0].model_copy(update={"channel": "Email"})]})
    assert question.check(email) == []


def test_money_and_hours_are_written_in_the_business_currency_and_time_zone(facts: dict[str, SegmentFacts]) -> None:
    """EUR in Europe/Berlin: on 2024-03-31 (summer time from 01:00 UTC) the evening, 18:00-24:00 UTC, is
    20:00-02:00 in Berlin; every such number passes the faithfulness check of its own statistics."""
    rubric = Rubric(currency="EUR", timezone="Europe/Berlin")
    assert rubric.business == Business(currency="EUR", timezone="Europe/Berlin", owned_channels=("email",))
    question = actionability_question(facts["S01"], rubric)
    answer = question.fallback()
    assert question.check(answer) == []
    assert "evening (20:00-02:00 Europe/Berlin; population: 25.0%)" in answer.when_evidence
    assert answer.who_evidence.startswith("Mean CLV \u20ac1,000.00 against \u20ac400.00 for all customers")
    explaining = explanation_question(facts["S01"], answer, rubric.business)
    explanation = explaining.fallback()
    assert explaining.check(explanation) == []
    assert explanation.recommendations[0].timing == "weekends, evening, 20:00-02:00 Europe/Berlin"
    assert "mean CLV of \u20ac1,000.00" in explanation.executive_summary
    assert "its cost of \u20ac2.00 per customer" in explanation.executive_summary
    # A clock time that is a day-part boundary neither in UTC nor in Berlin is refused.
    made_up = explanation.model_copy(
        update={"recommendations": [explanation.recommendations[0].model_copy(update={"timing": "at 21:00"})]}
    )
    assert "time 21:00 is not a day-part boundary of the statistics" in " ".join(explaining.check(made_up))
