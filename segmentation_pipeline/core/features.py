"""The customer features: written once, used by the profile SQL, the clustering matrix and the report.

Each `Feature` says what it measures, its unit, the SQL that computes it from
the per-customer aggregates of `core.profiles`, what the source must provide
for it to mean anything, and how it enters the clustering matrix.

Time-of-day and day-of-week features use UTC, the warehouse's clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .errors import DataValidationError

#: A feature that needs one of these can only be computed when the source has it.
#: "event:<type>" is an event type, "column:<name>" an optional event column.
SESSIONS = "event:session_start"
PAGE_VIEWS = "event:page_view"
CARTS = "event:add_to_cart"
REFUNDS = "event:refund"
CATEGORIES = "column:product_category"
CHANNELS = "column:channel"
#: Either a device or a channel column (mobile_share reads the mobile app channel too).
DEVICES_OR_CHANNELS = "column:device_or_channel"
#: Timestamps with a time of day. A source of plain dates (a transaction log) puts every event
#: at midnight UTC, which would read as "all activity at night".
CLOCK_TIMES = "timestamp:time_of_day"

#: Transforms of the clustering matrix: heavy-tailed counts and money get log1p,
#: shares and bounded values stay as they are. Everything is then robust-scaled.
LOG1P = "log1p"
IDENTITY = "identity"

SHARE_MAP = pa.map_(pa.string(), pa.float64())


@dataclass(frozen=True)
class Feature:
    name: str
    type: pa.DataType
    unit: str
    description: str
    #: SQL over the aggregate columns of core.profiles' `base` relation; NULL for the
    #: features core.profiles computes afterwards (churn_risk, clv_estimate).
    sql: str
    #: What the source must provide (see the constants above); all of them.
    requires: tuple[str, ...] = ()
    #: LOG1P or IDENTITY for numeric features the clustering can use; None for labels and maps.
    transform: str | None = None
    #: Used by the clustering unless its config says otherwise.
    clustered: bool = False
    #: Value a customer without one gets in the clustering matrix (e.g. no purchase: no recency);
    #: "lookback" means the window length in days.
    fill: float | str = 0.0
    #: Words for segments far above / below the population on this feature (segment names).
    high: str = ""
    low: str = ""

    @property
    def is_share_map(self) -> bool:
        return self.type == SHARE_MAP

    @property
    def column_description(self) -> str:
        """The description with the unit in words: the profiles column's, in the Dagster UI."""
        unit = UNITS_IN_WORDS.get(self.unit, self.unit)
        return f"{self.description} Unit: {unit}." if unit else self.description


#: Units said in full where the short name would leave a reader guessing; labels (a category, a
#: channel) have none.
UNITS_IN_WORDS = {
    "share": "share (0 to 1)",
    "probability": "probability (0 to 1)",
    "money": "money, in the source's currency",
    "weekday": "day of the week (0 = Monday)",
    "hour": "hour of the day (UTC)",
    "category": "",
    "channel": "",
}


def _safe_ratio(numerator: str, denominator: str) -> str:
    return f"CASE WHEN {denominator} > 0 THEN CAST({numerator} AS DOUBLE) / {denominator} END"


