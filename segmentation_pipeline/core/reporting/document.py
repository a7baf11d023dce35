"""The segmentation report of one snapshot, as pydantic models, and how it is gathered from the warehouse.

The report holds what every stage stored for the as-of day: each segment's
profile summary, robustness, viability, actionability and explanation; how the
segments changed since the previous snapshot; what data the snapshot stands on;
and the settings each stage ran with. Its JSON is the record: it loads back into
an equal `SegmentationReport`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..activation import campaign_key
from ..backtest import CALIBRATION_KEY, TRACKING_KEY
from ..business import Business
from ..errors import ReportGenerationError
from ..features import FEATURES_BY_NAME
from ..llm.actionability import stored_rubric
from ..llm.campaigns import stage_words
from ..llm.explainer import HIGH_CONFIDENCE_ROBUSTNESS, MEDIUM_CONFIDENCE_ROBUSTNESS, weakest_of
from ..llm.facts import SegmentFacts, main_label, stored_snapshot_facts
from ..llm.questions import stale_answers
from ..profiles import CLV_KEY, WindowInput
from ..schemas import (
    ACTIONABILITY,
    AUDIENCE_EXPORTS,
    CAMPAIGN_RESULTS,
    CLUSTERS,
    CLV_BACKTEST,
    EXPLANATIONS,
    MERGE_MAP,
    PROFILES,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
    ROBUSTNESS,
    SEGMENT_MIGRATION,
    SEGMENTS,
    VIABILITY,
    ActionabilityEvaluation,
    RobustnessScore,
    Segment,
    SegmentExplanation,
    SegmentViability,
    TableSpec,
)
from ..warehouse import Warehouse, days_between, reading_stored, sql_string, verify_checksums

#: Bumped when the report's JSON changes shape.
REPORT_VERSION = "2"
#: The features whose distribution per segment the report summarises and draws: recency,
#: frequency and money (RFM), engagement and lifetime value.
KEY_FEATURES = ("recency_days", "frequency", "monetary_total", "avg_order_value", "sessions", "clv_estimate")
#: Customers per segment drawn for the distribution charts; the statistics use every customer.
SAMPLE_PER_SEGMENT = 1000
#: Missing days listed by date in the coverage; beyond this only their number is given.
MISSING_DAYS_LISTED = 60


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureDistribution(_Record):
    """One feature over a segment's customers, in the feature's unit, beside the whole snapshot's."""

    feature: str
    unit: str
    description: str
    #: Customers of the segment with a value (recency needs a purchase in the window).
    customers_with_value: int
    mean: float | None
    p25: float | None
    median: float | None
    p75: float | None
    population_mean: float | None
    population_median: float | None


class SegmentReport(_Record):
    segment_id: str
    name: str
    #: The segment's statistics as the language model was given them.
    profile: SegmentFacts
    features: list[FeatureDistribution]
    segment: Segment
    robustness: RobustnessScore
    viability: SegmentViability
    actionability: ActionabilityEvaluation
    explanation: SegmentExplanation

    @property
    def targetable(self) -> bool:
        """Approved by viability and judged actionable: a campaign can go out."""
        return self.viability.approved and self.actionability.actionable

    @property
    def weakest_test(self) -> tuple[str, float] | None:
        """The robustness test that disturbs the segment most and its score; None when none was run."""
        robustness = self.robustness
        return weakest_of(
            robustness.time_window_stability, robustness.feature_drop_stability, robustness.bootstrap_stability
        )

    @property
    def stability(self) -> str:
        """The segment's stability band by its weakest test (core.llm.explainer's confidence thresholds):
        'highly stable' from 0.85, 'stable' from 0.75, 'shaky' below, 'unmeasured' without a test."""
        weakest = self.weakest_test
        if weakest is None:
            return "unmeasured"
        if weakest[1] >= HIGH_CONFIDENCE_ROBUSTNESS:
            return "highly stable"
        return "stable" if weakest[1] >= MEDIUM_CONFIDENCE_ROBUSTNESS else "shaky"

    @property
    def lifecycle(self) -> str:
        """'loyal customers (65%)': the segment's largest lifecycle stage; '' without a lifecycle mix."""
        stage = main_label(self.profile.lifecycle or [])
        return f"{stage_words(stage.label)} ({stage.share:.0%})" if stage is not None else ""


