"""Segment viability: the campaign arithmetic by hand, and each criterion rejecting on its own."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from segmentation_pipeline.core import viability
from segmentation_pipeline.core.errors import DataValidationError
from segmentation_pipeline.core.viability import CampaignEconomics, ValidationCriteria


def segments_table(*rows: tuple[str, int, float, float]) -> pd.DataFrame:
    """Rows of (segment_id, size, share, total_clv); mean_clv follows from size and total."""
    return pd.DataFrame(
        {
            "segment_id": [row[0] for row in rows],
            "size": [row[1] for row in rows],
            "share": [row[2] for row in rows],
            "total_clv": [row[3] for row in rows],
            "mean_clv": [row[3] / row[1] if row[1] else 0.0 for row in rows],
        }
    )


def robust(*segment_ids: str, feature_drop: float = 0.9, overall: float = 0.9) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "segment_id": list(segment_ids),
            "feature_drop_stability": [feature_drop] * len(segment_ids),
            "overall": [overall] * len(segment_ids),
        }
    )


#: Passes every default criterion: 100 customers, 25% of all, CLV 20,000, ROI 2.0 at 2.0 per customer.
GOOD = ("good", 100, 0.25, 20_000.0)
#: A campaign at 2.0 per customer, the arithmetic the tests below work by hand.
AT_2 = CampaignEconomics(campaign_cost_per_customer=2.0)


def test_defaults_are_the_documented_ones() -> None:
    assert ValidationCriteria().model_dump() == {
        "min_segment_size": 10,
        "max_segment_size_pct": 0.5,
        "min_total_clv": 1000.0,
        "min_feature_stability": 0.3,
        "min_overall_robustness": 0.4,
        "min_expected_roi": 0.5,
    }
    assert CampaignEconomics().model_dump() == {
        "campaign_cost_per_customer": 0.5,
        "expected_uplift": 0.10,
        "margin": 0.30,
        "use_measured_uplift": True,
        "min_control_customers": 100,
    }


def test_roi_by_hand() -> None:
    segments = segments_table(GOOD, ("thin", 50, 0.125, 2_000.0))
    result = viability.assess_viability(segments, robust("good", "thin"), economics=AT_2).set_index("segment_id")

    # good: profit 20,000 x 0.10 x 0.30 = 600; cost 100 x 2.0 = 200; ROI (600 - 200) / 200 = 2.0
    assert result.loc["good", "incremental_profit"] == pytest.approx(600.0)
    assert result.loc["good", "campaign_cost"] == pytest.approx(200.0)
    assert result.loc["good", "expected_roi"] == pytest.approx(2.0)
    # thin: profit 2,000 x 0.10 x 0.30 = 60; cost 50 x 2.0 = 100; ROI (60 - 100) / 100 = -0.4
    assert result.loc["thin", "incremental_profit"] == pytest.approx(60.0)
    assert result.loc["thin", "campaign_cost"] == pytest.approx(100.0)
    assert result.loc["thin", "expected_roi"] == pytest.approx(-0.4)

    # Other economics: 1.0 per customer, 20% uplift, 50% margin.
    # good: profit 20,000 x 0.2 x 0.5 = 2,000; cost 100; ROI (2,000 - 100) / 100 = 19.0
    economics = CampaignEconomics(campaign_cost_per_customer=1.0, expected_uplift=0.2, margin=0.5)
    assert viability.campaign_roi(100, 20_000.0, economics) == pytest.approx((100.0, 2_000.0, 19.0))


def test_the_return_is_computed_on_the_value_of_one_campaign_cycle() -> None:
    """The members' expected spend over one campaign cycle is what a campaign can lift, not their whole CLV;
    without a cycle value (a snapshot made before it) the CLV stands in."""
    segments = segments_table(GOOD, ("older", 100, 0.25, 20_000.0)).assign(total_cycle_value=[5_000.0, None])
    result = viability.assess_viability(segments, robust("good", "older"), economics=AT_2).set_index("segment_id")
    # good: profit 5,000 x 0.10 x 0.30 = 150; cost 200; ROI -0.25
    assert result.loc["good", "campaign_value"] == pytest.approx(5_000.0)
    assert result.loc["good", "expected_roi"] == pytest.approx(-0.25)
    assert result.loc["good", "failed_criteria"] == ["min_expected_roi"]
    assert result.loc["older", "campaign_value"] == pytest.approx(20_000.0)
    assert result.loc["older", "expected_roi"] == pytest.approx(2.0)


def test_output_columns_and_an_approved_segment() -> None:
    result = viability.assess_viability(segments_table(GOOD), robust("good"), economics=AT_2)
    assert list(result.columns) == list(viability.VIABILITY_COLUMNS)
    row = result.iloc[0]
    assert bool(row["approved"]) is True
    assert row["failed_criteria"] == []
    assert row["reasons"] == ["meets every viability criterion (expected ROI 2.00, overall robustness 0.90)"]


def test_strategic_impact_by_hand() -> None:
    # Population: 200 customers worth 40,000 in total, mean 200.
    segments = segments_table(("whales", 20, 0.1, 20_000.0), ("crowd", 180, 0.9, 20_000.0))
    result = viability.assess_viability(segments, robust("whales", "crowd")).set_index("segment_id")
    # whales: half the value; mean 1,000 is 5x the population's -> 0.5 x 0.5 + 0.5 x 5/6
    assert result.loc["whales", "strategic_impact"] == pytest.approx(0.25 + 0.5 * 5 / 6)
    assert result.loc["whales", "strategic_tier"] == "high"
    # crowd: half the value; mean 111.1 is 5/9 of the population's -> 0.25 + 0.5 x (5/9) / (14/9)
    assert result.loc["crowd", "strategic_impact"] == pytest.approx(0.25 + 0.5 * 5 / 14)
    assert result.loc["crowd", "strategic_tier"] == "medium"
    assert viability.strategic_tier(0.29) == "low"


@pytest.mark.parametrize(
    ("segment", "robustness", "criterion", "reason"),
    [
        (("small", 7, 0.05, 20_000.0), {}, "min_segment_size", "size 7 is below the minimum of 10"),
        (
            ("everyone", 100, 0.62, 20_000.0),
            {},
            "max_segment_size_pct",
            "share 62.0% of all customers is above the maximum of 50.0%",
        ),
        (
            # At 2.0 per customer ROI would fail too (profit 27, cost 40); the test uses 0.1 (cost 2, ROI 12.5).
            ("cheap", 20, 0.05, 900.0),
            {},
            "min_total_clv",
            "total CLV 900.00 is below the minimum of 1,000.00",
        ),
        (
            ("fragile", 100, 0.25, 20_000.0),
            {"feature_drop": 0.2},
            "min_feature_stability",
            "feature-drop stability 0.20 is below the minimum of 0.30",
        ),
        (
            ("shaky", 100, 0.25, 20_000.0),
            {"overall": 0.35},
            "min_overall_robustness",
            "overall robustness 0.35 is below the minimum of 0.40",
        ),
        (
            # profit 5,000 x 0.1 x 0.3 = 150; cost 200; ROI -0.25
            ("unprofitable", 100, 0.25, 5_000.0),
            {},
            "min_expected_roi",
            "expected ROI -0.25 is below the minimum of 0.50",
        ),
    ],
)
def test_each_criterion_rejects_on_its_own(
    segment: tuple[str, int, float, float], robustness: dict[str, float], criterion: str, reason: str
) -> None:
    economics = CampaignEconomics(campaign_cost_per_customer=0.1) if criterion == "min_total_clv" else AT_2
    scores = pd.concat([robust(segment[0], **robustness), robust("good")], ignore_index=True)
    result = viability.assess_viability(segments_table(segment, GOOD), scores, economics=economics)
    rejected, approved = result.iloc[0], result.iloc[1]
    assert bool(rejected["approved"]) is False
    assert rejected["failed_criteria"] == [criterion]
    assert rejected["reasons"] == [reason]
    assert bool(approved["approved"]) is True


def test_missing_robustness_scores_fail_with_a_reason() -> None:
    segments = segments_table(GOOD, ("unscored", 100, 0.25, 20_000.0), ("absent", 100, 0.25, 20_000.0))
    robustness = pd.DataFrame(
        {
            "segment_id": ["good", "unscored"],
            "feature_drop_stability": [0.9, math.nan],
            "overall": [0.9, math.nan],
        }
    )
    result = viability.assess_viability(segments, robustness).set_index("segment_id")
    for segment_id in ("unscored", "absent"):
        assert not result.loc[segment_id, "approved"]
        assert result.loc[segment_id, "failed_criteria"] == ["min_feature_stability", "min_overall_robustness"]
        assert result.loc[segment_id, "reasons"] == [
            "feature-drop stability is missing (no robustness score); the minimum is 0.30",
            "overall robustness is missing (no robustness score); the minimum is 0.40",
        ]
    assert result.loc["good", "approved"]


def test_an_empty_segment_has_no_roi_and_is_rejected() -> None:
    result = viability.assess_viability(segments_table(GOOD, ("empty", 0, 0.0, 0.0)), robust("good", "empty"))
    empty = result.iloc[1]
    assert empty["campaign_cost"] == 0.0 and math.isnan(empty["expected_roi"])
    assert empty["failed_criteria"] == ["min_segment_size", "min_total_clv", "min_expected_roi"]


def test_criteria_are_configurable() -> None:
    lenient = ValidationCriteria(min_segment_size=5, min_expected_roi=-1.0)
    result = viability.assess_viability(
        segments_table(("niche", 7, 0.05, 20_000.0), ("thin", 50, 0.125, 2_000.0)),
        robust("niche", "thin"),
        criteria=lenient,
    )
    assert result["approved"].tolist() == [True, True]


def test_a_missing_column_is_named() -> None:
    segments = segments_table(GOOD).drop(columns=["total_clv"])
    with pytest.raises(DataValidationError, match="segments table lacks required column.*'total_clv'"):
        viability.assess_viability(segments, robust("good"))
    with pytest.raises(DataValidationError, match="robustness table lacks required column.*'overall'"):
        viability.assess_viability(segments_table(GOOD), robust("good").drop(columns=["overall"]))


def test_malformed_inputs_are_refused() -> None:
    twice = segments_table(GOOD, GOOD)
    with pytest.raises(DataValidationError, match="more than once"):
        viability.assess_viability(twice, robust("good"))
    negative = segments_table(GOOD).assign(size=[-1])
    with pytest.raises(DataValidationError, match="'size'"):
        viability.assess_viability(negative, robust("good"))
    with pytest.raises(DataValidationError, match="'overall'"):
        viability.assess_viability(segments_table(GOOD), robust("good").assign(overall=["high"]))


def measured(segment_id: str, uplift: float, low: float, high: float, control: int = 400) -> pd.DataFrame:
    """A segment's measured uplift as core.campaign_results.measured_uplifts gives it."""
    return pd.DataFrame(
        [
            {
                "segment_id": segment_id,
                "campaign_key": f"{segment_id}-email",
                "export_day": pd.Timestamp("2025-03-01").date(),
                "measured_on": pd.Timestamp("2025-03-31").date(),
                "treatment_customers": 3600,
                "control_customers": control,
                "relative_uplift": uplift,
                "relative_ci_low": low,
                "relative_ci_high": high,
                "significant": low > 0,
            }
        ]
    )


