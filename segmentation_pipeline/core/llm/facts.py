"""The statistics a prompt carries about one segment: aggregates only, rounded as they are quoted.

Everything here comes from the stored segments, robustness and viability
tables of one snapshot, and from its profiles and assignments the purchase
rhythm of each segment (medians over its customers, one DuckDB query). No
customer ID or event goes in: the facts are means, medians, shares and totals
over the segment and the population. The rounding is the precision answers may
quote, and the faithfulness check reads its numbers from this same document.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from ..errors import PipelineError
from ..schemas import CLUSTERS, PROFILES, ROBUSTNESS, SEGMENTS, VIABILITY
from ..warehouse import Warehouse, sql_string

#: Hours of each day part, as core.profiles counts them (UTC).
DAY_PART_HOURS: dict[str, str] = {
    "morning": "06:00-12:00",
    "afternoon": "12:00-18:00",
    "evening": "18:00-24:00",
    "night": "00:00-06:00",
}
#: A label's share of the segment rounded to this many decimals (0.491 = 49.1%).
SHARE_DECIMALS = 3
#: Money to cents; ratios and scores to two decimals.
MONEY_DECIMALS = 2
RATIO_DECIMALS = 2
#: Categories and channels listed per segment, by their share of its activity.
TOP_LABELS = 4
#: The rest bin of categories and channels; never a preference in itself.
OTHER_LABEL = "other"
#: The segments-table column with the share of the segment's customers in each lifecycle stage
#: (map<string, double>; null in snapshots made before lifecycle stages).
LIFECYCLE_MIX = "lifecycle_mix"
#: A campaign timed by the purchase rhythm goes out within this many days of the usual reorder day.
REORDER_WINDOW_DAYS = 14


class LabelShare(BaseModel):
    """A category, channel or day part: its share of the segment's events and of everyone's."""

    model_config = ConfigDict(extra="forbid")

    label: str
    share: float
    population_share: float
    #: share / population_share: 2.0 means twice as common in the segment as overall.
    lift: float | None


class DayPart(LabelShare):
    hours: str


class RobustnessFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: None when no test could be run on the segment (band "unmeasured").
    overall: float | None
    band: str
    production_ready: bool
    feature_drop: float | None
    time_window: float | None
    bootstrap: float | None


class ViabilityFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approved: bool
    #: None where it cannot be computed (an empty segment).
    expected_roi: float | None
    campaign_cost: float
    cost_per_customer: float
    incremental_profit: float
    strategic_tier: str
    reasons: list[str]


class PurchaseRhythm(BaseModel):
    """How often the segment's customers buy again and how long ago they last bought: medians over customers.

    A customer's gap between purchase days is (days since the first event - days since the last purchase)
    / (purchase days - 1): the profiles keep no first-purchase day, and the first event stands for it
    (exact for a transaction log, where every event is a purchase; in event data the browsing before the
    first purchase lengthens it).
    """

    model_config = ConfigDict(extra="forbid")

    #: Customers with purchases on 2 or more days, and their share of the segment's customers.
    repeat_buyers: int
    repeat_buyer_share: float
    population_repeat_buyer_share: float
    #: Median over the repeat buyers of their mean gap between purchase days, in whole days.
    median_days_between_purchases: int | None
    population_median_days_between_purchases: int | None
    #: Median over the customers with a purchase of the days since their last purchase, in whole days.
    median_days_since_purchase: int | None
    population_median_days_since_purchase: int | None
    #: A rhythm-timed campaign goes out within this many days of the usual reorder day.
    reorder_window_days: int = REORDER_WINDOW_DAYS


class SegmentFacts(BaseModel):
    """One segment as the language model sees it."""

    model_config = ConfigDict(extra="forbid")

    segment_id: str
    name: str
    as_of: str
    traits: list[str]
    customers: int
    share_of_customers: float
    population_customers: int
    segments_in_snapshot: int
    mean_clv: float
    population_mean_clv: float
    #: mean_clv / population_mean_clv
    clv_vs_population: float | None
    total_clv: float
    share_of_total_clv: float
    mean_orders: float | None
    mean_net_revenue: float | None
    avg_order_value: float | None
    mean_days_since_purchase: float | None
    churn_risk: float | None
    population_churn_risk: float | None
    #: The segment's largest categories and channels; the *_in_population counts say how many there are.
    categories: list[LabelShare]
    categories_in_population: int
    channels: list[LabelShare]
    channels_in_population: int
    #: Shares of the segment's events on Saturday and Sunday, and on the other days (UTC).
    weekend_share: float | None
    population_weekend_share: float | None
    weekend_lift: float | None
    weekday_share: float | None
    population_weekday_share: float | None
    weekday_lift: float | None
    day_parts: list[DayPart]
    #: The share of the segment's customers in each lifecycle stage (largest first) against the population's;
    #: None when the segments carry no lifecycle mix.
    lifecycle: list[LabelShare] | None = None
    #: None when the snapshot's profiles were not read (statistics of the segment tables alone).
    rhythm: PurchaseRhythm | None = None
    robustness: RobustnessFacts
    viability: ViabilityFacts

    @property
    def sha256(self) -> str:
        """Fingerprint of the statistics: an answer stored with another was made from another snapshot."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def main_label(labels: list[LabelShare]) -> LabelShare | None:
    """The label with the largest share (ties to the later name): what the scores and the words both lead with."""
    return max(labels, key=lambda item: (item.share, item.label)) if labels else None


