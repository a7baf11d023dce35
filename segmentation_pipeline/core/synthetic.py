"""Deterministic synthetic customers, events and ID merges.

The synthetic source stands in for a real event feed. It draws a population of
customers once (archetype, lifecycle, personal activity rate, the IDs they used
over time) and then produces any day's events and ID merge records on demand:

- The events of day D are a function of (settings, D) only: each day has its
  own random stream, so a partition can be regenerated alone, and days can be
  generated in any order with identical results.
- Each archetype has a signature a segmentation can find: its own product
  categories, channels, days of the week, hours, session depth, basket and
  price level. The product category is drawn per page view, so a customer's
  category shares are estimable from a handful of sessions.
- Individuals vary around their type: each customer's category, channel,
  weekday and hour weights are (1 - v) * their archetype's + v * a personal
  profile drawn once per customer, and their activity, price level, basket
  size, page views and readiness to buy spread more as v (personal_variation)
  grows. At v = 0 every customer of an archetype shares its weights and the
  archetypes are almost perfectly separable, which real customers never are.
- IDs change only between days: the nightly identity job merges an alias in
  the first minutes of a day, when no session is in flight, and the ID a
  customer uses on a day is the one in force for that whole day. Every alias
  is used in at least one session before it is merged.
- The merge records contain what the identity resolver must survive: chains
  A -> B -> C, records delivered days late, a few bogus reverse records that
  close a cycle, and junk hub IDs ("unknown", "0", "-1") linked to unrelated
  customers.
- A small share of event rows is deliberately broken (null customer, unknown
  event type, negative purchase amount, timestamp on the next day) so that the
  quarantine path is exercised. Event IDs are numbered before any row is
  broken, so a clean event has the same ID whatever the fault rate.
- The ground truth (each ID's person and archetype) lets tests and the report
  check what segmentation recovers.
- A campaign's response can be played (campaign_uplift): the customers on the
  treatment lists of the latest export before a day visit more often that day,
  by a known factor, so that campaign_results has a known answer to find.

Per-day work is vectorized over sessions and events; the only work over the
whole population is a handful of array passes to get each customer's session
rate on that day.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import PipelineError
from .schemas import (
    EVENT_TYPES,
    ID_HISTORY,
    RAW_EVENTS,
    SYNTHETIC_TRUTH,
    UTC_TIMESTAMP,
    EventType,
)

# ------------------------------------------------------------------ vocabularies

PRODUCT_CATEGORIES: tuple[str, ...] = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "grocery",
    "sports",
    "books",
    "toys",
)
CHANNELS: tuple[str, ...] = ("web", "mobile_app", "email", "store", "social")
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet")

#: Device shares given the channel, so that device and channel never contradict
#: each other (an app session is never on a desktop; a store visit is a till or
#: a shop-floor tablet).
DEVICE_SHARES_BY_CHANNEL: dict[str, tuple[float, float, float]] = {
    "web": (0.60, 0.30, 0.10),
    "mobile_app": (0.0, 0.85, 0.15),
    "email": (0.50, 0.45, 0.05),
    "store": (0.50, 0.0, 0.50),
    "social": (0.0, 0.90, 0.10),
}

#: Junk IDs the source links to real customers; real systems emit exactly these,
#: and all of them are in schemas.DEFAULT_JUNK_IDS.
JUNK_HUB_IDS: tuple[str, ...] = ("unknown", "0", "-1")
#: Event type of the injected rows whose type is not in the contract.
UNKNOWN_EVENT_TYPE = "unknown_type"

#: Prefixes of the IDs a customer goes by: the final primary ID, a guest ID
#: (first alias of a merged customer) and an intermediate account ID (middle
#: link of an A -> B -> C chain).
PRIMARY_PREFIX = "C"
GUEST_PREFIX = "G"
ACCOUNT_PREFIX = "A"

#: Event table of the source: the raw_events columns, all nullable, because the
#: injected bad rows break exactly the constraints the validator enforces.
SYNTHETIC_EVENTS_SCHEMA = pa.schema([field_.with_nullable(True) for field_ in RAW_EVENTS.schema])

# ------------------------------------------------------------------ time units (microseconds)

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

#: Customers who joined before start_date joined up to this many days earlier.
PRE_START_HISTORY_DAYS = 3 * 365
#: A churning customer stays at least this long after joining (or after start_date).
MIN_DAYS_BEFORE_LAPSE = 30
#: The nightly identity job merges IDs within this long after midnight (UTC).
MERGE_WINDOW_US = 5 * MINUTE_US
#: Bogus reverse records are dated up to this many days after the customer's last real merge.
CYCLE_RECORD_MAX_DELAY_DAYS = 30
#: Mean time from a purchase to its refund (a cancellation on the same day).
MEAN_REFUND_DELAY_US = 45 * MINUTE_US
#: Late merge records arrive 1..this many days after merged_at.
MAX_DELIVERY_DELAY_DAYS = 3
#: Shape of the gamma distribution of personal activity (mean 1): 2 gives a
#: realistic long tail of very active customers without extreme outliers.
ACTIVITY_GAMMA_SHAPE = 2.0
#: Candidate days tried when placing a session on a day the customer is likely to be active.
BUSY_DAY_TRIES = 8
#: Sigma of the log of each customer's own multipliers of activity, unit price,
#: basket size, page views and buying (cart and purchase probabilities) at
#: personal_variation = 1; it grows in proportion to the variation.
PERSONAL_ACTIVITY_SPREAD = 0.3
PERSONAL_PRICE_SPREAD = 1.2
PERSONAL_QUANTITY_SPREAD = 0.8
PERSONAL_BROWSING_SPREAD = 1.2
PERSONAL_BUYING_SPREAD = 1.2
#: Personal cumulative shares are stored in steps of 1/255 (uint8), which keeps
#: a million customers' hour, category and channel profiles in 35 MB.
_PERSONAL_SHARE_STEPS = 255

_NO_LAPSE = np.iinfo(np.int32).max
_NO_MERGE = np.iinfo(np.int32).max
_NEVER_US = np.iinfo(np.int64).min

# Random streams: independent so that, e.g., changing bad_row_rate leaves the
# clean events of a day unchanged.
_POPULATION_STREAM = 0
_SESSION_STREAM = 1
_BAD_ROW_STREAM = 2
# Personal profiles have a stream of their own, so that the variation never
# changes who the customers are, when they join and lapse or which IDs they use.
_TASTE_STREAM = 3


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class SyntheticSettings:
    """Everything that determines the synthetic source; equal settings give equal tables."""

    seed: int = 42
    n_customers: int = 20_000
    #: First day any event can happen.
    start_date: date = date(2025, 1, 1)
    #: Customers join, lapse and merge IDs within [start_date, start_date + horizon_days).
    #: Later days still have events from the customers active at the horizon's end.
    horizon_days: int = 730
    #: Share of customers who used at least one earlier ID that was later merged.
    merge_probability: float = 0.08
    #: Of those, share with a two-step chain A -> B -> C.
    chain_probability: float = 0.25
    #: Share of merge records delivered 1..3 days after merged_at.
    late_arrival_probability: float = 0.10
    #: Number of merged customers whose history also contains a bogus reverse
    #: record (primary -> first alias) closing a cycle; an absolute count, capped
    #: at the number of merged customers, so that every population but the
    #: tiniest has cycles and their number does not grow with the population.
    cycle_customers: int = 3
    #: Number of merge records from a junk ID to an unrelated customer's primary ID.
    junk_hub_links: int = 12
    #: Share of event rows deliberately broken so that quarantine is exercised.
    bad_row_rate: float = 0.0005
    #: How far customers depart from their archetype, in [0, 1]. Each customer's
    #: category, channel, weekday and hour weights are (1 - v) * the archetype's
    #: + v * a personal profile drawn once per customer; the spread of their
    #: activity, price level, basket size, page views and buying around the
    #: archetype's grows with v. At 0 every customer is a copy of their archetype,
    #: and k-means on a year of behaviour recovers the archetypes almost perfectly
    #: (adjusted Rand index about 0.98 on customers with 3+ sessions). The default
    #: is chosen to leave them recoverable but blurred, as real segments are:
    #: about 0.85 on those customers and 0.65 on all active customers.
    personal_variation: float = 0.29
    #: True effect of a campaign, to measure campaign_results against a known answer: on each day
    #: after an export, the customers of the treatment lists the campaign tools hold (the latest
    #: complete export before the day) visit at (1 + campaign_uplift) times their usual rate, so their
    #: expected purchases, orders and revenue per day are (1 + campaign_uplift) times what they would
    #: have been. The control group and everyone else are untouched. 0: no campaign effect, and the
    #: events are those of a source without campaigns, to the byte.
    campaign_uplift: float = 0.0

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "seed", "a non-negative integer", self.seed)
        _require(self.n_customers >= 1, "n_customers", "at least 1", self.n_customers)
        _require(self.horizon_days >= 1, "horizon_days", "at least 1", self.horizon_days)
        _require(self.cycle_customers >= 0, "cycle_customers", "at least 0", self.cycle_customers)
        _require(self.junk_hub_links >= 0, "junk_hub_links", "at least 0", self.junk_hub_links)
        for name in (
            "merge_probability",
            "chain_probability",
            "late_arrival_probability",
            "bad_row_rate",
        ):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, name, "a probability in [0, 1]", value)
        _require(
            0.0 <= self.personal_variation <= 1.0, "personal_variation", "a share in [0, 1]", self.personal_variation
        )
        _require(self.campaign_uplift >= -1.0, "campaign_uplift", "at least -1 (-100%)", self.campaign_uplift)


def _require(condition: bool, name: str, expected: str, found: object) -> None:
    if not condition:
        raise PipelineError(f"SyntheticSettings.{name}: expected {expected}, found {found!r}")


# ------------------------------------------------------------------ archetypes


@dataclass(frozen=True)
class Archetype:
    """How one kind of customer behaves; rates are population means before personal heterogeneity."""

    name: str
    #: Share of the population.
    weight: float
    #: Sessions per active year before weekday and lifecycle factors.
    sessions_per_year: float
    #: Relative activity Monday..Sunday (normalised to a mean of 1).
    weekday_weights: tuple[float, ...]
    #: Relative weight of each UTC hour as a session start.
    hour_weights: tuple[float, ...]
    #: Mean page views per session beyond the first.
    extra_pages: float
    cart_probability: float
    #: Probability of a purchase given an add_to_cart.
    purchase_probability: float
    #: Probability that a purchase is refunded later the same day.
    refund_probability: float
    unit_price_median: float
    #: Sigma of the log of the unit price.
    unit_price_spread: float
    #: Quantity is 1 + Poisson(extra_quantity).
    extra_quantity: float
    #: Relative weight of each product category, drawn per page view.
    category_weights: tuple[float, ...]
    #: Relative weight of each channel, drawn per session.
    channel_weights: tuple[float, ...]
    #: Share already a customer on start_date; the rest join within the horizon.
    existing_share: float
    #: Probability of lapsing within the horizon.
    churn_probability: float
    #: Activity is multiplied by burst_factor during the first burst_days after joining.
    burst_days: int = 0
    burst_factor: float = 1.0
    #: Activity fades linearly over the fade_days before the lapse, down to fade_floor.
    fade_days: int = 0
    fade_floor: float = 1.0


def _shares(names: tuple[str, ...], **weights: float) -> tuple[float, ...]:
    """Weights by name, in the order of `names`; names left out weigh nothing."""
    unknown = set(weights) - set(names)
    if unknown:
        raise PipelineError(f"unknown names {sorted(unknown)}; expected some of {names}")
    return tuple(float(weights.get(name, 0.0)) for name in names)


def _categories(**weights: float) -> tuple[float, ...]:
    return _shares(PRODUCT_CATEGORIES, **weights)


def _channels(**weights: float) -> tuple[float, ...]:
    return _shares(CHANNELS, **weights)


def _daily_rhythm(*peaks: tuple[float, float, float], floor: float) -> tuple[float, ...]:
    """24 hourly weights: Gaussian bumps (hour, width, height) on a circular day, over a floor."""
    hours = np.arange(24.0)
    weights = np.full(24, floor)
    for centre, width, height in peaks:
        distance = np.minimum(np.abs(hours - centre), 24.0 - np.abs(hours - centre))
        weights += height * np.exp(-0.5 * (distance / width) ** 2)
    return tuple(float(weight) for weight in weights)


_OFFICE_HOURS = tuple(1.0 if 8 <= hour < 18 else 0.0 for hour in range(24))

ARCHETYPES: dict[str, Archetype] = {
    archetype.name: archetype
    for archetype in (
        Archetype(
            # Frequent evening buyers of electronics and home goods, on the web and in store.
            name="loyal_high_value",
            weight=0.12,
            sessions_per_year=11.0,
            weekday_weights=(1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.1),
            hour_weights=_daily_rhythm((20.0, 1.5, 1.5), (12.5, 1.0, 0.4), floor=0.02),
            extra_pages=0.6,
            cart_probability=0.60,
            purchase_probability=0.80,
            refund_probability=0.04,
            unit_price_median=60.0,
            unit_price_spread=0.4,
            extra_quantity=0.8,
            category_weights=_categories(electronics=50, home=25, fashion=12, beauty=5, sports=4, books=4),
            channel_weights=_channels(web=45, store=40, mobile_app=15),
            existing_share=0.7,
            churn_probability=0.03,
        ),
        Archetype(
            # Late-night web deal seekers: groceries and beauty in bulk at low prices.
            name="bargain_hunter",
            weight=0.18,
            sessions_per_year=9.0,
            weekday_weights=(1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.1),
            hour_weights=_daily_rhythm((22.5, 1.2, 1.5), floor=0.02),
            extra_pages=0.5,
            cart_probability=0.45,
            purchase_probability=0.45,
            refund_probability=0.08,
            unit_price_median=8.0,
            unit_price_spread=0.4,
            extra_quantity=1.5,
            category_weights=_categories(grocery=50, beauty=25, toys=12, home=5, fashion=5, books=3),
            channel_weights=_channels(web=70, mobile_app=15, email=15),
            existing_share=0.5,
            churn_probability=0.12,
        ),
        Archetype(
            # Afternoon browsers from social media: many fashion pages, few baskets.
            name="window_shopper",
            weight=0.18,
            sessions_per_year=6.0,
            weekday_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2),
            hour_weights=_daily_rhythm((15.5, 1.8, 1.5), floor=0.03),
            extra_pages=2.0,
            cart_probability=0.08,
            purchase_probability=0.20,
            refund_probability=0.05,
            unit_price_median=30.0,
            unit_price_spread=0.6,
            extra_quantity=0.3,
            category_weights=_categories(fashion=60, beauty=15, electronics=10, home=5, sports=5, books=5),
            channel_weights=_channels(social=60, web=35, mobile_app=5),
            existing_share=0.4,
            churn_probability=0.15,
        ),
        Archetype(
            # App users shopping sports and toys at weekends.
            name="weekend_mobile",
            weight=0.14,
            sessions_per_year=9.0,
            weekday_weights=(0.2, 0.2, 0.2, 0.2, 0.4, 3.0, 3.0),
            hour_weights=_daily_rhythm((11.0, 1.5, 1.0), (19.0, 1.5, 0.7), floor=0.02),
            extra_pages=0.4,
            cart_probability=0.35,
            purchase_probability=0.50,
            refund_probability=0.05,
            unit_price_median=25.0,
            unit_price_spread=0.5,
            extra_quantity=0.5,
            category_weights=_categories(sports=55, toys=20, fashion=15, electronics=5, grocery=5),
            channel_weights=_channels(mobile_app=85, social=15),
            existing_share=0.4,
            churn_probability=0.10,
        ),
        Archetype(
            # Recently acquired through email and social campaigns, discovering books and toys;
            # busy right after joining.
            name="new_customer",
            weight=0.12,
            sessions_per_year=3.5,
            weekday_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.1),
            hour_weights=_daily_rhythm((17.5, 1.5, 1.5), floor=0.03),
            extra_pages=1.0,
            cart_probability=0.35,
            purchase_probability=0.50,
            refund_probability=0.06,
            unit_price_median=35.0,
            unit_price_spread=0.6,
            extra_quantity=0.4,
            category_weights=_categories(books=45, toys=20, beauty=15, sports=10, home=5, fashion=5),
            channel_weights=_channels(email=45, social=45, web=10),
            # New customers join within the horizon by definition.
            existing_share=0.0,
            churn_probability=0.10,
            burst_days=60,
            burst_factor=8.0,
        ),
        Archetype(
            # Existing customers drifting away: morning email readers of home and grocery
            # offers, ever less often, who all lapse within the horizon.
            name="lapsing",
            weight=0.10,
            sessions_per_year=10.0,
            weekday_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.1),
            hour_weights=_daily_rhythm((9.5, 1.5, 1.5), floor=0.03),
            extra_pages=0.5,
            cart_probability=0.30,
            purchase_probability=0.50,
            refund_probability=0.12,
            unit_price_median=30.0,
            unit_price_spread=0.5,
            extra_quantity=0.5,
            category_weights=_categories(home=45, grocery=30, books=10, fashion=5, beauty=5, electronics=5),
            channel_weights=_channels(email=70, web=20, store=10),
            existing_share=1.0,
            churn_probability=1.0,
            fade_days=180,
            fade_floor=0.15,
        ),
        Archetype(
            # Office buyers: weekdays, office hours, the web, electronics and books in quantity.
            name="weekday_business",
            weight=0.16,
            sessions_per_year=9.0,
            weekday_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 0.03, 0.03),
            hour_weights=_OFFICE_HOURS,
            extra_pages=0.4,
            cart_probability=0.50,
            purchase_probability=0.70,
            refund_probability=0.02,
            unit_price_median=40.0,
            unit_price_spread=0.5,
            extra_quantity=3.0,
            category_weights=_categories(electronics=45, books=30, home=20, grocery=5),
            channel_weights=_channels(web=90, email=10),
            existing_share=0.6,
            churn_probability=0.05,
        ),
    )
}

ARCHETYPE_NAMES: tuple[str, ...] = tuple(ARCHETYPES)


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative shares; dividing by the row total makes every entry from the
    last non-zero weight on exactly 1.0, so zero-weight options are never drawn."""
    totals = np.cumsum(weights, axis=1)
    return totals / totals[:, -1:]


