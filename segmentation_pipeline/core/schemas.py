"""Data contracts: pydantic models of the records and the Arrow schema of every table.

Each table's Arrow schema is written here once and used by the writer (which
casts to it, so an empty partition keeps its column types), by the readers
and by the asset checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .errors import DataValidationError
from .features import FEATURES

# --------------------------------------------------------------------------- events


class EventType(str, Enum):
    SESSION_START = "session_start"
    PAGE_VIEW = "page_view"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    REFUND = "refund"


EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)
MONETARY_EVENT_TYPES: tuple[str, ...] = (EventType.PURCHASE.value, EventType.REFUND.value)

#: IDs that mean "no customer" in real systems. They are never a customer: events
#: carrying them are quarantined and merges touching them are not followed.
DEFAULT_JUNK_IDS: tuple[str, ...] = (
    "",
    "0",
    "-1",
    "null",
    "none",
    "nan",
    "n/a",
    "na",
    "unknown",
    "undefined",
    "anonymous",
    "guest",
)

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Rows in a day's folder may lie this many days either side of it in UTC (local-time exports).
#: Tables handed over per UTC day (the synthetic source) get no slack.
FOLDER_SLACK_DAYS = 1


class EventRecord(BaseModel):
    """One customer event in canonical form."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    customer_id: str = Field(min_length=1)
    event_type: EventType
    timestamp: datetime
    session_id: str | None = None
    amount: float | None = Field(default=None, ge=0)
    quantity: int | None = Field(default=None, ge=0)
    product_category: str | None = None
    channel: str | None = None
    device: str | None = None

    @field_validator("timestamp")
    @classmethod
    def _must_be_aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a time zone (UTC in the warehouse)")
        return value


class IdMergeRecord(BaseModel):
    """One ID merge: from merged_at on, old_id is known as new_id."""

    model_config = ConfigDict(frozen=True)

    old_id: str = Field(min_length=1)
    new_id: str = Field(min_length=1)
    merged_at: datetime


# ------------------------------------------------------------------- later stages
# The analytic stages extend these; the foundation fixes their names and core fields.


class CustomerProfile(BaseModel):
    """Features of one canonical customer over a look-back window."""

    model_config = ConfigDict(extra="allow")

    canonical_id: str
    as_of: datetime
    recency_days: float | None = None
    frequency: int | None = None
    monetary_total: float | None = None


Score = Annotated[float, Field(ge=0, le=1)]


def _pairs_to_dict(value: object) -> object:
    """Arrow hands a map column over as a list of (key, value) pairs."""
    if isinstance(value, list):
        return dict(value)
    return value


FeatureValues = Annotated[dict[str, float], BeforeValidator(_pairs_to_dict)]


class Segment(BaseModel):
    """One segment of a snapshot: a row of the segments table."""

    model_config = ConfigDict(extra="forbid")

    segment_id: str
    name: str
    traits: list[str] = Field(default_factory=list)
    size: int = Field(ge=0)
    share: Score
    total_clv: float
    mean_clv: float
    #: The members' expected spend over one campaign cycle; None in older snapshots.
    total_cycle_value: float | None = None
    #: Feature column -> the k-means centre in original units.
    centroid: FeatureValues
    #: Feature column -> the members' mean in original units.
    feature_means: FeatureValues
    top_category: str | None = None
    top_channel: str | None = None
    is_new: bool
    match_distance: float | None = None
    #: Lifecycle stage -> share of the segment's customers in it (core.lifecycle); None in older snapshots.
    lifecycle_mix: FeatureValues | None = None
    #: The lifecycle group the segment was built within ("at_risk+lapsed"); None when segments are
    #: behaviour clusters alone, and in older snapshots.
    lifecycle_group: str | None = None


class RobustnessScore(BaseModel):
    """Stability of one segment under perturbation: a row of the robustness table.

    A test that could not be run (no alternative window, no member sampled) has no score.
    """

    model_config = ConfigDict(extra="forbid")

    segment_id: str
    feature_drop_stability: Score | None
    feature_drop_worst_feature: str | None = None
    time_window_stability: Score | None
    time_window_windows: int = Field(ge=0)
    bootstrap_stability: Score | None
    bootstrap_samples: int = Field(ge=0)
    #: None when no test produced a score (band "unmeasured").
    overall: Score | None
    band: str
    production_ready: bool


class SegmentViability(BaseModel):
    """Economic viability of one segment: a row of the viability table; a rejection carries its reasons."""

    model_config = ConfigDict(extra="forbid")

    segment_id: str
    size: int = Field(ge=0)
    share: Score
    total_clv: float
    mean_clv: float
    #: The members' expected spend over one campaign cycle, which the return is computed on; older
    #: snapshots have none.
    campaign_value: float | None = None
    campaign_cost: float
    incremental_profit: float
    expected_roi: float
    strategic_impact: Score
    strategic_tier: str
    approved: bool
    reasons: list[str] = Field(default_factory=list)
    failed_criteria: list[str] = Field(default_factory=list)
    #: The uplift the return is priced at, "measured" (campaign_results) or "prior" (expected_uplift), the
    #: measured interval, and what it stands on in words; None in snapshots made before measured uplifts.
    uplift_used: float | None = None
    uplift_source: str | None = None
    uplift_ci_low: float | None = None
    uplift_ci_high: float | None = None
    uplift_basis: str | None = None


#: Where an answer came from: the configured language model ("llm"), the deterministic
#: mock because it is the configured provider ("mock"), or the mock standing in for a
#: language-model answer that was unusable or never came ("fallback").
AnswerSource = Literal["llm", "mock", "fallback"]
#: What a campaign must know about a segment: what to offer, when, how to reach it, whom it is worth.
ACTIONABILITY_DIMENSIONS = ("what", "when", "how", "who")


