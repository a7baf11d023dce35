"""Profiles of a handful of hand-made customers equal the values worked out by hand."""

from __future__ import annotations

import math
import os
import time
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from segmentation_pipeline.core import clv, synthetic
from segmentation_pipeline.core import profiles as profiles_module
from segmentation_pipeline.core.errors import DataIntegrityError, ProfileBuildError
from segmentation_pipeline.core.features import FEATURES
from segmentation_pipeline.core.identity import merges_in_effect, resolve_merges
from segmentation_pipeline.core.ingestion import ingest
from segmentation_pipeline.core.profiles import (
    HEURISTIC,
    PROBABILISTIC,
    ProfileSettings,
    build_profiles,
    heuristic_churn_and_clv,
)
from segmentation_pipeline.core.schemas import ID_HISTORY, MERGE_MAP, PROFILES, RAW_EVENTS, conform
from segmentation_pipeline.core.sources import EVENTS, MERGES
from segmentation_pipeline.core.warehouse import STALE_TEMPORARY_SECONDS, Warehouse, days_between

from .damage import a_day_of_events, damage_page

AS_OF = date(2025, 3, 10)  # a Monday
WINDOW_END = datetime(2025, 3, 11, tzinfo=timezone.utc)
SETTINGS = ProfileSettings(lookback_days=10)


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=timezone.utc)


def event(customer, kind, when, *, amount=None, category=None, channel=None, device=None, session=None):
    return {
        "customer_id": customer,
        "event_type": kind,
        "timestamp": when,
        "amount": amount,
        "product_category": category,
        "channel": channel,
        "device": device,
        "session_id": session,
    }


# Customer A used two IDs: a_old (merged into A) on Saturday morning, A on Monday evening.
CUSTOMER_A = [
    event("a_old", "session_start", at(8, 10, 0), channel="web", device="desktop", session="s1"),
    event("a_old", "page_view", at(8, 10, 1), category="electronics", channel="web", device="desktop", session="s1"),
    event("a_old", "add_to_cart", at(8, 10, 2), category="electronics", channel="web", device="desktop", session="s1"),
    event("a_old", "purchase", at(8, 10, 3), amount=100.0, category="electronics", channel="web", device="desktop"),
    event("A", "session_start", at(10, 20, 0), channel="mobile_app", device="mobile", session="s2"),
    event("A", "page_view", at(10, 20, 1), category="books", channel="mobile_app", device="mobile", session="s2"),
    event("A", "page_view", at(10, 20, 2), category="books", channel="mobile_app", device="mobile", session="s2"),
    event("A", "add_to_cart", at(10, 20, 3), category="books", channel="mobile_app", device="mobile", session="s2"),
    event("A", "purchase", at(10, 20, 5), amount=50.0, category="books", channel="mobile_app", device="mobile"),
    event("A", "refund", at(10, 21, 0), amount=20.0, category="books", channel="mobile_app", device="mobile"),
]
# B browsed once, on Wednesday night, and bought nothing.
CUSTOMER_B = [
    event("B", "session_start", at(5, 2, 0), channel="social", device="mobile", session="s3"),
    event("B", "page_view", at(5, 2, 1), category="fashion", channel="social", device="mobile", session="s3"),
]
# A hub the resolver refused to merge: its events belong to nobody.
JUNK_HUB = [event("shared-device", "purchase", at(9, 12), amount=999.0, channel="web")]
# C was only active before the window.
CUSTOMER_C = [event("C", "purchase", at(20, 12, month=2), amount=10.0, channel="web")]


def store_events(warehouse: Warehouse, rows: list[dict]) -> None:
    by_day: dict[date, list[dict]] = {}
    for number, row in enumerate(rows):
        by_day.setdefault(row["timestamp"].date(), []).append({"event_id": f"e{number}", **row})
    for day, day_rows in by_day.items():
        warehouse.write_partition(RAW_EVENTS, day, conform(pa.Table.from_pylist(day_rows), RAW_EVENTS))


def store_merge_map(warehouse: Warehouse, rows: list[tuple[str, str, bool]]) -> None:
    table = pa.table(
        {
            "old_id": [old for old, _, _ in rows],
            "canonical_id": [canonical for _, canonical, _ in rows],
            "component_size": [2 if old != canonical or old == "A" else 1 for old, canonical, _ in rows],
            "chain_depth": [int(old != canonical) for old, canonical, _ in rows],
            "in_cycle": [False] * len(rows),
            "is_junk": [junk for _, _, junk in rows],
        }
    )
    warehouse.write_partition(MERGE_MAP, AS_OF, table)


