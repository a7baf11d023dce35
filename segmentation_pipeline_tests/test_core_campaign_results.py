"""campaign_results: the statistics against published values, a hand-made campaign, and synthetic campaigns
whose true effect is known (core.synthetic's campaign_uplift)."""

import hashlib
import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from scipy.stats.contingency import relative_risk

from segmentation_pipeline.core import activation, synthetic
from segmentation_pipeline.core.campaign_results import (
    CONVERSION,
    ORDERS,
    REVENUE,
    Estimate,
    ResultSettings,
    measure_campaigns,
    measured_campaign_uplifts,
    measured_uplifts,
    newcombe_difference,
    relative_change,
    welch_difference,
)
from segmentation_pipeline.core.errors import DataValidationError
from segmentation_pipeline.core.ingestion import ingest
from segmentation_pipeline.core.schemas import (
    AUDIENCES,
    CAMPAIGN_RESULTS,
    MERGE_MAP,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
)
from segmentation_pipeline.core.sources import EVENTS
from segmentation_pipeline.core.warehouse import Warehouse, days_between

# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10.
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
        (10, 10, 0, 10, 0.6075, 1.0000),
    ],
)
def test_the_conversion_interval_is_newcombes_hybrid_score(x1, n1, x2, n2, low, high) -> None:
    estimate = newcombe_difference(x1, n1, x2, n2)
    assert estimate.value == pytest.approx(x1 / n1 - x2 / n2)
    assert (round(estimate.low, 4), round(estimate.high, 4)) == (low, high)


def test_the_interval_of_a_difference_of_means_is_welchs() -> None:
    rng = np.random.default_rng(7)
    treated, control = rng.lognormal(2.0, 1.0, 400), rng.lognormal(1.9, 1.4, 60)
    expected = stats.ttest_ind(treated, control, equal_var=False).confidence_interval(0.95)
    estimate = welch_difference(treated, control)
    assert estimate.value == pytest.approx(treated.mean() - control.mean())
    assert (estimate.low, estimate.high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    # Two groups without any spread: the difference is known exactly.
    assert welch_difference(np.full(5, 2.0), np.full(3, 1.0)) == Estimate(1.0, 1.0, 1.0)
    assert welch_difference(np.array([1.0]), np.zeros(3)).low is None


def test_the_relative_interval_is_the_delta_method_on_the_log_ratio_katz_for_proportions() -> None:
    # scipy's documented example of a risk ratio: 27 of 122 against 44 of 487, Katz's interval.
    katz = relative_risk(27, 122, 44, 487)
    expected = katz.confidence_interval(0.95)
    p1, p2 = 27 / 122, 44 / 487
    estimate = relative_change(p1, math.sqrt(p1 * (1 - p1) / 122), p2, math.sqrt(p2 * (1 - p2) / 487))
    assert estimate.value == pytest.approx(katz.relative_risk - 1)
    assert (estimate.low, estimate.high) == pytest.approx((expected.low - 1, expected.high - 1), rel=1e-12)
    # No purchase in the control group: no relative change to speak of.
    assert relative_change(0.1, 0.01, 0.0, 0.0).value is None
    assert relative_change(0.0, 0.0, 0.1, 0.01).low is None


# ---------------------------------------------------------------- a hand-made campaign

EXPORT = date(2025, 3, 1)
WINDOW = 3
AS_OF = EXPORT + timedelta(days=WINDOW)


def audience_table(rows: list[tuple[str, str, str]]) -> pa.Table:
    """Rows of (customer, campaign key, group) as the audiences table holds them."""
    return pa.Table.from_pylist(
        [
            {
                "canonical_id": customer,
                "segment_id": key.split("-")[0],
                "segment_name": f"segment {key.split('-')[0]}",
                "campaign_key": key,
                "channel": key.split("-")[1],
                "timing": "evenings",
                "offer": "a voucher",
                "lifecycle_stage": "active",
                "group": group,
            }
            for customer, key, group in rows
        ]
    )


def exported(store: Warehouse, day: date, rows: list[tuple[str, str, str]]) -> None:
    store.write_partition(AUDIENCES, day, audience_table(rows))
    activation.export_audiences(store.root, day, store.read_partition(AUDIENCES, day))


def events(day: date, rows: list[tuple[str, str, float | None]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "event_id": f"{day}-{index}",
                "customer_id": customer,
                "event_type": kind,
                "timestamp": np.datetime64(f"{day}T12:00:00", "us"),
                "amount": amount,
            }
            for index, (customer, kind, amount) in enumerate(rows)
        ]
    )