def percent(share: float) -> str:
    """A share as answers quote it: 0.491 -> 49.1%."""
    return f"{share * 100:.1f}%"


def stored_snapshot_facts(warehouse: Warehouse, as_of: date) -> list[SegmentFacts]:
    """The facts of the stored snapshot of `as_of`; a missing upstream table is an error naming it."""
    return snapshot_facts(
        warehouse.read_required(SEGMENTS, as_of),
        warehouse.read_required(ROBUSTNESS, as_of),
        warehouse.read_required(VIABILITY, as_of),
        as_of,
        rhythm=stored_purchase_rhythm(warehouse, as_of),
    )


def snapshot_facts(
    segments: pa.Table,
    robustness: pa.Table,
    viability: pa.Table,
    as_of: date,
    rhythm: dict[str | None, RhythmRow] | None = None,
) -> list[SegmentFacts]:
    """The facts of every segment of a snapshot, in segment order.

    `rhythm` holds the purchase-rhythm statistics by segment and for the population (key None), as
    `stored_purchase_rhythm` reads them; without it the facts have no rhythm. The lifecycle mix is read
    from the segments' `lifecycle_mix` column (core.lifecycle); a snapshot made before it has none.
    """
    rows = segments.sort_by("segment_id").to_pylist()
    if not rows:
        return []
    robust = _by_segment(robustness, "robustness", rows)
    viable = _by_segment(viability, "viability", rows)
    population = _Population(
        segment_means=[dict(row["feature_means"]) for row in rows],
        sizes=[row["size"] for row in rows],
        total_clv=sum(row["total_clv"] for row in rows),
        as_of=as_of.isoformat(),
        lifecycle_mixes=[dict(row[LIFECYCLE_MIX]) if row.get(LIFECYCLE_MIX) else None for row in rows],
    )
    return [
        _segment_facts(
            row,
            means,
            mix,
            _rhythm(row["segment_id"], rhythm),
            population,
            robust[row["segment_id"]],
            viable[row["segment_id"]],
        )
        for row, means, mix in zip(rows, population.segment_means, population.lifecycle_mixes)
    ]


@dataclass(frozen=True)
class RhythmRow:
    """The purchase-rhythm aggregates of one segment (or of everyone), unrounded, as the query returns them."""

    customers: int
    repeat_buyers: int
    median_days_between_purchases: float | None
    median_days_since_purchase: float | None


def stored_purchase_rhythm(warehouse: Warehouse, as_of: date) -> dict[str | None, RhythmRow]:
    """Purchase-rhythm aggregates per segment and for all customers (key None), from the stored profiles
    and assignments of `as_of`: one DuckDB query over their Parquet files, no customer row in Python."""
    profiles = sql_string(str(warehouse.required_path(PROFILES, as_of)))
    clusters = sql_string(str(warehouse.required_path(CLUSTERS, as_of)))
    with warehouse.connect() as con:
        rows = con.execute(
            f"""WITH members AS (
                  SELECT c.segment_id, p.recency_days, p.purchase_days >= 2 AS repeat_buyer,
                    CASE WHEN p.purchase_days >= 2
                      THEN (p.tenure_days - p.recency_days) / (p.purchase_days - 1) END AS gap_days
                  FROM read_parquet({clusters}) c JOIN read_parquet({profiles}) p USING (canonical_id))
                SELECT segment_id, count(*), count(*) FILTER (WHERE repeat_buyer), median(gap_days),
                  median(recency_days)
                FROM members GROUP BY GROUPING SETS ((segment_id), ())"""
        ).fetchall()
    return {segment_id: RhythmRow(*values) for segment_id, *values in rows}