class AnswerProvenance(BaseModel):
    """Who answered, with which prompt; and why the model's answer was replaced, if it was."""

    source: AnswerSource = Field(
        description="Who answered: the configured language model (llm), the mock as the configured provider "
        "(mock), or the mock standing in for a model answer that was unusable or never came (fallback)."
    )
    provider: str = Field(description="The configured answer provider (mock or openai).")
    model: str = Field(description="The model that was asked.")
    prompt_version: str = Field(description="The version of the prompt the answer was asked with.")
    fallback_reason: str | None = Field(
        default=None, description="Why the model's answer was replaced by the mock's; empty when it was not."
    )
    #: core.llm.facts.SegmentFacts.sha256 of the statistics the answer was given.
    statistics_sha256: str = Field(
        description="SHA-256 of the segment statistics the answer was given: the checks compare it with the "
        "stored snapshot's."
    )


class ActionabilityAnswer(BaseModel):
    """WHAT / WHEN / HOW / WHO of one segment, each 0..1 with its evidence, and the verdict.

    A dimension the data cannot support (no categories and no lifecycle stages for WHAT, say) has no
    score: null, with the evidence saying why. This is the JSON the language model is asked for (its
    JSON schema goes into the request).
    """

    model_config = ConfigDict(extra="forbid")

    what_score: Score | None = Field(
        description="What to offer: how clearly the segment favours some categories, or how much of it one "
        "lifecycle offer fits; null when not measurable from this data."
    )
    what_evidence: str = Field(min_length=1, description="The statistics behind what_score.")
    when_score: Score | None = Field(
        description="When to send: how concentrated the segment's activity is in days and hours, or how "
        "regular its purchase rhythm is; null when not measurable from this data."
    )
    when_evidence: str = Field(min_length=1, description="The statistics behind when_score.")
    how_score: Score | None = Field(
        description="How to reach them: how clearly the segment prefers some channels, or the owned channel "
        "when the data has none; null when not measurable from this data."
    )
    how_evidence: str = Field(min_length=1, description="The statistics behind how_score.")
    who_score: Score | None = Field(
        description="Customer value: worth of the segment's customers against the population; null when not "
        "measurable from this data."
    )
    who_evidence: str = Field(min_length=1, description="The statistics behind who_score.")
    actionable: bool = Field(description="Whether a campaign can be built for the segment, by the rubric.")
    reason: str = Field(min_length=1, description="Why the segment is or is not actionable.")


class ActionabilityEvaluation(ActionabilityAnswer, AnswerProvenance):
    """A row of the actionability table: one segment's answer and where it came from."""

    segment_id: str


class CampaignRecommendation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1, description="The channel to reach the audience through.")
    timing: str = Field(min_length=1, description="When to send: days and hours.")
    offer: str = Field(min_length=1, description="What to offer.")
    audience_size: int = Field(ge=0, description="Customers the campaign addresses.")
    rationale: str = Field(min_length=1, description="Why this channel, timing and offer, from the statistics.")


class ExplanationAnswer(BaseModel):
    """A segment in business language: the JSON the language model is asked for."""

    model_config = ConfigDict(extra="forbid")

    executive_summary: str = Field(min_length=1, description="Who these customers are and what they are worth.")
    recommendations: list[CampaignRecommendation] = Field(
        description="Campaigns worth running; empty when the segment should not be targeted."
    )
    expected_roi: float | None = Field(
        description="The expected campaign ROI from the viability statistics (null where it has none)."
    )
    confidence_level: Literal["high", "medium", "low"]
    confidence_justification: str = Field(min_length=1, description="Why that confidence, from the statistics.")


class SegmentExplanation(ExplanationAnswer, AnswerProvenance):
    """A row of the explanations table: one segment's explanation and where it came from."""

    segment_id: str


# ------------------------------------------------------------------- Arrow tables


@dataclass(frozen=True)
class Invariant:
    """A rule every stored row of a table keeps, cheap enough for each stage reading the table to
    check again (damage inside a file must not turn into numbers).

    `broken` is DuckDB SQL over one row, true where the row breaks the rule; the partition's day
    is the `date` column (Hive partitioning).
    """

    rule: str
    broken: str
    #: SQL aggregate over rows, neither 0 nor NULL when one of them breaks the rule: cheaper than
    #: counting `broken` (a minimum and a maximum instead of a filter per row), for the pass a stage
    #: makes over a table anyway; `broken` then finds the rows. Counting `broken` if empty. Only
    #: in a grouped query: DuckDB answers a bare min or max over whole files from their
    #: statistics, which were written before any damage.
    detect: str = ""

    @property
    def detector(self) -> str:
        return self.detect or f"count(*) FILTER (WHERE {self.broken})"