class SegmentMove(_Record):
    #: None: customers new to this snapshot.
    from_segment_id: str | None
    #: None: customers of the previous snapshot who are not in this one.
    to_segment_id: str | None
    customers: int


class Migration(_Record):
    #: None for the first snapshot: nothing to compare with.
    previous_as_of: date | None
    moves: list[SegmentMove]
    #: Names of the previous snapshot's segments, those retired since included.
    previous_names: dict[str, str] = Field(default_factory=dict)
    stayed: int
    moved: int
    arrived: int
    left: int


class DataCoverage(_Record):
    """What the snapshot stands on: the profile window and how much of it has data."""

    window_first_day: date
    window_last_day: date
    window_days: int
    #: Days of the window that could have data: those on or after the first partition.
    possible_days: int = 0
    #: Days with at least one stored event (a day ingested without input does not count).
    days_with_events: int
    #: Possible days without an event.
    missing_days: int
    #: The first MISSING_DAYS_LISTED missing days.
    missing_days_listed: list[date]
    #: Whether the as-of day itself has events: a nightly run without them had no input for the day.
    as_of_day_has_events: bool = True
    #: Days whose stored events changed after the profiles were built (a late file): counts here are the profiles'.
    days_changed_since_profiles: list[date] = Field(default_factory=list)
    events_in_window: int
    quarantined_events_in_window: int
    ids_in_merge_history: int
    ids_merged_into_another: int
    customers_profiled: int
    customers_segmented: int
    #: Features without a value for any customer (the source cannot support them).
    features_without_values: list[str]

    @property
    def coverage(self) -> float:
        possible = self.possible_days or self.window_days
        return self.days_with_events / possible if possible else 0.0


class StageSettings(_Record):
    """The configuration a stage's stored output was made with.

    `given` is what the run's config said; `config` adds the defaults of the fields it left
    out, as the code defines them when the report is made (a default changed since the run
    would show the new value there, never in `given`).
    """

    stage: str
    #: Whether the Dagster instance recorded the run that stored it (its config is then `given`).
    #: Run IDs are not part of the report: a backfill run again over the same data writes the same
    #: files. The report's materialization in Dagster lists them (`stage_runs`).
    recorded: bool = False
    given: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_run_id(cls, data: Any) -> Any:
        """Reports written before `recorded` named the run instead: they still load."""
        if isinstance(data, dict) and "run_id" in data:
            data = dict(data)
            data.setdefault("recorded", data.pop("run_id") is not None)
        return data


class RunSettings(_Record):
    data_dir: str
    #: The event source's kind: synthetic or files.
    source: str
    stages: list[StageSettings] = Field(default_factory=list)


class AnswerSources(_Record):
    """Who answered the actionability and explanation questions, from the stored answers' provenance."""

    providers: list[str]
    models: list[str]
    prompt_versions: list[str]
    #: Answers of both stages by source: llm, mock or fallback.
    sources: dict[str, int]


class ChartFile(_Record):
    name: str
    title: str
    #: File name in the report's folder.
    file: str
    description: str
    width_px: int
    height_px: int


class Totals(_Record):
    segments: int
    customers: int
    total_clv: float
    approved: int
    actionable: int
    #: Approved and actionable: the segments a campaign can go out to.
    targetable: int
    targetable_customers: int
    campaigns: int


class ModelScore(_Record):
    """One purchase model or baseline of the day's backtest."""

    name: str
    label: str
    #: "model" or "baseline".
    kind: str
    chosen: bool
    #: Holdout repeat purchase days, forecast against actual (%).
    error_percent: float | None = None
    #: Mean absolute error of the holdout purchase days per customer.
    mae: float | None = None
    #: How well the churn score ranks who then bought nothing (0.5 is chance).
    churn_auc: float | None = None