def _rhythm(segment_id: str, rhythm: dict[str | None, RhythmRow] | None) -> PurchaseRhythm | None:
    if rhythm is None or segment_id not in rhythm or None not in rhythm:
        return None
    segment, population = rhythm[segment_id], rhythm[None]
    return PurchaseRhythm(
        repeat_buyers=segment.repeat_buyers,
        repeat_buyer_share=_share(segment.repeat_buyers, segment.customers),
        population_repeat_buyer_share=_share(population.repeat_buyers, population.customers),
        median_days_between_purchases=_days(segment.median_days_between_purchases),
        population_median_days_between_purchases=_days(population.median_days_between_purchases),
        median_days_since_purchase=_days(segment.median_days_since_purchase),
        population_median_days_since_purchase=_days(population.median_days_since_purchase),
    )


def _share(part: int, whole: int) -> float:
    return round(part / whole, SHARE_DECIMALS) if whole else 0.0


def _days(value: float | None) -> int | None:
    return round(value) if value is not None and math.isfinite(value) else None


class _Population:
    """Population means of the segment features: the size-weighted mean of the segments' means.

    Exact for features every member has (shares of activity); for one some members lack (recency
    without a purchase) it weighs each segment by its size, not by its members with a value.
    """

    def __init__(
        self,
        segment_means: list[dict[str, float]],
        sizes: list[int],
        total_clv: float,
        as_of: str,
        lifecycle_mixes: list[dict[str, float] | None],
    ) -> None:
        self.segment_means = segment_means
        self.sizes = sizes
        self.customers = sum(sizes)
        self.total_clv = total_clv
        self.as_of = as_of
        self.lifecycle_mixes = lifecycle_mixes

    @property
    def mean_clv(self) -> float:
        return self.total_clv / self.customers if self.customers else 0.0

    def mean(self, column: str) -> float | None:
        pairs = [(m[column], size) for m, size in zip(self.segment_means, self.sizes) if column in m]
        weight = sum(size for _, size in pairs)
        return sum(value * size for value, size in pairs) / weight if weight else None

    def labels(self, feature: str) -> list[str]:
        prefix = f"{feature}["
        return sorted({key[len(prefix) : -1] for m in self.segment_means for key in m if key.startswith(prefix)})

    def lifecycle_share(self, stage: str) -> float | None:
        """The stage's share of all customers: the size-weighted mean of the segments' mixes."""
        pairs = [(mix.get(stage, 0.0), size) for mix, size in zip(self.lifecycle_mixes, self.sizes) if mix]
        weight = sum(size for _, size in pairs)
        return sum(share * size for share, size in pairs) / weight if weight else None

    @property
    def lifecycle_stages(self) -> list[str]:
        return sorted({stage for mix in self.lifecycle_mixes if mix for stage in mix})