FEATURES: tuple[Feature, ...] = (
    Feature(
        "recency_days",
        pa.float64(),
        "days",
        "Days from the last purchase to the end of the as-of day; null without a purchase in the window.",
        "date_diff('second', last_purchase, window_end) / 86400.0",
        transform=IDENTITY,
        clustered=True,
        fill="lookback",
        high="lapsed",
        low="recent",
    ),
    Feature(
        "tenure_days",
        pa.float64(),
        "days",
        "Days from the customer's first event in the window to the end of the as-of day.",
        "date_diff('second', first_event, window_end) / 86400.0",
        transform=IDENTITY,
        high="long-standing",
        low="newly arrived",
    ),
    Feature(
        "days_since_last_event",
        pa.float64(),
        "days",
        "Days from the customer's last event of any kind to the end of the as-of day.",
        "date_diff('second', last_event, window_end) / 86400.0",
        transform=IDENTITY,
        high="dormant",
        low="recently active",
    ),
    Feature(
        "frequency",
        pa.int64(),
        "orders",
        "Purchases (order lines) in the window.",
        "orders",
        transform=LOG1P,
        clustered=True,
        high="frequent",
        low="occasional",
    ),
    Feature(
        "monetary_total",
        pa.float64(),
        "money",
        "Net revenue in the window: purchases minus refunds.",
        "CAST(gross_revenue - refund_total AS DOUBLE)",
        transform=LOG1P,
        clustered=True,
        high="high-value",
        low="low-spend",
    ),
    Feature(
        "avg_order_value",
        pa.float64(),
        "money",
        "Mean purchase amount; null without a purchase.",
        _safe_ratio("gross_revenue", "orders"),
        transform=LOG1P,
        clustered=True,
        high="big-basket",
        low="small-basket",
    ),
    Feature(
        "refund_rate",
        pa.float64(),
        "share",
        "Refunds per purchase; null without a purchase.",
        _safe_ratio("refunds", "orders"),
        requires=(REFUNDS,),
        transform=IDENTITY,
        high="refund-prone",
    ),
    Feature(
        "purchase_days",
        pa.int64(),
        "days",
        "Distinct days with a purchase.",
        "purchase_days",
        transform=LOG1P,
        high="repeat",
        low="one-off",
    ),
    Feature(
        "sessions",
        pa.int64(),
        "sessions",
        "Sessions started in the window.",
        "sessions",
        requires=(SESSIONS,),
        transform=LOG1P,
        clustered=True,
        high="highly engaged",
        low="rarely visiting",
    ),
    Feature(
        "page_views",
        pa.int64(),
        "pages",
        "Pages viewed in the window.",
        "page_views",
        requires=(PAGE_VIEWS,),
        transform=LOG1P,
        high="heavy-browsing",
        low="light-browsing",
    ),
    Feature(
        "pages_per_session",
        pa.float64(),
        "pages",
        "Page views per session; null without a session.",
        _safe_ratio("page_views", "sessions"),
        requires=(SESSIONS, PAGE_VIEWS),
        transform=LOG1P,
        clustered=True,
        high="browsing",
        low="focused",
    ),
    Feature(
        "add_to_cart",
        pa.int64(),
        "items",
        "Items added to a cart in the window.",
        "carts",
        requires=(CARTS,),
        transform=LOG1P,
        high="cart-filling",
    ),
    Feature(
        "cart_conversion_rate",
        pa.float64(),
        "share",
        "Purchases per item added to a cart, at most 1; null without a cart.",
        # least() skips NULLs, so the no-cart case is spelled out.
        "CASE WHEN carts > 0 THEN least(1.0, CAST(orders AS DOUBLE) / carts) END",
        requires=(CARTS,),
        transform=IDENTITY,
        clustered=True,
        high="decisive",
        low="cart-abandoning",
    ),
    Feature(
        "active_days",
        pa.int64(),
        "days",
        "Distinct days with any event.",
        "active_days",
        transform=LOG1P,
        high="regular",
    ),
    Feature(
        "preferred_day_of_week",
        pa.int64(),
        "weekday",
        "The day of the week with most events (0 = Monday ... 6 = Sunday, UTC); ties go to the earlier day.",
        "preferred_day_of_week",
    ),
    Feature(
        "preferred_hour",
        pa.int64(),
        "hour",
        "The UTC hour with most events (0..23); ties go to the earlier hour.",
        "preferred_hour",
        requires=(CLOCK_TIMES,),
    ),
    Feature(
        "weekend_share",
        pa.float64(),
        "share",
        "Share of events on Saturday or Sunday (UTC).",
        _safe_ratio("weekend_events", "events"),
        transform=IDENTITY,
        clustered=True,
        high="weekend",
        low="weekday",
    ),
    Feature(
        "morning_share",
        pa.float64(),
        "share",
        "Share of events between 06:00 and 12:00 UTC.",
        _safe_ratio("morning_events", "events"),
        requires=(CLOCK_TIMES,),
        transform=IDENTITY,
        clustered=True,
        high="morning",
    ),
    Feature(
        "afternoon_share",
        pa.float64(),
        "share",
        "Share of events between 12:00 and 18:00 UTC.",
        _safe_ratio("afternoon_events", "events"),
        requires=(CLOCK_TIMES,),
        transform=IDENTITY,
        clustered=True,
        high="afternoon",
    ),
    Feature(
        "evening_share",
        pa.float64(),
        "share",
        "Share of events between 18:00 and 24:00 UTC.",
        _safe_ratio("evening_events", "events"),
        requires=(CLOCK_TIMES,),
        transform=IDENTITY,
        clustered=True,
        high="evening",
    ),
    Feature(
        "night_share",
        pa.float64(),
        "share",
        "Share of events between 00:00 and 06:00 UTC.",
        _safe_ratio("night_events", "events"),
        requires=(CLOCK_TIMES,),
        transform=IDENTITY,
        clustered=True,
        high="late-night",
    ),
    Feature(
        "top_category",
        pa.string(),
        "category",
        "The product category with most events; ties go to the first name in alphabetical order.",
        "top_category",
        requires=(CATEGORIES,),
    ),
    Feature(
        "category_shares",
        SHARE_MAP,
        "share",
        "Share of the customer's categorised events in each of the most common categories, the rest as 'other'.",
        "category_shares",
        requires=(CATEGORIES,),
        transform=IDENTITY,
        clustered=True,
        high="{key}-focused",
    ),
    Feature(
        "category_entropy",
        pa.float64(),
        "bits",
        "Shannon entropy of the customer's category mix in bits: 0 buys one category only.",
        "category_entropy",
        requires=(CATEGORIES,),
        transform=IDENTITY,
        high="eclectic",
        low="single-category",
    ),
    Feature(
        "top_channel",
        pa.string(),
        "channel",
        "The channel with most events; ties go to the first name in alphabetical order.",
        "top_channel",
        requires=(CHANNELS,),
    ),
    Feature(
        "channel_shares",
        SHARE_MAP,
        "share",
        "Share of the customer's events in each of the most common channels, the rest as 'other'.",
        "channel_shares",
        requires=(CHANNELS,),
        transform=IDENTITY,
        clustered=True,
        high="{key}",
    ),
    Feature(
        "mobile_share",
        pa.float64(),
        "share",
        "Share of events on a mobile device (phone or tablet) or in the mobile app.",
        _safe_ratio("mobile_events", "device_or_channel_events"),
        requires=(DEVICES_OR_CHANNELS,),
        transform=IDENTITY,
        high="mobile",
        low="desktop",
    ),
    Feature(
        "churn_risk",
        pa.float64(),
        "probability",
        "Probability the customer has stopped buying: 1 - P(alive) of the BG/NBD model where it could be "
        "fitted, else the activity-gap heuristic (see core.profiles).",
        "NULL",
        transform=IDENTITY,
        high="at-risk",
        low="loyal",
    ),
    Feature(
        "clv_estimate",
        pa.float64(),
        "money",
        "Expected revenue over the CLV horizon: BG/NBD x Gamma-Gamma where they could be fitted, else the "
        "heuristic (see core.profiles).",
        "NULL",
        transform=LOG1P,
        high="high-potential",
        low="low-potential",
    ),
)

FEATURES_BY_NAME: dict[str, Feature] = {feature.name: feature for feature in FEATURES}

#: Features the clustering uses unless told otherwise.
DEFAULT_CLUSTER_FEATURES: tuple[str, ...] = tuple(feature.name for feature in FEATURES if feature.clustered)


def feature(name: str) -> Feature:
    try:
        return FEATURES_BY_NAME[name]
    except KeyError:
        raise DataValidationError(f"unknown feature {name!r}; known features: {sorted(FEATURES_BY_NAME)}") from None