class CustomerValue(_Record):
    """How churn risk and CLV were made, and how the purchase models did on the data's own holdout."""

    #: core.clv model name, or "heuristic".
    model: str
    method_reason: str
    horizon_days: int
    annual_discount_rate: float
    backtest_split_day: date | None = None
    backtest_holdout_days: int | None = None
    backtest_reason: str | None = None
    backtest: list[ModelScore] = Field(default_factory=list)
    #: By calibration frequency ("0" .. "7+"): customers, mean actual and mean forecast holdout purchase days per model.
    calibration: list[dict[str, Any]] = Field(default_factory=list)
    #: By day: cumulative repeat purchase days, actual and expected by each model (Fader, Hardie & Lee's tracking plot).
    tracking: list[dict[str, Any]] = Field(default_factory=list)


class CampaignExport(_Record):
    """One campaign of the day's audience export (the audience_exports table)."""

    campaign_key: str
    customers: int
    control_customers: int
    added: int
    removed: int
    moved_in: int
    moved_out: int
    folder: str


class CampaignResult(_Record):
    """One metric of a campaign's latest measurement in campaign_results up to the report's day."""

    campaign_key: str
    segment_id: str
    export_day: date
    #: The day of the campaign_results partition: the end of the measurement window.
    measured_on: date
    window_days: int
    metric: str
    treatment_customers: int
    control_customers: int
    treatment_value: float | None = None
    control_value: float | None = None
    uplift: float | None = None
    uplift_ci_low: float | None = None
    uplift_ci_high: float | None = None
    relative_uplift: float | None = None
    relative_ci_low: float | None = None
    relative_ci_high: float | None = None
    significant: bool
    summary: str


class CampaignBrief(_Record):
    """One campaign to launch: a recommendation of a segment approved and actionable, with its money."""

    campaign_key: str
    segment_id: str
    segment_name: str
    lifecycle: str
    offer: str
    channel: str
    #: In the business's time zone, as the explanation wrote it.
    timing: str
    #: The audience the recommendation names; the customers exported to contact, when exported.
    customers: int
    exported_customers: int | None = None
    control_customers: int | None = None
    #: Expected extra margin and cost of the campaign over its audience, at the segment's per-customer rates.
    expected_value: float
    cost: float
    expected_roi: float
    confidence: str
    #: The audience file relative to the report's folder; None when the day's audiences were not exported.
    audience_file: str | None = None


class SegmentChange(_Record):
    """How one segment's size changed since the previous snapshot."""

    segment_id: str
    name: str
    previous_customers: int
    customers: int
    #: "grew", "shrank", "steady", "new" or "gone".
    change: str


class CustomerFlow(_Record):
    """Customers who moved from one segment to another since the previous snapshot."""

    from_segment_id: str
    from_name: str
    to_segment_id: str
    to_name: str
    customers: int


class SegmentationReport(_Record):
    report_version: str = REPORT_VERSION
    as_of: date
    totals: Totals
    segments: list[SegmentReport]
    migration: Migration
    coverage: DataCoverage
    answers: AnswerSources
    settings: RunSettings
    #: None for profiles stored before they recorded it.
    customer_value: CustomerValue | None = None
    #: The campaigns exported for the day (empty when none was, or in older reports).
    exports: list[CampaignExport] = Field(default_factory=list)
    #: The latest measurement of every campaign measured up to the day (core.campaign_results).
    campaign_results: list[CampaignResult] = Field(default_factory=list)
    #: The currency, time zone and owned channels the day's answers were made with.
    business: Business = Field(default_factory=Business)
    #: The campaigns to launch, largest expected value first.
    campaigns: list[CampaignBrief] = Field(default_factory=list)
    #: Campaigns recommended but left without customers by the export (each customer is in one campaign).
    campaigns_without_customers: list[str] = Field(default_factory=list)
    #: Every segment's size now and at the previous snapshot; the largest flows between segments.
    changes: list[SegmentChange] = Field(default_factory=list)
    flows: list[CustomerFlow] = Field(default_factory=list)
    charts: list[ChartFile] = Field(default_factory=list)

    def segment(self, segment_id: str) -> SegmentReport:
        for item in self.segments:
            if item.segment_id == segment_id:
                return item
        raise KeyError(segment_id)


