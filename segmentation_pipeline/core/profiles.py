"""Customer profiles: one row per canonical customer over a look-back window.

The features (core.features) are computed in one DuckDB query straight over the
raw_events Parquet partitions of the window, joined to the merge map so that
the events of merged IDs count for their canonical customer; junk IDs (hubs
the resolver refused to merge) are left out. Raw events never pass through
pandas: only the per-customer result does.

Churn risk and CLV
------------------
Where the window holds enough repeat buyers, a purchase model and Gamma-Gamma
are fitted by maximum likelihood (core.clv), with purchase *days* as
transactions and days as the time unit:

* the model `clv_model` names (BG/NBD, MBG/NBD or Pareto/NBD; the profiles
  asset passes the one the day's clv_backtest chose) on x = purchase days - 1,
  t_x = last - first purchase day, T = as-of day - first purchase day, for
  P(alive) and the expected purchase days over the CLV horizon;
* Gamma-Gamma on the mean value of the repeat purchase days, for the expected
  spend per purchase day.

Then clv_estimate is every buyer's expected spend over the horizon, each
month's share discounted to today at `annual_discount_rate` (clv_method
"<model>_gamma_gamma"), and churn_risk = 1 - P(alive) for every buyer. BG/NBD
lets a customer drop out only after a purchase, so under it a one-time buyer's
P(alive) is 1 whatever their silence, and their churn risk stays the
heuristic's; MBG/NBD and Pareto/NBD let them lapse.

Otherwise (too few repeat buyers, a fit that does not converge, and always for
customers without a purchase in the window) the heuristic applies
(clv_method "heuristic"):

* churn_risk = 1 - exp(-g / (2 * gap)), where g is the days since the last
  event and gap the customer's mean gap between active days (tenure / (active
  days - 1); for a customer of one active day, the median of the others; at
  least `churn_gap_floor_days`): the gap since the last visit is compared with
  twice the usual one;
* clv_estimate = net revenue per day of tenure (tenure at least the gap floor)
  x horizon x (1 - churn_risk) x the mean monthly discount factor, never negative.

Every customer also gets a lifecycle stage (core.lifecycle) from their own
rhythm and P(alive).

The window is the customer's whole history as far as the profile knows: a
customer whose first purchase predates it looks younger than they are.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time as time_module
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import clv
from .errors import InsufficientDataError, ProfileBuildError
from .features import CLOCK_TIMES, FEATURES, Feature
from .lifecycle import LifecycleInputs, LifecycleSettings, lifecycle_stages
from .schemas import MERGE_MAP, PROFILES, QUARANTINE_EVENTS, RAW_EVENTS, conform
from .warehouse import (
    STALE_TEMPORARY_SECONDS,
    Warehouse,
    days_between,
    duckdb_memory_limit_bytes,
    invariant_detectors_sql,
    read_parquet_verified,
    reading_stored,
    sql_string,
    utc_clock_sql,
)

#: clv_method of buyers valued with BG/NBD; the other models give "mbg_nbd_gamma_gamma", "pareto_nbd_gamma_gamma".
PROBABILISTIC = "bg_nbd_gamma_gamma"
HEURISTIC = "heuristic"

#: Columns the profile query returns beside the features, used here and dropped.
_MODEL_INPUTS = ("_repeat_days", "_purchase_span", "_purchase_age", "_repeat_value")

#: How the window's events show that the source provides a requirement (core.features).
_REQUIREMENT_COUNTS = {
    "event:session_start": "count(*) FILTER (WHERE event_type = 'session_start')",
    "event:page_view": "count(*) FILTER (WHERE event_type = 'page_view')",
    "event:add_to_cart": "count(*) FILTER (WHERE event_type = 'add_to_cart')",
    "event:refund": "count(*) FILTER (WHERE event_type = 'refund')",
    "column:product_category": "count(product_category)",
    "column:channel": "count(channel)",
    "column:device_or_channel": "count(*) FILTER (WHERE device IS NOT NULL OR channel IS NOT NULL)",
}
#: The UTC time of day in microseconds, for the CLOCK_TIMES requirement: plain dates are all stored
#: as midnight UTC, so one clock time means the source has none. (Epoch arithmetic, ten times
#: cheaper than a time-zone cast at 18M rows.)
_CLOCK_MICROSECONDS = 'epoch_us("timestamp") % 86400000000'


@dataclass(frozen=True)
class ProfileSettings:
    lookback_days: int = 365
    #: category_shares / channel_shares keep the most common labels of the window; the rest is "other".
    top_categories: int = 8
    top_channels: int = 6
    clv_horizon_days: int = 365
    #: One campaign cycle: cycle_value is the expected spend over it, the value a campaign run now can move.
    campaign_cycle_days: int = 90
    #: Yearly rate at which CLV discounts later purchases to today's money.
    annual_discount_rate: float = 0.10
    #: The purchase model behind P(alive), churn risk and CLV: one of core.clv.MODEL_NAMES.
    clv_model: str = "mbg_nbd"
    #: Below this many customers with a repeat purchase day the models are not fitted.
    min_repeat_buyers: int = 30
    churn_gap_floor_days: float = 30.0
    lifecycle: LifecycleSettings = LifecycleSettings()

    def __post_init__(self) -> None:
        for name in ("lookback_days", "clv_horizon_days", "campaign_cycle_days"):
            if getattr(self, name) < 1:
                raise ProfileBuildError(f"{name} must be at least 1 day, got {getattr(self, name)}")
        for name in ("top_categories", "top_channels", "min_repeat_buyers"):
            if getattr(self, name) < 0:
                raise ProfileBuildError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.churn_gap_floor_days <= 0:
            raise ProfileBuildError(f"churn_gap_floor_days must be positive, got {self.churn_gap_floor_days}")
        if self.clv_model not in clv.MODEL_NAMES:
            raise ProfileBuildError(f"clv_model {self.clv_model!r} is not one of {list(clv.MODEL_NAMES)}")
        if self.annual_discount_rate < 0:
            raise ProfileBuildError(f"annual_discount_rate must not be negative, got {self.annual_discount_rate}")


@dataclass(frozen=True)
class ProfileWindow:
    """The days a profile looks at: `lookback_days` ending `shift_days` before the as-of day."""

    as_of: date
    lookback_days: int
    shift_days: int = 0

    @property
    def last_day(self) -> date:
        return self.as_of - timedelta(days=self.shift_days)

    @property
    def first_day(self) -> date:
        return self.last_day - timedelta(days=self.lookback_days - 1)

    @property
    def days(self) -> list[date]:
        return days_between(self.first_day, self.last_day)

    @property
    def end(self) -> datetime:
        """The first instant after the window."""
        return datetime.combine(self.last_day + timedelta(days=1), time(), tzinfo=timezone.utc)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(), tzinfo=timezone.utc)


#: Key of the profiles file's Parquet metadata that holds its WindowInput.
WINDOW_INPUT_KEY = "segmentation.window_input"
#: Key of the profiles file's Parquet metadata that says how churn risk and CLV were made (ProfileResult.clv_record).
CLV_KEY = "segmentation.clv"


@dataclass(frozen=True)
class WindowInput:
    """The stored raw_events a profile was built from, day by day.

    Kept with the profiles, so that what the report says of the window (days with events,
    events, quarantined rows) is what the profiles saw, and a day ingested again since
    (a late file) can be told from a re-run that changed nothing.
    """

    #: day -> (valid rows, bytes of the stored file, quarantined rows), for the days with a stored partition.
    days: dict[date, tuple[int, int, int]]

    @classmethod
    def stored(cls, store: Warehouse, days: Sequence[date]) -> WindowInput:
        quarantined = store.stored_footprints(QUARANTINE_EVENTS, days)
        return cls(
            {
                day: (rows, size, quarantined.get(day, (0, 0))[0])
                for day, (rows, size) in store.stored_footprints(RAW_EVENTS, days).items()
            }
        )

    @property
    def days_with_events(self) -> list[date]:
        return [day for day, (rows, _, _) in sorted(self.days.items()) if rows]

    @property
    def events(self) -> int:
        return sum(rows for rows, _, _ in self.days.values())

    @property
    def quarantined(self) -> int:
        return sum(quarantined for _, _, quarantined in self.days.values())

    def footprint(self, day: date) -> tuple[int, int] | None:
        """(rows, bytes) of the day's stored raw_events as the profiles read them; None if there were none."""
        recorded = self.days.get(day)
        return None if recorded is None else recorded[:2]

    def changed_days(self, now: Mapping[date, tuple[int, int]]) -> list[date]:
        """Days whose stored raw_events (rows, bytes) differ from these: ingested again with other input."""
        return sorted(day for day in set(self.days) | set(now) if self.footprint(day) != now.get(day))

    def to_json(self) -> str:
        return json.dumps({day.isoformat(): list(values) for day, values in sorted(self.days.items())})

    @classmethod
    def from_json(cls, text: str) -> WindowInput:
        return cls({date.fromisoformat(day): tuple(values) for day, values in json.loads(text).items()})

    @classmethod
    def of_profiles(cls, store: Warehouse, as_of: date) -> WindowInput | None:
        """What the stored profiles of `as_of` were built from; None for profiles stored without it."""
        text = store.partition_metadata(PROFILES, as_of).get(WINDOW_INPUT_KEY)
        return None if text is None else cls.from_json(text)


