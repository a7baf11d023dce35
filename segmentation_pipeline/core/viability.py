"""Segment viability: is a segment worth a campaign?

A segment is approved when it passes every criterion of ValidationCriteria: big
enough to act on, not so big that it is "everyone", valuable enough, robust
enough (robustness.py) and with an expected campaign return above the minimum.
A rejection is a result with its reasons, never an exception.

Expected return of a campaign aimed at the whole segment (CampaignEconomics):

    campaign_value     = total_cycle_value: the members' expected spend over one
                         campaign cycle (profiles' campaign_cycle_days, 90 by
                         default), the value a campaign run now can move; a
                         campaign does not lift a whole year of purchases. Where
                         a snapshot has no cycle value (made before it), total_clv.
    incremental_profit = campaign_value x uplift x margin
    campaign_cost      = size x campaign_cost_per_customer
    expected_roi       = (incremental_profit - campaign_cost) / campaign_cost

The uplift is the segment's measured one where a campaign of it was measured
(core.campaign_results: the relative revenue uplift of its latest measured
export, in results of days up to the viability's own, with a control group of
at least `min_control_customers`), else the prior `expected_uplift`; the table
says which (`uplift_source`: measured or prior) with the interval and what it
was measured on. A measured uplift below zero prices the campaign at a loss.

e.g. 100 customers expected to spend 20,000 in the cycle, 10% uplift, 30% margin, 2.0 per
customer: profit 600, cost 200, ROI (600 - 200) / 200 = 2.0. (The default cost is 0.5 per
customer, an owned-channel campaign.) An empty segment
costs nothing and has no ROI (NaN, which fails the ROI criterion).

Strategic impact, in [0, 1], says how much the segment matters to the business
whatever its campaign economics:

    clv_share      = total_clv / sum of total_clv over all segments
    relative_value = mean_clv / population mean CLV (sum of total_clv / sum of size)
    impact         = 0.5 x clv_share + 0.5 x relative_value / (1 + relative_value)

The first half is how much of the value sits in the segment, the second how
valuable its customers are one by one (0.25 for an average customer, towards
0.5 for far above average). Negative values count as zero. Tiers: "high" from
0.5 (e.g. half of all value held by average customers, or a third of it by
customers worth three times the average), "medium" from 0.3 (one of five equal
segments scores 0.35), else "low".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from .errors import DataValidationError

SEGMENT_COLUMNS: tuple[str, ...] = ("segment_id", "size", "share", "total_clv", "mean_clv")
ROBUSTNESS_COLUMNS: tuple[str, ...] = ("segment_id", "feature_drop_stability", "overall")
VIABILITY_COLUMNS: tuple[str, ...] = (
    *SEGMENT_COLUMNS,
    "campaign_value",
    "campaign_cost",
    "incremental_profit",
    "expected_roi",
    "strategic_impact",
    "strategic_tier",
    "approved",
    "reasons",
    "failed_criteria",
    "uplift_used",
    "uplift_source",
    "uplift_ci_low",
    "uplift_ci_high",
    "uplift_basis",
)
MEASURED, PRIOR = "measured", "prior"

HIGH_IMPACT_FROM = 0.5
MEDIUM_IMPACT_FROM = 0.3


class ValidationCriteria(BaseModel):
    """What a segment must meet to be approved; each field name is also the criterion's machine name."""

    model_config = ConfigDict(frozen=True)

    min_segment_size: int = Field(10, ge=0, description="Fewest customers a targetable segment may have.")
    max_segment_size_pct: float = Field(
        0.5, gt=0, le=1, description="Largest share of all customers a segment may hold; above it, it is not a segment."
    )
    min_total_clv: float = Field(1000.0, description="Least total customer lifetime value, in money.")
    min_feature_stability: float = Field(
        0.3, ge=0, le=1, description="Least feature-drop stability (mean Jaccard when one feature is left out)."
    )
    min_overall_robustness: float = Field(
        0.4, ge=0, le=1, description="Least overall robustness score (weighted mean of the stability tests)."
    )
    min_expected_roi: float = Field(
        0.5, description="Least expected campaign return, (incremental profit - cost) / cost; 0.5 is 50%."
    )


