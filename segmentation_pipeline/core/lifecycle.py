"""Where each customer is in their life with the business: one lifecycle stage per profiled customer.

A stage is judged from the customer's own purchase rhythm and, where a model
was fitted, its P(alive), not from a fixed day count:

- prospect: no purchase in the window (browsing only);
- new: one purchase day, and silent for no longer than the usual wait for a
  second purchase (`new_gaps` x the median gap between purchase days of the
  repeat buyers, at least `gap_floor_days`);
- lapsed: P(alive) below `lapsed_p_alive`, or silent for more than
  `lapsed_gaps` x their usual gap between purchase days (a one-time buyer's
  usual gap is the population's): either signal is enough, since a model
  fitted mostly on one-time buyers can keep a long-silent one "alive";
- at risk: not lapsed, but P(alive) below `at_risk_p_alive` or silent for
  more than `at_risk_gaps` x their usual gap;
- loyal: a repeat buyer in rhythm with at least `loyal_min_purchase_days`
  purchase days, or whose CLV is in the top `1 - loyal_clv_quantile` of buyers;
- active: every other buyer in rhythm.

`repeat_buyer` (two or more purchase days) tells one-time buyers from repeat
buyers within every stage. The thresholds are settings of the profiles stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ProfileBuildError

PROSPECT, NEW, ACTIVE, LOYAL, AT_RISK, LAPSED = "prospect", "new", "active", "loyal", "at_risk", "lapsed"
#: In the order of a customer's life; the report and the names use it.
STAGES = (PROSPECT, NEW, ACTIVE, LOYAL, AT_RISK, LAPSED)
#: How a marketer calls the customers of a stage (the first word of a segment name it dominates).
STAGE_WORDS = {
    PROSPECT: "prospective",
    NEW: "new",
    ACTIVE: "active",
    LOYAL: "loyal",
    AT_RISK: "at-risk",
    LAPSED: "lapsed",
}
#: The usual gap between purchase days when no customer has bought twice.
FALLBACK_GAP_DAYS = 30.0


@dataclass(frozen=True)
class LifecycleSettings:
    lapsed_p_alive: float = 0.3
    at_risk_p_alive: float = 0.6
    at_risk_gaps: float = 2.0
    lapsed_gaps: float = 4.0
    new_gaps: float = 1.0
    loyal_min_purchase_days: int = 4
    loyal_clv_quantile: float = 0.8
    gap_floor_days: float = 7.0

    def __post_init__(self) -> None:
        if not 0 <= self.lapsed_p_alive <= self.at_risk_p_alive <= 1:
            raise ProfileBuildError(
                f"lifecycle P(alive) thresholds must satisfy 0 <= lapsed ({self.lapsed_p_alive}) "
                f"<= at risk ({self.at_risk_p_alive}) <= 1"
            )
        if not 0 < self.at_risk_gaps <= self.lapsed_gaps:
            raise ProfileBuildError(
                f"lifecycle gaps must satisfy 0 < at risk ({self.at_risk_gaps}) <= lapsed ({self.lapsed_gaps})"
            )
        if not 0 <= self.loyal_clv_quantile <= 1:
            raise ProfileBuildError(f"loyal_clv_quantile must lie in [0, 1], got {self.loyal_clv_quantile}")


@dataclass(frozen=True)
class LifecycleInputs:
    """One value per customer; NaN where there is none (no purchase, no model)."""

    #: Days since the last purchase.
    recency_days: np.ndarray
    purchase_days: np.ndarray
    #: Days from the first to the last purchase day.
    purchase_span_days: np.ndarray
    p_alive: np.ndarray
    clv: np.ndarray


def typical_gap(inputs: LifecycleInputs, settings: LifecycleSettings) -> float:
    """The median gap between purchase days of the repeat buyers (at least the floor)."""
    repeat = inputs.purchase_days >= 2
    if not repeat.any():
        return max(FALLBACK_GAP_DAYS, settings.gap_floor_days)
    gaps = inputs.purchase_span_days[repeat] / (inputs.purchase_days[repeat] - 1)
    return float(max(np.median(gaps), settings.gap_floor_days))


def lifecycle_stages(inputs: LifecycleInputs, settings: LifecycleSettings = LifecycleSettings()) -> np.ndarray:
    """The stage of every customer (see the module docstring), as an array of strings."""
    buyer = inputs.purchase_days >= 1
    repeat = inputs.purchase_days >= 2
    usual = typical_gap(inputs, settings)
    with np.errstate(invalid="ignore", divide="ignore"):
        own_gap = np.where(repeat, inputs.purchase_span_days / np.maximum(inputs.purchase_days - 1, 1), usual)
    overdue = inputs.recency_days / np.maximum(own_gap, settings.gap_floor_days)
    modelled = ~np.isnan(inputs.p_alive)
    lapsed = buyer & ((modelled & (inputs.p_alive < settings.lapsed_p_alive)) | (overdue > settings.lapsed_gaps))
    at_risk = (
        buyer
        & ~lapsed
        & ((modelled & (inputs.p_alive < settings.at_risk_p_alive)) | (overdue > settings.at_risk_gaps))
    )
    new = buyer & ~repeat & (inputs.recency_days <= settings.new_gaps * usual)
    clv = np.nan_to_num(inputs.clv, nan=0.0)
    top_clv = clv >= np.quantile(clv[buyer], settings.loyal_clv_quantile) if buyer.any() else np.zeros_like(buyer)
    loyal = repeat & ((inputs.purchase_days >= settings.loyal_min_purchase_days) | top_clv)
    stages = np.full(len(buyer), ACTIVE, dtype=object)
    stages[loyal] = LOYAL
    stages[at_risk] = AT_RISK
    stages[lapsed] = LAPSED
    # A first-time buyer still within the usual wait for a second purchase is new, whatever a model
    # fitted mostly on older customers says of them.
    stages[new] = NEW
    stages[~buyer] = PROSPECT
    return stages


__all__ = [
    "ACTIVE",
    "AT_RISK",
    "LAPSED",
    "LOYAL",
    "LifecycleInputs",
    "LifecycleSettings",
    "NEW",
    "PROSPECT",
    "STAGES",
    "STAGE_WORDS",
    "lifecycle_stages",
    "typical_gap",
]