@dataclass(frozen=True)
class ClvFit:
    method: str
    reason: str
    repeat_buyers: int
    #: The purchase model's name (core.clv.MODEL_NAMES) and fitted parameters; empty for the heuristic.
    model: str = ""
    parameters: dict[str, float] = field(default_factory=dict)
    gamma_gamma: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileResult:
    table: pa.Table
    window: ProfileWindow
    days_present: list[date]
    #: Feature -> the requirements the source did not meet (the feature is null).
    unsupported: dict[str, list[str]]
    clv_fit: ClvFit
    top_categories: list[str]
    top_channels: list[str]
    window_input: WindowInput = field(default_factory=lambda: WindowInput({}))

    @property
    def coverage(self) -> float:
        """The share of the window's days with events (a stored day without a row does not count)."""
        return len(self.window_input.days_with_events) / self.window.lookback_days

    def clv_record(self, settings: ProfileSettings) -> dict[str, object]:
        """How churn risk and CLV were made: stored with the profiles, read by the report."""
        return {
            "method": self.clv_fit.method,
            "model": self.clv_fit.model or HEURISTIC,
            "reason": self.clv_fit.reason,
            "horizon_days": settings.clv_horizon_days,
            "annual_discount_rate": settings.annual_discount_rate,
            "campaign_cycle_days": settings.campaign_cycle_days,
        }

    def stored_metadata(self, settings: ProfileSettings) -> dict[str, str]:
        """The Parquet key-value metadata of the stored profiles."""
        return {WINDOW_INPUT_KEY: self.window_input.to_json(), CLV_KEY: json.dumps(self.clv_record(settings))}

    def as_metadata(self) -> dict[str, object]:
        return {
            "customers": self.table.num_rows,
            "window_first_day": self.window.first_day.isoformat(),
            "window_last_day": self.window.last_day.isoformat(),
            "window_days_present": len(self.days_present),
            "window_days_with_events": len(self.window_input.days_with_events),
            "window_days": self.window.lookback_days,
            "window_coverage": round(self.coverage, 4),
            "unsupported_features": sorted(self.unsupported),
            "clv_method": self.clv_fit.method,
            "clv_method_reason": self.clv_fit.reason,
            "repeat_buyers": self.clv_fit.repeat_buyers,
            "clv_model": self.clv_fit.model or HEURISTIC,
            **{f"{self.clv_fit.model}_{name}": round(value, 6) for name, value in self.clv_fit.parameters.items()},
            **{f"gamma_gamma_{name}": round(value, 6) for name, value in self.clv_fit.gamma_gamma.items()},
        }