def _segment_facts(
    row: dict,
    means: dict[str, float],
    lifecycle_mix: dict[str, float] | None,
    rhythm: PurchaseRhythm | None,
    population: _Population,
    robust: dict,
    viable: dict,
) -> SegmentFacts:
    def value(column: str, decimals: int) -> float | None:
        return round(means[column], decimals) if column in means else None

    def population_value(column: str, decimals: int) -> float | None:
        mean = population.mean(column)
        return round(mean, decimals) if mean is not None else None

    return SegmentFacts(
        segment_id=row["segment_id"],
        name=row["name"],
        as_of=population.as_of,
        traits=list(row["traits"]),
        customers=row["size"],
        share_of_customers=round(row["share"], SHARE_DECIMALS),
        population_customers=population.customers,
        segments_in_snapshot=len(population.sizes),
        mean_clv=round(row["mean_clv"], MONEY_DECIMALS),
        population_mean_clv=round(population.mean_clv, MONEY_DECIMALS),
        clv_vs_population=_ratio(row["mean_clv"], population.mean_clv),
        total_clv=round(row["total_clv"], MONEY_DECIMALS),
        share_of_total_clv=round(row["total_clv"] / population.total_clv, SHARE_DECIMALS)
        if population.total_clv
        else 0.0,
        mean_orders=value("frequency", RATIO_DECIMALS),
        mean_net_revenue=value("monetary_total", MONEY_DECIMALS),
        avg_order_value=value("avg_order_value", MONEY_DECIMALS),
        mean_days_since_purchase=value("recency_days", 1),
        churn_risk=value("churn_risk", RATIO_DECIMALS),
        population_churn_risk=population_value("churn_risk", RATIO_DECIMALS),
        categories=_label_shares("category_shares", means, population),
        categories_in_population=len(population.labels("category_shares")),
        channels=_label_shares("channel_shares", means, population),
        channels_in_population=len(population.labels("channel_shares")),
        **_weekend_and_weekdays(means.get("weekend_share"), population.mean("weekend_share")),
        day_parts=[
            DayPart(hours=hours, **_label_share(part, means[f"{part}_share"], population.mean(f"{part}_share")))
            for part, hours in DAY_PART_HOURS.items()
            if f"{part}_share" in means
        ],
        lifecycle=_lifecycle(lifecycle_mix, population),
        rhythm=rhythm,
        robustness=RobustnessFacts(
            overall=_round(robust["overall"], RATIO_DECIMALS),
            band=robust["band"],
            production_ready=robust["production_ready"],
            feature_drop=_round(robust["feature_drop_stability"], RATIO_DECIMALS),
            time_window=_round(robust["time_window_stability"], RATIO_DECIMALS),
            bootstrap=_round(robust["bootstrap_stability"], RATIO_DECIMALS),
        ),
        viability=ViabilityFacts(
            approved=viable["approved"],
            expected_roi=_round(viable["expected_roi"], RATIO_DECIMALS),
            campaign_cost=round(viable["campaign_cost"], MONEY_DECIMALS),
            cost_per_customer=round(viable["campaign_cost"] / row["size"], MONEY_DECIMALS) if row["size"] else 0.0,
            incremental_profit=round(viable["incremental_profit"], MONEY_DECIMALS),
            strategic_tier=viable["strategic_tier"],
            reasons=list(viable["reasons"]),
        ),
    )


def _lifecycle(mix: dict[str, float] | None, population: _Population) -> list[LabelShare] | None:
    """Every stage of the population's mix, the segment's share of it first (0 for a stage it lacks)."""
    if mix is None:
        return None
    stages = [
        LabelShare(**_label_share(stage, mix.get(stage, 0.0), population.lifecycle_share(stage)))
        for stage in population.lifecycle_stages
    ]
    stages.sort(key=lambda item: (-item.share, item.label))
    return stages


def _weekend_and_weekdays(weekend: float | None, population_weekend: float | None) -> dict[str, float | None]:
    """Weekend and weekday shares with their lifts; all None without timestamps to judge by."""
    known = weekend is not None and population_weekend is not None
    fields: dict[str, float | None] = {}
    for days, complement in (("weekend", False), ("weekday", True)):
        facts = (
            _label_share(
                days,
                1.0 - weekend if complement else weekend,
                1.0 - population_weekend if complement else population_weekend,
            )
            if known
            else {"share": None, "population_share": None, "lift": None}
        )
        fields |= {
            f"{days}_share": facts["share"],
            f"population_{days}_share": facts["population_share"],
            f"{days}_lift": facts["lift"],
        }
    return fields


def _label_shares(feature: str, means: dict[str, float], population: _Population) -> list[LabelShare]:
    """The segment's largest labels of a share map, 'other' left out: it is no preference."""
    shares = [
        LabelShare(**_label_share(label, means[key], population.mean(key)))
        for label in population.labels(feature)
        if label != OTHER_LABEL and (key := f"{feature}[{label}]") in means
    ]
    shares.sort(key=lambda item: (-item.share, item.label))
    return shares[:TOP_LABELS]


def _label_share(label: str, share: float, population_share: float | None) -> dict:
    return {
        "label": label,
        "share": round(share, SHARE_DECIMALS),
        "population_share": round(population_share or 0.0, SHARE_DECIMALS),
        "lift": _ratio(share, population_share or 0.0),
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    if not (denominator > 0 and math.isfinite(numerator) and math.isfinite(denominator)):
        return None
    return round(numerator / denominator, RATIO_DECIMALS)


def _round(value: float | None, decimals: int) -> float | None:
    """Rounded, or None for what could not be measured (NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, decimals)


def _by_segment(table: pa.Table, name: str, segments: list[dict]) -> dict[str, dict]:
    rows = {row["segment_id"]: row for row in table.to_pylist()}
    missing = sorted({row["segment_id"] for row in segments} - set(rows))
    if missing:
        raise PipelineError(f"{name} has no row for segment(s) {missing}; materialize {name} for this day first")
    return rows