@pytest.fixture
def hand_made(warehouse: Warehouse) -> Warehouse:
    store_events(warehouse, CUSTOMER_A + CUSTOMER_B + JUNK_HUB + CUSTOMER_C)
    store_merge_map(warehouse, [("a_old", "A", False), ("A", "A", False), ("shared-device", "shared-device", True)])
    return warehouse


def profile_of(result, canonical_id: str) -> dict:
    rows = [row for row in result.table.to_pylist() if row["canonical_id"] == canonical_id]
    assert len(rows) == 1
    return rows[0]


def test_one_profile_per_canonical_customer_in_the_window(hand_made: Warehouse) -> None:
    result = build_profiles(hand_made, AS_OF, SETTINGS)
    assert result.table.schema == PROFILES.schema
    # a_old counts for A; the junk hub and C (active only before the window) have no profile.
    assert result.table["canonical_id"].to_pylist() == ["A", "B"]
    assert result.days_present == [date(2025, 3, 5), date(2025, 3, 8), date(2025, 3, 9), date(2025, 3, 10)]
    assert result.coverage == pytest.approx(4 / 10)
    assert result.window.first_day == date(2025, 3, 1)


def test_features_of_a_merged_customer_by_hand(hand_made: Warehouse) -> None:
    a = profile_of(build_profiles(hand_made, AS_OF, SETTINGS), "A")
    assert a["n_ids"] == 2
    assert a["window_days"] == 10
    assert a["frequency"] == 2
    assert a["monetary_total"] == pytest.approx(100 + 50 - 20)
    assert a["avg_order_value"] == pytest.approx(75.0)
    assert a["refund_rate"] == pytest.approx(1 / 2)
    assert a["purchase_days"] == 2
    # Last purchase Monday 20:05, window ends Tuesday 00:00.
    assert a["recency_days"] == pytest.approx((3 * 60 + 55) / (24 * 60))
    # First event Saturday 10:00.
    assert a["tenure_days"] == pytest.approx(2 + 14 / 24)
    assert a["days_since_last_event"] == pytest.approx(3 / 24)
    assert a["sessions"] == 2
    assert a["page_views"] == 3
    assert a["pages_per_session"] == pytest.approx(1.5)
    assert a["add_to_cart"] == 2
    assert a["cart_conversion_rate"] == pytest.approx(1.0)
    assert a["active_days"] == 2
    # 6 of the 10 events on Monday (0), 5 of them in hour 20.
    assert a["preferred_day_of_week"] == 0
    assert a["preferred_hour"] == 20
    assert a["weekend_share"] == pytest.approx(4 / 10)
    assert a["morning_share"] == pytest.approx(4 / 10)
    assert a["evening_share"] == pytest.approx(6 / 10)
    assert a["afternoon_share"] == 0
    assert a["night_share"] == 0
    # 8 categorised events: 3 electronics, 5 books.
    assert a["top_category"] == "books"
    assert dict(a["category_shares"]) == pytest.approx({"books": 5 / 8, "electronics": 3 / 8})
    assert a["category_entropy"] == pytest.approx(-(5 / 8 * math.log2(5 / 8) + 3 / 8 * math.log2(3 / 8)))
    assert a["top_channel"] == "mobile_app"
    assert dict(a["channel_shares"]) == pytest.approx({"mobile_app": 0.6, "web": 0.4})
    assert a["mobile_share"] == pytest.approx(0.6)


def test_ties_go_to_the_earliest_hour_and_weekday_and_the_first_label(warehouse: Warehouse) -> None:
    # T: two events at 15:00 on Saturday (5), two at 09:00 on Thursday (3), one toys and one books
    # each way; it used T and t_old, and only t_old is in the merge map (T has no row of its own).
    # U: only U_old and U_older carry events, both merged into U, which has none itself.
    store_events(
        warehouse,
        [
            event("T", "page_view", at(8, 15), category="toys", channel="web"),
            event("T", "page_view", at(8, 15, 30), category="books", channel="web"),
            event("t_old", "page_view", at(6, 9), category="toys", channel="email"),
            event("t_old", "purchase", at(6, 9, 30), amount=5.0, category="books", channel="email"),
            event("U_old", "page_view", at(9, 12), category="home"),
            event("U_older", "purchase", at(9, 13), amount=7.0, category="home"),
            event("U_older", "purchase", at(10, 13), amount=3.0, category="home"),
        ],
    )
    store_merge_map(warehouse, [("t_old", "T", False), ("U_old", "U", False), ("U_older", "U", False)])
    result = build_profiles(warehouse, AS_OF, SETTINGS)
    t, u = profile_of(result, "T"), profile_of(result, "U")
    assert t["preferred_hour"] == 9 and t["preferred_day_of_week"] == 3
    assert t["top_category"] == "books" and t["top_channel"] == "email"
    assert t["n_ids"] == 2 and t["active_days"] == 2 and t["purchase_days"] == 1
    assert u["n_ids"] == 2 and u["active_days"] == 2 and u["purchase_days"] == 2
    assert u["preferred_hour"] == 13 and u["top_category"] == "home"
    assert u["monetary_total"] == pytest.approx(10.0)