def build_profiles(
    store: Warehouse,
    as_of: date,
    settings: ProfileSettings = ProfileSettings(),
    shift_days: int = 0,
    lookback_days: int | None = None,
    fit_clv_models: bool = True,
    customers: Sequence[str] | None = None,
) -> ProfileResult:
    """Profiles of every customer active in the window, with IDs resolved by the merge map as of `as_of`.

    `shift_days` and `lookback_days` move and shorten the window, and
    `customers` (canonical IDs) restricts the profiles to a sample: the
    robustness tests build such profiles. The merge map is always the one of
    `as_of`. `fit_clv_models=False` keeps to the heuristic churn risk and CLV.
    """
    window = ProfileWindow(as_of, lookback_days or settings.lookback_days, shift_days)
    merge_map_path = store.partition_path(MERGE_MAP, as_of)
    if not merge_map_path.exists():
        raise ProfileBuildError(
            f"merge_map for {as_of.isoformat()} is not materialized ({merge_map_path}); materialize it first"
        )
    days_present = store.partition_days(RAW_EVENTS, window.first_day, window.last_day)
    window_input = WindowInput.stored(store, days_present)
    events = store.parquet_relation(RAW_EVENTS, days_present)
    if events is None:
        return _empty_result(window)
    # A day whose ingestion stopped between its quarantine and its valid rows is not profiled.
    store.check_complete(RAW_EVENTS, QUARANTINE_EVENTS, days_present)
    # Read by pyarrow, which verifies the file's page checksums (DuckDB would not), and handed to
    # DuckDB as it is: the merge map is read once either way.
    merge_map = read_parquet_verified(merge_map_path, ["old_id", "canonical_id", "is_junk"])
    with store.connect() as con, reading_stored(RAW_EVENTS):
        con.register("stored_merge_map", merge_map)
        met, category_labels, channel_labels, broken = _window_scan(con, events)
        # Rows that break raw_events' rules (a damaged file) are named, never profiled.
        store.check_invariants(RAW_EVENTS, days_present, broken)
        categories = _Labels(category_labels, settings.top_categories)
        channels = _Labels(channel_labels, settings.top_channels)
        sample = None
        if customers is not None:
            con.register("customer_sample", pa.table({"canonical_id": pa.array(list(customers), pa.string())}))
            sample = "customer_sample"
        buckets = 1 if customers is not None else profile_buckets(window_input.events)
        table = _profile_table(con, store, events, window, categories, channels, sample, buckets)
    table = _share_maps(_share_maps(table, "category", categories), "channel", channels)
    unsupported = _unsupported(met)
    table = _null_unsupported(table, unsupported)
    table, clv_fit = _model_churn_and_clv(table, settings, fit_clv_models)
    table = _with_lifecycle(table, settings.lifecycle)
    table = table.drop_columns(list(_MODEL_INPUTS))
    return ProfileResult(
        table=conform(table, PROFILES),
        window=window,
        days_present=days_present,
        unsupported=unsupported,
        clv_fit=clv_fit,
        top_categories=categories.top,
        top_channels=channels.top,
        window_input=window_input,
    )


#: DuckDB memory the profile query takes per event of the window, for its groupings by customer and
#: by customer, day and hour: 30M events (1.7M customers) ran within 2.5 GB without spilling; 89M
#: events (5M customers) spilled up to 8 GB to disk and took three times as long per event.
PROFILE_BYTES_PER_EVENT = 80
#: Folders of the window's resolved events, split by customer, under the scratch folder while profiles are built.
BUCKETS_FOLDER_PREFIX = "profile-events-"


def profile_buckets(events: int, memory_limit_bytes: int | None = None) -> int:
    """Into how many groups of customers the profile query splits a window of `events`, so that each
    group's aggregation fits in DuckDB's memory: one up to about 35M events on a 24 GB machine."""
    limit = duckdb_memory_limit_bytes() if memory_limit_bytes is None else memory_limit_bytes
    return max(1, math.ceil(events * PROFILE_BYTES_PER_EVENT / limit))


def _profile_table(
    con,
    store: Warehouse,
    events: str,
    window: ProfileWindow,
    categories: _Labels,
    channels: _Labels,
    sample: str | None,
    buckets: int,
) -> pa.Table:
    """The profile query's rows, ordered by canonical_id.

    With more than one bucket, the window's events are resolved to their canonical customers once and
    written to the scratch folder split by a hash of the customer (a streaming write); then each bucket's
    customers are profiled on their own, within memory, and the buckets' rows put in order. The window
    is read once either way, and every customer's events are in one bucket: the same rows as one query.
    """
    if buckets == 1:
        return con.sql(profile_sql(events, "stored_merge_map", window, categories, channels, sample)).to_arrow_table()
    _remove_stale_bucket_folders(store.scratch_dir)
    folder = store.scratch_dir / f"{BUCKETS_FOLDER_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    try:
        con.execute(
            f"""COPY (
                  WITH ids AS (SELECT old_id, canonical_id, is_junk FROM stored_merge_map)
                  SELECT *, hash(canonical_id) % {buckets} AS bucket FROM ({resolved_events_sql(events, window)})
                ) TO {sql_string(str(folder))} (FORMAT parquet, PARTITION_BY (bucket))"""
        )
        parts = []
        for bucket in range(buckets):
            if not (folder / f"bucket={bucket}").is_dir():
                continue
            files = sql_string(str(folder / f"bucket={bucket}" / "*.parquet"))
            relation = f"read_parquet({files}, hive_partitioning = false)"
            query = profile_sql(events, "stored_merge_map", window, categories, channels, resolved_events=relation)
            parts.append(con.sql(query).to_arrow_table())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not parts:
        return con.sql(profile_sql(events, "stored_merge_map", window, categories, channels, sample)).to_arrow_table()
    # DuckDB orders strings by their bytes, as Arrow does.
    return pa.concat_tables(parts).sort_by("canonical_id")


def _remove_stale_bucket_folders(scratch: Path) -> None:
    """Bucket folders a killed run left behind: no run takes an hour to profile."""
    for folder in scratch.glob(f"{BUCKETS_FOLDER_PREFIX}*"):
        try:
            if time_module.time() - folder.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            continue


