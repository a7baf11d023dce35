"""Campaign results: what a campaign did, its treatment group measured against its control group.

What is measured
    A campaign exported on day E (a complete export under <data dir>/exports/date=E/) is measured
    once its window has passed: campaign_results of day D measures the exports of E = D - W
    (W = `window_days`, 30 by default), so each export day is measured exactly once and a result
    never uses an event after its own day. The groups are those of the audiences table of day E
    (treatment: exported; control: kept back by the hash of customer and campaign). The outcome of
    each customer is what they did on days E+1 .. E+W in raw_events, their IDs resolved to canonical
    customers through the merge map of day D (events of junk IDs are left out), as profiles count:
    - conversion_rate: share of customers with at least one purchase;
    - orders_per_customer: purchases per customer;
    - revenue_per_customer: purchase amounts minus refund amounts, per customer.
    Customers without an event in the window count with zero.

Statistics (95% by default; `confidence`)
    The uplift is treatment minus control ("absolute", in points for a rate, in orders or money per
    customer otherwise) and (treatment - control) / control ("relative", +0.10 = +10%).
    - Absolute, conversion: Newcombe's hybrid score interval for a difference of proportions
      (Newcombe 1998, method 10: Wilson intervals of each group combined), which keeps its coverage
      for rare conversions and small control groups where the Wald interval does not.
    - Absolute, orders and revenue: Welch's t interval for a difference of means (unequal variances,
      Welch-Satterthwaite degrees of freedom): revenue per customer is skewed and the two groups differ
      in size by design.
    - Relative, every metric: the delta method on the log of the ratio of the means,
      log(t / c) +- z sqrt(se_t^2 / t^2 + se_c^2 / c^2), taken back by exp: an interval that stays
      above -100%. For conversion this is Katz's interval for a risk ratio. Undefined (null) when
      either group's mean is not above zero.
    - Significant: the absolute interval excludes zero.

Which uplift viability uses
    The relative uplift of revenue per customer: viability's expected_uplift is the share by which a
    campaign raises the segment's spend, which is what it measures (conversion misses basket size,
    orders miss refunds and prices). A segment's measured uplift is that of its latest measured export
    day (results of days up to the viability's own), of its campaign with the most customers there,
    provided the control group had at least `min_control_customers` (below that the interval is too
    wide to replace a prior with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from .activation import CONTROL, MANIFEST, TREATMENT, export_folder
from .errors import DataValidationError
from .schemas import AUDIENCES, CAMPAIGN_RESULTS, MERGE_MAP, QUARANTINE_EVENTS, RAW_EVENTS
from .warehouse import Warehouse, days_between, read_parquet_verified, reading_stored

CONVERSION, ORDERS, REVENUE = "conversion_rate", "orders_per_customer", "revenue_per_customer"
METRICS = (CONVERSION, ORDERS, REVENUE)
#: The metric whose relative uplift viability and the audiences' exclusivity rule use.
VIABILITY_METRIC = REVENUE
NEWCOMBE = "Newcombe hybrid score (difference of proportions)"
WELCH = "Welch t (difference of means)"
MEASURED, PRIOR = "measured", "prior"


@dataclass(frozen=True)
class ResultSettings:
    window_days: int = 30
    confidence: float = 0.95
    min_control_customers: int = 100

    def __post_init__(self) -> None:
        if self.window_days < 1:
            raise DataValidationError(f"window_days must be at least 1, got {self.window_days}")
        if not 0 < self.confidence < 1:
            raise DataValidationError(f"confidence must lie in (0, 1), got {self.confidence}")
        if self.min_control_customers < 2:
            raise DataValidationError(f"min_control_customers must be at least 2, got {self.min_control_customers}")


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Estimate:
    """A difference or relative change with its interval; low and high are None when undefined."""

    value: float | None
    low: float | None
    high: float | None

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (Wilson 1927)."""
    if trials <= 0:
        raise DataValidationError(f"a proportion needs at least one trial, got {trials}")
    z = _z(confidence)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> Estimate:
    """p1 - p2 with Newcombe's hybrid score interval (method 10 of Newcombe 1998)."""
    if n1 <= 0 or n2 <= 0:
        return Estimate(None, None, None)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    difference = p1 - p2
    return Estimate(
        difference,
        difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def welch_difference(first: np.ndarray, second: np.ndarray, confidence: float = 0.95) -> Estimate:
    """mean(first) - mean(second) with Welch's t interval; undefined with fewer than two values a group."""
    n1, n2 = len(first), len(second)
    if n1 < 2 or n2 < 2:
        return Estimate(float(np.mean(first)) - float(np.mean(second)) if n1 and n2 else None, None, None)
    difference = float(np.mean(first) - np.mean(second))
    v1, v2 = float(np.var(first, ddof=1)) / n1, float(np.var(second, ddof=1)) / n2
    se = math.sqrt(v1 + v2)
    if se == 0:
        return Estimate(difference, difference, difference)
    df = (v1 + v2) ** 2 / (v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return Estimate(difference, difference - half, difference + half)


def relative_change(mean1: float, se1: float, mean2: float, se2: float, confidence: float = 0.95) -> Estimate:
    """mean1 / mean2 - 1 with the delta-method interval on the log of the ratio (Katz's for proportions)."""
    if not (mean1 > 0 and mean2 > 0):
        return Estimate(mean1 / mean2 - 1 if mean2 > 0 else None, None, None)
    ratio = mean1 / mean2
    spread = _z(confidence) * math.sqrt((se1 / mean1) ** 2 + (se2 / mean2) ** 2)
    return Estimate(ratio - 1, ratio * math.exp(-spread) - 1, ratio * math.exp(spread) - 1)


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measurement:
    table: pa.Table
    export_day: date
    #: Why nothing was measured ("no complete export on ..."); None when campaigns were measured.
    nothing_because: str | None
    #: Days of the outcome window with stored events.
    days_with_events: int
    #: Audience customers left out because, by the as-of day, they were merged into another one of them.
    merged_away: int


def measure_campaigns(store: Warehouse, as_of: date, settings: ResultSettings | None = None) -> Measurement:
    """The campaigns exported on as_of - window_days, measured over the window that followed (see above)."""
    settings = settings or ResultSettings()
    export_day = as_of - timedelta(days=settings.window_days)
    window = days_between(export_day + timedelta(days=1), as_of)
    folder = export_folder(store.root, export_day)
    empty = CAMPAIGN_RESULTS.empty()
    if not (folder / MANIFEST).is_file():
        return Measurement(empty, export_day, f"no complete export on {export_day}", 0, 0)
    audience_path = store.partition_path(AUDIENCES, export_day)
    if not audience_path.exists():
        raise DataValidationError(
            f"the export of {export_day} has no audiences table ({audience_path}): its control group is unknown; "
            f"materialize audiences for {export_day} again"
        )
    audience = read_parquet_verified(
        audience_path, ["canonical_id", "segment_id", "segment_name", "campaign_key", "channel", "group"]
    ).to_pandas()
    outcomes, days_with_events = _outcomes(store, as_of, window)
    members, merged_away = _members_as_of(store, as_of, audience)
    joined = members.merge(outcomes, on="canonical_id", how="left").fillna({"orders": 0, "revenue": 0.0})
    rows = []
    for key, campaign in joined.groupby("campaign_key", sort=True):
        first = campaign.iloc[0]
        base = {
            "export_day": export_day,
            "campaign_key": str(key),
            "segment_id": str(first["segment_id"]),
            "segment_name": str(first["segment_name"]),
            "channel": str(first["channel"]),
            "window_days": settings.window_days,
            "window_first_day": window[0],
            "window_last_day": window[-1],
            "days_with_events": days_with_events,
        }
        treated = campaign[campaign["group"] == TREATMENT]
        control = campaign[campaign["group"] == CONTROL]
        for metric, values in _metric_values(treated, control).items():
            rows.append(base | _compare(metric, *values, settings.confidence) | {"metric": metric})
    for row in rows:
        row["summary"] = summary_sentence(row)
    table = pa.Table.from_pylist(rows, schema=CAMPAIGN_RESULTS.schema) if rows else empty
    return Measurement(table, export_day, None if rows else f"the export of {export_day} held no campaign",
                       days_with_events, merged_away)


def _metric_values(treated: pd.DataFrame, control: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        CONVERSION: ((treated["orders"] > 0).to_numpy(float), (control["orders"] > 0).to_numpy(float)),
        ORDERS: (treated["orders"].to_numpy(float), control["orders"].to_numpy(float)),
        REVENUE: (treated["revenue"].to_numpy(float), control["revenue"].to_numpy(float)),
    }


def _compare(metric: str, treated: np.ndarray, control: np.ndarray, confidence: float) -> dict[str, object]:
    n1, n2 = len(treated), len(control)
    mean1 = float(treated.mean()) if n1 else None
    mean2 = float(control.mean()) if n2 else None
    if metric == CONVERSION:
        absolute = newcombe_difference(int(treated.sum()), n1, int(control.sum()), n2, confidence)
        se1 = math.sqrt(mean1 * (1 - mean1) / n1) if n1 else math.nan
        se2 = math.sqrt(mean2 * (1 - mean2) / n2) if n2 else math.nan
        method = NEWCOMBE
    else:
        absolute = welch_difference(treated, control, confidence)
        se1 = float(np.std(treated, ddof=1)) / math.sqrt(n1) if n1 > 1 else math.nan
        se2 = float(np.std(control, ddof=1)) / math.sqrt(n2) if n2 > 1 else math.nan
        method = WELCH
    relative = (
        relative_change(mean1, se1, mean2, se2, confidence)
        if mean1 is not None and mean2 is not None and n1 > 1 and n2 > 1
        else Estimate(None, None, None)
    )
    return {
        "treatment_customers": n1,
        "control_customers": n2,
        "treatment_value": mean1,
        "control_value": mean2,
        "uplift": absolute.value,
        "uplift_ci_low": absolute.low,
        "uplift_ci_high": absolute.high,
        "relative_uplift": relative.value,
        "relative_ci_low": relative.low,
        "relative_ci_high": relative.high,
        "confidence": confidence,
        "significant": absolute.excludes_zero,
        "method": method,
    }


def _outcomes(store: Warehouse, as_of: date, window: list[date]) -> tuple[pd.DataFrame, int]:
    """Orders and net revenue per canonical customer (as of `as_of`) over the window's stored events."""
    present = store.partition_days(RAW_EVENTS, window[0], window[-1])
    events = store.parquet_relation(RAW_EVENTS, present)
    if events is None:
        return pd.DataFrame({"canonical_id": [], "orders": [], "revenue": []}), 0
    store.check_complete(RAW_EVENTS, QUARANTINE_EVENTS, present)
    ids = _merge_map(store, as_of)
    with store.connect() as con, reading_stored(RAW_EVENTS):
        con.register("ids", ids)
        outcomes = con.sql(
            f"""SELECT coalesce(ids.canonical_id, ev.customer_id) AS canonical_id,
                       count(*) FILTER (WHERE ev.event_type = 'purchase') AS orders,
                       -- exact sums, as profiles count: a re-run must not change a cent
                       CAST(coalesce(sum(CAST(ev.amount AS DECIMAL(18, 4))) FILTER (WHERE ev.event_type = 'purchase'), 0)
                          - coalesce(sum(CAST(ev.amount AS DECIMAL(18, 4))) FILTER (WHERE ev.event_type = 'refund'), 0)
                         AS DOUBLE) AS revenue
                FROM {events} AS ev LEFT JOIN ids ON ev.customer_id = ids.old_id
                WHERE ev.event_type IN ('purchase', 'refund') AND NOT coalesce(ids.is_junk, false)
                GROUP BY 1"""
        ).df()
    return outcomes, len(present)


def _merge_map(store: Warehouse, as_of: date) -> pa.Table:
    path = store.partition_path(MERGE_MAP, as_of)
    if not path.exists():
        return pa.table({"old_id": pa.array([], pa.string()), "canonical_id": pa.array([], pa.string()),
                         "is_junk": pa.array([], pa.bool_())})
    return read_parquet_verified(path, ["old_id", "canonical_id", "is_junk"])


def _members_as_of(store: Warehouse, as_of: date, audience: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The audience with each customer under their canonical ID of `as_of`. Two audience customers merged
    into one since the export cannot be told apart: both are left out (counted)."""
    ids = _merge_map(store, as_of).to_pandas()
    canonical = dict(zip(ids["old_id"], ids["canonical_id"]))
    members = audience.assign(canonical_id=audience["canonical_id"].map(lambda value: canonical.get(value, value)))
    repeated = members["canonical_id"].duplicated(keep=False)
    return members[~repeated], int(repeated.sum())


# ---------------------------------------------------------------- words


def _points(value: float) -> str:
    return f"{value * 100:+.1f}"


def _money(value: float) -> str:
    return f"{value:+,.2f}"


def _relative_text(row: dict) -> str:
    if row["relative_uplift"] is None:
        return "relative change not measurable (no control group purchase)"
    if row["relative_ci_low"] is None:
        return f"{row['relative_uplift']:+.0%} relative"
    return f"{row['relative_uplift']:+.0%} relative (95% CI {row['relative_ci_low']:+.0%} to {row['relative_ci_high']:+.0%})"


def summary_sentence(row: dict) -> str:
    """The result in a marketer's words, with units: what each group did and how sure the difference is."""
    days, metric = row["window_days"], row["metric"]
    head = f"{row['campaign_key']}, exported {row['export_day']}"
    groups = f"{row['treatment_customers']:,} treated and {row['control_customers']:,} control customers"
    if row["treatment_customers"] == 0 or row["control_customers"] == 0:
        return f"{head}: {groups}; nothing to compare without both groups."
    level = f"{round(row['confidence'] * 100)}% CI"
    if metric == CONVERSION:
        values = (
            f"{row['treatment_value']:.1%} of treated customers bought within {days} days, against "
            f"{row['control_value']:.1%} of the control group"
        )
        interval = (
            f"{_points(row['uplift'])} points ({level} {_points(row['uplift_ci_low'])} to {_points(row['uplift_ci_high'])})"
        )
    elif metric == ORDERS:
        values = (
            f"{row['treatment_value']:.3f} orders per treated customer in {days} days, against "
            f"{row['control_value']:.3f} in the control group"
        )
        interval = (
            f"{row['uplift']:+.3f} orders per customer ({level} {row['uplift_ci_low']:+.3f} to "
            f"{row['uplift_ci_high']:+.3f})"
            if row["uplift_ci_low"] is not None
            else f"{row['uplift']:+.3f} orders per customer"
        )
    else:
        values = (
            f"revenue per treated customer {row['treatment_value']:,.2f} in {days} days (net of refunds), against "
            f"{row['control_value']:,.2f} in the control group"
        )
        interval = (
            f"{_money(row['uplift'])} per customer ({level} {_money(row['uplift_ci_low'])} to "
            f"{_money(row['uplift_ci_high'])})"
            if row["uplift_ci_low"] is not None
            else f"{_money(row['uplift'])} per customer"
        )
    verdict = (
        "a real difference (significant)"
        if row["significant"]
        else "not significant: the difference may be chance"
    )
    return f"{head} ({groups}): {values}: {interval}, {_relative_text(row)}; {verdict}."


# ---------------------------------------------------------------- measured uplift for viability


MEASURED_UPLIFT_COLUMNS = (
    "segment_id",
    "campaign_key",
    "export_day",
    "measured_on",
    "treatment_customers",
    "control_customers",
    "relative_uplift",
    "relative_ci_low",
    "relative_ci_high",
    "significant",
)


def measured_uplifts(store: Warehouse, as_of: date, min_control_customers: int = 100) -> pd.DataFrame:
    """Per segment, the latest relative revenue uplift measured in results of days up to `as_of`
    (see the module docstring); one row per segment that has one (MEASURED_UPLIFT_COLUMNS)."""
    days = store.partition_days(CAMPAIGN_RESULTS, None, as_of)
    if not days:
        return pd.DataFrame(columns=list(MEASURED_UPLIFT_COLUMNS))
    frames = [store.read_partition(CAMPAIGN_RESULTS, day).to_pandas().assign(measured_on=day) for day in days]
    results = pd.concat(frames, ignore_index=True)
    usable = results[
        (results["metric"] == VIABILITY_METRIC)
        & results["relative_uplift"].notna()
        & (results["control_customers"] >= min_control_customers)
    ]
    if usable.empty:
        return pd.DataFrame(columns=list(MEASURED_UPLIFT_COLUMNS))
    usable = usable.assign(customers=usable["treatment_customers"] + usable["control_customers"])
    chosen = usable.sort_values(
        ["segment_id", "export_day", "customers", "campaign_key"], ascending=[True, False, False, True], kind="stable"
    ).drop_duplicates("segment_id", keep="first")
    return chosen[list(MEASURED_UPLIFT_COLUMNS)].reset_index(drop=True)


def measured_campaign_uplifts(store: Warehouse, as_of: date, min_control_customers: int = 100) -> dict[str, float]:
    """Campaign key -> its latest measured relative revenue uplift in results up to `as_of`: what the
    audiences' exclusivity rule weighs a campaign by instead of the prior."""
    days = store.partition_days(CAMPAIGN_RESULTS, None, as_of)
    uplifts: dict[str, tuple[date, float]] = {}
    for day in days:
        for row in store.read_partition(CAMPAIGN_RESULTS, day).to_pylist():
            if (
                row["metric"] == VIABILITY_METRIC
                and row["relative_uplift"] is not None
                and row["control_customers"] >= min_control_customers
                and (row["campaign_key"] not in uplifts or row["export_day"] >= uplifts[row["campaign_key"]][0])
            ):
                uplifts[row["campaign_key"]] = (row["export_day"], row["relative_uplift"])
    return {key: value for key, (_, value) in sorted(uplifts.items())}