def test_a_browser_without_purchases(hand_made: Warehouse) -> None:
    b = profile_of(build_profiles(hand_made, AS_OF, SETTINGS), "B")
    assert b["frequency"] == 0
    assert b["monetary_total"] == 0
    assert b["purchase_days"] == 0
    for no_purchase in ("recency_days", "avg_order_value", "refund_rate", "cart_conversion_rate", "p_alive"):
        assert b[no_purchase] is None, no_purchase
    assert b["night_share"] == pytest.approx(1.0)
    assert b["weekend_share"] == 0
    assert b["preferred_day_of_week"] == 2
    assert b["preferred_hour"] == 2
    assert b["category_entropy"] == 0
    assert b["mobile_share"] == pytest.approx(1.0)


def test_heuristic_churn_and_clv_by_hand(hand_made: Warehouse) -> None:
    result = build_profiles(hand_made, AS_OF, SETTINGS)
    # Two buyers, one of them repeat: far too few to fit BG/NBD.
    assert result.clv_fit.method == HEURISTIC
    assert "1 repeat buyers" in result.clv_fit.reason
    a, b = profile_of(result, "A"), profile_of(result, "B")
    assert a["clv_method"] == b["clv_method"] == HEURISTIC
    # A: gap = max(30, tenure / (2 - 1)) = 30 days; last event 3 h before the window's end.
    churn_a = 1 - math.exp(-(3 / 24) / (2 * 30))
    assert a["churn_risk"] == pytest.approx(churn_a)
    # 130 net over a tenure shorter than the 30-day floor, over a 365-day horizon, each month's
    # share discounted at 10% a year to today.
    discount = sum(1.1 ** (-month / 12) for month in range(1, 13)) / 12
    assert a["clv_estimate"] == pytest.approx(130 / 30 * 365 * (1 - churn_a) * discount)
    since_b = (WINDOW_END - at(5, 2, 1)).total_seconds() / 86400
    assert b["churn_risk"] == pytest.approx(1 - math.exp(-since_b / 60))
    assert b["clv_estimate"] == 0


def test_heuristic_never_gives_a_negative_value() -> None:
    churn, value = heuristic_churn_and_clv(
        np.array([10.0]), np.array([100.0]), np.array([5.0]), np.array([-50.0]), ProfileSettings()
    )
    # gap = max(30, 100 / 4) = 30
    assert churn[0] == pytest.approx(1 - math.exp(-10 / 60))
    assert value[0] == 0


def test_top_categories_keep_the_most_common_and_bin_the_rest(hand_made: Warehouse) -> None:
    # Over the window: books 5, electronics 3, fashion 1.
    result = build_profiles(hand_made, AS_OF, ProfileSettings(lookback_days=10, top_categories=1))
    assert result.top_categories == ["books"]
    assert dict(profile_of(result, "A")["category_shares"]) == pytest.approx({"books": 5 / 8, "other": 3 / 8})
    assert dict(profile_of(result, "B")["category_shares"]) == pytest.approx({"other": 1.0})
    # The entropy still sees every category.
    assert profile_of(result, "A")["category_entropy"] == pytest.approx(0.954434, abs=1e-6)


def test_a_shorter_or_shifted_window(hand_made: Warehouse) -> None:
    shifted = build_profiles(hand_made, AS_OF, SETTINGS, shift_days=2, lookback_days=5)
    # Window 2025-03-04 .. 2025-03-08: B's visit and A's Saturday (as a_old, resolved to A).
    assert shifted.window.first_day == date(2025, 3, 4)
    assert shifted.table["canonical_id"].to_pylist() == ["A", "B"]
    a = profile_of(shifted, "A")
    assert a["frequency"] == 1
    assert a["monetary_total"] == pytest.approx(100.0)
    assert a["window_days"] == 5