def _empty_result(window: ProfileWindow) -> ProfileResult:
    return ProfileResult(
        table=PROFILES.empty(),
        window=window,
        days_present=[],
        unsupported={},
        clv_fit=ClvFit(HEURISTIC, "no events in the window", 0),
        top_categories=[],
        top_channels=[],
    )


def _window_filter(window: ProfileWindow, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return (
        f"{prefix}timestamp >= TIMESTAMPTZ {sql_string(window.start.isoformat())} "
        f"AND {prefix}timestamp < TIMESTAMPTZ {sql_string(window.end.isoformat())}"
    )


def _window_scan(con, events: str) -> tuple[dict[str, bool], list[str], list[str], list[int]]:
    """In one pass over the window's events: which requirements of core.features they meet (all
    of them, not just a sample's), every category and channel, most common first (ties
    alphabetical), and whether rows break each of raw_events' invariants. One grouping by category
    and channel (a few dozen groups) gives them all: the counts add up over its groups. Grouping
    sets per category, per channel and overall computed every count three times: 1.6 -> 1.1 s at
    30M events.

    `events` holds the window's days and nothing else: a stored row outside its day breaks an
    invariant (and fails the profiles), so no filter on the window is needed here."""
    requirements = ", ".join(_REQUIREMENT_COUNTS.values())
    rows = con.execute(
        f"""SELECT product_category, channel, count(*), max({_CLOCK_MICROSECONDS}), min({_CLOCK_MICROSECONDS}),
                {requirements}, {invariant_detectors_sql(RAW_EVENTS)}
            FROM {events}
            GROUP BY product_category, channel"""
    ).fetchall()
    categories: dict[str, int] = {}
    channels: dict[str, int] = {}
    totals = [0] * (len(_REQUIREMENT_COUNTS) + len(RAW_EVENTS.invariants))
    latest = earliest = None
    for category, channel, n, latest_clock, earliest_clock, *counts in rows:
        if category is not None:
            categories[category] = categories.get(category, 0) + n
        if channel is not None:
            channels[channel] = channels.get(channel, 0) + n
        totals = [total + (count or 0) for total, count in zip(totals, counts)]
        if latest_clock is not None:
            latest = latest_clock if latest is None else max(latest, latest_clock)
            earliest = earliest_clock if earliest is None else min(earliest, earliest_clock)
    met = {requirement: bool(total) for requirement, total in zip(_REQUIREMENT_COUNTS, totals)}
    # Over no events at all there is no clock time either: not met.
    met[CLOCK_TIMES] = latest is not None and latest > earliest
    broken = totals[len(_REQUIREMENT_COUNTS) :]
    return met, _most_common_first(list(categories.items())), _most_common_first(list(channels.items())), broken


def _most_common_first(counts: list[tuple[str, int]]) -> list[str]:
    return [label for label, _ in sorted(counts, key=lambda item: (-item[1], item[0]))]


#: The bin of the labels outside the top N in category_shares and channel_shares.
OTHER = "other"


@dataclass(frozen=True)
class _Labels:
    """The labels of one column in the window (most common first) and how many keep their own share."""

    every: list[str]
    keep: int

    @property
    def top(self) -> list[str]:
        """The labels with a share of their own; a real label called 'other' joins the 'other' bin."""
        return [label for label in self.every[: self.keep] if label != OTHER]


def profile_sql(
    events: str,
    merge_map: str,
    window: ProfileWindow,
    categories: _Labels,
    channels: _Labels,
    customers: str | None = None,
    resolved_events: str | None = None,
) -> str:
    """The profile query: one row per canonical customer (of the `customers` relation, if given).

    `resolved_events`, if given, is a relation of `resolved_events_sql`'s rows (the customers of one
    bucket, see `build_profiles`) that the query reads instead of joining `events` to the merge map."""
    features = ",\n    ".join(f"CAST({feature.sql} AS {_sql_type(feature)}) AS {feature.name}" for feature in FEATURES)
    categories = _label_stats("category", "product_category", "categorised", categories)
    channels = _label_stats("channel", "channel", "channelled", channels)
    map_inputs = "".join(f",\n    {name}" for name in (*categories.map_inputs, *channels.map_inputs))
    rows = f"SELECT * FROM {resolved_events}" if resolved_events else resolved_events_sql(events, window, customers)
    # Stored resolved rows are read again by each grouping that needs them (about a gigabyte less at
    # 30M events than holding them, for a tenth more CPU); events are resolved once and held.
    reading = "NOT MATERIALIZED " if resolved_events else ""
    return f"""
WITH params AS (
  SELECT TIMESTAMPTZ {sql_string(window.end.isoformat())} AS window_end,
         DATE {sql_string(window.last_day.isoformat())} AS last_day
),
ids AS (SELECT old_id, canonical_id, is_junk FROM {merge_map}),
e AS {reading}({rows}),
aggregates AS (
  SELECT canonical_id,
    -- events of IDs in the merge map; any other event is of an ID that is the customer's own
    count(merged_id) AS merged_events,
    min(timestamp) AS first_event,
    max(timestamp) AS last_event,
    count(*) AS events,
    count(*) FILTER (WHERE event_type = 'purchase') AS orders,
    coalesce(sum(amount) FILTER (WHERE event_type = 'purchase'), 0) AS gross_revenue,
    count(*) FILTER (WHERE event_type = 'refund') AS refunds,
    coalesce(sum(amount) FILTER (WHERE event_type = 'refund'), 0) AS refund_total,
    max(timestamp) FILTER (WHERE event_type = 'purchase') AS last_purchase,
    count(*) FILTER (WHERE event_type = 'session_start') AS sessions,
    count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
    count(*) FILTER (WHERE event_type = 'add_to_cart') AS carts,
    -- raw_events holds devices and channels lower-cased (ingestion lowers them): no lower() per event,
    -- which was a third of this aggregation's time
    count(*) FILTER (
      WHERE device IN ('mobile', 'tablet', 'phone', 'smartphone') OR channel IN ('mobile_app', 'app')
    ) AS mobile_events,
    count(*) FILTER (WHERE device IS NOT NULL OR channel IS NOT NULL) AS device_or_channel_events,
    count(product_category) AS categorised,
    count(channel) AS channelled{categories.counts}{channels.counts}
  FROM e GROUP BY canonical_id
),
-- The customer's IDs in the merge map, counted over the few events that carry one: a distinct
-- count over every event cost 3 CPU-s at 30M events.
merged_ids AS (
  SELECT canonical_id, count(DISTINCT merged_id) AS n FROM e WHERE merged_id IS NOT NULL GROUP BY canonical_id
),
-- The events of each customer, day and hour: a third of the rows of e (9.6M of 30M events at 1.7M
-- customers). Active and purchase days, the time of day and week and the preferred hour and
-- weekday all come from it, rather than from three groupings of e and five counts per event.
hourly AS (
  SELECT canonical_id, day, hour, count(*) AS n,
    count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
    sum(amount) FILTER (WHERE event_type = 'purchase') AS amount
  FROM e GROUP BY ALL
),
daily AS (
  SELECT canonical_id, day, sum(n) AS n, sum(purchases) AS purchases, sum(amount) AS amount
  FROM hourly GROUP BY ALL
),
days AS (
  SELECT canonical_id,
    count(*) AS active_days,
    count(*) FILTER (WHERE purchases > 0) AS purchase_days,
    min(day) FILTER (WHERE purchases > 0) AS first_purchase_day,
    max(day) FILTER (WHERE purchases > 0) AS last_purchase_day,
    sum(amount) FILTER (WHERE purchases > 0) AS purchase_amount,
    arg_min(amount, day) FILTER (WHERE purchases > 0) AS first_day_amount
  FROM daily GROUP BY canonical_id
),
-- The most frequent hour and weekday, ties to the earliest: one max over (count, reversed hour)
-- packed into an integer, which an ordered first() over the same rows took nearly twice as long for.
hours AS (
  SELECT canonical_id, 31 - (max(n * 32 + (31 - hour)) % 32) AS preferred_hour,
    CAST(coalesce(sum(n) FILTER (WHERE hour < 6), 0) AS BIGINT) AS night_events,
    CAST(coalesce(sum(n) FILTER (WHERE hour >= 6 AND hour < 12), 0) AS BIGINT) AS morning_events,
    CAST(coalesce(sum(n) FILTER (WHERE hour >= 12 AND hour < 18), 0) AS BIGINT) AS afternoon_events,
    CAST(coalesce(sum(n) FILTER (WHERE hour >= 18), 0) AS BIGINT) AS evening_events
  FROM (SELECT canonical_id, hour, sum(n) AS n FROM hourly GROUP BY ALL) GROUP BY canonical_id
),
weekdays AS (
  SELECT canonical_id, 7 - (max(n * 8 + (7 - weekday)) % 8) AS preferred_day_of_week,
    CAST(coalesce(sum(n) FILTER (WHERE weekday >= 5), 0) AS BIGINT) AS weekend_events
  FROM (SELECT canonical_id, isodow(day) - 1 AS weekday, sum(n) AS n FROM daily GROUP BY ALL) GROUP BY canonical_id
),
{categories.ctes}
{channels.ctes}
base AS (
  SELECT aggregates.*, CASE WHEN events > merged_events THEN 1 ELSE 0 END + coalesce(merged_ids.n, 0) AS n_ids,
    days.active_days, days.purchase_days,
    days.first_purchase_day, days.last_purchase_day,
    days.purchase_amount, days.first_day_amount,
    hours.preferred_hour, hours.night_events, hours.morning_events, hours.afternoon_events,
    hours.evening_events, weekdays.preferred_day_of_week, weekdays.weekend_events,
    {categories.columns}, {channels.columns},
    params.*
  FROM aggregates
  JOIN days USING (canonical_id)
  LEFT JOIN merged_ids USING (canonical_id)
  JOIN hours USING (canonical_id)
  JOIN weekdays USING (canonical_id)
  {categories.joins}
  {channels.joins}
  CROSS JOIN params
)
SELECT canonical_id, n_ids, {window.lookback_days} AS window_days, first_event, last_event,
    {features},
    CAST(NULL AS DOUBLE) AS p_alive,
    CAST(NULL AS DOUBLE) AS expected_purchases,
    CAST(NULL AS DOUBLE) AS cycle_value,
    {sql_string(HEURISTIC)} AS clv_method,
    purchase_days - 1 AS _repeat_days,
    CAST(date_diff('day', first_purchase_day, last_purchase_day) AS DOUBLE) AS _purchase_span,
    CAST(date_diff('day', first_purchase_day, last_day) AS DOUBLE) AS _purchase_age,
    CASE WHEN purchase_days > 1
      THEN CAST(purchase_amount - first_day_amount AS DOUBLE) / (purchase_days - 1) END AS _repeat_value{map_inputs}
FROM base
ORDER BY canonical_id
"""


def resolved_events_sql(events: str, window: ProfileWindow, customers: str | None = None) -> str:
    """The window's events with their canonical customer (by the merge map, the CTE `ids`), junk IDs
    left out: the rows the profile query aggregates (of the `customers` relation's customers, if given)."""
    # Days, hours and weekdays are UTC's.
    clock = utc_clock_sql("ev.timestamp")
    # A sample's events are first narrowed to its customers' own IDs and those merged into them:
    # every other event would be joined to the merge map only to be dropped.
    sample_filter = (
        f"""
    AND ev.customer_id IN (
      SELECT canonical_id FROM {customers}
      UNION ALL SELECT old_id FROM ids WHERE canonical_id IN (SELECT canonical_id FROM {customers})
    )
    AND coalesce(ids.canonical_id, ev.customer_id) IN (SELECT canonical_id FROM {customers})"""
        if customers
        else ""
    )
    return f"""
  SELECT coalesce(ids.canonical_id, ev.customer_id) AS canonical_id,
         -- the ID where the merge map has it (few events); NULL for an ID that is its own
         CASE WHEN ids.old_id IS NOT NULL THEN ev.customer_id END AS merged_id,
         ev.event_type, ev.timestamp, ev.product_category, ev.channel, ev.device,
         -- exact sums: a float sum depends on the order threads add in, and a re-run must not change a cent
         CAST(ev.amount AS DECIMAL(18, 4)) AS amount,
         CAST({clock} AS DATE) AS day, hour({clock}) AS hour
  FROM {events} AS ev LEFT JOIN ids ON ev.customer_id = ids.old_id
  WHERE {_window_filter(window, "ev")} AND NOT coalesce(ids.is_junk, false){sample_filter}
"""


@dataclass(frozen=True)
class _LabelSql:
    #: Extra aggregates (one count per label) for the per-customer aggregation.
    counts: str
    ctes: str
    columns: str
    joins: str
    #: Columns the query returns for `_share_maps` to build the share map from (the pivoted path).
    map_inputs: tuple[str, ...] = ()


#: Up to this many distinct labels, one conditional count per label in the main aggregation;
#: beyond it (product IDs used as categories, say) a grouped pass per label column.
PIVOT_LABELS = 32


def _label_stats(kind: str, column: str, total: str, labels: _Labels) -> _LabelSql:
    """Top label, shares of the top labels (+ 'other') and entropy of one label column.

    Ties for the top label go to the first in alphabetical order; the share map
    lists the bins a customer has, in alphabetical order; the entropy adds its
    terms in label order, so that a re-run gives the same bits.
    """
    names = (f"top_{kind}", f"{kind}_shares", f"{kind}_entropy")
    if not labels.every:
        return _LabelSql("", "", ", ".join(f"NULL AS {name}" for name in names), "")
    if len(labels.every) <= PIVOT_LABELS:
        return _pivoted_label_stats(kind, column, total, labels)
    return _grouped_label_stats(kind, column, labels)


def _pivoted_label_stats(kind: str, column: str, total: str, labels: _Labels) -> _LabelSql:
    counted = {label: f"_{kind}_{index}" for index, label in enumerate(sorted(labels.every))}
    counts = "".join(
        f",\n    count(*) FILTER (WHERE {column} = {sql_string(label)}) AS {name}" for label, name in counted.items()
    )
    # The most common label, ties to the first alphabetically: the labels are tested in that order.
    # Scalar expressions, not a sorted list of structs per customer: 1.2 CPU-s less at 30M events.
    most = f"greatest({', '.join(counted.values())})"
    top = (
        "CASE " + " ".join(f"WHEN {name} = {most} THEN {sql_string(label)}" for label, name in counted.items()) + " END"
    )
    terms = " + ".join(
        f"CASE WHEN {name} > 0 THEN {name} / {total} * log2({name} / {total}) ELSE 0 END" for name in counted.values()
    )
    entropy = f"greatest(0.0, -(0.0 + {terms}))"
    other = " + ".join(name for label, name in counted.items() if label not in labels.top) or "0"
    count_of = {label: counted[label] for label in labels.top} | {OTHER: f"({other})"}
    # The share map itself is built from each bin's count by `_share_maps`, in Arrow: in the query,
    # a list of structs filtered by a lambda per customer cost 3-4 CPU-s at 1.15M customers. Both
    # take the bins and their columns from `_share_bins` and `_bin_columns`.
    bins = _share_bins(labels)
    inputs = {f"_{kind}_total": total} | dict(zip(_bin_columns(kind, bins), (count_of[label] for label in bins)))
    columns = ", ".join(
        f"CASE WHEN {total} > 0 THEN {expression} END AS {name}"
        for expression, name in zip((top, entropy), (f"top_{kind}", f"{kind}_entropy"))
    )
    columns += f", NULL AS {kind}_shares, " + ", ".join(
        f"{expression} AS {name}" for name, expression in inputs.items()
    )
    return _LabelSql(counts, "", columns, "", tuple(inputs))


def _bin_columns(kind: str, bins: Sequence[str]) -> list[str]:
    return [f"_{kind}_bin_{index}" for index in range(len(bins))]


def _share_bins(labels: _Labels) -> list[str]:
    """The bins of a pivoted share map, in alphabetical order: the top labels and 'other'."""
    return sorted([*labels.top, OTHER])


def _share_maps(table: pa.Table, kind: str, labels: _Labels) -> pa.Table:
    """`{kind}_shares` from the query's counts per bin: each bin the customer has, alphabetically,
    with its count over the customer's total (float division, as DuckDB's `/` of two integers);
    null without a labelled event. The count columns are dropped."""
    total_column = f"_{kind}_total"
    if total_column not in table.column_names:
        return table
    bins = _share_bins(labels)
    names = _bin_columns(kind, bins)
    total = table[total_column].to_numpy()
    counts = np.column_stack([table[name].to_numpy() for name in names])
    rows, columns = np.nonzero(counts > 0)
    offsets = np.zeros(table.num_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=table.num_rows), out=offsets[1:])
    shares = pa.MapArray.from_arrays(
        pa.array(offsets),
        pc.take(pa.array(bins, pa.string()), pa.array(columns)),
        pa.array(counts[rows, columns].astype(float) / total[rows].astype(float)),
        mask=pa.array(total == 0),
    )
    table = _replace(table, f"{kind}_shares", shares)
    return table.drop_columns([total_column, *names])