@dataclass(frozen=True)
class ReportDraft:
    """A report before its charts are drawn, with the customer sample the distribution charts need."""

    report: SegmentationReport
    #: segment_id plus the KEY_FEATURES with values, at most SAMPLE_PER_SEGMENT rows per segment.
    feature_sample: pd.DataFrame


def gather_report(
    store: Warehouse,
    as_of: date,
    settings: RunSettings,
    sample_per_segment: int = SAMPLE_PER_SEGMENT,
    first_partition_day: date | None = None,
) -> ReportDraft:
    """Everything the stages stored for `as_of`, checked to belong together, as one report.

    Days of the profile window before `first_partition_day` cannot have data and are not counted missing."""
    tables = {spec.name: store.read_required(spec, as_of) for spec in _UPSTREAM}
    # The statistics as the insight stages read them, purchase rhythm and lifecycle mix included.
    facts = stored_snapshot_facts(store, as_of)
    if not facts:
        raise ReportGenerationError(f"the snapshot of {as_of} has no segments: nothing to report")
    for spec in (ACTIONABILITY, EXPLANATIONS):
        problems = stale_answers(facts, tables[spec.name])
        if problems:
            raise ReportGenerationError(
                f"{spec.name} of {as_of} does not match the stored snapshot ({'; '.join(problems)}); "
                f"materialize {spec.name} for {as_of} again first"
            )
    members = _Members.of(store, as_of)
    distributions, sample = _feature_distributions(store, members, sample_per_segment)
    rows = {spec.name: _rows_by_segment(tables[spec.name]) for spec in _PER_SEGMENT}
    segments = []
    for item in facts:
        segment_id = item.segment_id
        try:
            segments.append(
                SegmentReport(
                    segment_id=segment_id,
                    name=item.name,
                    profile=item,
                    features=distributions.get(segment_id, []),
                    segment=Segment(**rows["segments"][segment_id]),
                    robustness=RobustnessScore(**rows["robustness"][segment_id]),
                    viability=SegmentViability(**rows["viability"][segment_id]),
                    actionability=ActionabilityEvaluation(**rows["actionability"][segment_id]),
                    explanation=SegmentExplanation(**rows["explanations"][segment_id]),
                )
            )
        except ValidationError as exc:
            raise ReportGenerationError(f"the stored rows of {segment_id} for {as_of} are not valid: {exc}") from exc
    migration = _migration(tables["segment_migration"], store)
    exports = _exports(store, as_of)
    campaigns, without_customers = campaign_briefs(segments, exports, store.report_dir(as_of))
    report = SegmentationReport(
        as_of=as_of,
        totals=_totals(segments),
        segments=segments,
        migration=migration,
        coverage=_coverage(store, as_of, members, tables["merge_map"], first_partition_day),
        answers=_answer_sources(tables["actionability"], tables["explanations"]),
        settings=settings,
        customer_value=_customer_value(store, as_of),
        exports=exports,
        campaign_results=latest_campaign_results(store, as_of),
        business=stored_rubric(store, as_of).business,
        campaigns=campaigns,
        campaigns_without_customers=without_customers,
        changes=segment_changes(segments, migration),
        flows=customer_flows(segments, migration),
    )
    not_numbers = list(_not_finite(report.model_dump()))
    if not_numbers:
        # JSON has no NaN or infinity: such a report would not load back.
        raise ReportGenerationError(
            f"the stored snapshot of {as_of} has values that are not numbers: {', '.join(not_numbers[:5])}"
            + (f" and {len(not_numbers) - 5} more" if len(not_numbers) > 5 else "")
        )
    return ReportDraft(report=report, feature_sample=sample)