class CampaignEconomics(BaseModel):
    """What a campaign costs and earns; the defaults are a cheap digital campaign with a modest effect."""

    model_config = ConfigDict(frozen=True)

    campaign_cost_per_customer: float = Field(
        0.5,
        gt=0,
        description="Money spent per targeted customer, all in: an e-mail or app message costs cents to send; "
        "the rest is the offer and the team's time, spread over the audience.",
    )
    expected_uplift: float = Field(
        0.10, ge=0, description="Share by which the campaign raises the segment's expected value (0.10 = +10%)."
    )
    margin: float = Field(0.30, ge=0, le=1, description="Gross margin on revenue: the profit part of extra CLV.")
    use_measured_uplift: bool = Field(
        True,
        description="Price a segment's campaign at its measured uplift (campaign_results: the relative revenue "
        "uplift of its latest measured campaign) where there is one; off: always expected_uplift.",
    )
    min_control_customers: int = Field(
        100,
        ge=2,
        description="A measured uplift counts only when its control group had at least this many customers "
        "(a smaller one gives an interval too wide to replace expected_uplift with).",
    )


def campaign_roi(
    size: int, campaign_value: float, economics: CampaignEconomics, uplift: float | None = None
) -> tuple[float, float, float]:
    """(campaign_cost, incremental_profit, expected_roi) of targeting a whole segment whose members are expected
    to spend `campaign_value` in the campaign's cycle, at `uplift` (default: the prior expected_uplift);
    ROI is NaN at size 0."""
    cost = size * economics.campaign_cost_per_customer
    uplift = economics.expected_uplift if uplift is None else uplift
    profit = campaign_value * uplift * economics.margin
    roi = (profit - cost) / cost if cost > 0 else math.nan
    return cost, profit, roi


def strategic_impact(segments: pd.DataFrame) -> pd.Series:
    """Impact in [0, 1] of each segment among all of them (see the module docstring)."""
    value = segments["total_clv"].clip(lower=0).astype(float)
    total_value = float(value.sum())
    total_size = float(segments["size"].sum())
    if total_value <= 0 or total_size <= 0:
        return pd.Series(0.0, index=segments.index)
    clv_share = value / total_value
    relative_value = segments["mean_clv"].clip(lower=0).astype(float) / (total_value / total_size)
    return 0.5 * clv_share + 0.5 * relative_value / (1 + relative_value)


def strategic_tier(impact: float) -> str:
    if impact >= HIGH_IMPACT_FROM:
        return "high"
    if impact >= MEDIUM_IMPACT_FROM:
        return "medium"
    return "low"