def test_a_transaction_log_leaves_what_it_cannot_support_null(warehouse: Warehouse) -> None:
    rows = [event("T", "purchase", at(day, 12), amount=10.0 * day) for day in (2, 5, 9)]
    rows += [event("U", "purchase", at(7, 9), amount=5.0)]
    store_events(warehouse, rows)
    store_merge_map(warehouse, [])
    result = build_profiles(warehouse, AS_OF, SETTINGS)
    expected_null = {
        "refund_rate",
        "sessions",
        "page_views",
        "pages_per_session",
        "add_to_cart",
        "cart_conversion_rate",
        "top_category",
        "category_shares",
        "category_entropy",
        "top_channel",
        "channel_shares",
        "mobile_share",
    }
    assert set(result.unsupported) == expected_null
    assert result.unsupported["pages_per_session"] == ["event:session_start", "event:page_view"]
    for name in expected_null:
        assert result.table[name].null_count == result.table.num_rows, name
    t = profile_of(result, "T")
    assert t["frequency"] == 3
    assert t["monetary_total"] == pytest.approx(160.0)
    assert t["purchase_days"] == 3
    assert t["recency_days"] == pytest.approx(1.5)
    supported = {f.name for f in FEATURES} - expected_null
    assert all(t[name] is not None for name in supported)


def test_plain_dates_have_no_time_of_day(warehouse: Warehouse) -> None:
    """A log of dates stores every event at midnight UTC: the day parts would all read 'night'."""
    rows = [event("T", "purchase", at(day, 0), amount=10.0) for day in (2, 5, 6)]
    rows += [event("U", "purchase", at(7, 0), amount=5.0)]
    store_events(warehouse, rows)
    store_merge_map(warehouse, [])
    result = build_profiles(warehouse, AS_OF, SETTINGS)
    clock = {"preferred_hour", "morning_share", "afternoon_share", "evening_share", "night_share"}
    assert clock <= set(result.unsupported)
    assert all(result.unsupported[name] == ["timestamp:time_of_day"] for name in clock)
    for name in clock:
        assert result.table[name].null_count == result.table.num_rows, name
    # The day of the week still means something.
    assert profile_of(result, "T")["weekend_share"] == pytest.approx(1 / 3)


def buyers_from_the_models(rng: np.random.Generator, customers: int, days_observed: int):
    """Purchase events from 2025-01-01 on, one customer at a time, and each customer's (days, amounts)."""
    rows, truth = [], {}
    for number in range(customers):
        customer = f"c{number:03d}"
        rate, dropout, spend_level = rng.gamma(0.8, 1 / 15), rng.beta(0.8, 2.5), rng.gamma(3.0, 15.0)
        moment, days = float(rng.uniform(0, days_observed / 3)), []
        while moment < days_observed:
            if int(moment) not in days:
                days.append(int(moment))
            if rng.random() < dropout:
                break
            moment += rng.exponential(1 / rate)
        amounts = [round(float(rng.gamma(4.0, spend_level / 4)), 2) + 0.01 for _ in days]
        for offset, amount in zip(days, amounts):
            rows.append(event(customer, "purchase", at(1, 12, month=1) + timedelta(days=offset), amount=amount))
        truth[customer] = (days, amounts)
    return rows, truth


def test_bg_nbd_inputs_are_purchase_days_in_the_window(warehouse: Warehouse) -> None:
    """With enough repeat buyers the models are fitted; each buyer gets the model's values for its (x, t_x, T)."""
    # Buyers drawn from the models themselves (gamma purchase rates, beta dropout, gamma spend
    # levels), watched long enough for dropout to show.
    rows, truth = buyers_from_the_models(np.random.default_rng(7), customers=400, days_observed=150)
    as_of = date(2025, 5, 31)
    store_events(warehouse, rows)
    warehouse.write_partition(MERGE_MAP, as_of, MERGE_MAP.empty())
    settings = ProfileSettings(lookback_days=151, min_repeat_buyers=10, clv_model="bg_nbd")
    result = build_profiles(warehouse, as_of, settings)
    assert result.clv_fit.method == PROBABILISTIC, result.clv_fit.reason
    bg = clv.BgNbdParams(**result.clv_fit.parameters, log_likelihood=0.0, n_customers=0, converged=True)
    gg = clv.GammaGammaParams(**result.clv_fit.gamma_gamma, log_likelihood=0.0, n_customers=0, converged=True)
    first_day = date(2025, 1, 1)
    for customer in ("c000", "c001", "c002", "c050"):
        days, amounts = truth[customer]
        x = len(days) - 1
        t_x = days[-1] - days[0]
        age = (as_of - (first_day + timedelta(days=days[0]))).days
        repeat_value = sum(amounts[1:]) / x if x else 0.0
        row = profile_of(result, customer)
        assert row["clv_method"] == PROBABILISTIC
        assert row["p_alive"] == pytest.approx(float(clv.probability_alive(bg, x, t_x, age)))
        assert row["expected_purchases"] == pytest.approx(float(clv.expected_purchases(bg, 365, x, t_x, age)))
        value = float(clv.discounted_customer_lifetime_value(bg, gg, x, t_x, age, repeat_value, 365, 0.10))
        assert row["clv_estimate"] == pytest.approx(value)
        # A one-time buyer's P(alive) is 1 under BG/NBD; their churn risk is the heuristic's.
        if x > 0:
            assert row["churn_risk"] == pytest.approx(1 - row["p_alive"])
        else:
            assert row["p_alive"] == pytest.approx(1.0)
            assert 0 < row["churn_risk"] < 1