def store_events(store: Warehouse, day: date, rows: list[tuple[str, str, float | None]]) -> None:
    store.write_day(RAW_EVENTS, QUARANTINE_EVENTS, day, events(day, rows), QUARANTINE_EVENTS.empty())


def test_a_hand_made_campaign_is_counted_as_profiles_count(warehouse: Warehouse) -> None:
    exported(
        warehouse,
        EXPORT,
        [("a", "S01-email", "treatment"), ("b", "S01-email", "treatment"), ("c", "S01-email", "control"),
         ("d", "S01-email", "control")],
    )
    # The export day itself is outside the window; guest g was merged into a by the as-of day; a junk ID's
    # purchase is nobody's.
    store_events(warehouse, EXPORT, [("a", "purchase", 100.0), ("c", "purchase", 100.0)])
    store_events(warehouse, EXPORT + timedelta(days=1), [("a", "purchase", 10.0), ("a", "page_view", None),
                                                         ("c", "purchase", 7.0)])
    store_events(warehouse, EXPORT + timedelta(days=2), [("a", "refund", 4.0), ("g", "purchase", 20.0),
                                                         ("unknown", "purchase", 50.0)])
    # Day 3 of the window was never ingested: counted as missing, not an error.
    warehouse.write_partition(
        MERGE_MAP,
        AS_OF,
        pa.table({"old_id": ["g", "a", "unknown"], "canonical_id": ["a", "a", "unknown"], "component_size": [2, 2, 1],
                  "chain_depth": [1, 0, 0], "in_cycle": [False] * 3, "is_junk": [False, False, True]}),
    )
    measured = measure_campaigns(warehouse, AS_OF, ResultSettings(window_days=WINDOW, min_control_customers=2))
    assert measured.export_day == EXPORT and measured.days_with_events == 2 and measured.merged_away == 0
    rows = {row["metric"]: row for row in measured.table.to_pylist()}
    assert set(rows) == {CONVERSION, ORDERS, REVENUE}
    conversion, orders, revenue = rows[CONVERSION], rows[ORDERS], rows[REVENUE]
    assert (conversion["treatment_customers"], conversion["control_customers"]) == (2, 2)
    # a bought twice (10, and 20 as g) and had 4 refunded; b bought nothing; c bought once for 7, d never.
    assert (conversion["treatment_value"], conversion["control_value"]) == (0.5, 0.5)
    assert (orders["treatment_value"], orders["control_value"]) == (1.0, 0.5)
    assert (revenue["treatment_value"], revenue["control_value"]) == (13.0, 3.5)
    assert revenue["uplift"] == pytest.approx(9.5) and revenue["relative_uplift"] == pytest.approx(13.0 / 3.5 - 1)
    assert orders["relative_uplift"] == pytest.approx(1.0)
    assert conversion["uplift"] == 0.0 and not conversion["significant"]
    assert revenue["window_first_day"] == EXPORT + timedelta(days=1) and revenue["window_last_day"] == AS_OF
    assert revenue["summary"].startswith(
        "S01-email, exported 2025-03-01 (2 treated and 2 control customers): revenue per treated customer 13.00 in "
        "3 days (net of refunds), against 3.50 in the control group: +9.50 per customer (95% CI "
    )
    assert conversion["summary"].startswith(
        "S01-email, exported 2025-03-01 (2 treated and 2 control customers): 50.0% of treated customers bought "
        "within 3 days, against 50.0% of the control group: +0.0 points (95% CI "
    )
    assert conversion["summary"].endswith("not significant: the difference may be chance.")
    # Stored through the warehouse with the table's schema.
    warehouse.write_partition(CAMPAIGN_RESULTS, AS_OF, measured.table)
    assert warehouse.read_partition(CAMPAIGN_RESULTS, AS_OF).equals(measured.table)