def campaign_briefs(
    segments: list[SegmentReport], exports: list[CampaignExport], report_folder: Path
) -> tuple[list[CampaignBrief], list[str]]:
    """The campaigns to launch, largest expected value first, and the keys of those left without customers.

    A campaign's value and cost are its segment's per customer (viability's incremental profit and campaign
    cost over the segment's size) times the customers it contacts. Once the day's audiences are exported,
    those are the exported ones: each customer is in one campaign only, so a segment's second channel may
    be left with nobody (listed apart). Before, every recommendation names the whole segment, and a segment's
    value and cost are shared equally among its channels (they would reach the same customers).
    """
    exported = {item.campaign_key: item for item in exports}
    briefs, empty = [], []
    for item in segments:
        if not item.targetable:
            continue
        size = item.segment.size or 1
        recommendations = item.explanation.recommendations
        for recommendation in recommendations:
            key = campaign_key(item.segment_id, recommendation.channel)
            export = exported.get(key)
            if exports and (export is None or not export.customers):
                empty.append(key)
                continue
            customers = export.customers if export else recommendation.audience_size
            share = 1.0 if export else 1.0 / len(recommendations)
            briefs.append(
                CampaignBrief(
                    campaign_key=key,
                    segment_id=item.segment_id,
                    segment_name=item.name,
                    lifecycle=item.lifecycle,
                    offer=recommendation.offer,
                    channel=recommendation.channel,
                    timing=recommendation.timing,
                    customers=recommendation.audience_size,
                    exported_customers=export.customers if export else None,
                    control_customers=export.control_customers if export else None,
                    expected_value=round(item.viability.incremental_profit / size * customers * share, 2),
                    cost=round(item.viability.campaign_cost / size * customers * share, 2),
                    expected_roi=item.viability.expected_roi,
                    confidence=item.explanation.confidence_level,
                    audience_file=os.path.relpath(Path(export.folder) / "audience.csv", report_folder)
                    if export
                    else None,
                )
            )
    return sorted(briefs, key=lambda brief: (-brief.expected_value, brief.campaign_key)), empty


#: A segment whose size changed by less than this share of its previous size held steady.
STEADY_CHANGE = 0.02
#: Flows between segments listed in the report, largest first.
FLOWS_LISTED = 5


def segment_changes(segments: list[SegmentReport], migration: Migration) -> list[SegmentChange]:
    """Each segment's size now and at the previous snapshot, from the migration's moves; empty for a first one."""
    if migration.previous_as_of is None:
        return []
    before: dict[str, int] = {}
    for move in migration.moves:
        if move.from_segment_id is not None:
            before[move.from_segment_id] = before.get(move.from_segment_id, 0) + move.customers
    now = {item.segment_id: item.segment.size for item in segments}
    names = migration.previous_names | {item.segment_id: item.name for item in segments}
    changes = []
    for segment_id in sorted(set(before) | set(now)):
        previous, current = before.get(segment_id, 0), now.get(segment_id, 0)
        if segment_id not in now:
            change = "gone"
        elif segment_id not in before:
            change = "new"
        elif abs(current - previous) < STEADY_CHANGE * previous:
            change = "steady"
        else:
            change = "grew" if current > previous else "shrank"
        changes.append(
            SegmentChange(
                segment_id=segment_id,
                name=names.get(segment_id, segment_id),
                previous_customers=previous,
                customers=current,
                change=change,
            )
        )
    return changes