def test_free_repeat_orders_get_the_population_spend(warehouse: Warehouse) -> None:
    rows, truth = buyers_from_the_models(np.random.default_rng(7), customers=400, days_observed=150)
    # A customer whose repeat purchase days were free samples.
    rows += [
        event("free", "purchase", at(2, 12, month=5), amount=10.0),
        event("free", "purchase", at(9, 12, month=5), amount=0.0),
        event("free", "purchase", at(20, 12, month=5), amount=0.0),
    ]
    as_of = date(2025, 5, 31)
    store_events(warehouse, rows)
    warehouse.write_partition(MERGE_MAP, as_of, MERGE_MAP.empty())
    settings = ProfileSettings(lookback_days=151, min_repeat_buyers=10, clv_model="bg_nbd")
    result = build_profiles(warehouse, as_of, settings)
    assert result.clv_fit.method == PROBABILISTIC
    bg = clv.BgNbdParams(**result.clv_fit.parameters, log_likelihood=0.0, n_customers=0, converged=True)
    gg = clv.GammaGammaParams(**result.clv_fit.gamma_gamma, log_likelihood=0.0, n_customers=0, converged=True)
    free = profile_of(result, "free")
    # x = 2, t_x = 18, T = 29 days; spend: the population mean p v / (q - 1).
    expected = float(clv.expected_purchases(bg, 365, 2, 18, 29))
    assert free["expected_purchases"] == pytest.approx(expected)
    discounted_purchases = float(clv.discounted_customer_lifetime_value(bg, gg, 2, 18, 29, 1.0, 365, 0.10)) / float(
        clv.expected_average_spend(gg, 2, 1.0)
    )
    assert discounted_purchases < expected
    assert free["clv_estimate"] == pytest.approx(discounted_purchases * gg.p * gg.v / (gg.q - 1))


def test_a_model_that_sees_one_time_buyers_drop_out_scores_every_buyer(warehouse: Warehouse) -> None:
    rows, truth = buyers_from_the_models(np.random.default_rng(7), customers=400, days_observed=150)
    as_of = date(2025, 5, 31)
    store_events(warehouse, rows)
    warehouse.write_partition(MERGE_MAP, as_of, MERGE_MAP.empty())
    for model in ("mbg_nbd", "pareto_nbd"):
        settings = ProfileSettings(lookback_days=151, min_repeat_buyers=10, clv_model=model)
        result = build_profiles(warehouse, as_of, settings)
        assert result.clv_fit.method == f"{model}_gamma_gamma" and result.clv_fit.model == model
        assert result.as_metadata()["clv_model"] == model
        params = clv.fit_model(model, *_model_inputs(truth, as_of))
        assert result.clv_fit.parameters == pytest.approx(dict(params.parameters), rel=1e-6)
        frame = result.table.to_pandas()
        buyers = frame[frame["clv_method"] == f"{model}_gamma_gamma"]
        assert (buyers["churn_risk"] == 1 - buyers["p_alive"]).all()
        once = buyers[buyers["purchase_days"] == 1].sort_values("recency_days")
        # One-time buyers: the longer the silence, the higher the risk, and no two silences alike.
        assert once["churn_risk"].is_monotonic_increasing
        assert once["churn_risk"].nunique() == once["recency_days"].nunique() > 20


def _model_inputs(truth: dict, as_of: date) -> tuple[list[int], list[int], list[int]]:
    """(x, t_x, T) in days of every customer of buyers_from_the_models, first purchase on January 1 + offset."""
    first_day, columns = date(2025, 1, 1), ([], [], [])
    for days, _ in truth.values():
        columns[0].append(len(days) - 1)
        columns[1].append(days[-1] - days[0])
        columns[2].append((as_of - (first_day + timedelta(days=days[0]))).days)
    return columns