@dataclass(frozen=True, eq=False)
class _ArchetypeTables:
    """The archetypes as arrays indexed by archetype code, for per-session lookups."""

    weekday_factor: np.ndarray  # (archetypes, 7), mean 1 per row
    hour_cumulative: np.ndarray  # (archetypes, 24)
    category_cumulative: np.ndarray
    channel_cumulative: np.ndarray
    extra_pages: np.ndarray
    cart_probability: np.ndarray
    purchase_probability: np.ndarray
    refund_probability: np.ndarray
    log_unit_price: np.ndarray
    unit_price_spread: np.ndarray
    extra_quantity: np.ndarray
    daily_sessions: np.ndarray
    existing_share: np.ndarray
    churn_probability: np.ndarray

    @classmethod
    def of(cls, archetypes: tuple[Archetype, ...]) -> _ArchetypeTables:
        def per_archetype(attribute: str) -> np.ndarray:
            return np.array([getattr(archetype, attribute) for archetype in archetypes], dtype=np.float64)

        weekday = per_archetype("weekday_weights")
        return cls(
            weekday_factor=weekday / weekday.mean(axis=1, keepdims=True),
            hour_cumulative=_cumulative(per_archetype("hour_weights")),
            category_cumulative=_cumulative(per_archetype("category_weights")),
            channel_cumulative=_cumulative(per_archetype("channel_weights")),
            extra_pages=per_archetype("extra_pages"),
            cart_probability=per_archetype("cart_probability"),
            purchase_probability=per_archetype("purchase_probability"),
            refund_probability=per_archetype("refund_probability"),
            log_unit_price=np.log(per_archetype("unit_price_median")),
            unit_price_spread=per_archetype("unit_price_spread"),
            extra_quantity=per_archetype("extra_quantity"),
            daily_sessions=per_archetype("sessions_per_year") / 365.0,
            existing_share=per_archetype("existing_share"),
            churn_probability=per_archetype("churn_probability"),
        )