def customer_flows(segments: list[SegmentReport], migration: Migration) -> list[CustomerFlow]:
    """The largest moves of customers between two segments since the previous snapshot."""
    names = migration.previous_names | {item.segment_id: item.name for item in segments}
    moved = [
        move
        for move in migration.moves
        if None not in (move.from_segment_id, move.to_segment_id) and move.from_segment_id != move.to_segment_id
    ]
    moved.sort(key=lambda move: (-move.customers, move.from_segment_id, move.to_segment_id))
    return [
        CustomerFlow(
            from_segment_id=move.from_segment_id,
            from_name=names.get(move.from_segment_id, move.from_segment_id),
            to_segment_id=move.to_segment_id,
            to_name=names.get(move.to_segment_id, move.to_segment_id),
            customers=move.customers,
        )
        for move in moved[:FLOWS_LISTED]
    ]


def _not_finite(value: object, path: str = "") -> Iterator[str]:
    """Paths of the NaN and infinite floats in a dumped model ('segments.2.segment.mean_clv')."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _not_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _not_finite(item, f"{path}.{index}")


_PER_SEGMENT: tuple[TableSpec, ...] = (SEGMENTS, ROBUSTNESS, VIABILITY, ACTIONABILITY, EXPLANATIONS)
_UPSTREAM: tuple[TableSpec, ...] = (*_PER_SEGMENT, SEGMENT_MIGRATION, MERGE_MAP)


def _rows_by_segment(table: pa.Table) -> dict[str, dict]:
    return {row["segment_id"]: row for row in table.to_pylist()}


def _answer_sources(*answers: pa.Table) -> AnswerSources:
    combined = pa.concat_tables([table.select(["provider", "model", "prompt_version", "source"]) for table in answers])

    def values(column: str) -> list[str]:
        return sorted(set(combined[column].to_pylist()))

    sources = combined["source"].to_pylist()
    return AnswerSources(
        providers=values("provider"),
        models=values("model"),
        prompt_versions=values("prompt_version"),
        sources={source: sources.count(source) for source in sorted(set(sources))},
    )


def _totals(segments: list[SegmentReport]) -> Totals:
    targetable = [item for item in segments if item.targetable]
    return Totals(
        segments=len(segments),
        customers=sum(item.segment.size for item in segments),
        total_clv=round(sum(item.segment.total_clv for item in segments), 2),
        approved=sum(1 for item in segments if item.viability.approved),
        actionable=sum(1 for item in segments if item.actionability.actionable),
        targetable=len(targetable),
        targetable_customers=sum(item.segment.size for item in targetable),
        campaigns=sum(len(item.explanation.recommendations) for item in segments),
    )


def _migration(moves: pa.Table, store: Warehouse | None = None) -> Migration:
    rows = [SegmentMove(**{key: row[key] for key in SegmentMove.model_fields}) for row in moves.to_pylist()]
    previous = moves["previous_as_of"].drop_null().unique().to_pylist() if moves.num_rows else []

    def count(keep) -> int:
        return sum(move.customers for move in rows if keep(move))

    previous_as_of = previous[0] if previous else None
    names = store.read_partition(SEGMENTS, previous_as_of) if store and previous_as_of else SEGMENTS.empty()
    return Migration(
        previous_as_of=previous_as_of,
        moves=rows,
        previous_names=dict(zip(names["segment_id"].to_pylist(), names["name"].to_pylist())),
        stayed=count(lambda m: m.from_segment_id is not None and m.from_segment_id == m.to_segment_id),
        moved=count(
            lambda m: None not in (m.from_segment_id, m.to_segment_id) and m.from_segment_id != m.to_segment_id
        ),
        arrived=count(lambda m: m.from_segment_id is None),
        left=count(lambda m: m.to_segment_id is None),
    )


@dataclass(frozen=True)
class _Members:
    """The stored profiles and segment assignments of the snapshot, read through DuckDB as needed."""

    profiles: Path
    clusters: Path

    @classmethod
    def of(cls, store: Warehouse, as_of: date) -> _Members:
        """The day's files, once the pages of the columns read from them pass their checksums."""
        return cls(
            verify_checksums(store.required_path(PROFILES, as_of), ["canonical_id", "window_days", *KEY_FEATURES]),
            verify_checksums(store.required_path(CLUSTERS, as_of), ["canonical_id", "segment_id"]),
        )

    def relation(self, columns: list[str]) -> str:
        selected = ", ".join(f'p."{name}"' for name in columns)
        return f"""SELECT c.canonical_id, c.segment_id, {selected}
                   FROM read_parquet({sql_string(str(self.clusters))}) c
                   JOIN read_parquet({sql_string(str(self.profiles))}) p USING (canonical_id)"""