def _grouped_label_stats(kind: str, column: str, labels: _Labels) -> _LabelSql:
    names = (f"top_{kind}", f"{kind}_shares", f"{kind}_entropy")
    kept = f"label IN ({', '.join(sql_string(label) for label in labels.top)})" if labels.top else "FALSE"
    other = sql_string(OTHER)
    counts, stats = f"{kind}_counts", f"{kind}_stats"
    ctes = f"""{counts} AS (
  SELECT canonical_id, {column} AS label, count(*) AS n, sum(count(*)) OVER (PARTITION BY canonical_id) AS total
  FROM e WHERE {column} IS NOT NULL GROUP BY canonical_id, {column}
),
{stats} AS (
  SELECT canonical_id, first(label ORDER BY n DESC, label) AS top_{kind},
    greatest(0.0, -list_sum(list(n / total * log2(n / total) ORDER BY label))) AS {kind}_entropy,
    map_from_entries(
      list(struct_pack(k := bin, v := share) ORDER BY bin) FILTER (WHERE first_of_bin = 1)
    ) AS {kind}_shares
  FROM (
    -- every label row counts for the top label and the entropy; the share map takes one row per bin
    SELECT canonical_id, label, n, total,
      CASE WHEN {kept} THEN label ELSE {other} END AS bin,
      sum(n) OVER (PARTITION BY canonical_id, CASE WHEN {kept} THEN label ELSE {other} END) / total AS share,
      row_number() OVER (
        PARTITION BY canonical_id, CASE WHEN {kept} THEN label ELSE {other} END ORDER BY label
      ) AS first_of_bin
    FROM {counts}
  )
  GROUP BY canonical_id
),"""
    return _LabelSql(
        "", ctes, ", ".join(f"{stats}.{name}" for name in names), f"LEFT JOIN {stats} USING (canonical_id)"
    )


