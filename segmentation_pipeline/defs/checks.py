"""Asset checks: what must hold for every stored partition.

The checks run in the same step as their asset (declared with `check_specs`),
over the files the step just wrote; the rules themselves live in core.quality.
"""

import warnings
from collections.abc import Mapping, Sequence
from datetime import date

import dagster as dg

from ..core import quality
from ..core.lineage import PreviousSnapshot
from ..core.llm.actionability import Rubric
from ..core.schemas import ACTIONABILITY, EXPLANATIONS
from ..core.warehouse import Warehouse
from .metadata import rounded
from .partitions import daily_partitions


def check_spec(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check of every day's partition: its results are recorded, and shown in the UI, per day.

    Without the partitions, Dagster plans a check once per day of the run but records its result
    under no day: every run left a "Skipped" row per day beside the result."""
    with warnings.catch_warnings():
        # Partitioned checks are a preview in Dagster 1.13; the warning says no more than that.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, blocking=blocking, partitions_def=daily_partitions
        )


RAW_EVENTS_CHECKS = [
    check_spec("no_null_customer_ids", asset="raw_events", description="Every stored event has a customer_id."),
    check_spec("valid_event_types", asset="raw_events", description="Every event_type is a known one."),
    check_spec(
        "timestamps_inside_partition", asset="raw_events", description="Every event's UTC date is its partition's day."
    ),
    check_spec(
        "quarantine_rate",
        asset="raw_events",
        description="The share of input rows quarantined stays under max_quarantine_rate (warning).",
    ),
    check_spec(
        "every_day_has_input",
        asset="raw_events",
        description="Every day of the run stored at least one event: a day without one had no input "
        "(a missing or empty export) (warning; expect_input_every_day turns it off).",
    ),
    check_spec(
        "no_rows_for_other_days",
        asset="raw_events",
        description="Every valid row the run read went into a partition it wrote; rows of other days "
        "(a local-time folder, a many-day file) wait for those days' runs (warning).",
    ),
]

MERGE_MAP_CHECKS = [
    check_spec("canonical_ids_map_to_themselves", asset="merge_map", description="Every canonical ID maps to itself."),
    check_spec(
        "one_canonical_id_per_id", asset="merge_map", description="No ID is listed twice or under two canonical IDs."
    ),
    check_spec("no_unresolved_chains", asset="merge_map", description="Applying the map twice changes nothing."),
    check_spec(
        "no_junk_merged",
        asset="merge_map",
        description="No junk ID (block list or hub) is merged into a customer, nor a customer into one.",
    ),
]


def _result(name: str, outcome: quality.CheckOutcome, warn: bool = False) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.WARN if warn else dg.AssetCheckSeverity.ERROR,
        description=outcome.summary,
        metadata=rounded(outcome.metadata),
    )


def raw_events_results(
    warehouse: Warehouse,
    days: Sequence[date],
    max_quarantine_rate: float,
    rows_per_day: Mapping[date, int],
    expect_input_every_day: bool = True,
) -> dict[date, list[dg.AssetCheckResult]]:
    """The checks of every day of an ingestion run, each over that day's stored partition."""
    return {
        day: [
            _result("no_null_customer_ids", quality.no_null_customer_ids(stats)),
            _result("valid_event_types", quality.valid_event_types(stats)),
            _result("timestamps_inside_partition", quality.timestamps_inside_partition(stats)),
            _result("quarantine_rate", quality.quarantine_rate(stats, max_quarantine_rate), warn=True),
            _result(
                "every_day_has_input",
                quality.every_day_has_input({day: rows_per_day.get(day, 0)}, expect_input_every_day),
                warn=True,
            ),
        ]
        for day, stats in quality.event_partition_stats_by_day(warehouse, days).items()
    }


def rows_for_other_days_result(rows: int, summary: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="no_rows_for_other_days",
        passed=rows == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=summary,
        metadata={"rows": rows},
    )


def merge_map_results(warehouse: Warehouse, day: date) -> list[dg.AssetCheckResult]:
    return [
        _result("canonical_ids_map_to_themselves", quality.canonical_ids_map_to_themselves(warehouse, day)),
        _result("one_canonical_id_per_id", quality.one_canonical_id_per_id(warehouse, day)),
        _result("no_unresolved_chains", quality.no_unresolved_chains(warehouse, day)),
        _result("no_junk_merged", quality.no_junk_merged(warehouse, day)),
    ]


PROFILES_CHECKS = [
    check_spec("unique_per_customer", asset="profiles", description="At most one profile per canonical customer."),
    check_spec(
        "no_merged_away_ids",
        asset="profiles",
        description="No profile belongs to an ID merged into another customer, or to a junk ID.",
    ),
]

CLUSTERS_CHECKS = [
    check_spec(
        "every_profile_in_one_segment",
        asset="clusters",
        description="Every profile is assigned to exactly one existing segment; segment sizes agree.",
    ),
    check_spec(
        "previous_snapshot_unchanged",
        asset="clusters",
        # Blocking: the stages after clusters in the same run do not build on IDs that follow a
        # snapshot that is no longer the stored one.
        blocking=True,
        description="The previous snapshot the segment IDs were matched against is still the stored one "
        "when the step ends: no earlier day's snapshot appeared or changed while it ran (a run of "
        "another day side by side). When it fails, materialize this day again.",
    ),
]

ROBUSTNESS_CHECKS = [
    check_spec(
        "scores_in_unit_interval",
        asset="robustness",
        description="Every segment has robustness scores, each within [0, 1].",
    ),
]

VIABILITY_CHECKS = [
    check_spec(
        "every_segment_decided",
        asset="viability",
        description="Every segment is approved, or rejected with its reasons; strategic impact within [0, 1].",
    ),
]


def profiles_results(warehouse: Warehouse, day: date) -> list[dg.AssetCheckResult]:
    return [
        _result("unique_per_customer", quality.profiles_unique_per_customer(warehouse, day)),
        _result("no_merged_away_ids", quality.no_merged_away_ids(warehouse, day)),
    ]


def clusters_results(warehouse: Warehouse, day: date, used: PreviousSnapshot) -> list[dg.AssetCheckResult]:
    return [
        _result("every_profile_in_one_segment", quality.every_profile_in_one_segment(warehouse, day)),
        _result("previous_snapshot_unchanged", quality.previous_snapshot_unchanged(warehouse, used)),
    ]


def robustness_results(warehouse: Warehouse, day: date) -> list[dg.AssetCheckResult]:
    return [_result("scores_in_unit_interval", quality.robustness_scores_in_unit_interval(warehouse, day))]


def viability_results(warehouse: Warehouse, day: date) -> list[dg.AssetCheckResult]:
    return [_result("every_segment_decided", quality.every_segment_decided(warehouse, day))]


def _answer_checks(asset: str, complete: tuple[str, str]) -> list[dg.AssetCheckSpec]:
    return [
        check_spec(complete[0], asset=asset, description=complete[1]),
        check_spec(
            "numbers_match_statistics",
            asset=asset,
            description="Every answer was made from the stored snapshot's statistics and quotes only their "
            "numbers; fails for an answer that invents one, or when the snapshot changed after the answers.",
        ),
        check_spec(
            "answered_by_configured_model",
            asset=asset,
            description="No answer was replaced by the mock's because the model's was invalid, unfaithful "
            "or never came (warning; see fallback_reason).",
        ),
    ]


ACTIONABILITY_CHECKS = _answer_checks(
    "actionability",
    (
        "every_segment_evaluated",
        "One evaluation per segment of the snapshot, every score within [0, 1] or null (not measurable).",
    ),
)
EXPLANATIONS_CHECKS = _answer_checks(
    "explanations",
    ("every_segment_explained", "One explanation per segment, with a summary and a high/medium/low confidence."),
)


def actionability_results(warehouse: Warehouse, day: date, rubric: Rubric) -> list[dg.AssetCheckResult]:
    return [
        _result("every_segment_evaluated", quality.every_segment_evaluated(warehouse, day)),
        _result("numbers_match_statistics", quality.numbers_match_statistics(warehouse, day, ACTIONABILITY, rubric)),
        _result("answered_by_configured_model", quality.no_fallback_answers(warehouse, day, ACTIONABILITY), warn=True),
    ]


def explanations_results(warehouse: Warehouse, day: date) -> list[dg.AssetCheckResult]:
    return [
        _result("every_segment_explained", quality.every_segment_explained(warehouse, day)),
        _result("numbers_match_statistics", quality.numbers_match_statistics(warehouse, day, EXPLANATIONS)),
        _result("answered_by_configured_model", quality.no_fallback_answers(warehouse, day, EXPLANATIONS), warn=True),
    ]


REPORT_CHECKS = [
    check_spec(
        "report_complete",
        asset="report",
        description="report.json loads back into the report model and lists exactly the snapshot's segments; "
        "every chart is a PNG of its recorded size; report.html names every segment and embeds every chart.",
    )
]


def report_results(warehouse: Warehouse, day: date) -> list[dg.AssetCheckResult]:
    return [_result("report_complete", quality.report_complete(warehouse, day))]