def _coverage(
    store: Warehouse, as_of: date, members: _Members, merge_map: pa.Table, first_partition_day: date | None
) -> DataCoverage:
    features = list(FEATURES_BY_NAME)
    with store.connect() as con, reading_stored(PROFILES):
        profiled, window_days, *with_value = con.execute(
            "SELECT count(*), coalesce(max(window_days), 0), "
            + ", ".join(f'count("{name}")' for name in features)
            + f" FROM read_parquet({sql_string(str(members.profiles))})"
        ).fetchone()
    first = as_of - timedelta(days=max(window_days, 1) - 1)
    # Events and quarantined rows are counted together: of days whose two were written together.
    store.check_complete(RAW_EVENTS, QUARANTINE_EVENTS, days_between(first, as_of))
    possible = days_between(max(first, first_partition_day or first), as_of) if window_days else []
    # The counts the profiles were built from, so that they never mix with a later ingestion's.
    built_from = WindowInput.of_profiles(store, as_of) or WindowInput.stored(
        store, store.partition_days(RAW_EVENTS, first, as_of)
    )
    with_events = set(built_from.days_with_events)
    missing = [day for day in possible if day not in with_events]
    merged = pc.sum(pc.not_equal(merge_map["old_id"], merge_map["canonical_id"])).as_py() or 0
    return DataCoverage(
        window_first_day=first,
        window_last_day=as_of,
        window_days=window_days,
        possible_days=len(possible),
        days_with_events=len(with_events),
        missing_days=len(missing),
        missing_days_listed=missing[:MISSING_DAYS_LISTED],
        as_of_day_has_events=as_of in with_events,
        days_changed_since_profiles=built_from.changed_days(
            store.stored_footprints(RAW_EVENTS, days_between(first, as_of))
        ),
        events_in_window=built_from.events,
        quarantined_events_in_window=built_from.quarantined,
        ids_in_merge_history=merge_map.num_rows,
        ids_merged_into_another=int(merged),
        customers_profiled=profiled,
        customers_segmented=pq.ParquetFile(members.clusters).metadata.num_rows,
        features_without_values=[name for name, count in zip(features, with_value) if profiled and not count],
    )


def _exports(store: Warehouse, as_of: date) -> list[CampaignExport]:
    """The day's exported campaigns; none when the export stage has not stored the day."""
    if not store.partition_path(AUDIENCE_EXPORTS, as_of).exists():
        return []
    fields = list(CampaignExport.model_fields)
    return [CampaignExport(**row) for row in store.read_partition(AUDIENCE_EXPORTS, as_of).select(fields).to_pylist()]


def latest_campaign_results(store: Warehouse, as_of: date) -> list[CampaignResult]:
    """Every campaign's latest measured export in campaign_results of days up to `as_of`, one item per metric."""
    latest: dict[str, list[CampaignResult]] = {}
    for day in store.partition_days(CAMPAIGN_RESULTS, None, as_of):
        by_campaign: dict[str, list[CampaignResult]] = {}
        for row in store.read_partition(CAMPAIGN_RESULTS, day).to_pylist():
            fields = {name: row[name] for name in CampaignResult.model_fields if name in row}
            by_campaign.setdefault(row["campaign_key"], []).append(CampaignResult(**fields, measured_on=day))
        for key, items in by_campaign.items():
            if key not in latest or items[0].export_day >= latest[key][0].export_day:
                latest[key] = items
    return [item for key in sorted(latest) for item in latest[key]]