def test_a_measured_uplift_replaces_the_prior_and_says_so() -> None:
    segments = segments_table(GOOD, ("other", 100, 0.25, 20_000.0))
    result = viability.assess_viability(
        segments, robust("good", "other"), economics=AT_2, measured=measured("good", 0.04, 0.01, 0.07)
    ).set_index("segment_id")
    # good at its measured +4%: profit 20,000 x 0.04 x 0.30 = 240; cost 200; ROI 0.2, below the minimum of 0.5.
    assert result.loc["good", "uplift_used"] == 0.04 and result.loc["good", "uplift_source"] == "measured"
    assert (result.loc["good", "uplift_ci_low"], result.loc["good", "uplift_ci_high"]) == (0.01, 0.07)
    assert result.loc["good", "incremental_profit"] == pytest.approx(240.0)
    assert result.loc["good", "expected_roi"] == pytest.approx(0.2)
    assert result.loc["good", "reasons"] == [
        "expected ROI 0.20 at the uplift of +4.0% in revenue per customer measured on good-email exported "
        "2025-03-01 (95% CI +1.0% to +7.0%; 3,600 treated against 400 control customers) is below the minimum of 0.50"
    ]
    # other has no measurement: the prior, as before, and its reasons do not change.
    assert result.loc["other", "uplift_used"] == 0.10 and result.loc["other", "uplift_source"] == "prior"
    assert math.isnan(result.loc["other", "uplift_ci_low"])
    assert result.loc["other", "expected_roi"] == pytest.approx(2.0)
    assert result.loc["other", "reasons"] == [
        "meets every viability criterion (expected ROI 2.00, overall robustness 0.90)"
    ]
    assert result.loc["other", "uplift_basis"].startswith("the assumed uplift of +10.0% (expected_uplift)")


def test_a_measured_loss_rejects_and_the_measurement_can_be_turned_off() -> None:
    loss = measured("good", -0.05, -0.12, 0.02)
    result = viability.assess_viability(segments_table(GOOD), robust("good"), economics=AT_2, measured=loss)
    # profit 20,000 x -0.05 x 0.30 = -300; cost 200; ROI -2.5
    assert result.iloc[0]["expected_roi"] == pytest.approx(-2.5) and not result.iloc[0]["approved"]
    off = AT_2.model_copy(update={"use_measured_uplift": False})
    result = viability.assess_viability(segments_table(GOOD), robust("good"), economics=off, measured=loss)
    assert result.iloc[0]["uplift_source"] == "prior" and result.iloc[0]["expected_roi"] == pytest.approx(2.0)