def test_no_events_in_the_window_gives_no_profiles(warehouse: Warehouse) -> None:
    store_merge_map(warehouse, [])
    result = build_profiles(warehouse, AS_OF, SETTINGS)
    assert result.table.num_rows == 0
    assert result.table.schema == PROFILES.schema
    assert result.coverage == 0


def test_days_stored_without_events_give_no_profiles(warehouse: Warehouse) -> None:
    # Ingestion writes a day without input as an empty partition: the window has files but no rows.
    store_merge_map(warehouse, [])
    for day in (AS_OF - timedelta(days=1), AS_OF):
        warehouse.write_partition(RAW_EVENTS, day, RAW_EVENTS.empty())
    result = build_profiles(warehouse, AS_OF, SETTINGS)
    assert result.table.num_rows == 0
    assert result.days_present == [AS_OF - timedelta(days=1), AS_OF]
    assert "preferred_hour" in result.unsupported  # no clock time seen


def test_events_breaking_raw_events_rules_fail_the_profiles_naming_the_file_and_the_rule(
    hand_made: Warehouse,
) -> None:
    """A stored day of the window as a damaged file decodes: an instant read as the year 244875 BC
    (outside the window, so it would simply have been left out) and an amount below zero."""
    day = date(2025, 3, 8)
    path = hand_made.partition_path(RAW_EVENTS, day)
    stored = hand_made.read_partition(RAW_EVENTS, day)
    instants = stored["timestamp"].cast(pa.int64()).to_pylist()
    instants[1] = -7_789_000_000_000_000_000
    amounts = stored["amount"].to_pylist()
    amounts[3] = -100.0
    damaged = stored.set_column(3, "timestamp", pa.array(instants, pa.int64()).cast(stored.schema.field(3).type))
    pq.write_table(damaged.set_column(5, "amount", pa.array(amounts, pa.float64())), path)
    with pytest.raises(DataIntegrityError) as failure:
        build_profiles(hand_made, AS_OF, SETTINGS)
    message = str(failure.value)
    assert f'{path}: 1 rows break the rule "timestamp inside the partition\'s day (UTC)"' in message
    assert f"{path}: 1 rows break the rule 'amount a number not below zero'" in message
    assert message.count("rows break the rule") == 2  # the other days of the window are sound


def test_a_damaged_events_page_fails_the_profiles_by_the_rule_it_breaks(warehouse: Warehouse) -> None:
    """Bytes changed inside the timestamp page of an engine-written day: the file's statistics still
    say the day, the values DuckDB decodes do not."""
    days = [AS_OF - timedelta(days=offset) for offset in range(3)]
    for day in days:
        warehouse.write_partition(RAW_EVENTS, day, a_day_of_events(day, 5000))
    store_merge_map(warehouse, [])
    damaged = warehouse.partition_path(RAW_EVENTS, days[1])
    damage_page(damaged, "timestamp")
    with pytest.raises(DataIntegrityError, match=rf"{damaged}: [0-9,]+ rows break the rule \"timestamp inside"):
        build_profiles(warehouse, AS_OF, SETTINGS)


def test_a_missing_merge_map_is_an_error(warehouse: Warehouse) -> None:
    store_events(warehouse, CUSTOMER_B)
    with pytest.raises(ProfileBuildError, match="merge_map for 2025-03-10"):
        build_profiles(warehouse, AS_OF, SETTINGS)


def test_settings_are_validated() -> None:
    with pytest.raises(ProfileBuildError, match="lookback_days"):
        ProfileSettings(lookback_days=0)
    with pytest.raises(ProfileBuildError, match="churn_gap_floor_days"):
        ProfileSettings(churn_gap_floor_days=0)


def test_models_that_cannot_predict_fall_back_to_the_heuristic() -> None:
    """Homogeneous dropout over a short window once drove the fitted beta parameters to a~57k, b~242k,
    where the 2F1 term of expected purchases is NaN; such a fit must not reach the profiles."""
    runaway = clv.BgNbdParams(
        r=0.448, alpha=12.63, a=56836.45, b=241864.97, log_likelihood=0.0, n_customers=300, converged=True
    )
    spend = clv.GammaGammaParams(p=2.87, q=2.59, v=26.7, log_likelihood=0.0, n_customers=150, converged=True)
    repeat_days = np.array([2.0, 0.0])
    table = pa.table(
        {
            "_repeat_days": repeat_days,
            "_purchase_span": [10.0, 0.0],
            "_purchase_age": [40.0, 20.0],
            "_repeat_value": [30.0, None],
        }
    )
    inputs = profiles_module._BuyerInputs.of(table, np.array([True, True]))
    with np.errstate(invalid="ignore"):
        assert not np.isfinite(clv.expected_purchases(runaway, 365, repeat_days, [10.0, 0.0], [40.0, 20.0])).all()
    assert profiles_module._predict(inputs, (runaway, spend), ProfileSettings()) is None
    sane = clv.BgNbdParams(r=0.45, alpha=12.6, a=0.8, b=2.4, log_likelihood=0.0, n_customers=300, converged=True)
    p_alive, expected, value, cycle_value = profiles_module._predict(inputs, (sane, spend), ProfileSettings())
    assert np.isfinite(expected).all() and np.isfinite(value).all()
    assert p_alive[1] == 1.0
    # One campaign cycle (90 days) is part of the year: worth less, never more, never negative.
    assert (cycle_value >= 0).all() and (cycle_value < value).all()
    # The cycle value is the CLV of a 90-day horizon, as core.clv computes it.
    year = profiles_module._predict(inputs, (sane, spend), ProfileSettings(clv_horizon_days=90))[2]
    assert cycle_value == pytest.approx(year)