_TABLES = _ArchetypeTables.of(tuple(ARCHETYPES.values()))
_DEVICE_CUMULATIVE = _cumulative(np.array([DEVICE_SHARES_BY_CHANNEL[channel] for channel in CHANNELS]))

_ARCHETYPE_LABELS = pa.array(ARCHETYPE_NAMES, pa.string())
_CATEGORY_LABELS = pa.array(PRODUCT_CATEGORIES, pa.string())
_CHANNEL_LABELS = pa.array(CHANNELS, pa.string())
_DEVICE_LABELS = pa.array(DEVICES, pa.string())
_EVENT_TYPE_LABELS = pa.array((*EVENT_TYPES, UNKNOWN_EVENT_TYPE), pa.string())

_SESSION_START = EVENT_TYPES.index(EventType.SESSION_START.value)
_PAGE_VIEW = EVENT_TYPES.index(EventType.PAGE_VIEW.value)
_ADD_TO_CART = EVENT_TYPES.index(EventType.ADD_TO_CART.value)
_PURCHASE = EVENT_TYPES.index(EventType.PURCHASE.value)
_REFUND = EVENT_TYPES.index(EventType.REFUND.value)
_UNKNOWN = len(EVENT_TYPES)
#: The steps of a session after its page views, in order; a session stops at any step.
_FUNNEL = np.array([_PAGE_VIEW, _ADD_TO_CART, _PURCHASE, _REFUND], dtype=np.int8)
#: Mean pause before an event of each type (µs); refunds are timed separately.
_MEAN_PAUSE_US = np.zeros(len(EVENT_TYPES) + 1)
_MEAN_PAUSE_US[[_PAGE_VIEW, _ADD_TO_CART, _PURCHASE]] = (75 * SECOND_US, 120 * SECOND_US, 240 * SECOND_US)