def assess_viability(
    segments: pd.DataFrame,
    robustness: pd.DataFrame,
    criteria: ValidationCriteria | None = None,
    economics: CampaignEconomics | None = None,
    measured: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per segment, in the order of ``segments``: economics, impact, and the verdict with its reasons.

    ``measured`` holds the segments' measured uplifts (core.campaign_results.measured_uplifts: segment_id,
    campaign_key, export_day, treatment and control customers, relative_uplift with its interval); a segment
    in it is priced at its measured uplift (unless economics.use_measured_uplift is off), any other at
    expected_uplift.

    A rejected segment lists one sentence per failed criterion in ``reasons`` (with the value
    and the threshold) and the criterion names in ``failed_criteria``. An approved segment has
    no failed criteria and exactly one sentence in ``reasons`` saying so. A segment without a
    robustness row, or with a NaN score, fails that criterion as "missing".
    """
    criteria = criteria or ValidationCriteria()
    economics = economics or CampaignEconomics()
    cycle_values = (
        pd.to_numeric(segments["total_cycle_value"], errors="coerce").to_numpy(dtype=float)
        if "total_cycle_value" in segments.columns
        else np.full(len(segments), np.nan)
    )
    segments = _checked_segments(segments)
    robustness = _checked_robustness(robustness)
    scores = robustness.set_index("segment_id").reindex(segments["segment_id"])

    impact = strategic_impact(segments)
    uplifts = _uplifts(segments["segment_id"], economics, measured)
    rows = []
    for position, segment in enumerate(segments.to_dict("records")):
        value = cycle_values[position] if np.isfinite(cycle_values[position]) else segment["total_clv"]
        uplift = uplifts[segment["segment_id"]]
        cost, profit, roi = campaign_roi(segment["size"], value, economics, uplift["uplift_used"])
        overall = float(scores["overall"].iloc[position])
        at_uplift = f" at {uplift['uplift_basis']}" if uplift["uplift_source"] == MEASURED else ""
        failures = _failed_criteria(
            criteria,
            size=segment["size"],
            share=segment["share"],
            total_clv=segment["total_clv"],
            feature_stability=float(scores["feature_drop_stability"].iloc[position]),
            overall=overall,
            roi=roi,
            at_uplift=at_uplift,
        )
        reasons = list(failures.values()) or [
            f"meets every viability criterion (expected ROI {roi:.2f}{at_uplift}, overall robustness {overall:.2f})"
        ]
        rows.append(
            {
                **segment,
                "campaign_value": float(value),
                "campaign_cost": cost,
                "incremental_profit": profit,
                "expected_roi": roi,
                "strategic_impact": float(impact.iloc[position]),
                "strategic_tier": strategic_tier(float(impact.iloc[position])),
                "approved": not failures,
                "reasons": reasons,
                "failed_criteria": list(failures),
                **uplift,
            }
        )
    return pd.DataFrame(rows, columns=list(VIABILITY_COLUMNS)).astype(
        {
            "segment_id": "object",
            "size": "int64",
            "share": "float64",
            "total_clv": "float64",
            "mean_clv": "float64",
            "campaign_value": "float64",
            "campaign_cost": "float64",
            "incremental_profit": "float64",
            "expected_roi": "float64",
            "strategic_impact": "float64",
            "approved": "bool",
            "uplift_used": "float64",
            "uplift_ci_low": "float64",
            "uplift_ci_high": "float64",
        }
    )


def _uplifts(
    segment_ids: pd.Series, economics: CampaignEconomics, measured: pd.DataFrame | None
) -> dict[str, dict[str, object]]:
    """Segment ID -> the uplift its campaign is priced at, where it comes from, its interval and its basis."""
    found = (
        measured.set_index("segment_id").to_dict("index")
        if measured is not None and economics.use_measured_uplift and len(measured)
        else {}
    )
    uplifts = {}
    for segment_id in segment_ids:
        row = found.get(segment_id)
        if row is None:
            uplifts[segment_id] = {
                "uplift_used": economics.expected_uplift,
                "uplift_source": PRIOR,
                "uplift_ci_low": math.nan,
                "uplift_ci_high": math.nan,
                "uplift_basis": f"the assumed uplift of {economics.expected_uplift:+.1%} (expected_uplift): "
                "no campaign of this segment measured yet",
            }
            continue
        low, high = float(row["relative_ci_low"]), float(row["relative_ci_high"])
        uplifts[segment_id] = {
            "uplift_used": float(row["relative_uplift"]),
            "uplift_source": MEASURED,
            "uplift_ci_low": low,
            "uplift_ci_high": high,
            "uplift_basis": f"the uplift of {float(row['relative_uplift']):+.1%} in revenue per customer measured on "
            f"{row['campaign_key']} exported {row['export_day']} (95% CI {low:+.1%} to {high:+.1%}; "
            f"{int(row['treatment_customers']):,} treated against {int(row['control_customers']):,} control customers)",
        }
    return uplifts


def _failed_criteria(
    criteria: ValidationCriteria,
    *,
    size: int,
    share: float,
    total_clv: float,
    feature_stability: float,
    overall: float,
    roi: float,
    at_uplift: str = "",
) -> dict[str, str]:
    """Criterion name -> the sentence explaining the failure, for each criterion the segment fails."""
    failures: dict[str, str] = {}
    if size < criteria.min_segment_size:
        failures["min_segment_size"] = f"size {size} is below the minimum of {criteria.min_segment_size}"
    if share > criteria.max_segment_size_pct:
        failures["max_segment_size_pct"] = (
            f"share {share:.1%} of all customers is above the maximum of {criteria.max_segment_size_pct:.1%}"
        )
    if total_clv < criteria.min_total_clv:
        failures["min_total_clv"] = f"total CLV {total_clv:,.2f} is below the minimum of {criteria.min_total_clv:,.2f}"
    for name, label, score, minimum in (
        ("min_feature_stability", "feature-drop stability", feature_stability, criteria.min_feature_stability),
        ("min_overall_robustness", "overall robustness", overall, criteria.min_overall_robustness),
    ):
        if math.isnan(score):
            failures[name] = f"{label} is missing (no robustness score); the minimum is {minimum:.2f}"
        elif score < minimum:
            failures[name] = f"{label} {score:.2f} is below the minimum of {minimum:.2f}"
    if math.isnan(roi):
        failures["min_expected_roi"] = (
            f"expected ROI cannot be computed for an empty segment; the minimum is {criteria.min_expected_roi:.2f}"
        )
    elif roi < criteria.min_expected_roi:
        failures["min_expected_roi"] = (
            f"expected ROI {roi:.2f}{at_uplift} is below the minimum of {criteria.min_expected_roi:.2f}"
        )
    return failures


def _checked_segments(segments: pd.DataFrame) -> pd.DataFrame:
    _require_columns(segments, SEGMENT_COLUMNS, "segments")
    segments = segments.loc[:, list(SEGMENT_COLUMNS)].reset_index(drop=True)
    _require_unique_ids(segments, "segments")
    numeric = list(SEGMENT_COLUMNS[1:])
    for column in numeric:
        values = pd.to_numeric(segments[column], errors="coerce")
        if values.isna().any():
            raise DataValidationError(
                f"segments column {column!r} must be numeric without gaps; "
                f"found {segments.loc[values.isna(), column].tolist()[:5]}"
            )
        segments[column] = values
    if (segments["size"] < 0).any() or not np.all(segments["size"] == np.floor(segments["size"])):
        raise DataValidationError(
            f"segments column 'size' must hold whole numbers >= 0; found {segments['size'].tolist()[:5]}"
        )
    segments["size"] = segments["size"].astype("int64")
    if not segments["share"].between(0, 1).all():
        raise DataValidationError(f"segments column 'share' must be in [0, 1]; found {segments['share'].tolist()[:5]}")
    return segments


def _checked_robustness(robustness: pd.DataFrame) -> pd.DataFrame:
    _require_columns(robustness, ROBUSTNESS_COLUMNS, "robustness")
    robustness = robustness.loc[:, list(ROBUSTNESS_COLUMNS)].reset_index(drop=True)
    _require_unique_ids(robustness, "robustness")
    for column in ROBUSTNESS_COLUMNS[1:]:
        values = pd.to_numeric(robustness[column], errors="coerce").astype(float)
        not_numbers = values.isna() & robustness[column].notna()
        if not_numbers.any():
            raise DataValidationError(
                f"robustness column {column!r} must hold numbers (NaN for a missing score); "
                f"found {robustness.loc[not_numbers, column].tolist()[:5]}"
            )
        robustness[column] = values
    return robustness


def _require_columns(table: pd.DataFrame, required: tuple[str, ...], name: str) -> None:
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DataValidationError(
            f"{name} table lacks required column(s) {missing}; expected {list(required)}, found {list(table.columns)}"
        )


def _require_unique_ids(table: pd.DataFrame, name: str) -> None:
    duplicated = table.loc[table["segment_id"].duplicated(), "segment_id"].unique().tolist()
    if duplicated:
        raise DataValidationError(f"{name} table lists segment_id(s) more than once: {duplicated[:5]}")