def _sql_type(feature: Feature) -> str:
    if feature.is_share_map:
        return "MAP(VARCHAR, DOUBLE)"
    return {
        pa.float64(): "DOUBLE",
        pa.int64(): "BIGINT",
        pa.string(): "VARCHAR",
    }[feature.type]


def _unsupported(met: dict[str, bool]) -> dict[str, list[str]]:
    """Features whose requirements the window's events never meet."""
    missing = {}
    for feature in FEATURES:
        unmet = [requirement for requirement in feature.requires if not met[requirement]]
        if unmet:
            missing[feature.name] = unmet
    return missing


def _null_unsupported(table: pa.Table, unsupported: dict[str, list[str]]) -> pa.Table:
    for name in unsupported:
        table = _replace(table, name, pa.nulls(table.num_rows, table.schema.field(name).type))
    return table


def _column(table: pa.Table, name: str, fill: float | None = None) -> np.ndarray:
    """A column as floats; nulls become NaN, or `fill`."""
    column = table[name] if fill is None else pc.fill_null(table[name], fill)
    return column.to_numpy(zero_copy_only=False).astype(float)


def heuristic_churn_and_clv(
    days_since_last_event: np.ndarray,
    tenure_days: np.ndarray,
    active_days: np.ndarray,
    monetary_total: np.ndarray,
    settings: ProfileSettings,
    horizon_days: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The activity-gap churn risk and the run-rate value over `horizon_days` (default: the CLV horizon; see
    the module docstring)."""
    horizon_days = settings.clv_horizon_days if horizon_days is None else horizon_days
    gap = np.maximum(settings.churn_gap_floor_days, tenure_days / np.maximum(active_days - 1, 1))
    # A customer seen on one day only has no gap of their own: they get the usual gap of those seen on
    # more days, so that their risk grows with their silence (with the gap taken as their tenure, every
    # one-day customer had the same risk, 1 - e^(-1/2), whether silent for a week or a year).
    repeat = active_days >= 2
    usual = float(np.median(tenure_days[repeat] / (active_days[repeat] - 1))) if repeat.any() else 0.0
    own = tenure_days / np.maximum(active_days - 1, 1)
    gap = np.maximum(settings.churn_gap_floor_days, np.where(repeat, own, usual))
    churn_risk = 1.0 - np.exp(-days_since_last_event / (2.0 * gap))
    daily_value = monetary_total / np.maximum(tenure_days, settings.churn_gap_floor_days)
    discount = _mean_discount_factor(horizon_days, settings.annual_discount_rate)
    value = np.maximum(0.0, daily_value * horizon_days * (1.0 - churn_risk) * discount)
    return churn_risk, value


def _mean_discount_factor(horizon_days: int, annual_rate: float) -> float:
    """The mean, over the monthly steps of the horizon, of a month-end value discounted to today."""
    months = max(1, round(horizon_days / 365.25 * 12))
    return float(np.mean((1.0 + annual_rate) ** (-np.arange(1, months + 1) / 12.0)))


def _model_churn_and_clv(table: pa.Table, settings: ProfileSettings, fit_models: bool) -> tuple[pa.Table, ClvFit]:
    if table.num_rows == 0:
        return table, ClvFit(HEURISTIC, "no customers", 0)
    heuristic_inputs = (
        _column(table, "days_since_last_event", 0.0),
        _column(table, "tenure_days", 0.0),
        _column(table, "active_days", 1.0),
        _column(table, "monetary_total", 0.0),
    )
    churn_risk, value = heuristic_churn_and_clv(*heuristic_inputs, settings)
    _, cycle_value = heuristic_churn_and_clv(*heuristic_inputs, settings, settings.campaign_cycle_days)
    p_alive = np.full(table.num_rows, np.nan)
    expected = np.full(table.num_rows, np.nan)
    method = np.full(table.num_rows, HEURISTIC, dtype=object)
    buyers = ~np.isnan(_column(table, "_purchase_age"))
    inputs = _BuyerInputs.of(table, buyers)
    repeat_buyers = int(np.count_nonzero(inputs.x > 0))
    fit = _fit_models(inputs, repeat_buyers, settings) if fit_models else None
    predictions = _predict(inputs, fit, settings) if fit else None
    if predictions is not None:
        model, gg = fit
        p_alive[buyers], expected[buyers], value[buyers], cycle_value[buyers] = predictions
        # BG/NBD cannot see a one-time buyer drop out (P(alive) = 1 until a repeat purchase), so
        # under it their churn risk stays the heuristic's; MBG/NBD and Pareto/NBD can.
        scored = np.flatnonzero(buyers)
        if model.model == "bg_nbd":
            scored = scored[inputs.x > 0]
        churn_risk[scored] = 1.0 - p_alive[scored]
        method[buyers] = f"{model.model}_gamma_gamma"
        clv_fit = ClvFit(
            f"{model.model}_gamma_gamma",
            f"{model.label} fitted on {int(buyers.sum()):,} buyers, {repeat_buyers:,} with repeat purchase days",
            repeat_buyers,
            model.model,
            dict(model.parameters),
            {"p": gg.p, "q": gg.q, "v": gg.v},
        )
    elif fit is not None:
        clv_fit = ClvFit(HEURISTIC, "the fitted models gave non-finite predictions", repeat_buyers)
    elif not fit_models:
        clv_fit = ClvFit(HEURISTIC, "the models were not asked for", repeat_buyers)
    else:
        clv_fit = ClvFit(HEURISTIC, _heuristic_reason(repeat_buyers, settings), repeat_buyers)
    table = _replace(table, "churn_risk", pa.array(np.clip(churn_risk, 0.0, 1.0)))
    table = _replace(table, "clv_estimate", pa.array(value))
    table = _replace(table, "p_alive", pa.array(p_alive, from_pandas=True))
    table = _replace(table, "expected_purchases", pa.array(expected, from_pandas=True))
    table = _replace(table, "cycle_value", pa.array(cycle_value))
    table = _replace(table, "clv_method", pa.array(method, pa.string()))
    return table, clv_fit


@dataclass(frozen=True)
class _BuyerInputs:
    """The models' inputs for the customers with a purchase in the window, in days."""

    #: Repeat purchase days, days from the first to the last purchase day, from the first to the as-of day.
    x: np.ndarray
    t_x: np.ndarray
    age: np.ndarray
    #: Mean value of the repeat purchase days; 0 without one.
    repeat_value: np.ndarray

    @classmethod
    def of(cls, table: pa.Table, buyers: np.ndarray) -> _BuyerInputs:
        return cls(
            _column(table, "_repeat_days", 0.0)[buyers],
            _column(table, "_purchase_span")[buyers],
            _column(table, "_purchase_age")[buyers],
            np.nan_to_num(_column(table, "_repeat_value")[buyers], nan=0.0),
        )


def _predict(
    inputs: _BuyerInputs, fit: tuple[clv.PurchaseModelParams, clv.GammaGammaParams], settings: ProfileSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """P(alive), expected purchase days, discounted CLV and discounted value over one campaign cycle of every
    buyer; None if any is not finite."""
    model, gg = fit
    x, t_x, age, repeat_value = inputs.x, inputs.t_x, inputs.age, inputs.repeat_value
    # Free repeat orders (amount 0) say nothing about spend: such a buyer gets the population's.
    spending = repeat_value > 0
    frequency, spend_value = np.where(spending, x, 0), np.where(spending, repeat_value, 0.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        p_alive = clv.probability_alive(model, x, t_x, age)
        expected = clv.expected_purchases(model, settings.clv_horizon_days, x, t_x, age)
        # The value is linear in the spend per purchase: a buyer whose repeat orders were free is
        # valued at 1 per purchase, then rescaled to the population's spend.
        free = ~spending & (x > 0)
        stated = np.where(free, 1.0, spend_value)
        value, cycle_value = (
            clv.discounted_customer_lifetime_value(
                model, gg, x, t_x, age, stated, horizon, settings.annual_discount_rate,
            )  # fmt: skip
            for horizon in (settings.clv_horizon_days, settings.campaign_cycle_days)
        )
        if free.any():
            population = clv.expected_average_spend(gg, frequency[free], spend_value[free])
            rescale = population / clv.expected_average_spend(gg, x[free], stated[free])
            value[free] *= rescale
            cycle_value[free] *= rescale
    if not all(np.isfinite(values).all() for values in (p_alive, expected, value, cycle_value)):
        return None
    return p_alive, expected, value, cycle_value


def _heuristic_reason(repeat_buyers: int, settings: ProfileSettings) -> str:
    if repeat_buyers < settings.min_repeat_buyers:
        return f"{repeat_buyers} repeat buyers, fewer than min_repeat_buyers={settings.min_repeat_buyers}"
    return f"the {clv.MODEL_LABELS[settings.clv_model]} or Gamma-Gamma fit did not converge"


def _fit_models(
    inputs: _BuyerInputs, repeat_buyers: int, settings: ProfileSettings
) -> tuple[clv.PurchaseModelParams, clv.GammaGammaParams] | None:
    if repeat_buyers < max(settings.min_repeat_buyers, 2):
        return None
    spenders = (inputs.x > 0) & (inputs.repeat_value > 0)
    # The two fits are independent and their numpy/scipy work releases the GIL: side by side
    # they take the time of the longer one.
    with ThreadPoolExecutor(max_workers=2) as pool:
        model_fit = pool.submit(clv.fit_model, settings.clv_model, inputs.x, inputs.t_x, inputs.age)
        gg_fit = pool.submit(clv.fit_gamma_gamma, inputs.x[spenders], inputs.repeat_value[spenders])
        try:
            model, gg = model_fit.result(), gg_fit.result()
        except InsufficientDataError:
            return None
    if (
        not (model.converged and gg.converged)
        or not all(math.isfinite(value) for value in (*model.parameters.values(), gg.p, gg.q, gg.v))
        or gg.q <= 1
    ):
        return None
    return model, gg


def _with_lifecycle(table: pa.Table, settings: LifecycleSettings) -> pa.Table:
    """Every customer's lifecycle stage (core.lifecycle) and whether they bought on two days or more."""
    purchase_days = _column(table, "purchase_days", 0.0)
    stages = lifecycle_stages(
        LifecycleInputs(
            recency_days=_column(table, "recency_days"),
            purchase_days=purchase_days,
            purchase_span_days=_column(table, "_purchase_span", 0.0),
            p_alive=_column(table, "p_alive"),
            clv=_column(table, "clv_estimate", 0.0),
        ),
        settings,
    )
    table = _replace(table, "lifecycle_stage", pa.array(stages, pa.string()))
    return _replace(table, "repeat_buyer", pa.array(purchase_days >= 2))


def _replace(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    """The table with column `name` replaced, or added at the end."""
    index = table.schema.get_field_index(name)
    if index < 0:
        return table.append_column(pa.field(name, column.type), column)
    return table.set_column(index, pa.field(name, column.type), column)