def described_by(model: type[BaseModel], *names: str) -> dict[str, str]:
    """The descriptions of `names` as the record model `model` gives them (one definition of each)."""
    described = {name: model.model_fields[name].description for name in names}
    undescribed = [name for name, text in described.items() if not text]
    if undescribed:
        raise ValueError(f"{model.__name__}: no description for {undescribed}")
    return {name: str(text) for name, text in described.items()}


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table: its name, Arrow schema and which columns must be non-null."""

    name: str
    schema: pa.Schema
    description: str
    #: Folder under the warehouse root; defaults to the table name.
    location: str = ""
    #: An as-of table holds a full snapshot per day and gets a `<name>_latest` view.
    as_of: bool = False
    #: A partitioned table has one file per day under `date=YYYY-MM-DD/`; others are plain files.
    partitioned: bool = True
    #: Columns whose values seldom repeat (IDs, instants), stored without dictionary encoding:
    #: for them a dictionary is built and then given up. Ten days of raw_events at a million
    #: customers: 0.18 s to write and 6.3 MB, against 0.22 s and 8.6 MB with every column's.
    plain_columns: tuple[str, ...] = ()
    #: Rules every stored row keeps, re-checked by the stages that read the table through DuckDB
    #: (pyarrow readers verify the files' page checksums instead; DuckDB cannot).
    invariants: tuple[Invariant, ...] = ()
    #: Columns that hold a customer ID (any ID a customer goes by): what erasure removes a customer by.
    customer_columns: tuple[str, ...] = ()
    #: Each column in words, with its unit where it has one: what the asset's Columns tab in the
    #: Dagster UI shows (defs/metadata.py); every column has one (a test holds every table to it).
    column_descriptions: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False, compare=False)

    @property
    def folder(self) -> str:
        return self.location or self.name

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


#: Microseconds from the start of the partition's UTC day to the event (epoch arithmetic: no time-zone
#: lookup per row).
_INTO_THE_DAY = 'epoch_us("timestamp") - epoch_us(CAST("date" AS TIMESTAMP))'
_DAY_MICROSECONDS = 86_400_000_000


RAW_EVENTS = TableSpec(
    name="raw_events",
    column_descriptions={
        "event_id": "The event's ID: the source's, or a hash of the row when the source has none.",
        "customer_id": "The customer ID the event was recorded under (before merges; merge_map resolves it).",
        "event_type": "One of session_start, page_view, add_to_cart, purchase, refund.",
        "timestamp": "When the event happened, in UTC.",
        "session_id": "The session the event belongs to; empty when the source has no sessions.",
        "amount": "Money paid (purchase) or returned (refund), in the source's currency; empty for other events.",
        "quantity": "Items in the purchase or refund; empty when the source does not say.",
        "product_category": "The product category of the event; empty when the source has none.",
        "channel": "Where the event happened (web, mobile_app, email, store, ...); empty when the source has none.",
        "device": "The device the event came from (desktop, phone, tablet, ...); empty when the source has none.",
    },
    description="Validated customer events, one row per event, partitioned by event date (UTC).",
    schema=pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("customer_id", pa.string(), nullable=False),
            pa.field("event_type", pa.string(), nullable=False),
            pa.field("timestamp", UTC_TIMESTAMP, nullable=False),
            pa.field("session_id", pa.string()),
            pa.field("amount", pa.float64()),
            pa.field("quantity", pa.int32()),
            pa.field("product_category", pa.string()),
            pa.field("channel", pa.string()),
            pa.field("device", pa.string()),
        ]
    ),
    plain_columns=("event_id", "timestamp", "session_id"),
    customer_columns=("customer_id",),
    # What a damaged page turns into and a stage would compute on. (Ingestion stores no empty
    # customer ID and no unknown event type either, and the raw_events checks count them after each
    # write; a comparison of strings per event is left out of the stages' passes.)
    invariants=(
        Invariant(
            "timestamp inside the partition's day (UTC)",
            f"NOT ({_INTO_THE_DAY} >= 0 AND {_INTO_THE_DAY} < {_DAY_MICROSECONDS})",
            f"CAST(min({_INTO_THE_DAY}) < 0 OR max({_INTO_THE_DAY}) >= {_DAY_MICROSECONDS} AS BIGINT)",
        ),
        Invariant("customer_id not null", "customer_id IS NULL", "count(*) - count(customer_id)"),
        Invariant(
            "amount a number not below zero",
            "amount < 0 OR NOT isfinite(amount)",
            # NaN sorts above every number in DuckDB: the maximum shows it.
            "CAST(min(amount) < 0 OR NOT isfinite(max(amount)) AS BIGINT)",
        ),
    ),
)

#: Columns a source must provide (after column mapping); everything else is optional.
EVENT_REQUIRED_SOURCE_COLUMNS: tuple[str, ...] = ("customer_id", "event_type", "timestamp")
#: A transaction log (customer, date, amount) is valid input: every row is a purchase.
TRANSACTION_REQUIRED_SOURCE_COLUMNS: tuple[str, ...] = ("customer_id", "timestamp", "amount")

ID_HISTORY = TableSpec(
    name="id_history",
    column_descriptions={
        "old_id": "The customer ID that was merged away.",
        "new_id": "The customer ID it was merged into (which may itself be merged later: a chain).",
        "merged_at": "When the merge took effect, in UTC; it may lie before the day the record arrived.",
    },
    description="Customer-ID merge records received on that day (merged_at may be earlier).",
    customer_columns=("old_id", "new_id"),
    schema=pa.schema(
        [
            pa.field("old_id", pa.string(), nullable=False),
            pa.field("new_id", pa.string(), nullable=False),
            pa.field("merged_at", UTC_TIMESTAMP, nullable=False),
        ]
    ),
    invariants=(
        Invariant(
            "old_id and new_id present and different",
            "old_id IS NULL OR old_id = '' OR new_id IS NULL OR new_id = '' OR old_id = new_id",
        ),
        # A merge stays with the day it was filed under, which a local-time folder may lag by a day.
        Invariant(
            f"merged_at no later than {FOLDER_SLACK_DAYS} day(s) after the partition's day (UTC)",
            f'merged_at IS NULL OR epoch_us(merged_at) >= epoch_us(CAST("date" AS TIMESTAMP)) '
            f"+ {(1 + FOLDER_SLACK_DAYS) * _DAY_MICROSECONDS}",
        ),
    ),
)
ID_HISTORY_REQUIRED_SOURCE_COLUMNS: tuple[str, ...] = ("old_id", "new_id", "merged_at")


def _quarantine_spec(name: str, of: TableSpec) -> TableSpec:
    """Rejected rows keep their raw values as text, with where they came from and why."""
    return TableSpec(
        name=name,
        description=f"Rows rejected from {of.name}, with the reason, the source and the row number.",
        schema=pa.schema(
            [
                pa.field("reason", pa.string(), nullable=False),
                pa.field("source", pa.string(), nullable=False),
                pa.field("source_row", pa.int64()),
            ]
            + [pa.field(column, pa.string()) for column in of.columns]
        ),
        location=f"quarantine/{of.name}",
        customer_columns=of.customer_columns,
        column_descriptions={
            "reason": "Why the row was rejected (e.g. missing_customer_id, unknown_event_type, unparsable_timestamp).",
            "source": "The input file the row came from.",
            "source_row": "The row's number in that file (rows).",
            **{
                column: f"The rejected row's {column} as it arrived, as text. {description}"
                for column, description in of.column_descriptions.items()
            },
        },
    )


QUARANTINE_EVENTS = _quarantine_spec("quarantine_raw_events", RAW_EVENTS)
QUARANTINE_ID_HISTORY = _quarantine_spec("quarantine_id_history", ID_HISTORY)


def unassigned(quarantine: TableSpec) -> TableSpec:
    """Rejected rows of multi-day files whose day cannot be read: one file per set of input files."""
    return replace(
        quarantine,
        name=f"{quarantine.name}_unassigned",
        description=f"{quarantine.description} Rows whose date could not be read.",
        location=f"{quarantine.folder}_unassigned",
        partitioned=False,
    )


UNASSIGNED_EVENTS = unassigned(QUARANTINE_EVENTS)
UNASSIGNED_ID_HISTORY = unassigned(QUARANTINE_ID_HISTORY)

MERGE_MAP = TableSpec(
    name="merge_map",
    column_descriptions={
        "old_id": "A customer ID seen in id_history up to the end of the day.",
        "canonical_id": "The ID the customer's events count under: the end of old_id's merge chain.",
        "component_size": "IDs linked to this one by merges, itself included (IDs).",
        "chain_depth": "Merges from old_id to its canonical ID (merges); 0 for a canonical ID.",
        "in_cycle": "Whether old_id sits on a merge cycle (A -> B -> A), resolved by the latest merge.",
        "is_junk": "Whether old_id is a junk ID (a placeholder such as 'unknown' or a hub linking too many "
        "customers): it is never merged into a customer.",
        "junk_reason": "Why the ID is junk (block list or hub); empty for a customer ID.",
    },
    description="old_id -> canonical_id for every ID seen in id_history up to the end of the day.",
    customer_columns=("old_id", "canonical_id"),
    schema=pa.schema(
        [
            pa.field("old_id", pa.string(), nullable=False),
            pa.field("canonical_id", pa.string(), nullable=False),
            pa.field("component_size", pa.int64(), nullable=False),
            pa.field("chain_depth", pa.int64(), nullable=False),
            pa.field("in_cycle", pa.bool_(), nullable=False),
            pa.field("is_junk", pa.bool_(), nullable=False),
            pa.field("junk_reason", pa.string()),
        ]
    ),
    as_of=True,
)

#: Feature name -> value, for centroids and means in original units.
FEATURE_VALUES = pa.map_(pa.string(), pa.float64())

PROFILES = TableSpec(
    name="profiles",
    column_descriptions={
        "canonical_id": "The customer's canonical ID (merge_map): the events of merged IDs count here.",
        "n_ids": "Customer IDs whose events the profile counts (IDs).",
        "window_days": "Length of the look-back window ending on the as-of day (days).",
        "first_event": "The customer's first event in the window, in UTC.",
        "last_event": "The customer's last event in the window, in UTC.",
        **{feature.name: feature.column_description for feature in FEATURES},
        "p_alive": "Probability the customer still buys, from the fitted purchase model; empty where none "
        "could be fitted. Unit: probability (0 to 1).",
        "expected_purchases": "Purchases the model expects over the CLV horizon (orders); empty where no model "
        "could be fitted.",
        "cycle_value": "Expected spend over one campaign cycle (campaign_cycle_days), discounted like the CLV: "
        "the value a campaign run now can move. Unit: money, in the source's currency.",
        "clv_method": "How churn risk and CLV were estimated: the purchase model's name, or the heuristic.",
        "lifecycle_stage": "prospect, new, active, loyal, at_risk or lapsed (core.lifecycle).",
        "repeat_buyer": "Whether the customer bought on more than one day in the window.",
    },
    description="One row per canonical customer active in the look-back window ending that day.",
    customer_columns=("canonical_id",),
    schema=pa.schema(
        [
            pa.field("canonical_id", pa.string(), nullable=False),
            pa.field("n_ids", pa.int64(), nullable=False),
            pa.field("window_days", pa.int64(), nullable=False),
            pa.field("first_event", UTC_TIMESTAMP, nullable=False),
            pa.field("last_event", UTC_TIMESTAMP, nullable=False),
        ]
        + [pa.field(feature.name, feature.type) for feature in FEATURES]
        + [
            pa.field("p_alive", pa.float64()),
            pa.field("expected_purchases", pa.float64()),
            # Expected spend over one campaign cycle (campaign_cycle_days), discounted like the CLV:
            # the value a campaign run now can move (core.viability).
            pa.field("cycle_value", pa.float64()),
            pa.field("clv_method", pa.string(), nullable=False),
            # core.lifecycle: prospect, new, active, loyal, at_risk or lapsed.
            pa.field("lifecycle_stage", pa.string(), nullable=False),
            pa.field("repeat_buyer", pa.bool_(), nullable=False),
        ]
    ),
    as_of=True,
)

CLUSTERS = TableSpec(
    name="clusters",
    column_descriptions={
        "canonical_id": "The customer's canonical ID.",
        "segment_id": "The customer's segment (segments table); IDs follow the previous snapshot's.",
        "distance": "Distance from the customer to the segment's centre in the scaled feature space "
        "(robust-scaled units): larger is less typical of the segment.",
        "shaped_segments": "Whether the customer was among those whose features shaped the segments "
        "(established customers); the others were assigned to the nearest one.",
        "behaviour_cluster": "The customer's behaviour cluster: a segment is one (or, when small, a few) "
        "behaviour clusters within one lifecycle group.",
    },
    description="The segment of every profiled customer: one row per canonical customer.",
    customer_columns=("canonical_id",),
    schema=pa.schema(
        [
            pa.field("canonical_id", pa.string(), nullable=False),
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("distance", pa.float64(), nullable=False),
            pa.field("shaped_segments", pa.bool_(), nullable=False),
            # The customer's behaviour cluster; a segment is one (or, when small, a few) behaviour
            # clusters within one lifecycle group.
            pa.field("behaviour_cluster", pa.int32()),
        ]
    ),
    as_of=True,
)

SEGMENTS = TableSpec(
    name="segments",
    column_descriptions={
        "segment_id": "The segment's ID: kept from snapshot to snapshot while the segment matches.",
        "name": "The segment's name, from its most distinctive traits.",
        "traits": "The features on which the segment stands far above or below all customers, in words.",
        "size": "Customers in the segment (customers).",
        "share": "The segment's share of all profiled customers. Unit: share (0 to 1).",
        "total_clv": "The members' expected revenue over the CLV horizon, summed. Unit: money, in the source's "
        "currency.",
        "mean_clv": "Expected revenue over the CLV horizon per member. Unit: money, in the source's currency.",
        "total_cycle_value": "The members' expected spend over one campaign cycle, summed: what a campaign run now "
        "can move; empty in snapshots made before it. Unit: money, in the source's currency.",
        "centroid": "Feature -> the segment's k-means centre, in each feature's own unit.",
        "feature_means": "Feature -> the members' mean, in each feature's own unit.",
        "top_category": "The product category most of the segment's events are in.",
        "top_channel": "The channel most of the segment's events are in.",
        "is_new": "Whether the segment matched none of the previous snapshot's (a new segment ID).",
        "match_distance": "Distance to the previous snapshot's segment it was matched to (robust-scaled units); "
        "empty for a new segment.",
        "lifecycle_mix": "Lifecycle stage -> share of the segment's customers in it. Unit: share (0 to 1).",
        "lifecycle_group": "The lifecycle group the segment was built within (e.g. at_risk+lapsed); empty when "
        "segments are behaviour clusters alone.",
    },
    description="Segment definitions of the snapshot: one row per segment.",
    schema=pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("traits", pa.list_(pa.string()), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("share", pa.float64(), nullable=False),
            pa.field("total_clv", pa.float64(), nullable=False),
            pa.field("mean_clv", pa.float64(), nullable=False),
            # The members' expected spend over one campaign cycle (profiles' cycle_value): what a
            # campaign run now can move; null in snapshots made before it.
            pa.field("total_cycle_value", pa.float64()),
            pa.field("centroid", FEATURE_VALUES, nullable=False),
            pa.field("feature_means", FEATURE_VALUES, nullable=False),
            pa.field("top_category", pa.string()),
            pa.field("top_channel", pa.string()),
            pa.field("is_new", pa.bool_(), nullable=False),
            pa.field("match_distance", pa.float64()),
            # Share of the segment's customers in each lifecycle stage (core.lifecycle).
            pa.field("lifecycle_mix", pa.map_(pa.string(), pa.float64())),
            # The lifecycle group the segment was built within ("at_risk+lapsed"); null when segments are
            # behaviour clusters alone.
            pa.field("lifecycle_group", pa.string()),
        ]
    ),
    as_of=True,
)

SEGMENT_MIGRATION = TableSpec(
    name="segment_migration",
    column_descriptions={
        "previous_as_of": "The day of the previous snapshot the customers are compared with.",
        "from_segment_id": "The customers' segment in the previous snapshot; empty for customers new to this one.",
        "to_segment_id": "The customers' segment in this snapshot; empty for customers who left it.",
        "customers": "Customers who moved from from_segment_id to to_segment_id (customers).",
    },
    description="Customers moving between segments since the previous snapshot: one row per (from, to) pair; "
    "from_segment_id is null for customers new to the snapshot, to_segment_id null for those who left it.",
    schema=pa.schema(
        [
            pa.field("previous_as_of", pa.date32()),
            pa.field("from_segment_id", pa.string()),
            pa.field("to_segment_id", pa.string()),
            pa.field("customers", pa.int64(), nullable=False),
        ]
    ),
    as_of=True,
)

CLV_BACKTEST = TableSpec(
    name="clv_backtest",
    column_descriptions={
        "kind": "model (a purchase model, fitted) or baseline (a model-free rule to beat).",
        "name": "The model's or baseline's short name (bgnbd, mbgnbd, pareto_nbd, recency, heuristic).",
        "label": "The model's or baseline's name in words.",
        "converged": "Whether the model's fit converged; empty for a baseline.",
        "chosen": "Whether the day's profiles use this model.",
        "parameters": "The fitted parameters by name; empty for a baseline.",
        "log_likelihood": "Log-likelihood of the fit on the purchases before the split day; empty for a baseline.",
        "split_day": "The last day of the fitting period; the holdout starts the day after.",
        "holdout_days": "Days after the split day the forecast is scored on (days).",
        "customers": "Customers scored (customers).",
        "forecast_purchase_days": "Repeat purchase days in the holdout, forecast and summed over customers (days).",
        "actual_purchase_days": "Repeat purchase days in the holdout that happened, summed over customers (days).",
        "error_percent": "Forecast against actual purchase days, in percent of the actual (%).",
        "mae": "Mean absolute error of the holdout purchase days per customer (days).",
        "churn_auc": "AUC of the churn score for 'no purchase in the holdout': 0.5 is chance, 1 perfect.",
        "reason": "Why the model was chosen or not, or why it could not be fitted.",
    },
    description="Each candidate purchase model, and the model-free baselines, fitted before the split day and "
    "scored on the holdout days after it: one row per model or baseline.",
    schema=pa.schema(
        [
            # "model" or "baseline".
            pa.field("kind", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("converged", pa.bool_()),
            # The model the profiles of the day use.
            pa.field("chosen", pa.bool_(), nullable=False),
            pa.field("parameters", pa.map_(pa.string(), pa.float64())),
            pa.field("log_likelihood", pa.float64()),
            pa.field("split_day", pa.date32()),
            pa.field("holdout_days", pa.int64(), nullable=False),
            pa.field("customers", pa.int64(), nullable=False),
            # Repeat purchase days in the holdout: the forecast summed over customers, and what happened.
            pa.field("forecast_purchase_days", pa.float64()),
            pa.field("actual_purchase_days", pa.float64()),
            pa.field("error_percent", pa.float64()),
            # Mean absolute error of the holdout purchase days per customer.
            pa.field("mae", pa.float64()),
            # AUC of the churn score for "no purchase in the holdout" (0.5 is chance).
            pa.field("churn_auc", pa.float64()),
            pa.field("reason", pa.string()),
        ]
    ),
    as_of=True,
)

ROBUSTNESS = TableSpec(
    name="robustness",
    column_descriptions={
        "segment_id": "The segment the row is about.",
        "feature_drop_stability": "How well the segment is recovered when one feature at a time is left out: "
        "the worst best-match Jaccard (0 to 1); empty when not measured.",
        "feature_drop_worst_feature": "The feature whose removal changes the segment most.",
        "time_window_stability": "How well the segment is recovered from profiles over shorter or shifted windows "
        "(best-match Jaccard, 0 to 1); empty when not measured.",
        "time_window_windows": "Windows the time-window test compared (windows).",
        "bootstrap_stability": "Mean best-match Jaccard of the segment over re-clustered bootstrap samples "
        "(0 to 1); empty when not measured.",
        "bootstrap_samples": "Bootstrap samples drawn (samples).",
        "overall": "Weighted mean of the tests that produced a score (0 to 1); empty when none did.",
        "band": "highly_stable (above 0.85), stable (above 0.75), doubtful (above 0.6), unstable or dissolved "
        "(0.5 or less); unmeasured when no test scored.",
        "production_ready": "Whether the segment is stable enough to act on.",
    },
    description="Stability of each segment under feature-drop, time-window and bootstrap tests: one row per segment.",
    schema=pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("feature_drop_stability", pa.float64()),
            pa.field("feature_drop_worst_feature", pa.string()),
            pa.field("time_window_stability", pa.float64()),
            pa.field("time_window_windows", pa.int64(), nullable=False),
            pa.field("bootstrap_stability", pa.float64()),
            pa.field("bootstrap_samples", pa.int64(), nullable=False),
            pa.field("overall", pa.float64()),
            pa.field("band", pa.string(), nullable=False),
            pa.field("production_ready", pa.bool_(), nullable=False),
        ]
    ),
    as_of=True,
)

VIABILITY = TableSpec(
    name="viability",
    column_descriptions={
        "segment_id": "The segment the row is about.",
        "size": "Customers in the segment (customers).",
        "share": "The segment's share of all profiled customers. Unit: share (0 to 1).",
        "total_clv": "The members' expected revenue over the CLV horizon, summed. Unit: money, in the source's "
        "currency.",
        "mean_clv": "Expected revenue over the CLV horizon per member. Unit: money, in the source's currency.",
        "campaign_value": "What the campaign's return is computed on: the members' expected spend over one "
        "campaign cycle (total_clv in snapshots made before it). Unit: money, in the source's currency.",
        "campaign_cost": "Cost of a campaign to every member: size x cost per customer. Unit: money, in the "
        "source's currency.",
        "incremental_profit": "campaign_value x uplift x margin: the profit the campaign is expected to add. Unit: "
        "money, in the source's currency.",
        "expected_roi": "(incremental_profit - campaign_cost) / campaign_cost: 1.0 returns the cost twice over "
        "(ratio).",
        "strategic_impact": "The segment's weight among all of them, from its share of the value and its value "
        "per customer (0 to 1).",
        "strategic_tier": "high, medium or low strategic impact.",
        "approved": "Whether the segment passes every viability criterion and is worth a campaign.",
        "reasons": "Why it was approved or rejected, criterion by criterion, in words.",
        "failed_criteria": "The names of the criteria it failed; empty when approved.",
        "uplift_used": "The uplift the return is priced at (share of revenue, 0.10 is +10%).",
        "uplift_source": "measured (the segment's latest measured campaign) or prior (the configured "
        "expected_uplift).",
        "uplift_ci_low": "Lower end of the measured uplift's 95% interval (share); empty for the prior.",
        "uplift_ci_high": "Upper end of the measured uplift's 95% interval (share); empty for the prior.",
        "uplift_basis": "What the uplift stands on, in words.",
    },
    description="Economic viability of each segment and whether it is approved, with reasons: one row per segment.",
    schema=pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("share", pa.float64(), nullable=False),
            pa.field("total_clv", pa.float64(), nullable=False),
            pa.field("mean_clv", pa.float64(), nullable=False),
            # What the campaign's return is computed on: the members' expected spend over one campaign
            # cycle (total_clv in snapshots made before the cycle value).
            pa.field("campaign_value", pa.float64()),
            pa.field("campaign_cost", pa.float64(), nullable=False),
            pa.field("incremental_profit", pa.float64(), nullable=False),
            pa.field("expected_roi", pa.float64(), nullable=False),
            pa.field("strategic_impact", pa.float64(), nullable=False),
            pa.field("strategic_tier", pa.string(), nullable=False),
            pa.field("approved", pa.bool_(), nullable=False),
            pa.field("reasons", pa.list_(pa.string()), nullable=False),
            pa.field("failed_criteria", pa.list_(pa.string()), nullable=False),
            # The uplift the return is priced at: "measured" (the segment's latest campaign_results) or
            # "prior" (expected_uplift); the measured interval (null for the prior) and its basis in words.
            # Null in snapshots made before measured uplifts.
            pa.field("uplift_used", pa.float64()),
            pa.field("uplift_source", pa.string()),
            pa.field("uplift_ci_low", pa.float64()),
            pa.field("uplift_ci_high", pa.float64()),
            pa.field("uplift_basis", pa.string()),
        ]
    ),
    as_of=True,
)

_PROVENANCE_FIELDS = [
    pa.field("source", pa.string(), nullable=False),
    pa.field("provider", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string(), nullable=False),
    pa.field("fallback_reason", pa.string()),
    pa.field("statistics_sha256", pa.string(), nullable=False),
]

ACTIONABILITY = TableSpec(
    name="actionability",
    column_descriptions={
        "segment_id": "The segment the row is about.",
        **described_by(
            ActionabilityAnswer,
            *(f"{dimension}_{part}" for dimension in ACTIONABILITY_DIMENSIONS for part in ("score", "evidence")),
            "actionable",
            "reason",
        ),
        **described_by(AnswerProvenance, *AnswerProvenance.model_fields),
    },
    description="WHAT/WHEN/HOW/WHO scores of each segment with their evidence (a null score: not measurable "
    "from the data), the verdict and its reason, "
    "and whether the answer came from the language model, the mock or the fallback: one row per segment.",
    schema=pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            *[
                # A null score: the dimension is not measurable from the data (its evidence says why).
                pa.field(
                    f"{dimension}_{part}", pa.float64() if part == "score" else pa.string(), nullable=part == "score"
                )
                for dimension in ACTIONABILITY_DIMENSIONS
                for part in ("score", "evidence")
            ],
            pa.field("actionable", pa.bool_(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            *_PROVENANCE_FIELDS,
        ]
    ),
    as_of=True,
)

RECOMMENDATION = pa.struct(
    [
        pa.field("channel", pa.string(), nullable=False),
        pa.field("timing", pa.string(), nullable=False),
        pa.field("offer", pa.string(), nullable=False),
        pa.field("audience_size", pa.int64(), nullable=False),
        pa.field("rationale", pa.string(), nullable=False),
    ]
)

EXPLANATIONS = TableSpec(
    name="explanations",
    column_descriptions={
        "segment_id": "The segment the row is about.",
        **described_by(
            ExplanationAnswer, "executive_summary", "recommendations", "expected_roi", "confidence_justification"
        ),
        "confidence_level": "How far the explanation can be trusted: high, medium or low.",
        **described_by(AnswerProvenance, *AnswerProvenance.model_fields),
    },
    description="Each segment in business language: summary, campaign recommendations, expected ROI and "
    "confidence, and where the answer came from: one row per segment.",
    schema=pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("executive_summary", pa.string(), nullable=False),
            pa.field("recommendations", pa.list_(RECOMMENDATION), nullable=False),
            pa.field("expected_roi", pa.float64()),
            pa.field("confidence_level", pa.string(), nullable=False),
            pa.field("confidence_justification", pa.string(), nullable=False),
            *_PROVENANCE_FIELDS,
        ]
    ),
    as_of=True,
)

AUDIENCES = TableSpec(
    name="audiences",
    column_descriptions={
        "canonical_id": "The customer's canonical ID.",
        "segment_id": "The customer's segment.",
        "segment_name": "The segment's name.",
        "campaign_key": "<segment ID>-<channel>: the same campaign from day to day while the segment keeps its ID.",
        "channel": "The channel the campaign reaches the customer through.",
        "timing": "When to send, in words.",
        "offer": "What the campaign offers.",
        "lifecycle_stage": "The customer's lifecycle stage.",
        "clv_estimate": "The customer's expected revenue over the CLV horizon. Unit: money, in the source's currency.",
        "churn_risk": "Probability the customer has stopped buying. Unit: probability (0 to 1).",
        "recency_days": "Days since the customer's last purchase (days).",
        "cycle_value": "The customer's expected spend over one campaign cycle. Unit: money, in the source's "
        "currency.",
        "expected_value": "Expected extra spend in the campaign cycle: cycle value x the campaign's uplift. Unit: "
        "money, in the source's currency.",
        "group": "treatment (exported) or control (held out, to measure the uplift against).",
    },
    description="The customers of every campaign of an approved and actionable segment, each in its treatment "
    "or control group (core.activation): one row per customer in a campaign, in one campaign at most.",
    schema=pa.schema(
        [
            pa.field("canonical_id", pa.string(), nullable=False),
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("segment_name", pa.string(), nullable=False),
            # "<segment ID>-<channel>": the same campaign from day to day while the segment keeps its ID.
            pa.field("campaign_key", pa.string(), nullable=False),
            pa.field("channel", pa.string(), nullable=False),
            pa.field("timing", pa.string(), nullable=False),
            pa.field("offer", pa.string(), nullable=False),
            pa.field("lifecycle_stage", pa.string(), nullable=False),
            pa.field("clv_estimate", pa.float64()),
            pa.field("churn_risk", pa.float64()),
            pa.field("recency_days", pa.float64()),
            pa.field("cycle_value", pa.float64()),
            # Expected extra spend in the campaign cycle: cycle value x the campaign's uplift.
            pa.field("expected_value", pa.float64()),
            # "treatment" (exported) or "control" (held out, to measure the uplift against).
            pa.field("group", pa.string(), nullable=False),
        ]
    ),
    as_of=True,
    customer_columns=("canonical_id",),
)

AUDIENCE_EXPORTS = TableSpec(
    name="audience_exports",
    column_descriptions={
        "campaign_key": "<segment ID>-<channel>: the campaign.",
        "customers": "Treatment customers in the export (customers).",
        "control_customers": "Customers kept back as the control group (customers).",
        "added": "Customers new to the campaign since the previous export (customers).",
        "removed": "Customers no longer in the campaign (customers).",
        "moved_in": "Customers who came from another campaign (customers).",
        "moved_out": "Customers who went to another campaign (customers).",
        "previous_export": "The day of the export compared with; empty for the first.",
        "folder": "Where the campaign's files are.",
        "manifest_sha256": "SHA-256 of the export's manifest.",
    },
    description="What each day's export under <data dir>/exports/date=D/ holds: one row per campaign, with its "
    "treatment customers, the control group kept back and the changes since the previous export.",
    schema=pa.schema(
        [
            pa.field("campaign_key", pa.string(), nullable=False),
            pa.field("customers", pa.int64(), nullable=False),
            pa.field("control_customers", pa.int64(), nullable=False),
            pa.field("added", pa.int64(), nullable=False),
            pa.field("removed", pa.int64(), nullable=False),
            pa.field("moved_in", pa.int64(), nullable=False),
            pa.field("moved_out", pa.int64(), nullable=False),
            pa.field("previous_export", pa.date32()),
            pa.field("folder", pa.string(), nullable=False),
            pa.field("manifest_sha256", pa.string(), nullable=False),
        ]
    ),
    as_of=True,
)

CAMPAIGN_RESULTS = TableSpec(
    name="campaign_results",
    column_descriptions={
        "export_day": "The day the campaign's audience was exported.",
        "campaign_key": "<segment ID>-<channel>: the campaign.",
        "segment_id": "The segment the campaign was aimed at.",
        "segment_name": "The segment's name.",
        "channel": "The campaign's channel.",
        "metric": "conversion_rate (share who bought), orders_per_customer or revenue_per_customer (net of "
        "refunds).",
        "window_days": "Days after the export the campaign is measured over (days).",
        "window_first_day": "The first day of the measurement window.",
        "window_last_day": "The last day of the measurement window.",
        "days_with_events": "Days of the window with stored events (days); window_days when none is missing.",
        "treatment_customers": "Customers who got the campaign (customers).",
        "control_customers": "Customers held out (customers).",
        "treatment_value": "The metric among treatment customers, in the metric's unit.",
        "control_value": "The metric among control customers, in the metric's unit.",
        "uplift": "Treatment minus control, in the metric's unit.",
        "uplift_ci_low": "Lower end of the uplift's interval, in the metric's unit.",
        "uplift_ci_high": "Upper end of the uplift's interval, in the metric's unit.",
        "relative_uplift": "(treatment - control) / control: 0.10 is +10%; empty where the control value is not "
        "above zero.",
        "relative_ci_low": "Lower end of the relative uplift's interval (0.10 is +10%).",
        "relative_ci_high": "Upper end of the relative uplift's interval (0.10 is +10%).",
        "confidence": "Confidence level of the intervals (0.95 is 95%).",
        "significant": "Whether the interval of the uplift excludes zero.",
        "method": "How the interval was computed.",
        "summary": "The result in words.",
    },
    description="Campaigns measured once their window has passed (core.campaign_results): the partition of day D "
    "holds the exports of day D - window_days, one row per (campaign, metric): treatment against control, the "
    "uplift with its confidence interval and whether it is significant.",
    schema=pa.schema(
        [
            pa.field("export_day", pa.date32(), nullable=False),
            pa.field("campaign_key", pa.string(), nullable=False),
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("segment_name", pa.string(), nullable=False),
            pa.field("channel", pa.string(), nullable=False),
            # conversion_rate (share who bought), orders_per_customer or revenue_per_customer (net of refunds).
            pa.field("metric", pa.string(), nullable=False),
            pa.field("window_days", pa.int64(), nullable=False),
            pa.field("window_first_day", pa.date32(), nullable=False),
            pa.field("window_last_day", pa.date32(), nullable=False),
            # Days of the window with stored events (window_days when none is missing).
            pa.field("days_with_events", pa.int64(), nullable=False),
            pa.field("treatment_customers", pa.int64(), nullable=False),
            pa.field("control_customers", pa.int64(), nullable=False),
            pa.field("treatment_value", pa.float64()),
            pa.field("control_value", pa.float64()),
            # Treatment minus control, in the metric's unit, with its interval.
            pa.field("uplift", pa.float64()),
            pa.field("uplift_ci_low", pa.float64()),
            pa.field("uplift_ci_high", pa.float64()),
            # (treatment - control) / control: 0.10 is +10%; null where the control value is not above zero.
            pa.field("relative_uplift", pa.float64()),
            pa.field("relative_ci_low", pa.float64()),
            pa.field("relative_ci_high", pa.float64()),
            pa.field("confidence", pa.float64(), nullable=False),
            # The interval of the absolute uplift excludes zero.
            pa.field("significant", pa.bool_(), nullable=False),
            pa.field("method", pa.string(), nullable=False),
            pa.field("summary", pa.string(), nullable=False),
        ]
    ),
)

SYNTHETIC_TRUTH = TableSpec(
    name="synthetic_truth",
    column_descriptions={
        "customer_id": "A customer ID the synthetic source used.",
        "person_id": "The person's final primary ID (the ID the merges end on).",
        "archetype": "The behaviour the synthetic customer was generated from.",
        "join_date": "The day the customer first appeared.",
        "lapse_date": "The day the customer stopped buying; empty when they did not.",
    },
    description="Ground truth of the synthetic source: each customer's generating archetype.",
    # person_id is the person's final primary ID.
    customer_columns=("customer_id", "person_id"),
    schema=pa.schema(
        [
            pa.field("customer_id", pa.string(), nullable=False),
            pa.field("person_id", pa.string(), nullable=False),
            pa.field("archetype", pa.string(), nullable=False),
            pa.field("join_date", pa.date32(), nullable=False),
            pa.field("lapse_date", pa.date32()),
        ]
    ),
    partitioned=False,
)

COMPLETE_SNAPSHOTS = TableSpec(
    name="complete_snapshots",
    column_descriptions={
        "as_of": "A day whose whole snapshot (every as-of table and the report) is complete.",
        "report_sha256": "SHA-256 of the published report.json that completed the snapshot.",
    },
    description="Days whose whole snapshot is complete, every as-of table and the report: one row per day, "
    "written when its report is published and removed when one of its tables is written again. "
    "Every <table>_latest view shows the newest of them.",
    schema=pa.schema(
        [
            pa.field("as_of", pa.date32(), nullable=False),
            #: SHA-256 of the published report.json: which report completed the snapshot.
            pa.field("report_sha256", pa.string(), nullable=False),
        ]
    ),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        RAW_EVENTS,
        ID_HISTORY,
        QUARANTINE_EVENTS,
        QUARANTINE_ID_HISTORY,
        UNASSIGNED_EVENTS,
        UNASSIGNED_ID_HISTORY,
        MERGE_MAP,
        CLV_BACKTEST,
        PROFILES,
        CLUSTERS,
        SEGMENTS,
        SEGMENT_MIGRATION,
        ROBUSTNESS,
        VIABILITY,
        ACTIONABILITY,
        EXPLANATIONS,
        AUDIENCES,
        AUDIENCE_EXPORTS,
        CAMPAIGN_RESULTS,
        COMPLETE_SNAPSHOTS,
        SYNTHETIC_TRUTH,
    )
}
#: The tables of a day's snapshot, written by its stages before the report (each gets a `_latest` view).
SNAPSHOT_TABLES: tuple[TableSpec, ...] = tuple(spec for spec in TABLES.values() if spec.as_of)


def conform(table: pa.Table, spec: TableSpec) -> pa.Table:
    """Return `table` with exactly the columns, order and types of `spec`.

    Missing optional columns become nulls; a missing required column or a
    value that cannot be cast is a DataValidationError naming the column.
    """
    columns = []
    for field_ in spec.schema:
        if field_.name in table.column_names:
            column = table.column(field_.name)
            if column.type != field_.type:
                try:
                    column = column.cast(field_.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DataValidationError(
                        f"{spec.name}: column {field_.name!r} has type {column.type}, expected {field_.type}: {exc}"
                    ) from exc
            if not field_.nullable and column.null_count:
                raise DataValidationError(
                    f"{spec.name}: column {field_.name!r} has {column.null_count} nulls, expected none"
                )
        elif field_.nullable:
            column = pa.nulls(table.num_rows, type=field_.type)
        else:
            raise DataValidationError(
                f"{spec.name}: missing required column {field_.name!r} ({field_.type}); found {table.column_names}"
            )
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=spec.schema)