def test_mobile_share_reads_the_app_channel_without_a_device_column(warehouse: Warehouse) -> None:
    rows = [
        event("M", "session_start", at(9, 9), channel="mobile_app"),
        event("M", "session_start", at(9, 10), channel="web"),
        event("M", "session_start", at(10, 9), channel="mobile_app"),
        event("M", "page_view", at(10, 10), channel="email"),
    ]
    store_events(warehouse, rows)
    store_merge_map(warehouse, [])
    result = build_profiles(warehouse, AS_OF, SETTINGS)
    assert "mobile_share" not in result.unsupported
    assert profile_of(result, "M")["mobile_share"] == pytest.approx(2 / 4)


def test_day_parts_at_their_boundaries_and_a_customer_without_labels(warehouse: Warehouse) -> None:
    # D, on Sunday 9 March: one event either side of each boundary of the day parts (UTC).
    clock = ((5, 59), (6, 0), (11, 59), (12, 0), (17, 59), (18, 0), (23, 59))
    rows = [event("D", "page_view", at(9, hour, minute), category="books", channel="web") for hour, minute in clock]
    # E has an event without a category or a channel, in a window where D's have both.
    rows += [event("E", "session_start", at(7, 10))]
    store_events(warehouse, rows)
    store_merge_map(warehouse, [])
    result = build_profiles(warehouse, AS_OF, SETTINGS)
    d = profile_of(result, "D")
    assert (d["night_share"], d["morning_share"], d["afternoon_share"], d["evening_share"]) == pytest.approx(
        (1 / 7, 2 / 7, 2 / 7, 2 / 7)
    )
    assert d["weekend_share"] == 1.0
    assert d["preferred_hour"] == 5  # seven hours once each: the earliest
    assert d["category_shares"] == [("books", 1.0)] and d["channel_shares"] == [("web", 1.0)]
    e = profile_of(result, "E")
    # No labelled event: no share map at all (null), not an empty one.
    assert e["category_shares"] is None and e["channel_shares"] is None
    assert e["top_category"] is None and e["top_channel"] is None
    assert e["weekend_share"] == 0 and e["morning_share"] == 1.0


def test_profiles_of_a_sample_of_customers(hand_made: Warehouse) -> None:
    everyone = build_profiles(hand_made, AS_OF, SETTINGS)
    sample = build_profiles(hand_made, AS_OF, SETTINGS, customers=["A", "nobody"])
    assert sample.table["canonical_id"].to_pylist() == ["A"]
    # The merged ID's events still count for A.
    assert profile_of(sample, "A") == profile_of(everyone, "A")
    assert build_profiles(hand_made, AS_OF, SETTINGS, customers=[]).table.num_rows == 0
    # A merged-away ID is nobody's canonical ID, and the hub's events are nobody's.
    assert build_profiles(hand_made, AS_OF, SETTINGS, customers=["a_old", "shared-device"]).table.num_rows == 0


@pytest.mark.parametrize("top_categories", [0, 3, 8])
def test_the_pivoted_and_grouped_label_statistics_agree(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, top_categories: int
) -> None:
    """Few labels are counted in the main aggregation, many in a grouped pass: same profiles either way."""
    source = synthetic.SyntheticSettings(n_customers=800, bad_row_rate=0.0)
    days = days_between(date(2025, 1, 1), date(2025, 2, 28))
    ingest(warehouse, EVENTS, days, source, ())
    warehouse.write_partition(MERGE_MAP, days[-1], MERGE_MAP.empty())
    settings = ProfileSettings(lookback_days=59, top_categories=top_categories)
    pivoted = build_profiles(warehouse, days[-1], settings).table
    monkeypatch.setattr(profiles_module, "PIVOT_LABELS", 0)
    grouped = build_profiles(warehouse, days[-1], settings).table
    assert pivoted.num_rows > 200
    assert pivoted.equals(grouped)
    keys = {key for shares in pivoted["category_shares"].to_pylist() for key, _ in shares}
    assert ("other" in keys) == (top_categories < 8)
    assert len(keys - {"other"}) == top_categories