def test_without_an_export_nothing_is_measured_and_an_export_without_its_audience_is_named(
    warehouse: Warehouse,
) -> None:
    measured = measure_campaigns(warehouse, AS_OF, ResultSettings(window_days=WINDOW))
    assert measured.table.num_rows == 0 and measured.nothing_because == f"no complete export on {EXPORT}"
    assert measured.table.schema == CAMPAIGN_RESULTS.schema
    exported(warehouse, EXPORT, [("a", "S01-email", "treatment")])
    warehouse.partition_path(AUDIENCES, EXPORT).unlink()
    with pytest.raises(DataValidationError, match="export of 2025-03-01 has no audiences table"):
        measure_campaigns(warehouse, AS_OF, ResultSettings(window_days=WINDOW))
    with pytest.raises(DataValidationError, match="window_days must be at least 1"):
        ResultSettings(window_days=0)


def result_row(day: date, key: str, uplift: float, control: int, metric: str = REVENUE) -> dict:
    return {
        "export_day": day, "campaign_key": key, "segment_id": key.split("-")[0], "segment_name": "x",
        "channel": key.split("-")[1], "metric": metric, "window_days": 30, "window_first_day": day,
        "window_last_day": day, "days_with_events": 30, "treatment_customers": 1000, "control_customers": control,
        "relative_uplift": uplift, "relative_ci_low": uplift - 0.1, "relative_ci_high": uplift + 0.1,
        "confidence": 0.95, "significant": True, "method": "m", "summary": "s",
    }


def test_a_segment_uplift_is_its_latest_measured_revenue_uplift_up_to_the_day(warehouse: Warehouse) -> None:
    first, second, later = date(2025, 4, 1), date(2025, 4, 2), date(2025, 4, 10)
    warehouse.write_partition(CAMPAIGN_RESULTS, first + timedelta(days=30), pa.Table.from_pylist(
        [result_row(first, "S01-email", 0.20, 300), result_row(first, "S02-web", 0.05, 300),
         result_row(first, "S02-web", 0.90, 300, metric=CONVERSION)], schema=CAMPAIGN_RESULTS.schema))
    warehouse.write_partition(CAMPAIGN_RESULTS, second + timedelta(days=30), pa.Table.from_pylist(
        # S01's later export: the smaller campaign, and one whose control group is too small to count.
        [result_row(second, "S01-email", 0.08, 300), result_row(second, "S01-web", 0.30, 150),
         result_row(second, "S02-web", -0.5, 20)], schema=CAMPAIGN_RESULTS.schema))
    warehouse.write_partition(CAMPAIGN_RESULTS, later + timedelta(days=30), pa.Table.from_pylist(
        [result_row(later, "S01-email", 0.99, 300)], schema=CAMPAIGN_RESULTS.schema))
    uplifts = measured_uplifts(warehouse, second + timedelta(days=30)).set_index("segment_id")
    assert uplifts.loc["S01", "relative_uplift"] == 0.08 and uplifts.loc["S01", "campaign_key"] == "S01-email"
    assert uplifts.loc["S01", "export_day"] == second
    assert uplifts.loc["S02", "relative_uplift"] == 0.05 and uplifts.loc["S02", "export_day"] == first
    assert (uplifts.loc["S02", "relative_ci_low"], uplifts.loc["S02", "relative_ci_high"]) == pytest.approx((-0.05, 0.15))
    # Before any result was measured, nothing; results of later days are never used.
    assert measured_uplifts(warehouse, first + timedelta(days=29)).empty
    assert measured_campaign_uplifts(warehouse, second + timedelta(days=30)) == {
        "S01-email": 0.08, "S01-web": 0.30, "S02-web": 0.05
    }


# ---------------------------------------------------------------- synthetic campaigns with a known effect

#: Large enough for a control group of about 4,000 customers per campaign (half of each kept back).
SYNTHETIC_CUSTOMERS = 30_000
SYNTHETIC_WINDOW = 30