def _draw_categorical(rng: np.random.Generator, cumulative: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One option per element, drawn from the row of `cumulative` named by `rows`."""
    return _pick(cumulative, rows, rng.random(rows.size))


def _pick(cumulative: np.ndarray, rows: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The option of each uniform in [0, 1) in the row of `cumulative` named by `rows`.

    Shifting row r's thresholds by r turns the per-row lookup into a single
    searchsorted over all rows.
    """
    n_rows, n_options = cumulative.shape
    thresholds = (cumulative + np.arange(n_rows)[:, None]).ravel()
    picks = np.searchsorted(thresholds, uniforms + rows, side="right") - rows * n_options
    return np.minimum(picks, n_options - 1)


def _draw_with_taste(
    rng: np.random.Generator,
    archetype_cumulative: np.ndarray,
    archetype: np.ndarray,
    personal_cumulative: np.ndarray,
    customer: np.ndarray,
    variation: float,
) -> np.ndarray:
    """One option per element from (1 - variation) * the archetype's weights + variation * the customer's own.

    A draw from a mix is a draw from one of its parts, chosen with the mixing
    weights. One uniform both chooses the part and the option in it, so the
    draw takes as many random numbers as a draw from the archetype alone, and
    variation 0 gives exactly that draw.
    """
    uniforms = rng.random(customer.size)
    # A uniform below `variation` picks from the customer's own taste, one above it from the archetype's.
    # Every element gets the archetype's option first; those that drew their own taste are then overwritten.
    picks = _pick(_squeezed_above(archetype_cumulative, variation), archetype, uniforms)
    personal = np.flatnonzero(uniforms < variation)
    picks[personal] = _pick_personal(personal_cumulative[customer[personal]], uniforms[personal] / variation)
    return picks


def _squeezed_above(cumulative: np.ndarray, low: float) -> np.ndarray:
    """Cumulative shares moved onto [low, 1]: a uniform in [low, 1) picks from them as a uniform
    in [0, 1) picks from `cumulative`. Shares of exactly 1 stay exactly 1, so that the trailing
    zero-weight options are never picked; at low = 0 the shares are returned unchanged."""
    return np.where(cumulative >= 1.0, 1.0, low + (1.0 - low) * cumulative)


def _pick_personal(cumulative: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The option of each uniform in [0, 1] in its own row of uint8 cumulative shares (last column 255)."""
    # A uniform rounded up to 1 must stay below the last column.
    level = np.minimum(uniforms * _PERSONAL_SHARE_STEPS, _PERSONAL_SHARE_STEPS - 1).astype(np.uint8)
    # The first option whose cumulative share passes the level.
    return np.argmax(cumulative > level[:, None], axis=1)


# ------------------------------------------------------------------ population


@dataclass(frozen=True, eq=False)
class Population:
    """The synthetic customers, drawn once per settings; its arrays are read-only.

    Customers are stored grouped by archetype (block k holds archetype k), so
    per-archetype factors apply to contiguous slices; their primary IDs are a
    random permutation, so the ID says nothing about the archetype. Days are
    counted from start_date; times are microseconds since the Unix epoch (UTC).

    Each customer's own profiles are stored whatever the variation: it only sets
    how much they weigh against the archetype's when a day is drawn.
    """

    settings: SyntheticSettings
    #: Code of each customer's archetype (index into ARCHETYPE_NAMES).
    archetype_code: np.ndarray
    #: [start, stop) of each archetype's block of customers.
    archetype_blocks: tuple[tuple[int, int], ...]
    #: Day of joining; negative when already a customer on start_date.
    join_day: np.ndarray
    #: First day without activity; a huge value when the customer never lapses.
    lapse_day: np.ndarray
    #: Sessions per day on each weekday before lifecycle factors, shape (7, customers): the
    #: archetype's rate x personal activity x the customer's weekday factor, which is
    #: (1 - v) * the archetype's + v * their own (both mean 1 over the week).
    weekday_rate: np.ndarray
    #: The customer's own hour, category and channel profiles: cumulative shares in
    #: steps of 1/255, shape (customers, options), uint8, last column 255.
    hour_taste: np.ndarray
    category_taste: np.ndarray
    channel_taste: np.ndarray
    #: Log of the customer's median unit price relative to their archetype's (float32).
    price_level: np.ndarray
    #: Multiplier of the archetype's mean extra quantity per basket (float32).
    quantity_factor: np.ndarray
    #: Multiplier of the archetype's mean extra page views per session (float32).
    browsing_factor: np.ndarray
    #: Multiplier of the archetype's cart and purchase probabilities, capped at certainty (float32).
    buying_factor: np.ndarray
    #: Every ID any customer used; customer i's primary ID is at position i.
    id_pool: pa.StringArray
    #: Customer of each ID in id_pool.
    id_owner: np.ndarray
    #: Positions in id_pool: the ID used before first_merge_day, then before last_merge_day,
    #: then the primary. Merge days are a huge value for customers who never merged.
    first_id: np.ndarray
    middle_id: np.ndarray
    first_merge_day: np.ndarray
    last_merge_day: np.ndarray
    #: Sessions known in advance, sorted by day: one with each alias before its merge,
    #: on top of the customer's random sessions.
    pinned_session_day: np.ndarray
    pinned_session_customer: np.ndarray
    #: ID_HISTORY rows in delivery order, and the delivery day of each.
    merge_records: pa.Table
    merge_delivery_day: np.ndarray

    def __post_init__(self) -> None:
        # The population is cached and shared by every day: a caller must not be able to change it.
        for field_ in fields(self):
            value = getattr(self, field_.name)
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    @property
    def n_customers(self) -> int:
        return int(self.archetype_code.size)

    @property
    def variation(self) -> float:
        return self.settings.personal_variation

    @property
    def nbytes(self) -> int:
        """Memory held by the population's arrays and Arrow tables."""
        held = (value for value in vars(self).values() if isinstance(value, (np.ndarray, pa.Array, pa.Table)))
        return sum(value.nbytes for value in held)

    def id_on_day(self, customer: np.ndarray, offset: int) -> np.ndarray:
        """Position in id_pool of the ID each customer goes by all day on day `offset`."""
        return np.where(
            offset < self.first_merge_day[customer],
            self.first_id[customer],
            np.where(offset < self.last_merge_day[customer], self.middle_id[customer], customer),
        )


@dataclass(frozen=True, eq=False)
class _Lifecycles:
    join_day: np.ndarray
    lapse_day: np.ndarray


@dataclass(frozen=True, eq=False)
class _Tastes:
    """What makes each customer more than a copy of their archetype; the Population keeps them as
    hour_taste, category_taste, channel_taste and the factors of the same names."""

    #: The customer's own weekday factors, shape (customers, 7), mean 1 over the week.
    weekday: np.ndarray
    hour: np.ndarray
    category: np.ndarray
    channel: np.ndarray
    #: Multiplier of the session rate, mean 1.
    activity: np.ndarray
    price_level: np.ndarray
    quantity_factor: np.ndarray
    browsing_factor: np.ndarray
    buying_factor: np.ndarray


@dataclass(frozen=True, eq=False)
class _Identities:
    id_pool: pa.StringArray
    id_owner: np.ndarray
    first_id: np.ndarray
    middle_id: np.ndarray
    first_merge_day: np.ndarray
    last_merge_day: np.ndarray
    first_merge_us: np.ndarray
    last_merge_us: np.ndarray
    merged: np.ndarray  # customers with at least one alias
    chained: np.ndarray  # customers with two aliases
    pinned_session_day: np.ndarray
    pinned_session_customer: np.ndarray


@functools.lru_cache(maxsize=4)
def population(settings: SyntheticSettings) -> Population:
    """The customers of these settings: deterministic, drawn once and cached."""
    rng = np.random.default_rng([settings.seed, _POPULATION_STREAM])
    archetype_code, blocks = _assign_archetypes(rng, settings.n_customers)
    lifecycles = _draw_lifecycles(rng, settings, archetype_code)
    activity = rng.gamma(ACTIVITY_GAMMA_SHAPE, 1.0 / ACTIVITY_GAMMA_SHAPE, settings.n_customers)
    tastes = _draw_tastes(settings)
    weekday_factor = _weekday_factors(settings.personal_variation, archetype_code, tastes.weekday)
    identities = _draw_identities(rng, settings, lifecycles, weekday_factor)
    # In place: at a million customers the (7, customers) arrays are 56 MB each.
    weekday_rate = weekday_factor
    weekday_rate *= _TABLES.daily_sessions[archetype_code] * (activity * tastes.activity)
    records, delivery_day = _merge_records(rng, settings, identities)
    return Population(
        settings=settings,
        archetype_code=archetype_code,
        archetype_blocks=blocks,
        join_day=lifecycles.join_day,
        lapse_day=lifecycles.lapse_day,
        weekday_rate=weekday_rate,
        hour_taste=tastes.hour,
        category_taste=tastes.category,
        channel_taste=tastes.channel,
        price_level=tastes.price_level,
        quantity_factor=tastes.quantity_factor,
        browsing_factor=tastes.browsing_factor,
        buying_factor=tastes.buying_factor,
        id_pool=identities.id_pool,
        id_owner=identities.id_owner,
        first_id=identities.first_id,
        middle_id=identities.middle_id,
        first_merge_day=identities.first_merge_day,
        last_merge_day=identities.last_merge_day,
        pinned_session_day=identities.pinned_session_day,
        pinned_session_customer=identities.pinned_session_customer,
        merge_records=records,
        merge_delivery_day=delivery_day,
    )


def _assign_archetypes(
    rng: np.random.Generator, n_customers: int
) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    weights = np.array([archetype.weight for archetype in ARCHETYPES.values()])
    counts = rng.multinomial(n_customers, weights / weights.sum())
    stops = np.cumsum(counts)
    blocks = tuple((int(stop - count), int(stop)) for count, stop in zip(counts, stops))
    return np.repeat(np.arange(len(ARCHETYPES), dtype=np.int8), counts), blocks


def _draw_tastes(settings: SyntheticSettings) -> _Tastes:
    """Each customer's own profiles and multipliers.

    The profiles are drawn the same whatever the variation, which only scales
    their weight and the spread of the multipliers: raising it moves each
    customer steadily away from their archetype, towards a taste of their own.
    """
    rng = np.random.default_rng([settings.seed, _TASTE_STREAM])
    n, variation = settings.n_customers, settings.personal_variation
    weekday = _personal_weights(rng, n, 7)
    weekday *= 7.0 / weekday.sum(axis=1, keepdims=True)
    return _Tastes(
        weekday=weekday,
        hour=_cumulative_steps(_personal_weights(rng, n, 24)),
        category=_cumulative_steps(_personal_weights(rng, n, len(PRODUCT_CATEGORIES))),
        channel=_cumulative_steps(_personal_weights(rng, n, len(CHANNELS))),
        activity=_mean_one_factors(rng, n, PERSONAL_ACTIVITY_SPREAD * variation).astype(np.float64),
        price_level=np.float32(PERSONAL_PRICE_SPREAD * variation) * rng.standard_normal(n, dtype=np.float32),
        quantity_factor=_mean_one_factors(rng, n, PERSONAL_QUANTITY_SPREAD * variation),
        browsing_factor=_mean_one_factors(rng, n, PERSONAL_BROWSING_SPREAD * variation),
        buying_factor=_mean_one_factors(rng, n, PERSONAL_BUYING_SPREAD * variation),
    )


def _personal_weights(rng: np.random.Generator, n_customers: int, n_options: int) -> np.ndarray:
    """Weights whose row-wise shares are a symmetric Dirichlet(1/2) draw per customer, float32.

    A concentration below 1 makes a customer's own taste favour a few options,
    as a person has a favourite department and a usual time. A Gamma(1/2) is
    half a squared standard normal, and squared normals draw several times
    faster than gammas.
    """
    normals = rng.standard_normal((n_customers, n_options), dtype=np.float32)
    return np.square(normals, out=normals)


def _cumulative_steps(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative shares in steps of 1/255 as uint8; the last column is 255. Uses up `weights`."""
    totals = np.cumsum(weights, axis=1, out=weights)
    totals *= _PERSONAL_SHARE_STEPS / totals[:, -1:]
    totals += 0.5
    return totals.astype(np.uint8)


def _mean_one_factors(rng: np.random.Generator, n_customers: int, sigma: float) -> np.ndarray:
    """Log-normal multipliers with mean 1 (float32); exactly 1 when sigma is 0."""
    normals = rng.standard_normal(n_customers, dtype=np.float32)
    return np.exp(np.float32(sigma) * normals - np.float32(sigma * sigma / 2))


def _weekday_factors(variation: float, archetype_code: np.ndarray, personal: np.ndarray) -> np.ndarray:
    """Each customer's weekday factors, shape (7, customers): (1 - variation) * their archetype's
    + variation * their own (`personal`, shape (customers, 7)); exactly the archetype's at 0."""
    # take, unlike [:, codes], gives a C-ordered array: each weekday's row is contiguous.
    factors = _TABLES.weekday_factor.T.take(archetype_code, axis=1)
    factors *= 1.0 - variation
    factors += variation * personal.T
    return factors


def _draw_lifecycles(
    rng: np.random.Generator, settings: SyntheticSettings, archetype_code: np.ndarray
) -> _Lifecycles:
    n, horizon = settings.n_customers, settings.horizon_days
    existing = rng.random(n) < _TABLES.existing_share[archetype_code]
    join_day = np.where(
        existing,
        -rng.integers(1, PRE_START_HISTORY_DAYS + 1, n),
        rng.integers(0, horizon, n),
    ).astype(np.int32)
    earliest_lapse = np.maximum(join_day, 0) + MIN_DAYS_BEFORE_LAPSE
    lapse_offset = np.floor(rng.random(n) * (horizon - earliest_lapse)).astype(np.int64)
    # Only where the horizon leaves room after the minimum stay can a customer lapse in it.
    lapses = (rng.random(n) < _TABLES.churn_probability[archetype_code]) & (earliest_lapse < horizon)
    lapse_day = np.where(lapses, earliest_lapse + lapse_offset, _NO_LAPSE).astype(np.int32)
    return _Lifecycles(join_day=join_day, lapse_day=lapse_day)


def _id_strings(prefix: str, numbers: np.ndarray, width: int) -> pa.StringArray:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _start_us(settings: SyntheticSettings) -> int:
    return (settings.start_date.toordinal() - _EPOCH_ORDINAL) * DAY_US


def _draw_identities(
    rng: np.random.Generator,
    settings: SyntheticSettings,
    lifecycles: _Lifecycles,
    weekday_factor: np.ndarray,
) -> _Identities:
    """Who merged when: a guest ID merged into the primary, or guest -> account -> primary.

    Merges happen between the customer's joining and lapse, inside the horizon.
    Each alias gets a session on a day it is in force, so every alias is seen
    in the events before it disappears; the day is likelier on the weekdays the
    customer is active (`weekday_factor`, shape (7, customers)).
    """
    n = settings.n_customers
    first_active = np.maximum(lifecycles.join_day, 0).astype(np.int64)
    stop_active = np.minimum(lifecycles.lapse_day, settings.horizon_days).astype(np.int64)
    active_days = stop_active - first_active
    # A merge needs a day with the alias before it; a chain also a day with the middle ID.
    merged = (active_days >= 2) & (rng.random(n) < settings.merge_probability)
    chained = merged & (active_days >= 3) & (rng.random(n) < settings.chain_probability)
    first_day = first_active + 1 + _floor(rng.random(n) * np.maximum(active_days - 1 - chained, 0))
    days_after_first = np.maximum(stop_active - 1 - first_day, 0)
    last_day = np.where(chained, first_day + 1 + _floor(rng.random(n) * days_after_first), first_day)
    # The nightly identity job runs in the first minutes of the day.
    start_us = _start_us(settings)
    first_merge_us = start_us + first_day * DAY_US + _whole_seconds(rng.random(n) * MERGE_WINDOW_US)
    last_merge_us = np.where(
        chained,
        start_us + last_day * DAY_US + _whole_seconds(rng.random(n) * MERGE_WINDOW_US),
        first_merge_us,
    )
    first_merge_day = np.where(merged, first_day, _NO_MERGE).astype(np.int32)
    last_merge_day = np.where(merged, last_day, _NO_MERGE).astype(np.int32)

    merged_customers, chained_customers = np.flatnonzero(merged), np.flatnonzero(chained)
    width = max(7, len(str(n)))
    id_pool = pa.concat_arrays(
        [
            _id_strings(PRIMARY_PREFIX, rng.permutation(n) + 1, width),
            _id_strings(GUEST_PREFIX, rng.permutation(merged_customers.size) + 1, width),
            _id_strings(ACCOUNT_PREFIX, rng.permutation(chained_customers.size) + 1, width),
        ]
    )
    first_id = np.arange(n, dtype=np.int64)
    first_id[merged_customers] = n + np.arange(merged_customers.size)
    middle_id = np.arange(n, dtype=np.int64)
    middle_id[chained_customers] = n + merged_customers.size + np.arange(chained_customers.size)

    # One session with the guest ID before its first merge, one with the account ID between the two.
    pinned_customer = np.concatenate([merged_customers, chained_customers])
    pinned_day = _busy_days(
        rng,
        settings.start_date.weekday(),
        weekday_factor[:, pinned_customer].T,
        first=np.concatenate([first_active[merged_customers], first_day[chained_customers]]),
        stop=np.concatenate([first_day[merged_customers], last_day[chained_customers]]),
    )
    pinned_order = np.lexsort((pinned_customer, pinned_day))
    return _Identities(
        id_pool=id_pool,
        id_owner=np.concatenate([np.arange(n), merged_customers, chained_customers]),
        first_id=first_id,
        middle_id=middle_id,
        first_merge_day=first_merge_day,
        last_merge_day=last_merge_day,
        first_merge_us=np.where(merged, first_merge_us, _NEVER_US),
        last_merge_us=np.where(merged, last_merge_us, _NEVER_US),
        merged=merged,
        chained=chained,
        pinned_session_day=pinned_day[pinned_order].astype(np.int32),
        pinned_session_customer=pinned_customer[pinned_order],
    )


def _busy_days(
    rng: np.random.Generator, start_weekday: int, weekday_factor: np.ndarray, first: np.ndarray, stop: np.ndarray
) -> np.ndarray:
    """A day in [first, stop) for each customer, likelier on the weekdays they are active.

    `weekday_factor` has a row of Monday..Sunday factors per customer.
    Rejection sampling over a few uniform candidates; if all are rejected, the last one is kept.
    """
    candidates = rng.integers(first[:, None], stop[:, None], (first.size, BUSY_DAY_TRIES))
    candidate_factor = np.take_along_axis(weekday_factor, (start_weekday + candidates) % 7, axis=1)
    busiest = weekday_factor.max(axis=1)[:, None]
    accepted = rng.random(candidates.shape) * busiest < candidate_factor
    pick = np.where(accepted.any(axis=1), accepted.argmax(axis=1), BUSY_DAY_TRIES - 1)
    return candidates[np.arange(first.size), pick]


def _whole_seconds(duration_us: np.ndarray) -> np.ndarray:
    return (np.floor(duration_us / SECOND_US) * SECOND_US).astype(np.int64)


def _floor(values: np.ndarray) -> np.ndarray:
    return np.floor(values).astype(np.int64)


@dataclass(frozen=True, eq=False)
class _Links:
    """Merge records as positions in a pool of ID strings and merge times (µs)."""

    old: np.ndarray
    new: np.ndarray
    merged_at_us: np.ndarray

    @staticmethod
    def concat(parts: list[_Links]) -> _Links:
        return _Links(
            old=np.concatenate([part.old for part in parts]).astype(np.int64),
            new=np.concatenate([part.new for part in parts]).astype(np.int64),
            merged_at_us=np.concatenate([part.merged_at_us for part in parts]).astype(np.int64),
        )


def _merge_records(
    rng: np.random.Generator, settings: SyntheticSettings, identities: _Identities
) -> tuple[pa.Table, np.ndarray]:
    merged_customers = np.flatnonzero(identities.merged)
    chained_customers = np.flatnonzero(identities.chained)
    genuine = _Links(
        # A guest ID merges into the account ID of a chain, or straight into the primary.
        old=np.concatenate([identities.first_id[merged_customers], identities.middle_id[chained_customers]]),
        new=np.concatenate([identities.middle_id[merged_customers], chained_customers]),
        merged_at_us=np.concatenate(
            [identities.first_merge_us[merged_customers], identities.last_merge_us[chained_customers]]
        ),
    )
    junk_pool_start = len(identities.id_pool)
    links = _Links.concat(
        [genuine, _cycle_links(rng, settings, identities), _junk_links(rng, settings, junk_pool_start)]
    )
    delay_days = np.where(
        rng.random(links.old.size) < settings.late_arrival_probability,
        rng.integers(1, MAX_DELIVERY_DELAY_DAYS + 1, links.old.size),
        0,
    )
    delivered_us = links.merged_at_us + delay_days * DAY_US
    order = np.lexsort((links.merged_at_us, delivered_us))
    id_strings = pa.concat_arrays([identities.id_pool, pa.array(JUNK_HUB_IDS, pa.string())])
    records = pa.Table.from_arrays(
        [
            id_strings.take(pa.array(links.old[order])),
            id_strings.take(pa.array(links.new[order])),
            pa.array(links.merged_at_us[order], UTC_TIMESTAMP),
        ],
        schema=ID_HISTORY.schema,
    )
    delivery_day = ((delivered_us[order] - _start_us(settings)) // DAY_US).astype(np.int32)
    return records, delivery_day


def _cycle_links(rng: np.random.Generator, settings: SyntheticSettings, identities: _Identities) -> _Links:
    """Bogus reverse records primary -> first alias, dated after the customer's last real merge."""
    horizon_end_us = _start_us(settings) + settings.horizon_days * DAY_US
    # A reverse record needs room inside the horizon after the last merge.
    candidates = np.flatnonzero(identities.merged & (identities.last_merge_us < horizon_end_us - DAY_US))
    count = min(settings.cycle_customers, candidates.size)
    chosen = np.sort(rng.choice(candidates, size=count, replace=False))
    last_merge_us = identities.last_merge_us[chosen]
    latest_us = np.minimum(last_merge_us + CYCLE_RECORD_MAX_DELAY_DAYS * DAY_US, horizon_end_us)
    room_us = latest_us - last_merge_us - SECOND_US
    merged_at_us = last_merge_us + SECOND_US + _whole_seconds(rng.random(count) * room_us)
    return _Links(old=chosen, new=identities.first_id[chosen], merged_at_us=merged_at_us)


def _junk_links(rng: np.random.Generator, settings: SyntheticSettings, junk_pool_start: int) -> _Links:
    """Junk IDs linked to unrelated customers' primary IDs, spread over the horizon."""
    count = min(settings.junk_hub_links, settings.n_customers)
    customers = rng.choice(settings.n_customers, size=count, replace=False)
    offsets = _whole_seconds(rng.random(count) * settings.horizon_days * DAY_US)
    return _Links(
        old=junk_pool_start + np.arange(count) % len(JUNK_HUB_IDS),
        new=customers,
        merged_at_us=_start_us(settings) + offsets,
    )


# ------------------------------------------------------------------ merges and truth


def merges_for_day(settings: SyntheticSettings, day: date) -> pa.Table:
    """The ID merge records delivered on `day` (ID_HISTORY schema); merged_at may be earlier."""
    people = population(settings)
    offset = (day - settings.start_date).days
    first, stop = np.searchsorted(people.merge_delivery_day, [offset, offset + 1])
    return people.merge_records.slice(int(first), int(stop - first))


def truth_fingerprint(settings: SyntheticSettings) -> str:
    """What a stored ground truth was made from: the settings and this generator's code. A stored
    truth with the same fingerprint is the one `ground_truth` would make again."""
    return hashlib.sha256((repr(settings) + Path(__file__).read_text(encoding="utf-8")).encode()).hexdigest()


def ground_truth(settings: SyntheticSettings) -> pa.Table:
    """One row per ID any customer ever used, with its person (final primary ID) and archetype.

    Junk IDs are nobody's and are not in the truth.
    """
    people = population(settings)
    owner = people.id_owner
    epoch_day = settings.start_date.toordinal() - _EPOCH_ORDINAL
    lapse_day = people.lapse_day[owner]
    truth = pa.Table.from_arrays(
        [
            people.id_pool,
            people.id_pool.take(pa.array(owner)),
            _ARCHETYPE_LABELS.take(pa.array(people.archetype_code[owner])),
            pa.array(epoch_day + people.join_day[owner].astype(np.int32), pa.int32()).cast(pa.date32()),
            pa.array(epoch_day + lapse_day, pa.int32(), mask=lapse_day == _NO_LAPSE).cast(pa.date32()),
        ],
        schema=SYNTHETIC_TRUTH.schema,
    )
    return truth.sort_by([("person_id", "ascending"), ("customer_id", "ascending")])


def customers_of(settings: SyntheticSettings, ids: Iterable[str]) -> np.ndarray:
    """Positions of the customers who go by `ids` (any ID they used: guest, account or primary),
    sorted and unique; IDs the source never issued (junk, another source's) are left out."""
    people = population(settings)
    wanted = pa.array(sorted(set(ids)), pa.string())
    positions = pc.index_in(wanted, value_set=people.id_pool).drop_null().to_numpy(zero_copy_only=False)
    return np.unique(people.id_owner[positions.astype(np.int64)])


# ------------------------------------------------------------------ events


@dataclass(frozen=True, eq=False)
class _Sessions:
    """The sessions of one day, in order of start time."""

    customer: np.ndarray
    archetype: np.ndarray
    start_us: np.ndarray
    id_position: np.ndarray
    channel: np.ndarray
    device: np.ndarray
    pages: np.ndarray
    has_cart: np.ndarray
    has_purchase: np.ndarray
    has_refund: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray

    @property
    def length(self) -> np.ndarray:
        """Events per session: the start, the page views and the funnel steps reached."""
        return 1 + self.pages + self.has_cart + self.has_purchase + self.has_refund


@dataclass(frozen=True, eq=False)
class _Events:
    """The events of one day in generation order; bad-row injection edits these arrays in place."""

    session: np.ndarray
    event_type: np.ndarray
    timestamp_us: np.ndarray
    category: np.ndarray
    amount: np.ndarray
    quantity: np.ndarray
    customer_missing: np.ndarray


def events_for_day(settings: SyntheticSettings, day: date, campaign_customers: np.ndarray | None = None) -> pa.Table:
    """The events of `day`, sorted by timestamp (SYNTHETIC_EVENTS_SCHEMA).

    A function of (settings, day) only, and of `campaign_customers` (positions of customers, see
    `customers_of`) when settings.campaign_uplift is not 0: the customers a campaign is running for
    on the day, whose session rate is multiplied by 1 + campaign_uplift. Days before start_date
    have no events.
    """
    offset = (day - settings.start_date).days
    if offset < 0:
        return SYNTHETIC_EVENTS_SCHEMA.empty_table()
    people = population(settings)
    day_start_us = (day.toordinal() - _EPOCH_ORDINAL) * DAY_US
    rng = np.random.default_rng([settings.seed, day.toordinal(), _SESSION_STREAM])
    responding = campaign_customers if settings.campaign_uplift and campaign_customers is not None else None
    sessions = _draw_sessions(
        rng, people, offset, day.weekday(), day_start_us, responding, 1.0 + settings.campaign_uplift
    )
    events = _expand_sessions(rng, people, sessions, day_start_us + DAY_US)
    if settings.bad_row_rate > 0:
        bad_row_rng = np.random.default_rng([settings.seed, day.toordinal(), _BAD_ROW_STREAM])
        _break_rows(bad_row_rng, events, settings.bad_row_rate, day_start_us + DAY_US)
    return _event_table(people, sessions, events, day)


def _session_rates(people: Population, offset: int, weekday: int) -> np.ndarray:
    """Expected sessions of each customer on the day."""
    rates = people.weekday_rate[weekday].copy()
    for archetype, (first, stop) in zip(ARCHETYPES.values(), people.archetype_blocks):
        block = slice(first, stop)
        if archetype.burst_days:
            rates[block] *= _burst_factor(archetype, offset - people.join_day[block])
        if archetype.fade_days:
            rates[block] *= _fade_factor(archetype, people.lapse_day[block] - offset)
    rates[(people.join_day > offset) | (people.lapse_day <= offset)] = 0.0
    return rates


def _burst_factor(archetype: Archetype, days_since_join: np.ndarray) -> np.ndarray:
    in_burst = (days_since_join >= 0) & (days_since_join < archetype.burst_days)
    return np.where(in_burst, archetype.burst_factor, 1.0)


def _fade_factor(archetype: Archetype, days_to_lapse: np.ndarray) -> np.ndarray:
    return np.clip(days_to_lapse / archetype.fade_days, archetype.fade_floor, 1.0)


def _draw_sessions(
    rng: np.random.Generator,
    people: Population,
    offset: int,
    weekday: int,
    day_start_us: int,
    responding: np.ndarray | None = None,
    response: float = 1.0,
) -> _Sessions:
    """Who starts a session when, and what happens in it.

    Independent Poisson counts per customer are drawn as one Poisson total split
    in proportion to the rates: the same distribution, without a draw per customer.
    The sessions pinned to the day are added to the random ones. The `responding`
    customers' rates are multiplied by `response` (a campaign's effect).
    """
    rates = _session_rates(people, offset, weekday)
    if responding is not None and responding.size:
        rates[responding] *= response
    cumulative = np.cumsum(rates)
    total = float(cumulative[-1])
    count = int(rng.poisson(total))
    # Sorted needles keep the search cache-friendly on a million-customer array.
    needles = np.sort(rng.random(count)) * total
    customer = np.minimum(np.searchsorted(cumulative, needles, side="right"), people.n_customers - 1)
    first_pinned, stop_pinned = np.searchsorted(people.pinned_session_day, [offset, offset + 1])
    customer = np.concatenate([customer, people.pinned_session_customer[first_pinned:stop_pinned]])
    archetype = people.archetype_code[customer].astype(np.int64)
    hour = _draw_with_taste(rng, _TABLES.hour_cumulative, archetype, people.hour_taste, customer, people.variation)
    start_us = day_start_us + hour * HOUR_US + rng.integers(0, HOUR_US, customer.size)
    order = np.argsort(start_us, kind="stable")
    customer, archetype, start_us = customer[order], archetype[order], start_us[order]
    # The ID in force all day: merges happen in the first minutes of a day, so none is mid-session.
    id_position = people.id_on_day(customer, offset)
    return _session_contents(rng, people, customer, archetype, start_us, id_position)


def _session_contents(
    rng: np.random.Generator,
    people: Population,
    customer: np.ndarray,
    archetype: np.ndarray,
    start_us: np.ndarray,
    id_position: np.ndarray,
) -> _Sessions:
    count = customer.size
    channel = _draw_with_taste(
        rng, _TABLES.channel_cumulative, archetype, people.channel_taste, customer, people.variation
    )
    buying = people.buying_factor[customer]
    has_cart = rng.random(count) < np.minimum(_TABLES.cart_probability[archetype] * buying, 1.0)
    has_purchase = has_cart & (rng.random(count) < np.minimum(_TABLES.purchase_probability[archetype] * buying, 1.0))
    quantity = 1 + rng.poisson(_TABLES.extra_quantity[archetype] * people.quantity_factor[customer])
    log_unit_price = _TABLES.log_unit_price[archetype] + people.price_level[customer]
    unit_price = rng.lognormal(log_unit_price, _TABLES.unit_price_spread[archetype])
    return _Sessions(
        customer=customer,
        archetype=archetype,
        start_us=start_us,
        id_position=id_position,
        channel=channel,
        device=_draw_categorical(rng, _DEVICE_CUMULATIVE, channel),
        pages=1 + rng.poisson(_TABLES.extra_pages[archetype] * people.browsing_factor[customer]),
        has_cart=has_cart,
        has_purchase=has_purchase,
        has_refund=has_purchase & (rng.random(count) < _TABLES.refund_probability[archetype]),
        quantity=quantity,
        amount=np.maximum(np.round(unit_price * quantity, 2), 0.01),
    )


def _expand_sessions(rng: np.random.Generator, people: Population, sessions: _Sessions, day_end_us: int) -> _Events:
    """One row per event: session_start, page views, then the funnel steps the session reached."""
    length = sessions.length
    session = np.repeat(np.arange(length.size), length)
    first_event = np.cumsum(length) - length
    position = np.arange(session.size) - first_event[session]
    funnel_step = position - sessions.pages[session]
    event_type = np.where(position == 0, _SESSION_START, _FUNNEL[np.clip(funnel_step, 0, _FUNNEL.size - 1)])
    event_type = event_type.astype(np.int8)
    return _Events(
        session=session,
        event_type=event_type,
        timestamp_us=_timestamps(rng, sessions, session, first_event, event_type, day_end_us),
        category=_categories_viewed(rng, people, sessions, session, first_event, funnel_step),
        amount=sessions.amount[session],
        quantity=sessions.quantity[session],
        customer_missing=np.zeros(session.size, dtype=bool),
    )


def _categories_viewed(
    rng: np.random.Generator,
    people: Population,
    sessions: _Sessions,
    session: np.ndarray,
    first_event: np.ndarray,
    funnel_step: np.ndarray,
) -> np.ndarray:
    """Each page view shows a product of its own; cart, purchase and refund are about the last one viewed.

    The session_start row gets a category too, which the table leaves out.
    """
    category = _draw_with_taste(
        rng,
        _TABLES.category_cumulative,
        sessions.archetype[session],
        people.category_taste,
        sessions.customer[session],
        people.variation,
    )
    in_funnel = np.flatnonzero(funnel_step > 0)
    last_page_view = first_event + sessions.pages
    category[in_funnel] = category[last_page_view[session[in_funnel]]]
    return category


def _timestamps(
    rng: np.random.Generator,
    sessions: _Sessions,
    session: np.ndarray,
    first_event: np.ndarray,
    event_type: np.ndarray,
    day_end_us: int,
) -> np.ndarray:
    """Minutes between the steps of a session and before a refund; every event inside its day."""
    mean_pause = _MEAN_PAUSE_US[event_type]
    pauses = (rng.exponential(1.0, event_type.size) * mean_pause).astype(np.int64)
    pauses[mean_pause > 0] += SECOND_US
    elapsed = np.cumsum(pauses)
    elapsed -= elapsed[first_event][session]
    _squeeze_late_sessions(rng, sessions, session, first_event, elapsed, day_end_us)
    timestamp_us = sessions.start_us[session] + elapsed
    _time_refunds(rng, event_type, timestamp_us, day_end_us)
    return timestamp_us


def _squeeze_late_sessions(
    rng: np.random.Generator,
    sessions: _Sessions,
    session: np.ndarray,
    first_event: np.ndarray,
    elapsed: np.ndarray,
    day_end_us: int,
) -> None:
    """Shrink in place the sessions that would run past midnight, to end at a random time before it.

    They stay in their day's partition without piling up on its last microsecond.
    """
    last_before_refund = first_event + sessions.length - 1 - sessions.has_refund
    duration = elapsed[last_before_refund]
    room = day_end_us - sessions.start_us
    too_long = np.flatnonzero(duration >= room)
    squeeze = np.ones(sessions.start_us.size)
    squeeze[too_long] = rng.random(too_long.size) * room[too_long] / duration[too_long]
    squeezed = np.flatnonzero(squeeze[session] < 1.0)
    elapsed[squeezed] = (elapsed[squeezed] * squeeze[session[squeezed]]).astype(np.int64)


def _time_refunds(rng: np.random.Generator, event_type: np.ndarray, timestamp_us: np.ndarray, day_end_us: int) -> None:
    """Set in place the time of each refund: a cancellation soon after its purchase, on the same day.

    A refund that would fall after midnight comes at a uniform time in what is
    left of the day, so late refunds spread out instead of bunching at midnight.
    """
    refunds = np.flatnonzero(event_type == _REFUND)
    purchase_us = timestamp_us[refunds - 1]
    left_us = day_end_us - 1 - purchase_us
    delay_us = SECOND_US + rng.exponential(MEAN_REFUND_DELAY_US, refunds.size).astype(np.int64)
    too_late = delay_us >= left_us
    delay_us[too_late] = (rng.random(int(too_late.sum())) * left_us[too_late]).astype(np.int64)
    timestamp_us[refunds] = purchase_us + delay_us


def _break_rows(rng: np.random.Generator, events: _Events, rate: float, day_end_us: int) -> None:
    """Break about `rate` of the rows, each in one of the four ways the validator must catch."""
    count = int(rng.binomial(events.session.size, rate))
    rows = rng.choice(events.session.size, size=count, replace=False)
    kind = rng.integers(0, 4, count)
    events.customer_missing[rows[kind == 0]] = True
    events.event_type[rows[kind == 1]] = _UNKNOWN
    negative = rows[kind == 2]
    events.event_type[negative] = _PURCHASE
    events.amount[negative] = -events.amount[negative]
    next_day = rows[kind == 3]
    events.timestamp_us[next_day] = day_end_us + rng.integers(0, 6 * HOUR_US, next_day.size)


def _numbered(prefix: str, count: int, width: int) -> pa.StringArray:
    return _id_strings(prefix, np.arange(1, count + 1), width)


def _event_table(people: Population, sessions: _Sessions, events: _Events, day: date) -> pa.Table:
    # Events are numbered in generation order, before the sort by time, so that an
    # event's ID does not depend on where the broken rows land.
    order = np.argsort(events.timestamp_us, kind="stable")
    session = events.session[order]
    event_type = events.event_type[order]
    stamp = day.strftime("%Y%m%d")
    monetary = (event_type == _PURCHASE) | (event_type == _REFUND)
    has_quantity = monetary | (event_type == _ADD_TO_CART)
    customer_id_position = pa.array(sessions.id_position[session], mask=events.customer_missing[order])
    category = pa.array(events.category[order], mask=event_type == _SESSION_START)
    columns = [
        _id_strings(f"{stamp}-", order + 1, width=7),
        people.id_pool.take(customer_id_position),
        _EVENT_TYPE_LABELS.take(pa.array(event_type)),
        pa.array(events.timestamp_us[order], UTC_TIMESTAMP),
        _numbered(f"{stamp}-S", sessions.customer.size, width=6).take(pa.array(session)),
        pa.array(events.amount[order], pa.float64(), mask=~monetary),
        pa.array(events.quantity[order].astype(np.int32), pa.int32(), mask=~has_quantity),
        _CATEGORY_LABELS.take(category),
        _CHANNEL_LABELS.take(pa.array(sessions.channel[session])),
        _DEVICE_LABELS.take(pa.array(sessions.device[session])),
    ]
    return pa.Table.from_arrays(columns, schema=SYNTHETIC_EVENTS_SCHEMA)