@pytest.mark.parametrize("pivot_labels", [32, 0])
def test_awkward_labels_and_a_real_other(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, pivot_labels: int
) -> None:
    """Quotes, commas, unicode and a label called 'other' (which joins the 'other' bin) on both paths."""
    monkeypatch.setattr(profiles_module, "PIVOT_LABELS", pivot_labels)
    channels = ["web", "web", "other", "other", "kid's corner", "a,b", "café", "email", "email", "email"]
    rows = [event("Q", "page_view", at(9, 10, minute), channel=channel) for minute, channel in enumerate(channels)]
    rows += [event("R", "page_view", at(9, 11), channel="web")]
    store_events(warehouse, rows)
    store_merge_map(warehouse, [])
    # Window: email 3, web 3, other 2, then a,b / café / kid's corner once each.
    result = build_profiles(warehouse, AS_OF, ProfileSettings(lookback_days=10, top_channels=3))
    assert result.top_channels == ["email", "web"]
    q = profile_of(result, "Q")
    assert dict(q["channel_shares"]) == pytest.approx({"email": 0.3, "web": 0.2, "other": 0.5})
    assert [key for key, _ in q["channel_shares"]] == ["email", "other", "web"]
    assert q["top_channel"] == "email"
    assert q["category_shares"] is None and q["top_category"] is None
    everyone = build_profiles(warehouse, AS_OF, ProfileSettings(lookback_days=10, top_channels=10))
    assert dict(profile_of(everyone, "Q")["channel_shares"]) == pytest.approx(
        {"email": 0.3, "web": 0.2, "other": 0.2, "kid's corner": 0.1, "a,b": 0.1, "café": 0.1}
    )


def test_profiles_split_into_buckets_of_customers_are_the_same_rows(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window larger than DuckDB's memory holds is profiled a bucket of customers at a time; merged
    IDs and junk hubs must land with their customers, and the rows come back in canonical_id order."""
    source = synthetic.SyntheticSettings(n_customers=3_000, start_date=date(2025, 1, 1), seed=7)
    days = days_between(date(2025, 1, 1), date(2025, 3, 31))
    ingest(warehouse, EVENTS, days, source, ())
    ingest(warehouse, MERGES, days, source, ())
    as_of = days[-1]
    merges = merges_in_effect(warehouse.read_days(ID_HISTORY, days), as_of)
    resolution = resolve_merges(merges)
    warehouse.write_partition(MERGE_MAP, as_of, resolution.merge_map)
    assert pc.sum(pc.not_equal(resolution.merge_map["old_id"], resolution.merge_map["canonical_id"])).as_py() > 0
    settings = ProfileSettings(lookback_days=90)

    assert profiles_module.profile_buckets(sum(rows for rows, _ in warehouse.stored_footprints(RAW_EVENTS, days).values())) == 1
    whole = build_profiles(warehouse, as_of, settings)
    monkeypatch.setattr(profiles_module, "PROFILE_BYTES_PER_EVENT", 10**7)
    assert profiles_module.profile_buckets(whole.window_input.events) > 5
    split = build_profiles(warehouse, as_of, settings)

    assert whole.table.num_rows > 1_000
    assert split.table.equals(whole.table)
    assert split.clv_fit == whole.clv_fit
    assert list(warehouse.scratch_dir.glob(f"{profiles_module.BUCKETS_FOLDER_PREFIX}*")) == []


def test_a_bucket_folder_left_by_a_killed_run_is_removed_once_stale(warehouse: Warehouse) -> None:
    scratch = warehouse.scratch_dir
    stale, live = scratch / f"{profiles_module.BUCKETS_FOLDER_PREFIX}1-old", scratch / f"{profiles_module.BUCKETS_FOLDER_PREFIX}2-new"
    for folder in (stale, live):
        (folder / "bucket=0").mkdir(parents=True)
        (folder / "bucket=0" / "data_0.parquet").write_bytes(b"x")
    an_hour_ago = time.time() - STALE_TEMPORARY_SECONDS - 60
    os.utime(stale, (an_hour_ago, an_hour_ago))
    profiles_module._remove_stale_bucket_folders(scratch)
    assert not stale.exists() and live.exists()