def synthetic_campaign(data_dir: Path, seed: int, uplift: float) -> pa.Table:
    """Two campaigns over every customer active on the export day (60 days in), half of each kept back as
    control, exported; the window's events ingested from a source playing `uplift`; then measured."""
    source = synthetic.SyntheticSettings(
        seed=seed, n_customers=SYNTHETIC_CUSTOMERS, merge_probability=0.0, bad_row_rate=0.0, campaign_uplift=uplift
    )
    people = synthetic.population(source)
    export_day = source.start_date + timedelta(days=60)
    offset = (export_day - source.start_date).days
    active = np.flatnonzero((people.join_day <= offset) & (people.lapse_day > offset))
    customers = people.id_pool.take(pa.array(active)).to_pylist()
    rows = []
    for index, key in enumerate(("S01-web", "S02-email")):
        members = customers[index::2]
        draws = activation.control_draws(members, key)
        rows += [(customer, key, "control" if draw < 0.5 else "treatment") for customer, draw in zip(members, draws)]
    store = Warehouse(data_dir)
    exported(store, export_day, rows)
    window = days_between(export_day + timedelta(days=1), export_day + timedelta(days=SYNTHETIC_WINDOW))
    ingest(store, EVENTS, window, source, ())
    return measure_campaigns(store, window[-1], ResultSettings(window_days=SYNTHETIC_WINDOW)).table


def test_a_known_uplift_is_found_within_the_measured_interval(tmp_path: Path) -> None:
    """Treated customers visit 1.5 times as often after the export, so their expected orders and revenue per
    customer are exactly 1.5 times the control group's: the true relative uplift of both is +50%. (Sessions
    pinned to an alias before its merge do not respond, but this population has no merges.) Conversion,
    P(at least one order), rises by less than 50%, but must rise."""
    results = synthetic_campaign(tmp_path / "data", seed=3, uplift=0.5).to_pylist()
    assert len(results) == 6
    for row in results:
        assert row["control_customers"] > 3000 and row["days_with_events"] == SYNTHETIC_WINDOW
        if row["metric"] in (ORDERS, REVENUE):
            assert row["relative_ci_low"] <= 0.5 <= row["relative_ci_high"], row["summary"]
        assert row["significant"] and row["relative_ci_low"] > 0, row["summary"]


def test_without_a_true_uplift_campaigns_are_seldom_significant(tmp_path: Path) -> None:
    """Five seeds of two campaigns with no effect: at a 95% level each metric may come out significant by
    chance in about 1 of 20; more than 2 of 10 would be odds of 1 in 100 (binomial)."""
    significant = {CONVERSION: 0, ORDERS: 0, REVENUE: 0}
    for seed in range(5):
        for row in synthetic_campaign(tmp_path / f"seed{seed}", seed=seed, uplift=0.0).to_pylist():
            significant[row["metric"]] += row["significant"]
    assert stats.binom.sf(2, 10, 0.05) < 0.012
    assert all(count <= 2 for count in significant.values()), significant


# SHA-256 of the raw_events files of a 3,000-customer source, as stored before campaigns could be played.
STORED_BEFORE_CAMPAIGNS = {
    date(2025, 3, 1): "cd9611152a2ce5131a01f1a3940f552e8471d73c2dbf6907a655a79d0afce9ab",
    date(2025, 3, 2): "db47be4bda3aa6ccd9354119dadbbffae52eb8de5483c26d7cdf249028455f39",
    date(2025, 3, 3): "81d5fc11361054b160b7ccdfc21d71ce7103ab39ae8ef9afacaa6d676a4ea8ce",
}


@pytest.mark.parametrize("uplift", [0.0, 0.5])
def test_without_a_campaign_effect_the_stored_events_stay_the_same_to_the_byte(tmp_path: Path, uplift: float) -> None:
    """With campaign_uplift 0 an export changes nothing; with an uplift, days before any export change nothing."""
    store = Warehouse(tmp_path / "data")
    source = synthetic.SyntheticSettings(n_customers=3000, campaign_uplift=uplift)
    days = sorted(STORED_BEFORE_CAMPAIGNS)
    exported(store, days[-1] if uplift else date(2025, 2, 1), [("C0000001", "S01-web", "treatment")])
    ingest(store, EVENTS, days, source, ())
    stored = {day: hashlib.sha256(store.partition_path(RAW_EVENTS, day).read_bytes()).hexdigest() for day in days}
    assert stored == STORED_BEFORE_CAMPAIGNS


def test_a_campaign_uplift_below_minus_one_is_refused() -> None:
    with pytest.raises(Exception, match="campaign_uplift: expected at least -1"):
        synthetic.SyntheticSettings(campaign_uplift=-1.5)