def _customer_value(store: Warehouse, as_of: date) -> CustomerValue | None:
    recorded = store.partition_metadata(PROFILES, as_of).get(CLV_KEY)
    if recorded is None:
        return None
    clv = json.loads(recorded)
    rows = store.read_partition(CLV_BACKTEST, as_of).to_pylist()
    chosen = next((row for row in rows if row["chosen"]), None)
    tables = store.partition_metadata(CLV_BACKTEST, as_of)
    return CustomerValue(
        model=clv["model"],
        method_reason=clv["reason"],
        horizon_days=clv["horizon_days"],
        annual_discount_rate=clv["annual_discount_rate"],
        backtest_split_day=rows[0]["split_day"] if rows else None,
        backtest_holdout_days=rows[0]["holdout_days"] if rows else None,
        backtest_reason=chosen["reason"] if chosen else None,
        backtest=[ModelScore(**{name: row[name] for name in ModelScore.model_fields}) for row in rows],
        calibration=_finite_records(tables.get(CALIBRATION_KEY)),
        tracking=_finite_records(tables.get(TRACKING_KEY)),
    )


def _finite_records(text: str | None) -> list[dict[str, Any]]:
    """JSON records with every missing or non-finite number as None (the report's JSON has no NaN)."""
    records = json.loads(text) if text else []
    return [
        {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in row.items()}
        for row in records
    ]


def _feature_distributions(
    store: Warehouse, members: _Members, sample_per_segment: int
) -> tuple[dict[str, list[FeatureDistribution]], pd.DataFrame]:
    """Quartiles of the key features per segment over every customer, and a sample for the charts.

    The sample takes the customers of each segment with the smallest hash of their ID: the same
    customers on every run, whatever the number of threads.
    """
    features = list(KEY_FEATURES)
    quoted = [f'"{name}"' for name in features]
    aggregates = ", ".join(
        f'count({column}) AS "{name}__n", avg({column}) AS "{name}__mean", '
        f'quantile_cont({column}, [0.25, 0.5, 0.75]) AS "{name}__q"'
        for name, column in zip(features, quoted)
    )
    with store.connect() as con, reading_stored(PROFILES, CLUSTERS):
        con.execute(f"CREATE TEMP TABLE members AS {members.relation(features)}")
        per_segment = con.execute(f"SELECT segment_id, {aggregates} FROM members GROUP BY segment_id").fetchall()
        overall = con.execute(
            "SELECT " + ", ".join(f"avg({column}), median({column})" for column in quoted) + " FROM members"
        ).fetchone()
        sample = con.execute(
            f"""SELECT segment_id, {", ".join(quoted)} FROM members
                QUALIFY row_number() OVER (PARTITION BY segment_id ORDER BY hash(canonical_id), canonical_id)
                    <= {int(sample_per_segment)}
                ORDER BY segment_id, hash(canonical_id), canonical_id"""
        ).df()
    distributions: dict[str, list[FeatureDistribution]] = {}
    for row in per_segment:
        segment_id, values = row[0], row[1:]
        items = []
        for index, name in enumerate(features):
            count, mean, quartiles = values[3 * index : 3 * index + 3]
            quartiles = quartiles if count else [None, None, None]
            feature = FEATURES_BY_NAME[name]
            items.append(
                FeatureDistribution(
                    feature=name,
                    unit=feature.unit,
                    description=feature.description,
                    customers_with_value=count,
                    mean=_rounded(mean),
                    p25=_rounded(quartiles[0]),
                    median=_rounded(quartiles[1]),
                    p75=_rounded(quartiles[2]),
                    population_mean=_rounded(overall[2 * index]),
                    population_median=_rounded(overall[2 * index + 1]),
                )
            )
        distributions[segment_id] = items
    return distributions, sample


def _rounded(value: float | None) -> float | None:
    """Four decimals: enough for days, orders and money, and stable from run to run."""
    return None if value is None or value != value else round(float(value), 4)
